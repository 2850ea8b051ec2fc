"""The RQ jobs of a broadcast. run_broadcast expands ONE chunk of the audience into Sms rows
(bulk INSERT, people in id order), then enqueues that chunk's send batches and itself again,
so the next chunk waits behind this chunk's batches in the bulk lane, and a pause or cancel
takes effect between chunks.

Survives kills: a running job holds the broadcast's fan-out lease (renewed per chunk); when its
worker dies the lease expires, and the sweep (resume_stalled_fanouts) starts the chain again
from the stored resume point.

Exactly once: the chunk's rows and the new resume point (expanded_through_person_id) are
committed in one transaction, and that transaction only goes through if the resume point is
still the one this job started from and the broadcast is still sending. A job killed
mid-way, retried, or running twice never inserts a person twice. Rows committed but never
handed to RQ (the worker died in between) are enqueued by the next run."""
import logging
import re
from datetime import datetime, timedelta
from functools import lru_cache

from flask import current_app
from sqlalchemy import DateTime, String, cast, insert, literal, or_, select, update

from mpm import leases
from mpm.broadcasts import audience as audiences
from mpm.broadcasts import placeholders, progress, schedule
from mpm.broadcasts.lifecycle import ACTIVE, chunk_size, enqueue_fanout
from mpm.jobs import enqueue_done_check, enqueue_send, next_job_waiting
from mpm.extensions import db
from mpm.messaging import status
from mpm.messaging.encoding import analyse
from mpm.models import Broadcast, Company, Sms, SmsEvent
from mpm.models.base import as_utc, utcnow
from mpm.queue import BULK

DONE_CHECK_EVERY = timedelta(seconds=30)
EXPIRED_REASON = "validity period of the broadcast ended before it could be sent"
# The lease lasts far longer than one chunk takes, and is short enough that the sweep resumes a
# killed fan-out within 2 minutes (config FANOUT_LEASE_SECONDS, 45 s).
LEASE_SECONDS = 45


def _lease_seconds() -> int:
    return int(current_app.config.get("FANOUT_LEASE_SECONDS") or LEASE_SECONDS)


log = logging.getLogger(__name__)


def _lease(broadcast_id: int) -> str:
    return f"broadcast:{broadcast_id}"


def run_broadcast(broadcast_id: int, now: datetime | None = None) -> str:
    leases.hold(_lease(broadcast_id), _lease_seconds())
    try:
        return _run_broadcast(broadcast_id, now)
    finally:
        leases.release(_lease(broadcast_id))


def _run_broadcast(broadcast_id: int, now: datetime | None = None) -> str:
    now = now or utcnow()
    broadcast = db.session.get(Broadcast, broadcast_id)
    if broadcast is None or broadcast.state not in ACTIVE:
        return "stopped"
    company = db.session.get(Company, broadcast.company_id)
    if broadcast.state == "scheduled":
        start = as_utc(broadcast.scheduled_for)
        if start is not None and start > now + timedelta(seconds=1):
            enqueue_fanout(broadcast, at=start)  # woke up early (clock skew): go back to sleep
            return "scheduled"
        moved = db.session.execute(
            update(Broadcast).where(Broadcast.id == broadcast.id, Broadcast.state == "scheduled")
            .values(state="sending", started_at=now).execution_options(synchronize_session=False)).rowcount
        db.session.commit()
        db.session.refresh(broadcast)
        if not moved:
            return "stopped"
    enqueue_unsent(broadcast)
    if broadcast.fanout_finished_at is not None:
        _check_done_later(broadcast, now=True)
        return "expanded"
    quiet_end = schedule.quiet_until(now, broadcast.quiet_hours, company.time_zone)
    if quiet_end is not None:
        broadcast.waiting_until = quiet_end
        db.session.commit()
        enqueue_fanout(broadcast, at=quiet_end)
        return "quiet hours"
    deadline = as_utc(broadcast.expires_at)
    result = expand_chunk(broadcast, expired=deadline is not None and now >= deadline, now=now)
    if result is None:
        return "stopped"
    leases.hold(_lease(broadcast_id), _lease_seconds())
    enqueue_unsent(broadcast)
    if broadcast.fanout_finished_at is not None:
        _check_done_later(broadcast, now=True)
        return "expanded"
    enqueue_fanout(broadcast)
    return f"{result} created"


def expand_chunk(broadcast: Broadcast, expired: bool = False, now: datetime | None = None) -> int | None:
    """Insert the next chunk of messages and advance the resume point, in one transaction.
    Returns how many rows were inserted, or None when another run got there first or the
    broadcast is no longer sending (then nothing is inserted)."""
    now = now or utcnow()
    size = chunk_size()
    after = broadcast.expanded_through_person_id
    chunk = audiences.recipients_after(broadcast.company_id, audiences.Audience.from_json(broadcast.audience),
                                       after, size)
    through = chunk[-1].person_id if chunk else after
    finished = len(chunk) < size
    claimed = db.session.execute(
        update(Broadcast)
        .where(Broadcast.id == broadcast.id, Broadcast.state == "sending",
               Broadcast.expanded_through_person_id == after)
        .values(expanded_through_person_id=through, waiting_until=None,
                fanout_finished_at=now if finished else None)
        .execution_options(synchronize_session=False)).rowcount
    if claimed != 1:
        db.session.rollback()
        return None
    if chunk:
        db.session.execute(insert(Sms.__table__), [_row(broadcast, r, expired, now) for r in chunk])
        db.session.execute(insert(SmsEvent).from_select(
            ["company_id", "sms_id", "kind", "status", "detail", "created_at"],
            select(Sms.company_id, Sms.id, cast(literal("status"), String), Sms.status,
                   cast(literal(f"{'expired' if expired else 'queued'} (broadcast #{broadcast.id})"), String),
                   literal(now, DateTime(timezone=True)))
            .where(Sms.broadcast_id == broadcast.id, Sms.person_id > after, Sms.person_id <= through)))
    db.session.commit()
    db.session.refresh(broadcast)
    return len(chunk)


# The audience query already leaves out numbers phonenumbers judged invalid when they were stored
# (PhoneNumber.valid); per recipient only the E.164 shape is checked again, because a full parse of
# 100,000 numbers would dominate the fan-out.
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
# A body without placeholders is the same for everyone: analyse it once.
_analyse = lru_cache(maxsize=1024)(analyse)


def _row(broadcast: Broadcast, recipient: audiences.RecipientRow, expired: bool, now: datetime) -> dict:
    body = placeholders.render(broadcast.body, recipient.values)
    info = _analyse(body)
    state, error = status.QUEUED, None
    if expired:
        state, error = status.EXPIRED, EXPIRED_REASON
    elif not _E164.match(recipient.number):
        state, error = status.FAILED, f"{recipient.number} is not a valid phone number"
    return {
        "company_id": broadcast.company_id, "direction": "outbound", "person_id": recipient.person_id,
        "number": recipient.number, "body": body, "encoding": info.encoding, "segments": info.segments,
        "status": state, "error": error, "trigger": "broadcast", "trigger_id": broadcast.id,
        "broadcast_id": broadcast.id, "sender_user_id": broadcast.author_user_id, "lane": BULK,
        "attempts": 0, "tried_gateways": [], "expires_at": broadcast.expires_at,
        "created_at": now, "updated_at": now,
    }


def enqueue_unsent(broadcast: Broadcast) -> int:
    """Hand committed queued rows to RQ, unless paused (then resume does it)."""
    db.session.refresh(broadcast)
    if broadcast.state != "sending":
        return 0
    ids = list(db.session.scalars(
        select(Sms.id).where(Sms.broadcast_id == broadcast.id, Sms.status == status.QUEUED,
                             Sms.id > broadcast.enqueued_through_sms_id).order_by(Sms.id)))
    # The company's bulk send job takes every due queued row; when none is queued or running
    # (e.g. a worker died after the last chunk's commit), one is enqueued.
    enqueue_send(broadcast.company_id, BULK)
    if not ids:
        return 0
    db.session.execute(
        update(Broadcast).where(Broadcast.id == broadcast.id, Broadcast.enqueued_through_sms_id < ids[-1])
        .values(enqueued_through_sms_id=ids[-1]).execution_options(synchronize_session=False))
    db.session.commit()
    db.session.refresh(broadcast)
    return len(ids)


def _check_done_later(broadcast: Broadcast, now: bool = False) -> None:
    # Now: FIFO, it runs after the send job just enqueued has had its turn.
    enqueue_done_check(broadcast.id, None if now else DONE_CHECK_EVERY)


def check_done(broadcast_id: int) -> str:
    broadcast = db.session.get(Broadcast, broadcast_id)
    if broadcast is None:
        return "gone"
    leases.hold(_lease(broadcast_id), _lease_seconds())
    try:
        progress.settle(broadcast)
        if broadcast.state == "sending":
            _check_done_later(broadcast)  # retries or slow gateways: look again later
    finally:
        leases.release(_lease(broadcast_id))
    return broadcast.state


def resume_stalled_fanouts(now: datetime | None = None) -> list[int]:
    """Start the job chain again for every sending broadcast that nobody works on (no lease) and
    whose next job is not waiting in the queue: its worker died mid-job, or its retries ran out.
    The fan-out goes on from the stored resume point (expand_chunk never inserts anyone twice);
    a broadcast whose fan-out is finished gets its done check back. Returns the broadcast ids."""
    now = now or utcnow()
    candidates = db.session.scalars(
        select(Broadcast).where(Broadcast.state == "sending",
                                or_(Broadcast.waiting_until.is_(None), Broadcast.waiting_until <= now))
        .order_by(Broadcast.id)).all()
    resumed = []
    for broadcast in candidates:
        # Job status before lease: a job that starts after its status was read counts as waiting.
        # (One that started just before may not hold its lease yet: the duplicate chain this
        # starts stops at its first job, which finds itself superseded.)
        if next_job_waiting(broadcast.id, now) or leases.held(_lease(broadcast.id)):
            continue
        if broadcast.fanout_finished_at is None:
            log.warning("broadcast #%s: fan-out job lost, resuming after person #%s",
                        broadcast.id, broadcast.expanded_through_person_id)
            enqueue_fanout(broadcast)
        else:
            _check_done_later(broadcast, now=True)
        resumed.append(broadcast.id)
    return resumed
