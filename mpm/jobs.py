"""Every RQ job of the app, and the typed helpers that enqueue them. Job functions are thin: they
call the domain. Domain modules enqueue through these helpers and never import mpm.queue.

Sending is one job per (company, lane) at a time: `send` drains that lane's due queued messages
for a short time budget, then goes to the back of its queue again (mpm.messaging.dispatch). A
Redis lease marks "a send job of this lane is queued or running", so queueing a message enqueues a
job only when none is; the sweep starts one for due messages whose lane has no live lease.
"""
import time
import uuid
from datetime import datetime, timedelta

from flask import current_app
from rq import Retry, get_current_job
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry

from mpm import leases
from mpm.models.base import utcnow
from mpm.queue import BULK, HIGH, queue, redis_connection

QUEUED_LEASE_SECONDS = 120  # a send job waiting in its queue; other companies' jobs come first


def drain_lease(company_id: int, lane: str) -> str:
    return f"drain:{company_id}:{lane}"


def running_lease_seconds() -> int:
    """A running send job renews its lease after a request (at most once a second); it lapses this
    long after the worker died, so the sweep notices a crash within a minute or so."""
    timeout = float(current_app.config.get("GATEWAY_TIMEOUT_SECONDS", 10))
    return int(max(45, 2 * (timeout + 5) + 10))


# ------------------------------------------------------------------------------------- sending

def send(company_id: int, lane: str, token: str | None = None) -> dict:
    """RQ job: send the due queued messages of this company's lane for a while, then hand over."""
    from mpm.extensions import db
    from mpm.messaging import dispatch

    name = drain_lease(company_id, lane)
    ttl = running_lease_seconds()
    if token is None or leases.holder(name) != token:
        token = uuid.uuid4().hex
        if not leases.take(name, ttl, token):
            return {"busy": 1}  # another send job of this lane is queued or running
    leases.hold(name, ttl, token)
    renewed_at = time.monotonic()

    def renew() -> None:
        nonlocal renewed_at
        if time.monotonic() - renewed_at >= 1.0:  # a Redis round trip per request costs more than it tells
            leases.hold(name, ttl, token)
            renewed_at = time.monotonic()

    try:
        result = dispatch.drain(company_id, lane, budget=current_app.config["SMS_DRAIN_BUDGET_SECONDS"], renew=renew)
    finally:
        db.session.rollback()
        leases.release_if_holder(name, token)
    # Released first, then looked again: a message queued while this job held the lease is seen here.
    if result.more:
        enqueue_send(company_id, lane)
    elif result.resume_at is not None:
        enqueue_send(company_id, lane, at=result.resume_at)
    else:
        due = dispatch.next_due(company_id, lane)
        db.session.rollback()
        if due is not None:
            enqueue_send(company_id, lane, at=due)
    return result.counts


def enqueue_send(company_id: int, lane: str, at: datetime | None = None) -> None:
    """After commit: make sure a send job will drain this lane (now, or at `at`)."""
    now = utcnow()
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=now.tzinfo)
    if at is None or at <= now + timedelta(milliseconds=500):
        token = uuid.uuid4().hex
        if leases.take(drain_lease(company_id, lane), QUEUED_LEASE_SECONDS, token):
            queue(lane).enqueue(send, company_id, lane, token, result_ttl=60, failure_ttl=3600)
        return
    # Later work: one scheduled job per lane and moment is enough; an earlier one covers a later.
    redis = redis_connection()
    key = f"mpm:drain-at:{company_id}:{lane}"
    earliest = redis.get(key)
    if earliest is not None and now.timestamp() < float(earliest) <= at.timestamp():
        return
    redis.set(key, at.timestamp(), ex=int((at - now).total_seconds()) + 60)
    queue(lane).enqueue_at(at, send, company_id, lane, None, result_ttl=60, failure_ttl=3600)


# ------------------------------------------------------------------------------------- broadcasts
# A broadcast moves on through one chain of jobs (fan-out chunks, then done checks), each
# enqueueing the next. The chain's next job is recorded, so the sweep can tell a broadcast whose
# job waits in the queue from one whose job died with its worker (mpm.broadcasts.fanout.
# resume_stalled_fanouts), and so a stray duplicate job (one given up for dead that runs after all,
# or a resume that raced a live job) ends its chain instead of running beside it.

def fanout(broadcast_id: int) -> str:
    """RQ job: expand the next chunk of a broadcast's audience into messages."""
    from mpm.broadcasts.fanout import run_broadcast

    if _superseded(broadcast_id):
        return "superseded"
    return run_broadcast(broadcast_id)


def broadcast_done_check(broadcast_id: int) -> str:
    """RQ job: settle a broadcast once none of its messages is in flight."""
    from mpm.broadcasts.fanout import check_done

    if _superseded(broadcast_id):
        return "superseded"
    return check_done(broadcast_id)


def enqueue_fanout(broadcast_id: int, at: datetime | None = None) -> Job:
    """After commit. A failed fan-out job is retried; chunks already committed are never redone."""
    retry = Retry(max=3, interval=[10, 60, 300])
    if at is not None:
        job = queue(BULK).enqueue_at(at, fanout, broadcast_id, retry=retry)
    else:
        job = queue(BULK).enqueue(fanout, broadcast_id, retry=retry)
    _record_next_job(broadcast_id, job)


def enqueue_done_check(broadcast_id: int, after: timedelta | None = None) -> Job:
    if after is None:
        job = queue(BULK).enqueue(broadcast_done_check, broadcast_id)
    else:
        job = queue(BULK).enqueue_in(after, broadcast_done_check, broadcast_id)
    _record_next_job(broadcast_id, job)


NEXT_JOB = "mpm:broadcast:next-job:"
_NEXT_JOB_TTL = 8 * 24 * 3600  # longer than any broadcast's validity
_WAITING = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED)
# RQ's scheduler dies with its worker, and another worker takes it over only minutes later.
SCHEDULER_LATE = timedelta(seconds=20)


def _record_next_job(broadcast_id: int, job: Job) -> None:
    redis_connection().set(NEXT_JOB + str(broadcast_id), job.id, ex=_NEXT_JOB_TTL)


def next_job_waiting(broadcast_id: int, now: datetime | None = None) -> bool:
    """True while the broadcast's next job sits in the queue, or waits for its time or a retry.
    A job whose time is long past is not waiting but stuck (its scheduler died)."""
    connection = redis_connection()
    job_id = connection.get(NEXT_JOB + str(broadcast_id))
    if job_id is None:
        return False
    try:
        job = Job.fetch(job_id.decode(), connection=connection)
        state = job.get_status()
        if state == JobStatus.SCHEDULED:
            due = ScheduledJobRegistry(job.origin, connection=connection).get_scheduled_time(job)
            return due >= (now or utcnow()) - SCHEDULER_LATE
    except NoSuchJobError:
        return False
    return state in _WAITING


def _superseded(broadcast_id: int) -> bool:
    """True when the running job is no longer the broadcast's recorded next job."""
    job = get_current_job()
    if job is None:  # called directly, not from a worker
        return False
    recorded = redis_connection().get(NEXT_JOB + str(broadcast_id))
    return recorded is not None and recorded.decode() != job.id


# ------------------------------------------------------------------------------------- upkeep

def sweep() -> dict:
    """RQ job: the periodic sweep (mpm.messaging.sweep)."""
    from mpm.messaging.sweep import sweep as run_sweep

    return run_sweep()


def enqueue_sweep() -> None:
    queue(HIGH).enqueue(sweep, job_timeout=300)


def write_reports() -> int:
    """RQ job: apply queued delivery reports in batches (mpm.messaging.delivery)."""
    from mpm.messaging.delivery import write_reports as write

    return write()


def enqueue_report_writer() -> None:
    queue(HIGH).enqueue(write_reports, result_ttl=0, failure_ttl=3600)


def refresh_rollups() -> dict:
    """RQ job: re-aggregate the delivery rollups of the buckets changed since the last run."""
    from mpm.insight.rollups import refresh_rollups as refresh

    return refresh()


def watch_alerts():
    """RQ job: work out the alerts of every company (banner cache, device polls, e-mails)."""
    from mpm.insight.alerts import watch_alerts as watch

    return watch()


def refresh_planner_statistics() -> None:
    """RQ job: SQLite keeps no statistics unless asked. Without them its planner may take an update
    of a hundred messages by id through a status index and walk every `sent` message of the
    company; a sampled ANALYZE takes milliseconds on millions of rows. (PostgreSQL's autovacuum
    keeps its own.)"""
    from mpm.extensions import db

    if db.engine.dialect.name != "sqlite":
        return
    with db.engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA analysis_limit=400")
        conn.exec_driver_sql("ANALYZE")


def enqueue_minute_jobs() -> None:
    """With each sweep: the rollups behind the charts, the alerts, SQLite's planner statistics."""
    for job in (refresh_rollups, watch_alerts, refresh_planner_statistics):
        queue(HIGH).enqueue(job, job_timeout=600)
