"""What providers' callbacks change: delivery status of outbound SMS and Viber subscriptions.
Status only moves forward (mpm.messaging.status.move): a late or repeated report changes
nothing but the event log."""
from sqlalchemy import select, update

from mpm.extensions import db
from mpm.gateways.base import DeliveryReport
from mpm.messaging import status
from mpm.models import Person, Sms


class UnknownMessage(LookupError):
    """No outbound SMS of this company has that provider id."""


def apply_delivery_report(company_id: int, gateway: str, report: DeliveryReport) -> bool:
    """Apply one report to the SMS with that provider id (an indexed lookup). Returns whether the
    status changed; raises UnknownMessage when no such message exists."""
    sms = db.session.scalar(select(Sms).where(
        Sms.gateway == gateway, Sms.provider_message_id == report.provider_message_id,
        Sms.company_id == company_id, Sms.direction == "outbound"))
    if sms is None:
        raise UnknownMessage(f"{gateway} message {report.provider_message_id!r}")
    changed = status.move(sms, report.status, report.detail, gateway, kind="callback")
    db.session.commit()
    return changed


def forget_viber_subscriber(company_id: int, viber_id: str) -> int:
    """The person left the operator's Viber bot: Viber can no longer reach them."""
    result = db.session.execute(update(Person).where(Person.company_id == company_id, Person.viber_id == viber_id)
                                .values(viber_id=None).execution_options(synchronize_session=False))
    db.session.commit()
    return result.rowcount
