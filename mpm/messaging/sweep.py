"""The periodic sweep (every SMS_SWEEP_SECONDS, enqueued by mpm.worker): notices work that lost its
job and waits that are over. A plain list of steps; each is safe to run twice and at any moment.

- a `sending` message whose lane has no live send job (the worker died inside a provider request)
  → `unconfirmed`: the provider may have taken it, so it is never sent again;
- due `queued` messages of a lane without a live send job (Redis lost it, a worker died between
  jobs) → a new send job;
- `unconfirmed` past its report window → stays `unconfirmed`, says so, the wait is closed;
- a sending broadcast whose job chain died with its worker (no fan-out lease, no job waiting) →
  its fan-out goes on from the stored resume point (mpm.broadcasts.fanout.resume_stalled_fanouts).
"""
from datetime import timedelta, timezone

from flask import current_app
from sqlalchemy import or_, select

from mpm import jobs, leases
from mpm.broadcasts.fanout import resume_stalled_fanouts
from mpm.extensions import db
from mpm.messaging import ledger, status
from mpm.models import Broadcast, Sms
from mpm.models.base import utcnow

CRASHED = ("the worker stopped during the request to the gateway; the gateway may have taken it, "
           "so it is not sent again: waiting for the provider's report")
NO_REPORT = "the gateway may have sent it; no report came"


def sweep(now=None) -> dict:
    now = now or utcnow()
    return {
        "unconfirmed_after_crash": resolve_crashed_requests(now),
        "lanes_restarted": restart_idle_lanes(now),
        "unconfirmed_closed": close_unconfirmed_waits(now),
        "broadcasts_resumed": len(resume_stalled_fanouts(now)),
    }


def resolve_crashed_requests(now) -> int:
    # A live request is never older than a running job's lease (it renews it after each request),
    # so an older `sending` row is an orphan even when a newer job of its lane holds the lease.
    stale = now - timedelta(seconds=jobs.running_lease_seconds())
    rows = db.session.execute(
        select(Sms.id, Sms.company_id, Sms.lane, Sms.updated_at).where(Sms.status == status.SENDING)
        .limit(10_000)).all()
    orphans: dict[int, list[int]] = {}
    for sms_id, company_id, lane, updated_at in rows:
        if _aware(updated_at) <= stale or not leases.held(jobs.drain_lease(company_id, lane)):
            orphans.setdefault(company_id, []).append(sms_id)
    due = now + timedelta(seconds=current_app.config["SMS_UNCONFIRMED_WINDOW_SECONDS"])
    moved = 0
    for company_id, ids in orphans.items():
        moved += len(ledger.move(company_id, ids, status.UNCONFIRMED, CRASHED, sources=(status.SENDING,),
                                 values={"report_due_at": due, "error": CRASHED}))
    db.session.commit()
    return moved


def restart_idle_lanes(now) -> int:
    slack = now + timedelta(seconds=1)
    # A paused (or not yet started) broadcast's rows wait for it, not for the sweep.
    sending_broadcasts = select(Broadcast.id).where(Broadcast.state == "sending")
    lanes = db.session.execute(
        select(Sms.company_id, Sms.lane).where(
            Sms.status == status.QUEUED, or_(Sms.next_attempt_at.is_(None), Sms.next_attempt_at <= slack),
            or_(Sms.broadcast_id.is_(None), Sms.broadcast_id.in_(sending_broadcasts)))
        .group_by(Sms.company_id, Sms.lane)).all()
    db.session.commit()
    started = 0
    for company_id, lane in lanes:
        if not leases.held(jobs.drain_lease(company_id, lane)):
            jobs.enqueue_send(company_id, lane)
            started += 1
    return started


def _aware(value):
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def close_unconfirmed_waits(now) -> int:
    closed = ledger.close_unconfirmed(now, NO_REPORT)
    db.session.commit()
    return closed
