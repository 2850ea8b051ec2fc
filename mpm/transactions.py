"""Payments: record one (staff page or the JSON API), send its confirmation SMS once, list and show them.

A provider may post the same payment twice: its provider reference finds the first transaction, and the
confirmation's dedupe key (transaction:<id>:confirmation) makes queue_messages return the first SMS."""
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from mpm import sms_templates
from mpm.extensions import db
from mpm.paging import numbered_page
from mpm.messaging.send import Recipient, SmsRefused, queue_messages, recipient_for_person
from mpm.models import Company, Person, PhoneNumber, Sms, Transaction
from mpm.phones import InvalidPhoneNumber, to_e164
from mpm.queue import HIGH

CONFIRMATION_TRIGGERS = ("transaction", "resend_information")


class TransactionInvalid(ValueError):
    """Bad input; nothing stored. `field` names the input it is about."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class CustomerNotFound(LookupError):
    """No such customer in this company (another company's customer looks the same)."""


def sms_enabled(company: Company) -> bool:
    return bool((company.settings or {}).get("transaction_sms_enabled", True))


def set_sms_enabled(company_id: int, enabled: bool) -> None:
    company = db.session.get(Company, company_id)
    company.settings = {**(company.settings or {}), "transaction_sms_enabled": bool(enabled)}
    db.session.commit()


@dataclass
class PaymentInput:
    """A payment as typed or posted, checked and normalised by parse_payment."""

    person_id: int | None
    sender_number: str | None
    amount: Decimal
    currency: str
    provider: str
    provider_reference: str | None
    token_type: str | None = None
    token: str | None = None
    meter_serial: str | None = None
    energy_kwh: Decimal | None = None
    device_serial: str | None = None
    duration: int | None = None
    unit: str | None = None


def _text(data: dict, key: str, limit: int) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, (dict, list, bool)):
        raise TransactionInvalid(f"{key} must be text.", key)
    value = str(value).strip()
    if len(value) > limit:
        raise TransactionInvalid(f"{key} is longer than {limit} characters.", key)
    return value or None


def _decimal(data: dict, key: str, label: str) -> Decimal | None:
    value = data.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or isinstance(value, (dict, list)):
        raise TransactionInvalid(f"{label} must be a number.", key)
    try:
        number = Decimal(str(value).strip().replace(",", ""))
    except InvalidOperation:
        raise TransactionInvalid(f"{label} must be a number, not “{value}”.", key) from None
    if not number.is_finite() or number <= 0:
        raise TransactionInvalid(f"{label} must be more than 0.", key)
    if number >= Decimal("1e9"):
        raise TransactionInvalid(f"{label} is too large.", key)
    return number


def parse_payment(company_id: int, data: dict, default_provider: str = "staff") -> PaymentInput:
    """Check a payment's fields (from the form or the API) and say plainly what is wrong."""
    company = db.session.get(Company, company_id)
    person_id = data.get("customer_id")
    if person_id in ("", None):
        person_id = None
    else:
        try:
            if isinstance(person_id, (bool, float)):
                raise ValueError
            person_id = int(person_id)
        except (TypeError, ValueError):
            raise TransactionInvalid("customer_id must be a whole number.", "customer_id") from None
    sender = _text(data, "sender_number", 40)
    if sender:
        try:
            sender = to_e164(sender, company.default_region)
        except InvalidPhoneNumber as exc:
            raise TransactionInvalid(f"Sender number: {exc}", "sender_number") from None
    if person_id is None and sender is None:
        raise TransactionInvalid("Give the customer (customer_id) or the number the payment came from "
                                 "(sender_number).", "customer_id")
    amount = _decimal(data, "amount", "Amount")
    if amount is None:
        raise TransactionInvalid("Amount is missing.", "amount")
    amount = amount.quantize(Decimal("0.01"), ROUND_HALF_UP)  # what the database keeps, so the SMS says the same
    currency = (_text(data, "currency", 3) or company.currency).upper()
    if not re.fullmatch(r"[A-Z]{3}", currency):
        raise TransactionInvalid("Currency must be a 3-letter code such as KES.", "currency")
    payment = PaymentInput(
        person_id=person_id, sender_number=sender, amount=amount, currency=currency,
        provider=_text(data, "provider", 40) or default_provider,
        provider_reference=_text(data, "provider_reference", 120),
        token=_text(data, "token", 120), meter_serial=_text(data, "meter_serial", 60),
        device_serial=_text(data, "device_serial", 60), unit=_text(data, "unit", 20),
    )
    energy_key = "energy_kwh" if data.get("energy_kwh") not in (None, "") else "energy"
    payment.energy_kwh = _decimal(data, energy_key, "Energy (kWh)")
    if payment.energy_kwh is not None:
        payment.energy_kwh = payment.energy_kwh.quantize(Decimal("0.001"), ROUND_HALF_UP)
    duration = data.get("duration")
    if duration not in (None, ""):
        try:
            payment.duration = int(str(duration).strip())
        except ValueError:
            raise TransactionInvalid("Duration must be a whole number, e.g. 30.", "duration") from None
        if payment.duration <= 0:
            raise TransactionInvalid("Duration must be more than 0.", "duration")
    if payment.meter_serial and payment.device_serial:
        raise TransactionInvalid("A token is for a meter or for a solar home system, not both: give "
                                 "meter_serial or device_serial.", "meter_serial")
    if payment.meter_serial or payment.device_serial:
        if not payment.token:
            raise TransactionInvalid("The token is missing.", "token")
        payment.token_type = "meter" if payment.meter_serial else "shs"
        if payment.token_type == "shs" and (payment.duration is None or not payment.unit):
            raise TransactionInvalid("A solar home system token needs its duration and unit (e.g. 30 days).",
                                     "duration")
    elif payment.token:
        raise TransactionInvalid("A token needs the meter serial or the device serial it is for.", "meter_serial")
    return payment


def _customer(company_id: int, payment: PaymentInput) -> Person:
    if payment.person_id is not None:
        person = db.session.get(Person, payment.person_id)
        if person is None or person.company_id != company_id:
            raise CustomerNotFound(f"No customer with id {payment.person_id}.")
        return person
    person_id = db.session.scalar(
        select(PhoneNumber.person_id)
        .where(PhoneNumber.company_id == company_id, PhoneNumber.e164 == payment.sender_number)
        .order_by(PhoneNumber.is_primary.desc(), PhoneNumber.id).limit(1))
    if person_id is None:
        raise CustomerNotFound(f"No customer has the number {payment.sender_number}.")
    return db.session.get(Person, person_id)


def _existing(company_id: int, reference: str | None) -> Transaction | None:
    if not reference:
        return None
    return db.session.scalar(select(Transaction).where(Transaction.company_id == company_id,
                                                       Transaction.provider_reference == reference))


def record_transaction(company_id: int, payment: PaymentInput, user_id: int | None = None
                       ) -> tuple[Transaction, bool]:
    """Store a successful payment and send its confirmation. Returns (transaction, created):
    the same provider reference again returns the first transaction and sends nothing new."""
    existing = _existing(company_id, payment.provider_reference)
    if existing is not None:
        return existing, False
    person = _customer(company_id, payment)
    transaction = Transaction(
        company_id=company_id, person_id=person.id, sender_number=payment.sender_number, amount=payment.amount,
        currency=payment.currency, provider=payment.provider, provider_reference=payment.provider_reference,
        token_type=payment.token_type, token=payment.token, meter_serial=payment.meter_serial,
        energy_kwh=payment.energy_kwh, device_serial=payment.device_serial, duration=payment.duration,
        unit=payment.unit, recorded_by_user_id=user_id)
    db.session.add(transaction)
    try:
        db.session.commit()
    except IntegrityError:
        # The same reference posted twice at the same moment: the other request stored it first.
        db.session.rollback()
        existing = _existing(company_id, payment.provider_reference)
        if existing is None:
            raise
        return existing, False
    send_confirmation(transaction)
    return transaction, True


def format_amount(value: Decimal) -> str:
    """500 → '500', 1250.5 → '1,250.50'."""
    if value == value.to_integral_value():
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def format_energy(value: Decimal | None) -> str:
    """12.500 → '12.5', 20.000 → '20'."""
    if value is None:
        return ""
    return f"{value.normalize():f}" if value != value.to_integral_value() else f"{value:.0f}"


def template_key(transaction: Transaction) -> str:
    return {"meter": "transaction_meter", "shs": "transaction_shs"}.get(transaction.token_type,
                                                                       "transaction_no_token")


def template_values(transaction: Transaction) -> dict:
    energy = format_energy(transaction.energy_kwh)
    values = {
        **sms_templates.person_values(transaction.person),
        "amount": format_amount(transaction.amount), "currency": transaction.currency,
        "reference": transaction.provider_reference or f"#{transaction.id}",
        "date": transaction.created_at.strftime("%Y-%m-%d") if transaction.created_at else "",
        "token": transaction.token or "", "meter_serial": transaction.meter_serial or "", "energy": energy,
        "device_serial": transaction.device_serial or "", "duration": transaction.duration or "",
        "unit": transaction.unit or "",
    }
    if transaction.token_type == "meter":
        values["token_details"] = f"Meter: {values['meter_serial']}, Token: {values['token']}, Energy: {energy} kWh"
    elif transaction.token_type == "shs":
        values["token_details"] = (f"Device: {values['device_serial']}, Token: {values['token']}, "
                                   f"{values['duration']} {values['unit']}")
    else:
        values["token_details"] = ""
    return values


def confirmation_recipient(transaction: Transaction) -> Recipient:
    """The number the payment came from, else the customer's primary number. Opt-out does not apply:
    a customer who paid always gets the confirmation."""
    person = transaction.person
    if transaction.sender_number:
        return Recipient(number=transaction.sender_number, person_id=transaction.person_id,
                         viber_id=person.viber_id if person else None)
    if person is None:
        raise SmsRefused("The transaction has neither a customer nor a sender number.")
    return recipient_for_person(person)


def send_confirmation(transaction: Transaction) -> Sms | None:
    """Queue the confirmation once. When it cannot go, say why on the transaction."""
    company = db.session.get(Company, transaction.company_id)
    if not sms_enabled(company):
        transaction.sms_note = "Transaction SMS are turned off in Settings → SMS."
        db.session.commit()
        return None
    try:
        body = sms_templates.render(transaction.company_id, template_key(transaction), template_values(transaction))
        [sms] = queue_messages(
            transaction.company_id, [confirmation_recipient(transaction)], body, trigger="transaction",
            trigger_id=transaction.id, dedupe_key=f"transaction:{transaction.id}:confirmation", lane=HIGH)
    except SmsRefused as exc:
        db.session.rollback()
        transaction.sms_note = f"No confirmation SMS: {exc}"
        db.session.commit()
        return None
    if transaction.sms_note:
        transaction.sms_note = None
        db.session.commit()
    return sms


def resend_confirmation(transaction: Transaction, user_id: int | None) -> Sms:
    """Staff send the confirmation again (the customer lost it): a new SMS each time it is asked.
    Raises SmsRefused with the reason, nothing stored."""
    body = sms_templates.render(transaction.company_id, template_key(transaction), template_values(transaction))
    [sms] = queue_messages(transaction.company_id, [confirmation_recipient(transaction)], body,
                           trigger="resend_information", trigger_id=transaction.id, sender_user_id=user_id,
                           lane=HIGH)
    return sms


def resend_last_confirmation(company_id: int, incoming: Sms) -> Sms | None:
    """Answer the resend key: the sender's last transaction again, or the 'not found' message.
    One answer per incoming message, even if the reply rules run twice for it."""
    transaction = None
    if incoming.person_id is not None:
        transaction = db.session.scalar(
            select(Transaction).where(Transaction.company_id == company_id,
                                      Transaction.person_id == incoming.person_id)
            .order_by(Transaction.created_at.desc(), Transaction.id.desc()).limit(1))
    person = db.session.get(Person, incoming.person_id) if incoming.person_id else None
    if transaction is not None:
        body = sms_templates.render(company_id, "resend_information", template_values(transaction))
        trigger_id = transaction.id
    else:
        values = {**sms_templates.person_values(person), "number": incoming.number}
        body = sms_templates.render(company_id, "resend_not_found", values)
        trigger_id = None
    recipient = Recipient(number=incoming.number, person_id=incoming.person_id,
                          viber_id=person.viber_id if person else None)
    [sms] = queue_messages(company_id, [recipient], body, trigger="resend_information", trigger_id=trigger_id,
                           dedupe_key=f"resend:{incoming.id}", lane=HIGH)
    return sms


@dataclass
class TransactionsPage:
    transactions: list[Transaction]
    sms_by_transaction: dict[int, Sms]
    total: int
    page: int
    pages: int


def transactions_page(company_id: int, page: int = 1, per_page: int = 25, q: str = "") -> TransactionsPage:
    stmt = select(Transaction).where(Transaction.company_id == company_id)
    if q:
        words = [w for w in q.split() if w]
        people = select(Person.id).where(Person.company_id == company_id)
        for word in words:
            people = people.where(Person.name.ilike(f"%{word}%") | Person.surname.ilike(f"%{word}%"))
        stmt = stmt.where(Transaction.person_id.in_(people) | Transaction.provider_reference.ilike(f"%{q}%")
                          | Transaction.token.ilike(f"%{q}%"))
    found = numbered_page(stmt.order_by(Transaction.created_at.desc(), Transaction.id.desc()), page, per_page)
    return TransactionsPage(found.rows, confirmations(company_id, [t.id for t in found.rows]), found.total, found.page,
                            found.pages)


def confirmations(company_id: int, transaction_ids: list[int]) -> dict[int, Sms]:
    """The confirmation SMS of each transaction (not the resends)."""
    if not transaction_ids:
        return {}
    rows = db.session.scalars(select(Sms).where(
        Sms.company_id == company_id, Sms.trigger == "transaction", Sms.trigger_id.in_(transaction_ids)))
    return {sms.trigger_id: sms for sms in rows}


def messages_for(transaction: Transaction) -> list[Sms]:
    """Every SMS this transaction caused: its confirmation and any resends of it, newest first."""
    return list(db.session.scalars(select(Sms).where(
        Sms.company_id == transaction.company_id, Sms.trigger.in_(CONFIRMATION_TRIGGERS),
        Sms.trigger_id == transaction.id, Sms.direction == "outbound",
    ).order_by(Sms.created_at.desc(), Sms.id.desc())))


def transaction_for_company(company_id: int, transaction_id: int) -> Transaction | None:
    transaction = db.session.get(Transaction, transaction_id)
    return transaction if transaction is not None and transaction.company_id == company_id else None


def as_json(transaction: Transaction) -> dict:
    sms = confirmations(transaction.company_id, [transaction.id]).get(transaction.id)
    token = None
    if transaction.token_type == "meter":
        token = {"type": "meter", "meter_serial": transaction.meter_serial, "token": transaction.token,
                 "energy_kwh": str(transaction.energy_kwh) if transaction.energy_kwh is not None else None}
    elif transaction.token_type == "shs":
        token = {"type": "shs", "device_serial": transaction.device_serial, "token": transaction.token,
                 "duration": transaction.duration, "unit": transaction.unit}
    return {
        "id": transaction.id, "customer_id": transaction.person_id, "sender_number": transaction.sender_number,
        "amount": f"{transaction.amount:.2f}", "currency": transaction.currency, "provider": transaction.provider,
        "provider_reference": transaction.provider_reference, "token": token,
        "created_at": transaction.created_at.isoformat() if transaction.created_at else None,
        "confirmation_sms": ({"id": sms.id, "number": sms.number, "status": sms.status} if sms else None),
        "sms_note": transaction.sms_note,
    }
