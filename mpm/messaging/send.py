"""The one way into sending: every sender (send panel, new message, transactions, tickets, API)
calls queue_messages. It validates, stores `Sms` rows as queued, commits, then makes sure a send
job drains the lane (mpm.jobs.enqueue_send)."""
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import select

from mpm.extensions import db
from mpm.gateways.registry import active_gateway_keys
from mpm.messaging import ledger, status
from mpm.messaging.encoding import BodyInfo, analyse
from mpm.models import Person, Sms
from mpm.phones import is_valid_e164
from mpm.jobs import enqueue_send
from mpm.models.base import utcnow
from mpm.queue import HIGH

NO_ACTIVE_PROVIDER = "No active SMS provider"


class SmsRefused(Exception):
    """Nothing was stored; str(exc) says why, in words for the person who tried to send."""


class NoActiveSmsProvider(SmsRefused):
    def __init__(self, detail: str = ""):
        super().__init__(NO_ACTIVE_PROVIDER + (f": {detail}" if detail else ""))


@dataclass(frozen=True)
class Recipient:
    number: str  # E.164
    person_id: int | None = None
    viber_id: str | None = None


def recipient_for_person(person: Person) -> Recipient:
    """The person's primary number, or a refusal that says how to fix it."""
    primary = person.primary_number
    if primary is None:
        raise SmsRefused(
            f"{person.full_name} has no number with the Primary toggle on, so they receive no SMS. "
            "Turn Primary on for one of their numbers on their page."
        )
    if not is_valid_e164(primary.e164):
        raise SmsRefused(f"{person.full_name}'s primary number {primary.e164} is not a valid phone number.")
    return Recipient(number=primary.e164, person_id=person.id, viber_id=person.viber_id)


def check_body(body: str) -> BodyInfo:
    if not body or not body.strip():
        raise SmsRefused("Write a message first: the body is empty.")
    info = analyse(body)
    limit = current_app.config["SMS_MAX_SEGMENTS"]
    if info.segments > limit:
        raise SmsRefused(
            f"The message is {info.segments} SMS segments long ({info.encoding}); at most {limit} are allowed. "
            "Shorten it."
        )
    return info


def check_provider(company_id: int, recipients: Sequence[Recipient]) -> list[str]:
    """Active gateways, or NoActiveSmsProvider when none can carry these messages."""
    keys = active_gateway_keys(company_id)
    if not keys:
        raise NoActiveSmsProvider()
    if keys == ["viber"] and any(r.viber_id is None for r in recipients):
        raise NoActiveSmsProvider("only Viber is active, and it reaches only people subscribed to the Viber bot.")
    return keys


def queue_messages(
    company_id: int,
    recipients: Sequence[Recipient],
    body: str,
    *,
    trigger: str = "manual",
    trigger_id: int | None = None,
    dedupe_key: str | None = None,
    sender_user_id: int | None = None,
    lane: str = HIGH,
    broadcast_id: int | None = None,
    expires_at: datetime | None = None,
) -> list[Sms]:
    """Store one queued SMS per recipient and enqueue them. Raises SmsRefused (nothing stored).

    dedupe_key (one recipient only): a second call with the same key returns the first message
    and sends nothing, e.g. a payment provider posting the same transaction twice.
    """
    if not recipients:
        raise SmsRefused("Choose at least one recipient.")
    info = check_body(body)
    for recipient in recipients:
        if not is_valid_e164(recipient.number):
            raise SmsRefused(f"{recipient.number} is not a valid phone number.")
    if dedupe_key is not None:
        if len(recipients) != 1:
            raise ValueError("dedupe_key applies to a single recipient")
        existing = db.session.scalar(select(Sms).where(Sms.company_id == company_id, Sms.dedupe_key == dedupe_key))
        if existing is not None:
            return [existing]
    check_provider(company_id, recipients)
    if expires_at is None:  # every message has a validity: retried until then, `expired` after
        expires_at = utcnow() + timedelta(hours=current_app.config["SMS_VALIDITY_HOURS"])
    messages = [
        Sms(company_id=company_id, direction="outbound", person_id=r.person_id, number=r.number, body=body,
            encoding=info.encoding, segments=info.segments, status=status.QUEUED, trigger=trigger,
            trigger_id=trigger_id, dedupe_key=dedupe_key, sender_user_id=sender_user_id, lane=lane,
            broadcast_id=broadcast_id, expires_at=expires_at)
        for r in recipients
    ]
    db.session.add_all(messages)
    db.session.flush()
    ledger.record_stored(messages, f"queued ({trigger})")
    db.session.commit()
    enqueue_send(company_id, lane)  # after commit: the job must never run before the rows exist
    return messages
