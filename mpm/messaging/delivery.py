"""What providers' callbacks change: delivery status of outbound SMS and Viber subscriptions.

Delivery reports come by the thousand in bursts, so the callback endpoint only appends them to a
durable queue in Redis (a stream with a consumer group) and answers; the report writer (a job on the
`high` lane) drains it in batches and applies each batch with set-based statements through the
ledger. A report leaves the stream only after its batch is committed: a killed writer or a database
outage leaves it there for the next writer. Each batch's transaction records which stream entries it
applied (AppliedReports), so a batch committed but not yet removed is not applied twice.

Status only moves forward (mpm.messaging.status): a late or repeated report changes nothing but the
event log. A report for a provider id we do not know yet (it beat the send's answer) is parked in
the database and applied once the id is stored; an AfricasTalking report for an unknown id may
belong to an `unconfirmed` message (we never saw the answer that carried its id): it is matched by
company, gateway and phone number while the message still waits for its report.
"""
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from redis.exceptions import ResponseError
from sqlalchemy import delete, exists, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from mpm.extensions import db
from mpm.gateways.base import DeliveryReport
from mpm.messaging import ledger
from mpm.messaging import status as st
from mpm.models import AppliedReports, GatewaySetting, ParkedReport, Person, Sms
from mpm.models.base import utcnow
from mpm import jobs, leases
from mpm.queue import redis_connection

log = logging.getLogger(__name__)

STREAM = "mpm:reports"
GROUP = "writers"
# One writer at a time (the lease, with the running writer's token; a writer stuck past its lease
# stops after its batch when it finds another holder). Its unacknowledged entries are read again
# first by the next one; two writers at once may both read that backlog: the second waits for the
# first one's batch to commit and then only acknowledges it (AppliedReports).
CONSUMER = "writer"
WRITER_LEASE = "report-writer"
STREAM_EPOCH = "mpm:reports:epoch"  # changes when the stream is created again (see _stream_epoch)
PARKED_READY = "mpm:reports:parked-ready"  # set when provider ids were stored that parked reports may wait for
BATCH = 1000
BUDGET_SECONDS = 1.5
CYCLE_SECONDS = 0.25  # at most one batch per this interval unless a full batch waits: fewer, larger transactions
IDLE_BLOCK_MS = 200  # how long an idle writer waits for more before it ends (config REPORT_WRITER_IDLE_MS)


@dataclass(frozen=True)
class QueuedReport:
    """A report as it waits in the stream or in the parked table."""

    company_id: int
    gateway: str
    provider_message_id: str
    status: str
    detail: str = ""
    raw_status: str = ""
    number: str = ""
    parked_id: int | None = None


# ---------------------------------------------------------------- receiving (the callback endpoint)


def receive_delivery_reports(company_id: int, gateway: str, reports: list[DeliveryReport]) -> None:
    """Append authentic, valid reports to the durable queue and make sure a writer is on it."""
    entries = [json.dumps([company_id, gateway, report.provider_message_id, report.status, report.detail,
                           report.raw_status, report.number]) for report in reports]
    # One command on this hot path: append, then take the writer's lease if it is free (ensure_report_writer).
    if _append_script()(keys=[STREAM, leases.key(WRITER_LEASE)], args=[_lease_seconds(), *entries]):
        _enqueue_writer()


_APPEND = """
for i = 2, #ARGV do redis.call('XADD', KEYS[1], '*', 'r', ARGV[i]) end
return redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1])
"""


def _append_script():
    ext = current_app.extensions
    if "mpm_report_append" not in ext:
        ext["mpm_report_append"] = redis_connection().register_script(_APPEND)
    return ext["mpm_report_append"]


def ensure_report_writer() -> bool:
    """Enqueue the writer when reports wait (in Redis or parked) and no writer holds the lease.
    True when a writer job was enqueued."""
    waiting = redis_connection().xlen(STREAM) > 0 or _any_parked()
    if not waiting or not leases.take(WRITER_LEASE, _lease_seconds()):
        return False
    _enqueue_writer()
    return True


def _lease_seconds() -> int:
    return current_app.config["REPORT_WRITER_LEASE_SECONDS"]


def _enqueue_writer() -> None:
    jobs.enqueue_report_writer()


def apply_parked_reports(company_id: int, gateway: str) -> None:
    """Provider ids of this company and gateway were just stored: if reports wait for ids, the
    writer applies the ones that now match (on its next cycle)."""
    waiting = db.session.scalar(select(ParkedReport.id).where(
        ParkedReport.company_id == company_id, ParkedReport.gateway == gateway).limit(1))
    if waiting is not None:
        redis_connection().set(PARKED_READY, "1")
        ensure_report_writer()


# Callback secrets, cached per process for a few seconds: the report endpoint then needs no database.
# Redis keeps a digest of each (never the secret) so that a process can still check a token while the
# database is down: the reports then wait in Redis instead of being refused.
_SECRET_TTL = 5.0
_DIGEST_KEY = "mpm:callback-secret-digest:{}:{}"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def callback_secret_matches(company_id: int, gateway: str, secret: str | None) -> bool:
    """Whether `secret` is the company's callback secret of this gateway. A changed secret takes
    effect within a few seconds in every process."""
    if company_id > 2**31 - 1 or not secret:
        return False
    cache = current_app.extensions.setdefault("mpm_callback_secrets", {})
    key = (company_id, gateway)
    cached = cache.get(key)
    now = time.monotonic()
    if cached is None or cached[0] < now:
        try:
            stored = db.session.scalar(select(GatewaySetting.callback_secret).where(
                GatewaySetting.company_id == company_id, GatewaySetting.gateway == gateway))
        except SQLAlchemyError:
            db.session.rollback()
            return _matches_kept_digest(company_id, gateway, secret)
        digest = _digest(stored) if stored else ""
        if cached is None or cached[1] != digest:
            redis_connection().set(_DIGEST_KEY.format(company_id, gateway), digest, ex=7 * 24 * 3600)
        if len(cache) > 10_000:  # forged company ids must not grow the cache without end
            cache.clear()
        cached = cache[key] = (now + _SECRET_TTL, digest)
    return bool(cached[1]) and hmac.compare_digest(cached[1], _digest(secret))


def _matches_kept_digest(company_id: int, gateway: str, secret: str) -> bool:
    kept = redis_connection().get(_DIGEST_KEY.format(company_id, gateway))
    if kept is None:
        raise DatabaseUnavailable("cannot check the callback token while the database is down")
    return bool(kept) and hmac.compare_digest(kept.decode(), _digest(secret))


class DatabaseUnavailable(RuntimeError):
    """Neither the database nor Redis can tell whether a callback token is right."""


# ---------------------------------------------------------------- the writer (an RQ job)


def write_reports() -> int:
    """Drain the stream for about BUDGET_SECONDS; re-enqueue itself while reports remain. Returns
    how many reports it applied or parked. Database trouble: the batch stays in Redis and is tried
    again after a short backoff."""
    r = redis_connection()
    token = uuid.uuid4().hex
    leases.hold(WRITER_LEASE, _lease_seconds(), token)
    _create_group(r)
    _drop_stale_parked_reports()
    deadline = time.monotonic() + BUDGET_SECONDS
    done = failures = 0
    while time.monotonic() < deadline:
        if leases.holder(WRITER_LEASE) != token:
            return done  # this writer's lease lapsed and another writer took over: one at a time
        leases.hold(WRITER_LEASE, _lease_seconds(), token)
        started = time.monotonic()
        try:
            handled, more = _cycle(r)
            failures = 0
        except SQLAlchemyError as exc:
            db.session.rollback()
            failures += 1
            log.warning("report writer: database unavailable (%s), the reports wait in Redis", type(exc).__name__)
            time.sleep(min(0.2 * 2 ** failures, 2.0))
            continue
        done += handled
        if not handled and not more:
            break
        if not more:
            time.sleep(max(0.0, CYCLE_SECONDS - (time.monotonic() - started)))
    if r.xlen(STREAM) > 0 or failures:
        _enqueue_writer()  # still ours: keep the lease
        return done
    leases.release_if_holder(WRITER_LEASE, token)
    # A report (or a stored id) that came after the last read but before the release found the lease held.
    if r.xlen(STREAM) > 0 or r.exists(PARKED_READY):
        ensure_report_writer()
    return done


def _create_group(r) -> None:
    try:
        r.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
        return
    r.set(STREAM_EPOCH, uuid.uuid4().hex)  # a new stream: the ids of the last applied batch are not its ids


def _stream_epoch(r) -> str:
    """Which stream the ids of an applied batch belong to: a new one when the stream or its group
    was created again (a flushed or replaced Redis), whose ids may repeat the old ones."""
    epoch = r.get(STREAM_EPOCH)
    if epoch is None:
        r.set(STREAM_EPOCH, uuid.uuid4().hex, nx=True)
        epoch = r.get(STREAM_EPOCH)
    return epoch.decode()


def _cycle(r) -> tuple[int, bool]:
    """One batch: this consumer's unacknowledged entries first (a batch a crash or outage left),
    else new ones; plus parked reports whose id now exists. Returns (reports handled, whether more
    may be waiting)."""
    entries = (_read(r, "0", block=None)
               or _read(r, ">", block=current_app.config.get("REPORT_WRITER_IDLE_MS", IDLE_BLOCK_MS)))
    r.delete(PARKED_READY)  # any id stored before this point is seen by the parked query below
    # Entries a committed batch already applied (its writer died before removing them, or a second
    # writer holds them too) are only acknowledged.
    epoch = _stream_epoch(r)
    first, last = _applied_range(epoch)
    fresh = [(entry_id, fields) for entry_id, fields in entries if not first <= _stream_id(entry_id) <= last]
    reports = [_from_entry(fields) for _, fields in fresh]
    parked = _parked_now_matching()
    if not reports and not parked:
        db.session.rollback()
        if entries:
            _acknowledge(r, entries)
        return 0, bool(entries)
    try:
        parked_applied = apply_reports(parked + reports)
        if fresh:
            _mark_applied(epoch, fresh[0][0], fresh[-1][0])
        db.session.commit()
    except (DataError, IntegrityError):  # a report the database will not take must not block the others
        db.session.rollback()
        parked_applied = _apply_one_by_one(parked, fresh, epoch)
    if entries:
        _acknowledge(r, entries)
    # A parked report that still finds no message (two reports for one unconfirmed message) is not work done.
    return len(reports) + parked_applied, len(entries) >= BATCH or parked_applied >= BATCH


def _acknowledge(r, entries: list) -> None:
    ids = [entry_id for entry_id, _ in entries]
    pipe = r.pipeline(transaction=False)
    pipe.xack(STREAM, GROUP, *ids)
    pipe.xdel(STREAM, *ids)
    pipe.execute()


def _apply_one_by_one(parked: list[QueuedReport], fresh: list, epoch: str) -> int:
    """Each report in its own transaction (the stream's with the mark of how far it got)."""
    parked_applied = 0
    for report in parked:
        try:
            parked_applied += apply_reports([report])
            db.session.commit()
        except (DataError, IntegrityError):
            db.session.rollback()
            log.exception("report writer: dropped a delivery report the database refused: %r", report)
    for entry_id, fields in fresh:
        report = _from_entry(fields)
        try:
            first, last = _applied_range(epoch)  # locked again: another writer may have applied it meanwhile
            if not first <= _stream_id(entry_id) <= last:
                apply_reports([report])
                _mark_applied(epoch, fresh[0][0], entry_id)
            db.session.commit()
        except (DataError, IntegrityError):
            db.session.rollback()
            log.exception("report writer: dropped a delivery report the database refused: %r", report)
    return parked_applied


def _stream_id(entry_id) -> tuple[int, int]:
    ms, _, seq = _text(entry_id).partition("-")
    return int(ms), int(seq or 0)


def _applied_range(epoch: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """The stream ids of the last committed batch, if it was of this stream (else an empty range).
    Locks the record until this batch commits (PostgreSQL; SQLite has one writer at a time anyway),
    so a second writer waits for the first one's batch and then sees it."""
    query = (select(AppliedReports.epoch, AppliedReports.first_id, AppliedReports.last_id)
             .where(AppliedReports.stream == STREAM).with_for_update())
    row = db.session.execute(query).first()
    if row is None:  # the first batch: the record a second writer waits on (its insert waits for ours)
        _upsert_applied_range(None, None, None, replace=False)
        row = db.session.execute(query).first()
    if row.epoch != epoch or row.first_id is None:
        return (1, 0), (0, 0)
    return _stream_id(row.first_id), _stream_id(row.last_id)


def _mark_applied(epoch: str, first_id, last_id) -> None:
    """In the batch's transaction: these entries are applied (ids as the stream gives them)."""
    _upsert_applied_range(epoch, _text(first_id), _text(last_id), replace=True)


def _upsert_applied_range(epoch: str | None, first_id: str | None, last_id: str | None, *, replace: bool) -> None:
    dialect = db.session.get_bind().dialect.name
    values = {"epoch": epoch, "first_id": first_id, "last_id": last_id}
    statement = (postgresql_insert if dialect == "postgresql" else sqlite_insert)(AppliedReports).values(
        stream=STREAM, **values)
    db.session.execute(statement.on_conflict_do_update(index_elements=["stream"], set_=values) if replace
                       else statement.on_conflict_do_nothing(index_elements=["stream"]))


def _text(entry_id) -> str:
    return entry_id.decode() if isinstance(entry_id, bytes) else entry_id


def _read(r, position: str, block: int | None) -> list:
    try:
        answer = r.xreadgroup(GROUP, CONSUMER, {STREAM: position}, count=BATCH, block=block)
    except ResponseError as exc:  # the stream or group was deleted (e.g. a flushed Redis)
        if "NOGROUP" not in str(exc):
            raise
        _create_group(r)
        return []
    return answer[0][1] if answer else []


def _from_entry(fields: dict) -> QueuedReport:
    company_id, gateway, provider_id, new, detail, raw, number = json.loads(fields[b"r"])
    return QueuedReport(int(company_id), gateway, provider_id, new, detail, raw, number)


# ---------------------------------------------------------------- applying a batch


def apply_reports(reports: list[QueuedReport]) -> int:
    """Apply reports in arrival order, set-based, without committing: per company and gateway one
    lookup of provider ids, the matching of unknown AfricasTalking ids to unconfirmed messages, one
    compare-and-set UPDATE per target status; one INSERT of events for all; unknown ids parked.
    Returns how many of the given parked reports found their message (and left the parking)."""
    groups: dict[tuple[int, str], list[QueuedReport]] = defaultdict(list)
    for report in reports:
        groups[(report.company_id, report.gateway)].append(report)
    events: list[dict] = []
    to_park: list[QueuedReport] = []
    applied_parked: list[int] = []
    for (company_id, gateway), group in groups.items():
        known = _known_messages(company_id, gateway, {rep.provider_message_id for rep in group})
        matched = _match_unconfirmed(company_id, gateway, [rep for rep in group if rep.provider_message_id not in known])
        known.update({pid: (sms_id, st.UNCONFIRMED) for pid, sms_id in matched.items()})
        per_message: dict[int, list[QueuedReport]] = defaultdict(list)
        for rep in group:
            if rep.provider_message_id in known:
                per_message[known[rep.provider_message_id][0]].append(rep)
                if rep.parked_id is not None:
                    applied_parked.append(rep.parked_id)
            elif rep.parked_id is None:
                to_park.append(rep)
        current = {sms_id: cur for sms_id, cur in known.values()}
        provider_of = {sms_id: pid for pid, sms_id in matched.items()}
        events += _apply_group(company_id, gateway, per_message, current, provider_of)
    ledger.write_events(events)
    if applied_parked:
        db.session.execute(delete(ParkedReport).where(ParkedReport.id.in_(applied_parked)))
    _park(to_park)
    return len(applied_parked)


def _known_messages(company_id: int, gateway: str, provider_ids: set[str]) -> dict[str, tuple[int, str]]:
    rows = db.session.execute(
        select(Sms.id, Sms.status, Sms.provider_message_id).where(
            Sms.gateway == gateway, Sms.provider_message_id.in_(provider_ids), Sms.company_id == company_id,
            Sms.direction == "outbound"))
    return {pid: (sms_id, current) for sms_id, current, pid in rows}


def _match_unconfirmed(company_id: int, gateway: str, unknown: list[QueuedReport]) -> dict[str, int]:
    """provider id → id of the unconfirmed message it most likely belongs to: same company, gateway
    and number, still waiting for its report; oldest first, one provider id per message."""
    if gateway != "africastalking":
        return {}
    numbers = {rep.number for rep in unknown if rep.number}
    if not numbers:
        return {}
    candidates: dict[str, list[int]] = defaultdict(list)
    for sms_id, number in db.session.execute(
            select(Sms.id, Sms.number).where(
                Sms.company_id == company_id, Sms.gateway == gateway, Sms.direction == "outbound",
                Sms.status == st.UNCONFIRMED, Sms.provider_message_id.is_(None), Sms.report_due_at > utcnow(),
                Sms.number.in_(numbers))
            .order_by(Sms.created_at, Sms.id)):
        candidates[number].append(sms_id)
    matched: dict[str, int] = {}
    for rep in unknown:
        pid = rep.provider_message_id
        if pid not in matched and candidates.get(rep.number):
            matched[pid] = candidates[rep.number].pop(0)
    return matched


def _apply_group(company_id: int, gateway: str, per_message: dict[int, list[QueuedReport]],
                 current: dict[int, str], provider_of: dict[int, str]) -> list[dict]:
    """Walk each message's reports in order from its stored status: the forward ones move it, the
    others are logged as ignored. Then one UPDATE per target status; a message that another writer
    moved meanwhile is read again and its reports logged against what it is now."""
    now = utcnow()
    plans: dict[int, list[tuple[QueuedReport, bool]]] = {}
    moves: list[ledger.ReportMove] = []
    for sms_id, reps in per_message.items():
        status_now, plan, error = current[sms_id], [], None
        for rep in reps:
            forward = st.can_move(status_now, rep.status)
            if forward:
                status_now = rep.status
                error = rep.detail if rep.status == st.FAILED and rep.detail else error
            plan.append((rep, forward))
        plans[sms_id] = plan
        if status_now != current[sms_id]:
            moves.append(ledger.ReportMove(sms_id, status_now, error, provider_of.get(sms_id)))
    moved = ledger.move_by_reports(company_id, moves)
    lost_race = [m.sms_id for m in moves if m.sms_id not in moved]
    if lost_race:
        current.update(db.session.execute(select(Sms.id, Sms.status).where(Sms.id.in_(lost_race))).tuples().all())
    events = []
    for sms_id, plan in plans.items():
        ok = sms_id in moved
        status_now = current[sms_id]
        for rep, forward in plan:
            if forward and ok:
                detail, status_now = rep.detail, rep.status
            else:
                detail = f"ignored {rep.status}: message is already {status_now}. {rep.detail}".strip()
            events.append(ledger.event_row(company_id, sms_id, "callback", detail, rep.status, gateway, now))
    return events


# ---------------------------------------------------------------- parking


def _park(reports: list[QueuedReport]) -> None:
    """Keep reports for ids we do not know yet, at most REPORT_PARK_LIMIT per company (a flood of
    signed reports for made-up ids must not fill the disk)."""
    if not reports:
        return
    limit = current_app.config.get("REPORT_PARK_LIMIT", 100_000)
    by_company: dict[int, list[QueuedReport]] = defaultdict(list)
    for rep in reports:
        by_company[rep.company_id].append(rep)
    rows = []
    now = utcnow()
    for company_id, reps in by_company.items():
        room = limit - db.session.scalar(select(func.count()).select_from(ParkedReport)
                                         .where(ParkedReport.company_id == company_id))
        if room < len(reps):
            log.warning("report writer: company %s has %s parked reports (limit %s): dropped %s reports for "
                        "unknown ids", company_id, limit - room, limit, len(reps) - max(room, 0))
        rows += [{"company_id": company_id, "gateway": rep.gateway, "provider_message_id": rep.provider_message_id[:120],
                  "status": rep.status, "detail": rep.detail[:ledger.DETAIL_LIMIT], "raw_status": rep.raw_status[:40],
                  "number": rep.number[:20], "received_at": now} for rep in reps[:max(room, 0)]]
    if rows:
        db.session.execute(insert(ParkedReport.__table__), rows)


def _parked_now_matching() -> list[QueuedReport]:
    """Parked reports whose provider id is now stored, or (AfricasTalking) whose number has an
    unconfirmed message waiting for its report; oldest first."""
    p = ParkedReport
    if not _any_parked():
        return []  # the common case, at the cost of one look at an empty table
    # Correlated EXISTS: the few parked reports drive, each looks its message up by index (a join
    # let SQLite walk the whole sms table instead).
    by_id = exists().where(Sms.company_id == p.company_id, Sms.gateway == p.gateway,
                           Sms.provider_message_id == p.provider_message_id, Sms.direction == "outbound")
    by_number = exists().where(Sms.company_id == p.company_id, Sms.gateway == p.gateway, Sms.number == p.number,
                               ledger.Unindexed(Sms.status) == st.UNCONFIRMED, Sms.provider_message_id.is_(None),
                               Sms.report_due_at > utcnow())
    rows = db.session.execute(select(p).where(or_(by_id, (p.gateway == "africastalking") & by_number))
                              .order_by(p.id).limit(BATCH)).scalars()
    return [QueuedReport(row.company_id, row.gateway, row.provider_message_id, row.status, row.detail, row.raw_status,
                         row.number, parked_id=row.id) for row in rows]


def _any_parked() -> bool:
    return db.session.scalar(select(ParkedReport.id).limit(1)) is not None


def _drop_stale_parked_reports() -> None:
    """Parked reports older than the longest message validity will find no message any more."""
    hours = current_app.config.get("REPORT_PARK_HOURS", 7 * 24)
    try:
        dropped = db.session.execute(delete(ParkedReport).where(
            ParkedReport.received_at < utcnow() - timedelta(hours=hours))).rowcount
        db.session.commit()
    except SQLAlchemyError:
        db.session.rollback()
        return
    if dropped:
        log.warning("report writer: dropped %s parked delivery reports older than %s hours: no message with "
                    "their provider id was ever stored", dropped, hours)


# ---------------------------------------------------------------- Viber


def forget_viber_subscriber(company_id: int, viber_id: str) -> int:
    """The person left the operator's Viber bot: Viber can no longer reach them."""
    result = db.session.execute(update(Person).where(Person.company_id == company_id, Person.viber_id == viber_id)
                                .values(viber_id=None).execution_options(synchronize_session=False))
    db.session.commit()
    return result.rowcount
