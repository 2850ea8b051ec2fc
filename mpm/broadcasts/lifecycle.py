"""Compose → draft → confirm → scheduled/sending → done, and pause, resume, cancel.

The web request only stores the broadcast and enqueues the fan-out job (mpm.broadcasts.fanout);
messages are created by the job, chunk by chunk."""
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from flask import current_app
from sqlalchemy import select, update

from mpm import jobs
from mpm.audit import audit
from mpm.broadcasts import audience as audiences
from mpm.broadcasts import placeholders, schedule
from mpm.broadcasts.audience import Audience, AudienceCounts
from mpm.extensions import db
from mpm.messaging import ledger, status
from mpm.messaging.encoding import BodyInfo
from mpm.messaging.send import (NoActiveSmsProvider, SmsRefused, check_body, check_provider,
                                subscribers_only_refusal)
from mpm.models import Broadcast, Company, Sms
from mpm.models.base import as_utc, utcnow
from mpm.queue import BULK

DEFAULT_PRICE_PER_SEGMENT = Decimal("0.80")
DEFAULT_VALIDITY_HOURS = 24
MAX_VALIDITY_HOURS = 7 * 24
DEFAULT_CHUNK_SIZE = 2000
ACTIVE = ("scheduled", "sending")


class BroadcastRefused(SmsRefused):
    """Nothing was changed; str(exc) says why."""


@dataclass
class BroadcastForm:
    """What the compose page posts, parsed but not yet checked."""
    audience: Audience = field(default_factory=Audience)
    body: str = ""
    when: str = "now"  # now / later
    send_at: str = ""  # local date-time text, company time zone
    quiet_on: bool = False
    quiet_start: str = "21:00"
    quiet_end: str = "07:00"
    validity_hours: str = str(DEFAULT_VALIDITY_HOURS)

    @classmethod
    def from_form(cls, form) -> "BroadcastForm":
        return cls(audience=Audience.from_form(form), body=form.get("body", ""),
                   when="later" if form.get("when") == "later" else "now", send_at=form.get("send_at", ""),
                   quiet_on=form.get("quiet_on") == "on", quiet_start=form.get("quiet_start", "21:00"),
                   quiet_end=form.get("quiet_end", "07:00"),
                   validity_hours=form.get("validity_hours", str(DEFAULT_VALIDITY_HOURS)))

    @classmethod
    def from_broadcast(cls, broadcast: Broadcast, tz_name: str) -> "BroadcastForm":
        quiet = broadcast.quiet_hours or {}
        return cls(audience=Audience.from_json(broadcast.audience), body=broadcast.body,
                   when="later" if broadcast.scheduled_for else "now",
                   send_at=schedule.local_text(broadcast.scheduled_for, tz_name).replace(" ", "T"),
                   quiet_on=bool(quiet), quiet_start=quiet.get("start", "21:00"), quiet_end=quiet.get("end", "07:00"),
                   validity_hours=str(broadcast.validity_hours))


@dataclass
class Preview:
    counts: AudienceCounts
    body: BodyInfo | None
    sample: str  # the body as the first recipient will read it
    sample_name: str
    price_per_segment: Decimal
    currency: str
    errors: list[str]

    @property
    def estimated_cost(self) -> Decimal:
        segments = self.body.segments if self.body else 0
        return (self.price_per_segment * segments * self.counts.recipients).quantize(Decimal("0.01"))


def price_per_segment(company: Company) -> Decimal:
    raw = (company.settings or {}).get("sms_price_per_segment", DEFAULT_PRICE_PER_SEGMENT)
    try:
        return Decimal(str(raw))
    except ArithmeticError:
        return DEFAULT_PRICE_PER_SEGMENT


def preview(company_id: int, form: BroadcastForm) -> Preview:
    """Counts, segments and cost for the compose page; never raises, lists what is wrong."""
    company = db.session.get(Company, company_id)
    audience = audiences.own_ids_only(company_id, form.audience)
    counts = audiences.count(company_id, audience)
    errors: list[str] = []
    info, sample, sample_name = None, "", ""
    try:
        placeholders.check(form.body)
        first = audiences.first_recipient(company_id, audience)
        values = first.values if first else {k: f"[{k}]" for k in placeholders.PLACEHOLDERS}
        sample = placeholders.render(form.body, values)
        sample_name = f"{values['name']} {values['surname']}".strip() if first else ""
        info = check_body(sample)
    except SmsRefused as exc:
        if form.body.strip():
            errors.append(str(exc))
    return Preview(counts, info, sample, sample_name, price_per_segment(company), company.currency, errors)


def _schedule_fields(form: BroadcastForm, company: Company, now: datetime) -> dict:
    try:
        validity = int(form.validity_hours)
    except ValueError:
        validity = 0
    if not 1 <= validity <= MAX_VALIDITY_HOURS:
        raise BroadcastRefused(f"The validity period must be between 1 and {MAX_VALIDITY_HOURS} hours.")
    try:
        scheduled_for = schedule.parse_local(form.send_at, company.time_zone) if form.when == "later" else None
        quiet = schedule.quiet_hours(form.quiet_start, form.quiet_end) if form.quiet_on else None
    except schedule.ScheduleError as exc:
        raise BroadcastRefused(str(exc)) from None
    if scheduled_for is not None and scheduled_for < now - timedelta(minutes=1):
        raise BroadcastRefused(
            f"{schedule.local_text(scheduled_for, company.time_zone)} ({company.time_zone}) is in the past. "
            "Pick a later time or send now.")
    return {"scheduled_for": scheduled_for, "quiet_hours": quiet, "validity_hours": validity}


def save_draft(company_id: int, user_id: int | None, form: BroadcastForm, draft_id: int | None = None,
               now: datetime | None = None) -> Broadcast:
    """Check everything and store (or update) a draft for the confirmation step. Nothing is queued."""
    now = now or utcnow()
    company = db.session.get(Company, company_id)
    if form.audience.is_empty:
        raise BroadcastRefused("Choose who receives the broadcast: mini-grids, groups, types or people.")
    result = preview(company_id, form)
    if not form.body.strip():
        raise BroadcastRefused("Write a message first: the body is empty.")
    if result.errors:
        raise BroadcastRefused(result.errors[0])
    if result.counts.recipients == 0:
        raise BroadcastRefused(
            f"Nobody in this audience can receive SMS: {result.counts.opted_out} opted out, "
            f"{result.counts.without_primary} without a primary number, "
            f"{result.counts.invalid_number} with a number that is not a valid phone number.")
    fields = _schedule_fields(form, company, now)
    broadcast = None
    if draft_id is not None:
        broadcast = db.session.get(Broadcast, draft_id)
        if broadcast is None or broadcast.company_id != company_id or broadcast.state != "draft":
            broadcast = None
    if broadcast is None:
        broadcast = Broadcast(company_id=company_id, author_user_id=user_id, state="draft")
        db.session.add(broadcast)
    broadcast.body = form.body
    broadcast.audience = audiences.own_ids_only(company_id, form.audience).to_json()
    broadcast.recipient_count = result.counts.recipients
    broadcast.estimated_segments = result.body.segments
    broadcast.estimated_cost = result.estimated_cost
    for key, value in fields.items():
        setattr(broadcast, key, value)
    db.session.commit()
    return broadcast


def _check_provider(company_id: int, audience: Audience) -> None:
    refusal = subscribers_only_refusal(check_provider(company_id, []))
    if refusal and audiences.anyone_without_viber(company_id, audience):
        raise NoActiveSmsProvider(refusal)


def _audit(broadcast: Broadcast, user_id: int | None, action: str, **details) -> None:
    audit(broadcast.company_id, user_id, action, f"broadcast #{broadcast.id}", **details)


def confirm(company_id: int, broadcast_id: int, user_id: int | None, now: datetime | None = None) -> Broadcast:
    """Queue at once or schedule. Raises NoActiveSmsProvider / BroadcastRefused with nothing changed."""
    now = now or utcnow()
    broadcast = _get(company_id, broadcast_id)
    if broadcast.state != "draft":
        raise BroadcastRefused(f"This broadcast is already {broadcast.state}.")
    audience = Audience.from_json(broadcast.audience)
    _check_provider(company_id, audience)
    counts = audiences.count(company_id, audience)
    if counts.recipients == 0:
        raise BroadcastRefused("Nobody in this audience can receive SMS any more.")
    scheduled_for = as_utc(broadcast.scheduled_for)
    if scheduled_for is not None and scheduled_for < now - timedelta(minutes=1):
        # The draft waited past its time: sending now would surprise; let them pick again.
        raise BroadcastRefused("The scheduled time has passed while this waited for confirmation. "
                               "Go back, pick a new time or send now.")
    later = scheduled_for is not None and scheduled_for > now
    start = scheduled_for if later else now
    broadcast.recipient_count = counts.recipients
    broadcast.state = "scheduled" if later else "sending"
    broadcast.confirmed_at = now
    broadcast.started_at = None if later else now
    broadcast.expires_at = start + timedelta(hours=broadcast.validity_hours)
    _audit(broadcast, user_id, "broadcast.confirmed", recipients=counts.recipients,
           scheduled_for=scheduled_for.isoformat() if later else None)
    db.session.commit()
    enqueue_fanout(broadcast, at=start if later else None)
    return broadcast


def enqueue_fanout(broadcast: Broadcast, at: datetime | None = None) -> None:
    """After commit. A failed fan-out job is retried; chunks already committed are never redone."""
    jobs.enqueue_fanout(broadcast.id, at)


def _get(company_id: int, broadcast_id: int) -> Broadcast:
    broadcast = db.session.get(Broadcast, broadcast_id)
    if broadcast is None or broadcast.company_id != company_id:
        raise LookupError("no such broadcast")
    return broadcast


def _move_state(broadcast: Broadcast, allowed: tuple[str, ...], new: str, **values) -> bool:
    """Compare-and-set, so a fan-out chunk and a pause/cancel never interleave."""
    result = db.session.execute(
        update(Broadcast).where(Broadcast.id == broadcast.id, Broadcast.state.in_(allowed))
        .values(state=new, **values).execution_options(synchronize_session=False))
    return result.rowcount == 1


def pause(company_id: int, broadcast_id: int, user_id: int | None) -> Broadcast:
    """No new chunk is created or handed to the queue until resumed."""
    broadcast = _get(company_id, broadcast_id)
    if not _move_state(broadcast, ACTIVE, "paused"):
        db.session.rollback()
        raise BroadcastRefused(f"Only a scheduled or sending broadcast can be paused; this one is {broadcast.state}.")
    _audit(broadcast, user_id, "broadcast.paused")
    db.session.commit()
    db.session.refresh(broadcast)
    return broadcast


def resume(company_id: int, broadcast_id: int, user_id: int | None, now: datetime | None = None) -> Broadcast:
    now = now or utcnow()
    broadcast = _get(company_id, broadcast_id)
    if broadcast.state != "paused":
        raise BroadcastRefused(f"Only a paused broadcast can be resumed; this one is {broadcast.state}.")
    _check_provider(company_id, Audience.from_json(broadcast.audience))
    scheduled_for = as_utc(broadcast.scheduled_for)
    later = broadcast.started_at is None and scheduled_for is not None and scheduled_for > now
    new = "scheduled" if later else "sending"
    values = {} if later or broadcast.started_at else {"started_at": now}
    if not _move_state(broadcast, ("paused",), new, **values):
        db.session.rollback()
        raise BroadcastRefused("This broadcast changed meanwhile; reload the page.")
    _audit(broadcast, user_id, "broadcast.resumed")
    db.session.commit()
    db.session.refresh(broadcast)
    _requeue_held_messages(broadcast)
    enqueue_fanout(broadcast, at=scheduled_for if later else None)
    return broadcast


def _requeue_held_messages(broadcast: Broadcast) -> None:
    """Messages already handed to the queue when the pause came were skipped by the sender and
    are still queued: hand them over again (at most the chunk that was in flight)."""
    held = db.session.scalars(
        select(Sms.id).where(Sms.company_id == broadcast.company_id, Sms.broadcast_id == broadcast.id,
                             Sms.status == status.QUEUED, Sms.id <= broadcast.enqueued_through_sms_id)
        .order_by(Sms.id)).all()
    if held:
        jobs.enqueue_send(broadcast.company_id, BULK)


def cancel(company_id: int, broadcast_id: int, user_id: int | None, now: datetime | None = None) -> Broadcast:
    """Stop for good: every message not yet handed to a gateway becomes `cancelled` (one bulk
    UPDATE, plus one event per message); the fan-out creates no more."""
    now = now or utcnow()
    broadcast = _get(company_id, broadcast_id)
    if not _move_state(broadcast, ("draft", "scheduled", "sending", "paused"), "cancelled", finished_at=now):
        db.session.rollback()
        raise BroadcastRefused(f"This broadcast is already {broadcast.state}.")
    queued = db.session.scalars(select(Sms.id).where(
        Sms.company_id == company_id, Sms.broadcast_id == broadcast.id, Sms.status == status.QUEUED)).all()
    ledger.move(company_id, queued, status.CANCELLED, "broadcast cancelled before this message was sent",
                sources=(status.QUEUED,))
    _audit(broadcast, user_id, "broadcast.cancelled")
    db.session.commit()
    db.session.refresh(broadcast)
    return broadcast


def chunk_size() -> int:
    """People per fan-out chunk (one bulk INSERT). Config BROADCAST_CHUNK_SIZE, else MPM_BROADCAST_CHUNK_SIZE."""
    configured = current_app.config.get("BROADCAST_CHUNK_SIZE") or os.environ.get("MPM_BROADCAST_CHUNK_SIZE")
    return int(configured or DEFAULT_CHUNK_SIZE)
