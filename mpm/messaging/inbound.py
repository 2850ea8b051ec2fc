"""Incoming SMS from any gateway: stored, linked to the person by number, then acted on."""
from sqlalchemy import select

from mpm.extensions import db
from mpm.gateways.base import IncomingMessage
from mpm.messaging import ledger, status
from mpm.models import Company, Person, PhoneNumber, Sms
from mpm.phones import InvalidPhoneNumber, to_e164


def store_incoming(company_id: int, gateway: str, message: IncomingMessage) -> Sms | None:
    """Store one incoming message once (a provider's retry with the same id is ignored) and hand
    it to the reply rules. Returns None for a duplicate."""
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

    from mpm.replies import act_on_incoming

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
