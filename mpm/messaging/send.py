"""The one way into sending: every sender (send panel, new message, transactions, tickets, API)
calls queue_messages. It validates, stores `Sms` rows as queued, commits, then makes sure a send
job drains the lane (mpm.jobs.enqueue_send)."""
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from mpm.extensions import db
from mpm.gateways.base import OutboundMessage
from mpm.gateways.registry import get_gateway
from mpm.jobs import enqueue_send
from mpm.messaging import ledger, status
from mpm.messaging.encoding import BodyInfo, analyse
from mpm.models import Person, Sms
from mpm.models.base import as_utc, utcnow
from mpm.people.phones import is_valid_e164
from mpm.plugins.gateway_settings import active_gateway_keys
from mpm.queue import HIGH

NO_ACTIVE_PROVIDER = "No active SMS provider"
RESENDABLE = frozenset({status.FAILED, status.EXPIRED})  # plus an `unconfirmed` whose wait is over


class SmsRefused(Exception):
    """Nothing was stored; str(exc) says why, in words for the person who tried to send."""


class CannotResend(SmsRefused):
    """The message is not one that can be sent again (inbound, or not failed)."""


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
    refusal = subscribers_only_refusal(keys)
    if refusal and any(not _reachable(keys, r) for r in recipients):
        raise NoActiveSmsProvider(refusal)
    return keys


def subscribers_only_refusal(keys: Sequence[str]) -> str:
    """Why some people cannot be reached when every active gateway reaches only its subscribers
    (only Viber is active); "" when one of them reaches any number."""
    gateways = [get_gateway(key) for key in keys]
    if not gateways or any(not g.reaches_only for g in gateways):
        return ""
    names = " and ".join(g.short_label for g in gateways)
    return f"only {names} is active, and it reaches only {gateways[0].reaches_only}."


def _reachable(keys: Sequence[str], recipient: Recipient) -> bool:
    probe = OutboundMessage(sms_id=0, number=recipient.number, body="", viber_id=recipient.viber_id)
    return any(get_gateway(key).can_reach(probe) for key in keys)


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


# ---------------------------------------------------------------- the Send SMS panel, the New message page, resend

def send_to_person(company_id: int, person_id: int, body: str, sender_user_id: int | None = None) -> Sms:
    """The Send SMS panel: one manual message to the person's primary number. Raises SmsRefused."""
    person = db.session.scalar(select(Person).where(Person.company_id == company_id, Person.id == person_id))
    if person is None:
        raise LookupError(person_id)
    [sms] = queue_messages(company_id, [recipient_for_person(person)], body, trigger="manual",
                           sender_user_id=sender_user_id, lane=HIGH)
    return sms


MAX_CHOSEN = 200  # more than this is a broadcast


@dataclass
class ChosenPerson:
    person: Person
    number: str | None
    refusal: str | None


@dataclass
class QueuedForPeople:
    queued: list[Sms]
    skipped: list[ChosenPerson]


def chosen_people(company_id: int, person_ids) -> list[ChosenPerson]:
    """The picked people in the order picked (each once), with the number an SMS goes to or why none."""
    ids = list(dict.fromkeys(int(i) for i in person_ids))[:MAX_CHOSEN]
    if not ids:
        return []
    found = {p.id: p for p in db.session.scalars(
        select(Person).where(Person.company_id == company_id, Person.id.in_(ids))
        .options(joinedload(Person.phone_numbers))).unique()}
    chosen = []
    for person_id in ids:
        person = found.get(person_id)
        if person is None:
            continue  # another company's id, or deleted since: silently not a recipient
        try:
            chosen.append(ChosenPerson(person, recipient_for_person(person).number, None))
        except SmsRefused as exc:
            chosen.append(ChosenPerson(person, None, str(exc)))
    return chosen


def send_to_people(company_id: int, person_ids, body: str, sender_user_id: int | None = None) -> QueuedForPeople:
    """Queue the message for everyone picked who can receive SMS; the others are returned with the
    reason. Refuses everything (nothing stored) when the body or the providers are not right or when
    nobody picked can receive."""
    chosen = chosen_people(company_id, person_ids)
    if not chosen:
        raise SmsRefused("Choose at least one recipient: search for a customer, agent or service provider and add them.")
    reachable = [c for c in chosen if c.refusal is None]
    skipped = [c for c in chosen if c.refusal is not None]
    if not reachable:
        check_body(body)  # an empty body is the first thing to fix, even here
        raise SmsRefused("None of the chosen people can receive SMS: " + " ".join(c.refusal for c in skipped))
    recipients = [recipient_for_person(c.person) for c in reachable]
    queued = queue_messages(company_id, recipients, body, trigger="manual", sender_user_id=sender_user_id, lane=HIGH)
    return QueuedForPeople(queued=queued, skipped=skipped)


def unconfirmed_is_final(sms: Sms) -> bool:
    """An `unconfirmed` message whose wait for a report is over (no report will be matched to it any more)."""
    return sms.status == status.UNCONFIRMED and (
        sms.report_due_at is None or as_utc(sms.report_due_at) <= datetime.now(timezone.utc))


def can_resend(sms: Sms) -> bool:
    return sms.direction == "outbound" and (sms.status in RESENDABLE or unconfirmed_is_final(sms))



def resend(company_id: int, sms_id: int, sender_user_id: int | None = None) -> Sms:
    """Queue a failed (or expired) outbound message again as a new SMS with trigger "resend".

    It goes to the person's primary number as it is now (the failure may have been a wrong number that
    staff since corrected), or to the same number when the message had no person. Resending the same
    message twice (a double click) gives back the first resend. Raises SmsRefused, nothing stored."""
    original = db.session.scalar(select(Sms).where(Sms.company_id == company_id, Sms.id == sms_id))
    if original is None:
        raise LookupError(sms_id)
    if original.direction != "outbound":
        raise CannotResend("Only messages sent from here can be resent; this one was received.")
    if not can_resend(original):
        raise CannotResend("Only a failed or expired message, or an unconfirmed one whose wait for a report is over, "
                           f"can be resent; this one is {original.status}.")
    if original.person is not None:
        recipient = recipient_for_person(original.person)
    else:
        recipient = Recipient(number=original.number)
    dedupe_key = f"resend:{original.id}"
    already = db.session.scalar(select(Sms.id).where(Sms.company_id == company_id, Sms.dedupe_key == dedupe_key))
    [new] = queue_messages(company_id, [recipient], original.body, trigger="resend", trigger_id=original.id,
                           dedupe_key=dedupe_key, sender_user_id=sender_user_id, lane=HIGH)
    if already is None:
        ledger.note(company_id, original.id, f"resent as message #{new.id}")
        ledger.note(company_id, new.id, f"resend of message #{original.id}")
        db.session.commit()
    return new
