"""Incoming SMS from any gateway: stored, linked to the person by number, then acted on.

Every gateway's incoming path ends here, so the limits on what is stored live here too: a body of at most
INBOUND_SMS_MAX_SEGMENTS concatenated SMS parts, ids that fit their columns. Anything else is refused
(IncomingRefused, answered 413/400 by the app) and logged, never stored."""
import logging

from flask import current_app
from sqlalchemy import select

from mpm.extensions import db
from mpm.gateways.base import IncomingMessage
from mpm.messaging import ledger, status
from mpm.messaging.encoding import analyse
from mpm.models import Company, Person, PhoneNumber, Sms
from mpm.people.phones import InvalidPhoneNumber, to_e164

log = logging.getLogger(__name__)

GSM7_PER_PART = 153  # the most characters one part of a concatenated SMS carries


class IncomingRefused(ValueError):
    """An incoming message that is not stored; `status` is the HTTP answer for the provider."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def max_incoming_segments() -> int:
    return int(current_app.config.get("INBOUND_SMS_MAX_SEGMENTS", 10))


def check_incoming(company_id: int, gateway: str, message: IncomingMessage) -> None:
    """Raise IncomingRefused (and log it) for a message this server will not store."""
    why, code = _why_refused(message)
    if why:
        log.warning("incoming message refused (%s): %s company=%s gateway=%s", code, why, company_id, gateway)
        raise IncomingRefused(why, code)


def _why_refused(message: IncomingMessage) -> tuple[str | None, int]:
    for name, value, limit in (("number", message.number, 64), ("message id", message.provider_message_id, 120),
                               ("viber id", message.viber_id, 64)):
        if value is not None and not isinstance(value, str):
            return f"the {name} is not text", 400
        if value and len(value) > limit:
            return f"the {name} is longer than {limit} characters", 400
    if not isinstance(message.body, str):
        return "the message text is not text", 400
    most = max_incoming_segments()
    # Counted cheaply first: a body longer than the longest GSM-7 message is never analysed.
    if len(message.body) > most * GSM7_PER_PART or analyse(message.body).segments > most:
        return (f"the message is {len(message.body)} characters long, more than {most} SMS parts; "
                "it was not stored"), 413
    return None, 200


def store_incoming(company_id: int, gateway: str, message: IncomingMessage) -> Sms | None:
    """Store one incoming message once (a provider's retry with the same id is ignored) and hand
    it to the reply rules. Returns None for a duplicate. Raises IncomingRefused, nothing stored."""
    check_incoming(company_id, gateway, message)
    if message.provider_message_id:
        duplicate = db.session.scalar(select(Sms.id).where(
            Sms.company_id == company_id, Sms.direction == "inbound", Sms.gateway == gateway,
            Sms.provider_message_id == message.provider_message_id))
        if duplicate is not None:
            return None
    company = db.session.get(Company, company_id)
    try:
        number = to_e164(message.number, company.default_region)
    except InvalidPhoneNumber:
        number = message.number.strip()[:20]
    person_id = _person_for(company_id, number, message.viber_id)
    sms = Sms(company_id=company_id, direction="inbound", person_id=person_id, number=number,
              body=message.body, status=status.RECEIVED, gateway=gateway,
              provider_message_id=message.provider_message_id or None, trigger="reply", lane="high")
    db.session.add(sms)
    db.session.flush()
    ledger.note(company_id, sms.id, f"received through {gateway}", kind="callback", gateway=gateway,
                new_status=status.RECEIVED)
    db.session.commit()

    from mpm.inbox.replies import act_on_incoming

    act_on_incoming(sms)
    return sms


def _person_for(company_id: int, number: str, viber_id: str | None) -> int | None:
    if viber_id:
        person_id = db.session.scalar(select(Person.id).where(Person.company_id == company_id, Person.viber_id == viber_id))
        if person_id:
            return person_id
    # Prefer the person whose *primary* number it is, then any person with that number.
    return db.session.scalar(
        select(PhoneNumber.person_id)
        .where(PhoneNumber.company_id == company_id, PhoneNumber.e164 == number)
        .order_by(PhoneNumber.is_primary.desc(), PhoneNumber.id)
        .limit(1)
    )
