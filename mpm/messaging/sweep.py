"""Finds messages whose job was lost, so nothing sits `queued` forever.

Run every minute from the worker (mpm.worker). A retry's due time is in the database before its
RQ job is scheduled; if Redis lost the job, the due time is still here:
- `queued` and due for longer than the grace period, or never picked up for that long (unless its
  broadcast is paused: resuming hands those over) → enqueued again (next_attempt_at set to now, so each message is re-enqueued at most once per grace period;
  a duplicate job is harmless: the claim in dispatch lets only one run send);
- `sending` for longer than SMS_STUCK_SENDING_MINUTES (the worker died mid-call) → failed, not
  resent: the provider may have taken it, and a double send is worse than a visible failure.
"""
from collections import defaultdict
from datetime import timedelta

from flask import current_app
from sqlalchemy import and_, or_, select, update

from mpm.extensions import db
from mpm.messaging import ledger, status
from mpm.messaging.delivery import ensure_report_writer
from mpm.models import Broadcast, Sms
from mpm.models.base import utcnow
from mpm.queue import queue

DISPATCH_JOB = "mpm.messaging.dispatch.send_batch"


def sweep_lost_messages(now=None) -> dict:
    now = now or utcnow()
    grace = timedelta(seconds=current_app.config.get("SMS_SWEEP_GRACE_SECONDS", 600))
    stuck = timedelta(minutes=current_app.config.get("SMS_STUCK_SENDING_MINUTES", 15))
    batch = current_app.config["SMS_BATCH_SIZE"]

    # A paused (or not yet started) broadcast's rows wait for it, not for the sweep.
    sending_broadcasts = select(Broadcast.id).where(Broadcast.state == "sending")
    lost = db.session.execute(
        select(Sms.id, Sms.company_id, Sms.lane)
        .where(Sms.direction == "outbound", Sms.status == status.QUEUED,
               or_(Sms.broadcast_id.is_(None), Sms.broadcast_id.in_(sending_broadcasts)),
               or_(Sms.next_attempt_at <= now - grace,
                   and_(Sms.next_attempt_at.is_(None), Sms.created_at <= now - grace)))
        .order_by(Sms.id)
        .limit(10_000)
    ).all()
    groups: dict[tuple[int, str], list[int]] = defaultdict(list)
    for sms_id, company_id, lane in lost:
        groups[(company_id, lane)].append(sms_id)
    if lost:
        db.session.execute(update(Sms).where(Sms.id.in_([row[0] for row in lost]))
                           .values(next_attempt_at=now).execution_options(synchronize_session=False))

    abandoned = db.session.execute(
        select(Sms.id, Sms.company_id).where(Sms.direction == "outbound", Sms.status == status.SENDING,
                                             Sms.updated_at <= now - stuck)
        .limit(1_000)
    ).all()
    by_company: dict[int, list[int]] = defaultdict(list)
    for sms_id, company_id in abandoned:
        by_company[company_id].append(sms_id)
    for company_id, ids in by_company.items():
        ledger.move(company_id, ids, status.FAILED,
                    "the worker stopped while handing this message to the gateway; it was not sent again because "
                    "the gateway may have taken it. Check with the recipient before resending.",
                    sources=(status.SENDING,))
    db.session.commit()
    for (company_id, lane), ids in groups.items():
        q = queue(lane)
        for start in range(0, len(ids), batch):
            q.enqueue(DISPATCH_JOB, company_id, ids[start:start + batch])
    ensure_report_writer()  # safety net: reports left in Redis by a writer that died
    return {"requeued": len(lost), "failed_stuck": len(abandoned)}
