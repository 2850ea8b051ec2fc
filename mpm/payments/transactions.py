"""Payments: record one (staff page or the JSON API), send its confirmation SMS once, list and show them.

A provider may post the same payment twice: its provider reference finds the first transaction, and the
confirmation's dedupe key (transaction:<id>:confirmation) makes queue_messages return the first SMS."""
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo
from pydantic_core import PydanticCustomError

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from mpm import sms_templates
from mpm.extensions import db
from mpm.messaging.send import Recipient, SmsRefused, queue_messages, recipient_for_person
from mpm.models import Company, Person, PhoneNumber, Sms, Transaction
from mpm.models.base import DB_INT_MAX
from mpm.paging import numbered_page
from mpm.people.phones import InvalidPhoneNumber, to_e164
from mpm.queue import HIGH

CONFIRMATION_TRIGGERS = ("transaction", "resend_information")


class TransactionInvalid(ValueError):
    """Bad input; nothing stored. `field` names the input it is about."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class ReferenceConflict(ValueError):
    """The provider reference names a transaction that holds other data: nothing stored."""

    def __init__(self, existing: "Transaction", differences: list[str]):
        super().__init__(f"Provider reference {existing.provider_reference} is already transaction #{existing.id}, "
                         f"with a different {', '.join(differences)}. Nothing was recorded; use a new reference "
                         "for a new payment.")
        self.existing = existing
        self.differences = differences


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


# Numeric(12, 2) / Numeric(12, 3): amounts and energies below a billion.
NUMBER_LIMIT = Decimal("1e9")
# ISO 4217 currencies whose minor unit is not the cent; the database keeps at most 2 decimals.
MINOR_UNIT_DIGITS = {code: 0 for code in ("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF",
                                         "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF")}


def _blank_is_none(value):
    """A form's empty field and a JSON null mean the same: not given."""
    return None if isinstance(value, str) and not value.strip() else value


def _whole_number(value, info: ValidationInfo):
    value = _blank_is_none(value)
    if value is None:
        return None
    label = FIELD_LABELS[info.field_name]
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d{1,12}\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PydanticCustomError("whole_number", "{label} must be a whole number.", {"label": label})
    if not 1 <= value <= DB_INT_MAX:
        raise PydanticCustomError("whole_number", "{label} must be a whole number from 1 to {limit}.",
                                  {"label": label, "limit": DB_INT_MAX})
    return value


def _positive_number(value, info: ValidationInfo):
    value = _blank_is_none(value)
    if value is None:
        return None
    label = FIELD_LABELS[info.field_name]
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise PydanticCustomError("number", "{label} must be a number.", {"label": label})
    if isinstance(value, int) and abs(value) >= NUMBER_LIMIT:  # before str(): 10**5000 has too many digits
        raise PydanticCustomError("number", "{label} is too large.", {"label": label})
    text = str(value).strip().replace(",", "")
    try:
        number = Decimal(text) if len(text) <= 100 else Decimal("NaN")
    except InvalidOperation:
        number = Decimal("NaN")
    if number.is_nan():
        shown = text if len(text) <= 30 else text[:30] + "…"
        raise PydanticCustomError("number", "{label} must be a number, not “{shown}”.", {"label": label, "shown": shown})
    if number <= 0:
        raise PydanticCustomError("number", "{label} must be more than 0.", {"label": label})
    if number >= NUMBER_LIMIT:  # also infinity
        raise PydanticCustomError("number", "{label} is too large.", {"label": label})
    return number


def _text_value(value):
    """Text, or a number a provider sent for a reference or serial (kept as typed)."""
    value = _blank_is_none(value)
    if value is None or isinstance(value, str):
        return value.strip() if value is not None else None
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**40:
        return str(value)
    raise PydanticCustomError("text", "must be text.")


WholeNumber = Annotated[int | None, BeforeValidator(_whole_number)]
PositiveNumber = Annotated[Decimal | None, BeforeValidator(_positive_number)]


def _text(limit: int):
    return Annotated[Annotated[str, Field(max_length=limit)] | None, BeforeValidator(_text_value)]


FIELD_LABELS = {"customer_id": "customer_id", "amount": "Amount", "energy_kwh": "Energy (kWh)", "energy": "Energy (kWh)",
                "duration": "Duration"}


class PaymentFields(BaseModel):
    """A payment as posted (JSON) or typed (form), typed and bounded before anything else looks at it."""

    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True)

    customer_id: WholeNumber = None
    sender_number: _text(40) = None
    amount: PositiveNumber = None
    currency: _text(3) = None
    provider: _text(40) = None
    provider_reference: _text(120) = None
    token: _text(120) = None
    meter_serial: _text(60) = None
    device_serial: _text(60) = None
    unit: _text(20) = None
    energy_kwh: PositiveNumber = None
    energy: PositiveNumber = None  # the staff form's name for energy_kwh
    duration: WholeNumber = None


def _invalid(exc: ValidationError) -> TransactionInvalid:
    """The first problem, in words, naming its field. Never echoes the input (it may be huge)."""
    error = exc.errors(include_url=False, include_input=False)[0]
    field = str(error["loc"][0]) if error["loc"] else None
    kind = error["type"]
    if kind == "json_invalid":
        why = error.get("ctx", {}).get("error", "")
        return TransactionInvalid(f"The body is not valid JSON ({why[:80]}). Send a JSON object with "
                                  "Content-Type: application/json.")
    if field is None:
        return TransactionInvalid("The body must be a JSON object, e.g. {\"customer_id\": 12, \"amount\": 500}.")
    if kind == "string_too_long":
        return TransactionInvalid(f"{field} is longer than {error['ctx']['max_length']} characters.", field)
    if kind == "text":
        return TransactionInvalid(f"{field} must be text.", field)
    if field == "energy":
        field = "energy_kwh"
    return TransactionInvalid(error["msg"], field)


def _minor_unit(amount: Decimal, currency: str) -> Decimal:
    digits = min(MINOR_UNIT_DIGITS.get(currency, 2), 2)
    return amount.quantize(Decimal(1).scaleb(-digits), ROUND_HALF_UP)


def parse_payment(company_id: int, data: dict | bytes | str, default_provider: str = "staff") -> PaymentInput:
    """Check a payment (the form's fields, or the API's raw JSON body) and say plainly what is wrong."""
    try:
        if isinstance(data, (bytes, str)):
            fields = PaymentFields.model_validate_json(data)
        else:
            fields = PaymentFields.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc) from None
    company = db.session.get(Company, company_id)
    sender = fields.sender_number
    if sender:
        try:
            sender = to_e164(sender, company.default_region)
        except InvalidPhoneNumber as exc:
            raise TransactionInvalid(f"Sender number: {exc}", "sender_number") from None
    if fields.customer_id is None and sender is None:
        raise TransactionInvalid("Give the customer (customer_id) or the number the payment came from "
                                 "(sender_number).", "customer_id")
    if fields.amount is None:
        raise TransactionInvalid("Amount is missing.", "amount")
    currency = (fields.currency or company.currency).upper()
    if not re.fullmatch(r"[A-Z]{3}", currency):
        raise TransactionInvalid("Currency must be a 3-letter code such as KES.", "currency")
    # What the database keeps, so the SMS says the same; a payment must still be worth something.
    amount = _minor_unit(fields.amount, currency)
    if amount <= 0:
        raise TransactionInvalid(f"Amount rounds to {amount} {currency}: a payment must be at least one "
                                 f"minor unit of {currency}.", "amount")
    energy = fields.energy_kwh if fields.energy_kwh is not None else fields.energy
    payment = PaymentInput(
        person_id=fields.customer_id, sender_number=sender, amount=amount, currency=currency,
        provider=fields.provider or default_provider, provider_reference=fields.provider_reference,
        token=fields.token, meter_serial=fields.meter_serial, device_serial=fields.device_serial, unit=fields.unit,
        energy_kwh=energy.quantize(Decimal("0.001"), ROUND_HALF_UP) if energy is not None else None,
        duration=fields.duration,
    )
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


def _differences(existing: Transaction, payment: PaymentInput) -> list[str]:
    """What the posted payment says that the stored one does not (the customer as given, the rest as kept)."""
    fields = [("customer_id", payment.person_id, existing.person_id)] if payment.person_id is not None else []
    fields += [(name, getattr(payment, name), getattr(existing, name))
               for name in ("sender_number", "amount", "currency", "token_type", "token", "meter_serial",
                            "energy_kwh", "device_serial", "duration", "unit")]
    return [name for name, posted, stored in fields if posted != stored]


def _again(existing: Transaction, payment: PaymentInput) -> tuple[Transaction, bool]:
    """The same payment posted again is the first one; other data under its reference is refused."""
    differences = _differences(existing, payment)
    if differences:
        raise ReferenceConflict(existing, differences)
    return existing, False


def record_transaction(company_id: int, payment: PaymentInput, user_id: int | None = None
                       ) -> tuple[Transaction, bool]:
    """Store a successful payment and send its confirmation. Returns (transaction, created):
    the same provider reference again with the same data returns the first transaction and sends nothing
    new; with other data it raises ReferenceConflict (a second payment must not vanish silently)."""
    existing = _existing(company_id, payment.provider_reference)
    if existing is not None:
        return _again(existing, payment)
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
        return _again(existing, payment)
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
