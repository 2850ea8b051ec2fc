"""The status ledger: the one module that writes `Sms.status`.

Every change (queueing, claim, a gateway's answer, a delivery report, cancel, expiry, the sweep)
is a set-based compare-and-set: the UPDATE names the statuses it may move from (forward only, see
mpm.messaging.status), so a late, repeated or racing writer changes nothing, and the event rows of
the messages that did move are inserted in the same transaction. Callers commit.

Loaded `Sms` objects are not refreshed by these statements: reload them (db.session.refresh or a
new query) when you read them afterwards.
"""
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import bindparam, case, insert, literal_column, select, update
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

from mpm.extensions import db
from mpm.messaging import status as st
from mpm.models import Sms, SmsEvent
from mpm.models.base import utcnow

_sms = Sms.__table__
_events = SmsEvent.__table__
DETAIL_LIMIT = 2000


class Unindexed(ColumnElement):
    """A column the planner must not look rows up by. The ledger's statements name their rows by
    id; without fresh statistics SQLite otherwise walks the (company, status) index, every queued
    or sent message of the company, to find 100 ids (a claim cost 3.4 ms per 100 messages instead
    of 1.3 on a 20,000-message queue). SQLite's unary + keeps the index out; others plan well.
    tests/test_planner_statistics.py checks the plans."""

    inherit_cache = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]

    def __init__(self, column):
        self.column = column
        self.type = column.type


@compiles(Unindexed)
def _unindexed_column(element, compiler, **kw):
    return compiler.process(element.column, **kw)


@compiles(Unindexed, "sqlite")
def _unindexed_sqlite(element, compiler, **kw):
    return "+" + compiler.process(element.column, **kw)


def _by_ids(company_id: int, sms_ids, statuses):
    """These messages of the company, if their status is one of `statuses`: found by id."""
    return (_sms.c.id.in_(list(sms_ids)), Unindexed(_sms.c.company_id) == company_id,
            Unindexed(_sms.c.status).in_(list(statuses)))


@dataclass(frozen=True)
class Change:
    """One message's move with its own column values (provider id, cost, error…)."""

    sms_id: int
    detail: str = ""
    gateway: str | None = None
    values: dict = field(default_factory=dict)


def event_row(company_id: int, sms_id: int, kind: str, detail: str, new_status: str | None = None,
              gateway: str | None = None, at: datetime | None = None) -> dict:
    return {"company_id": company_id, "sms_id": sms_id, "kind": kind, "status": new_status, "gateway": gateway,
            "detail": (detail or "")[:DETAIL_LIMIT], "created_at": at or utcnow()}


EVENT_COLUMNS = ("company_id", "sms_id", "kind", "status", "gateway", "detail", "created_at")


# Messages (or events) written by one statement: one statement instead of one per row, because the
# driver hands the GIL to the run's provider thread around every statement and waits to get it back
# (an outcome written row by row took twice as long while a provider call was on its way). A
# hundred rows keep a statement's parameters far below the drivers' limits and its CASE lists short.
CHUNK = 100


def _pieces(rows: Sequence) -> Iterator[Sequence]:
    """`rows` in pieces of CHUNK, the rest in pieces whose sizes are powers of two (37 → 32, 4, 1):
    a statement is compiled once per piece size, and eight sizes (100, 64, 32 … 1) serve batches of
    any length."""
    start = 0
    while len(rows) - start >= CHUNK:
        yield rows[start:start + CHUNK]
        start += CHUNK
    size = 1 << (CHUNK.bit_length() - 1)
    while start < len(rows):
        if len(rows) - start >= size:
            yield rows[start:start + size]
            start += size
        size >>= 1


def _per_row(rows: Sequence[dict], columns: Sequence[str]) -> tuple[tuple, tuple, dict]:
    """The columns whose value every row shares (one parameter, `_column`), the ones that differ (one
    parameter per row, `_column_i`), and those parameters. A row without a column has it None."""
    first = rows[0]
    varying = tuple(c for c in columns if any(row.get(c) != first.get(c) for row in rows))
    shared = tuple(c for c in columns if c not in varying)
    values = {f"_{c}": first.get(c) for c in shared}
    for c in varying:
        values.update({f"_{c}_{i}": row.get(c) for i, row in enumerate(rows)})
    return shared, varying, values


def write_events(rows: Sequence[dict]) -> None:
    """Insert these events (rows made by event_row), up to CHUNK in one statement."""
    for chunk in _pieces(rows):
        n = len(chunk)
        _, varying, values = _per_row(chunk, EVENT_COLUMNS)

        def statement():
            return insert(_events).values([
                {c: bindparam(f"_{c}_{i}" if c in varying else f"_{c}", type_=_events.c[c].type) for c in EVENT_COLUMNS}
                for i in range(n)])

        _execute(("events", n, varying), statement, values)


# Compiled once per statement shape: SQLAlchemy's own execution builds a cache key and processes
# every parameter in Python, most of the cost of writing a 100-message outcome (bench/RESULTS.md).
_COMPILED: dict = {}


def _execute(shape: tuple, build, values: dict) -> int:
    """Run the statement `build()` returns (its values are bindparams named like the keys of
    `values`); `shape` names the statement for the compiled cache. Values are converted by their
    column types, as SQLAlchemy would. Returns how many rows the statement changed."""
    connection = db.session.connection()
    dialect = connection.dialect
    key = (dialect.name, dialect.paramstyle, shape)
    if key not in _COMPILED:
        compiled = build().compile(dialect=dialect)
        # name → (the type's name, its converter): one value in many places (the time of a change,
        # in every event of a batch) is converted once per type.
        processors = {name: (repr(bind.type), processor) for name, bind in compiled.binds.items()
                      if (processor := bind.type.dialect_impl(dialect).bind_processor(dialect))}
        # The statement's own values (a constant compared with, `attempts + 1`).
        constants = {name: bind.effective_value for name, bind in compiled.binds.items() if not bind.required}
        _COMPILED[key] = (str(compiled), compiled.positiontup if compiled.positional else None, processors, constants)
    sql, positions, processors, constants = _COMPILED[key]
    params = {**constants, **values} if constants else dict(values)
    done: dict = {}
    for name, (type_name, convert) in processors.items():
        value = params[name]
        if value is not None:
            converted = done.get((type_name, id(value)))
            if converted is None:
                converted = done[(type_name, id(value))] = convert(value)
            params[name] = converted
    if positions:  # a positional driver (SQLite): the values in the statement's order
        return connection.exec_driver_sql(sql, tuple(params[name] for name in positions)).rowcount
    return connection.exec_driver_sql(sql, params).rowcount


def note(company_id: int, sms_id: int, detail: str, *, kind: str = "note", gateway: str | None = None,
         new_status: str | None = None) -> None:
    """An event that changes no status: an attempt, a remark, a refused report."""
    write_events([event_row(company_id, sms_id, kind, detail, new_status, gateway)])


def record_stored(messages: Iterable[Sms], detail: str) -> None:
    """The first event of rows just inserted with their initial status (flushed, so they have ids)."""
    now = utcnow()
    write_events([event_row(m.company_id, m.id, "status", detail, m.status, None, now) for m in messages])


def move(company_id: int, sms_ids: Sequence[int], new: str, detail: str = "", *, kind: str = "status",
         gateway: str | None = None, values: dict | None = None, sources: Iterable[str] | None = None,
         where=None) -> list[int]:
    """Move these messages to `new` where that is a forward move from their current status (or, with
    `sources`, only from those). Same column values for all. Returns the ids that moved; only they
    get the event. `where` adds a condition (e.g. a broadcast that is not paused)."""
    if not sms_ids:
        return []
    allowed = frozenset(sources) if sources is not None else st.sources_of(new)
    now = utcnow()
    row_values = {"status": new, "updated_at": now, **(values or {})}
    if new == st.FAILED and detail and "error" not in row_values:
        row_values["error"] = detail[-DETAIL_LIMIT:]
    statement = update(_sms).where(*_by_ids(company_id, sms_ids, sorted(allowed))).values(row_values).returning(_sms.c.id)
    if where is not None:
        statement = statement.where(where)
    moved = list(db.session.scalars(statement))
    write_events([event_row(company_id, sid, kind, detail, new, gateway, now) for sid in moved])
    return moved


def move_each(company_id: int, new: str, changes: Sequence[Change], *, kind: str = "status",
              sources: Iterable[str] | None = None) -> list[int]:
    """Like move, with values per message: one UPDATE for all of them (a value that differs between
    messages is chosen by id). Returns the ids that moved."""
    if not changes:
        return []
    allowed = tuple(sorted(frozenset(sources) if sources is not None else st.sources_of(new)))
    now = utcnow()
    moved: set[int] = set()
    for chunk in _pieces(changes):
        moved |= _move_chunk(company_id, new, chunk, allowed, now)
    write_events([event_row(company_id, c.sms_id, kind, c.detail, new, c.gateway, now)
                  for c in changes if c.sms_id in moved])
    return [c.sms_id for c in changes if c.sms_id in moved]


def _move_chunk(company_id: int, new: str, changes: Sequence[Change], allowed: tuple, now: datetime) -> set[int]:
    n = len(changes)
    shared, varying, row = _per_row([c.values for c in changes], sorted({c for ch in changes for c in ch.values}))
    row.update({f"_id_{i}": change.sms_id for i, change in enumerate(changes)})
    row.update(_company_id=company_id, _status=new, _updated_at=now)

    def statement():
        ids = [bindparam(f"_id_{i}", type_=_sms.c.id.type) for i in range(n)]
        assignments = {c: bindparam(f"_{c}", type_=_sms.c[c].type) for c in ("status", "updated_at", *shared)}
        for c in varying:
            assignments[c] = case({ids[i]: bindparam(f"_{c}_{i}", type_=_sms.c[c].type) for i in range(n)},
                                  value=_sms.c.id)
        # The statuses (our own constants) are written into the statement.
        statuses = [literal_column(f"'{s}'") for s in allowed]
        return (update(_sms).where(_sms.c.id.in_(ids),
                                   Unindexed(_sms.c.company_id) == bindparam("_company_id", type_=_sms.c.company_id.type),
                                   Unindexed(_sms.c.status).in_(statuses)).values(assignments))

    ids = [c.sms_id for c in changes]
    if _execute(("move_each", allowed, n, varying, shared), statement, row) == n:
        return set(ids)  # every row moved (the common case): no read-back needed
    return _stamped(ids, new, now)


def _stamped(sms_ids: Sequence[int], new: str, at: datetime, *also) -> set[int]:
    """Of these messages, the ones a compare-and-set moved to `new` at `at` (read back when it moved
    some of them only)."""
    return set(db.session.scalars(select(_sms.c.id).where(
        _sms.c.id.in_(list(sms_ids)), Unindexed(_sms.c.status) == new, Unindexed(_sms.c.updated_at) == at, *also)))


def requeue(company_id: int, changes: Sequence[Change], *, kind: str = "status") -> list[int]:
    """`sending` → `queued`: the one backward move, for messages no gateway took for sure (the
    retry's due time goes in values["next_attempt_at"])."""
    return move_each(company_id, st.QUEUED, changes, kind=kind, sources=(st.SENDING,))


# ----------------------------------------------------------------------------- send engine

def close_unconfirmed(now: datetime, reason: str, limit: int = 10_000) -> int:
    """Unconfirmed messages whose report window passed: they stay `unconfirmed` (a final state
    now), say why, and no longer wait (report_due_at cleared). Returns how many."""
    rows = db.session.execute(select(_sms.c.id, _sms.c.company_id).where(
        _sms.c.status == st.UNCONFIRMED, _sms.c.report_due_at.is_not(None), _sms.c.report_due_at <= now)
        .limit(limit)).all()
    if not rows:
        return 0
    ids = [r[0] for r in rows]
    db.session.execute(update(_sms).where(_sms.c.id.in_(ids), Unindexed(_sms.c.status) == st.UNCONFIRMED)
                       .values(error=reason, report_due_at=None, updated_at=now))
    write_events([event_row(company_id, sid, "status", reason, st.UNCONFIRMED, None, now) for sid, company_id in rows])
    return len(rows)


def claim(company_id: int, sms_ids: Sequence[int], gateway: str, *, where=None, **params) -> list[int]:
    """The messages of one provider request this run may send (a second claimer of the same rows
    gets none of them): `queued` → `sending`. `where()` builds an extra condition (e.g. due now;
    the function keys the compiled cache); its bindparams are given as `params`, and it may name
    the company as bindparam("claim_company_id"). No event here: the request's outcome writes one
    per message, and a crash before it is explained by the sweep's move to `unconfirmed`."""
    if not sms_ids:
        return []
    ids = list(sms_ids)
    now = utcnow()
    row = {f"claim_id_{i}": sms_id for i, sms_id in enumerate(ids)}
    row.update(claim_company_id=company_id, claim_gateway=gateway, claim_at=now, **params)

    def statement():
        # One named parameter per id: the statement of a request size is compiled once, and
        # executing it builds no cache key and expands no IN list.
        return (update(_sms)
                .where(_sms.c.id.in_([bindparam(f"claim_id_{i}", type_=_sms.c.id.type) for i in range(len(ids))]),
                       Unindexed(_sms.c.company_id) == bindparam("claim_company_id", type_=_sms.c.company_id.type),
                       Unindexed(_sms.c.status) == st.QUEUED, *([where()] if where is not None else []))
                .values(status=st.SENDING, gateway=bindparam("claim_gateway", type_=_sms.c.gateway.type),
                        attempts=_sms.c.attempts + 1, waiting_reason=None,
                        updated_at=bindparam("claim_at", type_=_sms.c.updated_at.type)))

    moved = _execute(("claim", len(ids), where), statement, row)
    # Every row moved (the common case): no RETURNING, whose row-by-row fetch hands the GIL to the
    # provider thread once per message. Otherwise ours are the ones this claim stamped.
    if moved == len(ids):
        return ids
    if not moved:
        return []
    return list(_stamped(ids, st.SENDING, now, Unindexed(_sms.c.gateway) == gateway))


# ---------------------------------------------------------------- delivery reports
# The report writer (mpm.messaging.delivery) works out, per message, where a batch of reports takes
# it; these statements apply that: one compare-and-set UPDATE per target status for the whole batch.


@dataclass(frozen=True)
class ReportMove:
    """Where a batch of delivery reports takes one message. `provider_message_id` is set when the
    report was matched to an `unconfirmed` message that had no provider id yet."""

    sms_id: int
    new: str
    error: str | None = None
    provider_message_id: str | None = None


def move_by_reports(company_id: int, moves: Sequence[ReportMove]) -> set[int]:
    """Apply the moves, forward only, in one UPDATE per target status. Returns the ids that moved;
    the caller writes their events (with the rest of the batch's, in one INSERT). The wait for a
    report (report_due_at) is over for every message that moved."""
    moved: set[int] = set()
    by_status: dict[str, list[ReportMove]] = {}
    for m in moves:
        by_status.setdefault(m.new, []).append(m)
    now = utcnow()
    for new, group in by_status.items():
        values = {"status": new, "updated_at": now, "report_due_at": None}
        errors = {m.sms_id: m.error[-DETAIL_LIMIT:] for m in group if m.error}
        if errors:
            values["error"] = case(errors, value=_sms.c.id, else_=_sms.c.error)
        provider_ids = {m.sms_id: m.provider_message_id for m in group if m.provider_message_id}
        if provider_ids:
            values["provider_message_id"] = case(provider_ids, value=_sms.c.id, else_=_sms.c.provider_message_id)
        statement = (update(_sms).where(*_by_ids(company_id, [m.sms_id for m in group], sorted(st.sources_of(new))))
                     .values(values).returning(_sms.c.id))
        moved.update(db.session.scalars(statement))
    return moved
