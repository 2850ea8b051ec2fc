"""What providers' callbacks change: delivery status of outbound SMS and Viber subscriptions.
Status only moves forward (mpm.messaging.status.move): a late or repeated report changes
nothing but the event log."""
from sqlalchemy import insert, select, update

from mpm.extensions import db
from mpm.gateways.base import DeliveryReport
from mpm.messaging import status
from mpm.models import Person, Sms, SmsEvent
from mpm.models.base import utcnow


class UnknownMessage(LookupError):
    """No outbound SMS of this company has that provider id."""


def apply_delivery_report(company_id: int, gateway: str, report: DeliveryReport) -> bool:
    """Apply one report to the SMS with that provider id. Returns whether the status changed;
    raises UnknownMessage when no such message exists.

    Providers post these by the thousand, so this is plain statements rather than the ORM: one
    indexed lookup, a compare-and-set UPDATE (a concurrent report for the same message cannot be
    overwritten by an older one), one event row, one commit."""
    table = Sms.__table__
    row = db.session.execute(
        select(table.c.id, table.c.status).where(
            table.c.gateway == gateway, table.c.provider_message_id == report.provider_message_id,
            table.c.company_id == company_id, table.c.direction == "outbound")
    ).first()
    if row is None:
        raise UnknownMessage(f"{gateway} message {report.provider_message_id!r}")
    sms_id, current = row
    changed = False
    if status.can_move(current, report.status):
        values = {"status": report.status, "updated_at": utcnow()}
        if report.status == status.FAILED and report.detail:
            values["error"] = report.detail[:2000]
        result = db.session.execute(update(table).where(table.c.id == sms_id, table.c.status == current).values(values))
        changed = result.rowcount == 1
        if not changed:  # another report for this message won the race: read what it left
            current = db.session.scalar(select(table.c.status).where(table.c.id == sms_id))
    detail = report.detail if changed else f"ignored {report.status}: message is already {current}. {report.detail}".strip()
    db.session.execute(insert(SmsEvent.__table__).values(
        company_id=company_id, sms_id=sms_id, kind="callback", status=report.status, gateway=gateway,
        detail=detail[:2000], created_at=utcnow()))
    db.session.commit()
    return changed


def forget_viber_subscriber(company_id: int, viber_id: str) -> int:
    """The person left the operator's Viber bot: Viber can no longer reach them."""
    result = db.session.execute(update(Person).where(Person.company_id == company_id, Person.viber_id == viber_id)
                                .values(viber_id=None).execution_options(synchronize_session=False))
    db.session.commit()
    return result.rowcount
