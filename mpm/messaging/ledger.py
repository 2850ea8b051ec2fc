"""The status ledger: the one module that writes `Sms.status`.

Every change (queueing, claim, a gateway's answer, a delivery report, cancel, expiry, the sweep)
is a set-based compare-and-set: the UPDATE names the statuses it may move from (forward only, see
mpm.messaging.status), so a late, repeated or racing writer changes nothing, and the event rows of
the messages that did move are inserted in the same transaction. Callers commit.

Loaded `Sms` objects are not refreshed by these statements: reload them (db.session.refresh or a
new query) when you read them afterwards.
"""
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import bindparam, insert, literal_column, select, update

from mpm.extensions import db
from mpm.messaging import status as st
from mpm.models import Sms, SmsEvent
from mpm.models.base import utcnow

_sms = Sms.__table__
_events = SmsEvent.__table__
DETAIL_LIMIT = 2000


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


def write_events(rows: Sequence[dict]) -> None:
    if rows:
        db.session.execute(insert(_events), list(rows))


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
    statement = (update(_sms)
                 .where(_sms.c.company_id == company_id, _sms.c.id.in_(list(sms_ids)), _sms.c.status.in_(allowed))
                 .values(row_values).returning(_sms.c.id))
    if where is not None:
        statement = statement.where(where)
    moved = list(db.session.scalars(statement))
    write_events([event_row(company_id, sid, kind, detail, new, gateway, now) for sid in moved])
    return moved


def move_each(company_id: int, new: str, changes: Sequence[Change], *, kind: str = "status",
              sources: Iterable[str] | None = None) -> list[int]:
    """Like move, with values per message: one executemany UPDATE and one read-back. Returns the ids
    that moved."""
    if not changes:
        return []
    allowed = frozenset(sources) if sources is not None else st.sources_of(new)
    now = utcnow()
    columns = sorted({c for change in changes for c in change.values})
    params = []
    for change in changes:
        row = {"_id": change.sms_id, **{f"_{c}": change.values.get(c) for c in columns}}
        params.append(row)
    assignments = {"status": new, "updated_at": now,
                   **{c: bindparam(f"_{c}", type_=_sms.c[c].type) for c in columns}}
    # An executemany cannot carry an expanding IN parameter: the statuses (our own constants) are
    # written into the statement.
    statuses = [literal_column(f"'{s}'") for s in sorted(allowed)]
    statement = (update(_sms)
                 .where(_sms.c.company_id == company_id, _sms.c.id == bindparam("_id"), _sms.c.status.in_(statuses))
                 .values(assignments))
    ids = [c.sms_id for c in changes]
    if db.session.execute(statement, params).rowcount == len(ids):
        moved = set(ids)  # every row moved (the common case): no read-back needed
    else:
        moved = set(db.session.scalars(select(_sms.c.id).where(
            _sms.c.id.in_(ids), _sms.c.status == new, _sms.c.updated_at == now)))
    write_events([event_row(company_id, c.sms_id, kind, c.detail, new, c.gateway, now)
                  for c in changes if c.sms_id in moved])
    return [c.sms_id for c in changes if c.sms_id in moved]


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
    db.session.execute(update(_sms).where(_sms.c.id.in_(ids), _sms.c.status == st.UNCONFIRMED)
                       .values(error=reason, report_due_at=None, updated_at=now))
    write_events([event_row(company_id, sid, "status", reason, st.UNCONFIRMED, None, now) for sid, company_id in rows])
    return len(rows)


def claim(company_id: int, sms_ids: Sequence[int], gateway: str, where=None) -> list[int]:
    """`queued` → `sending` for one provider request: the messages this request may send (a second
    claimer of the same rows gets none of them). No event here: the request's outcome writes one per
    message, and a crash before it is explained by the sweep's move to `unconfirmed`."""
    if not sms_ids:
        return []
    statement = (update(_sms)
                 .where(_sms.c.company_id == company_id, _sms.c.id.in_(list(sms_ids)), _sms.c.status == st.QUEUED)
                 .values(status=st.SENDING, gateway=gateway, attempts=_sms.c.attempts + 1, waiting_reason=None,
                         updated_at=utcnow())
                 .returning(_sms.c.id))
    if where is not None:
        statement = statement.where(where)
    return list(db.session.scalars(statement))
