"""Counts per status of a broadcast's messages, its failures, and when it is done."""
from dataclasses import dataclass

from sqlalchemy import func, select, update

from mpm.extensions import db
from mpm.messaging import status
from mpm.models import Broadcast, Person, Sms
from mpm.models.base import utcnow

SHOWN = (status.QUEUED, status.SENDING, status.SENT, status.DELIVERED, status.FAILED, status.EXPIRED,
         status.CANCELLED)
# Left our hands: a gateway took it (sent, delivered) or it ended without being sent.
OUT = (status.SENT, status.DELIVERED, status.FAILED, status.EXPIRED, status.CANCELLED)
POLLING_STATES = ("scheduled", "sending", "paused")


@dataclass
class Progress:
    counts: dict[str, int]
    created: int  # Sms rows so far
    planned: int  # recipients counted when confirmed (exact once the fan-out finished)

    @property
    def total(self) -> int:
        return max(self.created, self.planned)

    @property
    def not_created(self) -> int:
        return self.total - self.created

    @property
    def out(self) -> int:
        return sum(self.counts[s] for s in OUT)

    @property
    def percent(self) -> int:
        return int(100 * self.out / self.total) if self.total else 0

    @property
    def awaiting_report(self) -> int:
        """Taken by a gateway, its delivery report not in yet."""
        return self.counts.get(status.SENT, 0) + self.counts.get(status.UNCONFIRMED, 0)

    @property
    def waiting(self) -> int:
        """Not handed to a gateway yet (queued, being sent, or not even created)."""
        return self.counts[status.QUEUED] + self.counts[status.SENDING] + self.not_created

    @property
    def parts(self) -> list[tuple[str, str, int, float]]:
        """The bar's segments: (key, label, count, percent of the whole), zero counts left out."""
        parts = [("delivered", "delivered", self.counts[status.DELIVERED]),
                 ("sent", "awaiting a report", self.awaiting_report),
                 ("failed", "failed", self.counts[status.FAILED]),
                 ("expired", "expired", self.counts[status.EXPIRED]),
                 ("cancelled", "cancelled", self.counts[status.CANCELLED]),
                 ("waiting", "waiting to be sent", self.waiting)]
        total = self.total or 1
        return [(key, label, n, round(100 * n / total, 2)) for key, label, n in parts if n]


def counts_for(broadcast_ids: list[int]) -> dict[int, dict[str, int]]:
    """One GROUP BY for a page of broadcasts."""
    result = {bid: dict.fromkeys(SHOWN, 0) for bid in broadcast_ids}
    if not broadcast_ids:
        return result
    rows = db.session.execute(
        select(Sms.broadcast_id, Sms.status, func.count()).where(Sms.broadcast_id.in_(broadcast_ids))
        .group_by(Sms.broadcast_id, Sms.status))
    for bid, state, n in rows:
        result[bid][state] = result[bid].get(state, 0) + n
    return result


def progress(broadcast: Broadcast) -> Progress:
    counts = counts_for([broadcast.id])[broadcast.id]
    created = sum(counts.values())
    planned = created if broadcast.fanout_finished_at else broadcast.recipient_count
    return Progress(counts, created, planned)


def settle(broadcast: Broadcast) -> Progress:
    """Mark a sending broadcast done once every message is created and none is queued or sending."""
    current = progress(broadcast)
    in_hand = current.counts[status.QUEUED] + current.counts[status.SENDING]
    if broadcast.state == "sending" and broadcast.fanout_finished_at is not None and in_hand == 0:
        now = utcnow()
        changed = db.session.execute(
            update(Broadcast).where(Broadcast.id == broadcast.id, Broadcast.state == "sending")
            .values(state="done", finished_at=now, recipient_count=current.created)
            .execution_options(synchronize_session=False)).rowcount
        db.session.commit()
        if changed:
            db.session.refresh(broadcast)
    return current


def still_changing(broadcast: Broadcast, current: Progress, now=None) -> bool:
    """Whether the progress section keeps polling: while the broadcast runs, and after it ended while
    delivery reports are still due (messages sent, no report yet) and the validity has not ended."""
    if broadcast.state in POLLING_STATES:
        return True
    if broadcast.state not in ("done", "cancelled") or not current.awaiting_report:
        return False
    from mpm.broadcasts.schedule import as_utc

    return broadcast.expires_at is not None and (now or utcnow()) < as_utc(broadcast.expires_at)


def failures(broadcast: Broadcast, limit: int = 50) -> list[tuple[Sms, str]]:
    """Failed messages with their reason and the person's name, newest first."""
    rows = db.session.execute(
        select(Sms, Person.name, Person.surname).outerjoin(Person, Person.id == Sms.person_id)
        .where(Sms.company_id == broadcast.company_id, Sms.broadcast_id == broadcast.id,
               Sms.status == status.FAILED)
        .order_by(Sms.updated_at.desc(), Sms.id.desc()).limit(limit))
    return [(sms, f"{name or ''} {surname or ''}".strip() or "(deleted person)") for sms, name, surname in rows]


def recent_broadcasts(company_id: int, limit: int = 100) -> tuple[list[Broadcast], dict[int, dict[str, int]]]:
    """The list page: newest first, each sending one settled first, with counts per status."""
    broadcasts = list(db.session.scalars(
        select(Broadcast).where(Broadcast.company_id == company_id)
        .order_by(Broadcast.created_at.desc(), Broadcast.id.desc()).limit(limit)))
    for broadcast in broadcasts:
        if broadcast.state == "sending":
            settle(broadcast)
    return broadcasts, counts_for([b.id for b in broadcasts])
