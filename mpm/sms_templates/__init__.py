"""SMS templates: one editable body per trigger, in MPM's bracket placeholders ([name], [amount]…).

Automatic messages (transactions, tickets, the resend key) are rendered here: the company's header,
the trigger's body, the company's footer, each with its values; an unknown placeholder is refused
when the template is saved, so rendering never meets one."""
import re
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import select

from mpm.audit import audit
from mpm.extensions import db
from mpm.messaging.encoding import BodyInfo, analyse
from mpm.models import Company, SmsTemplate

PLACEHOLDER = re.compile(r"\[([^\[\]\s]*)\]")

PERSON = ("name", "surname", "company")
PAYMENT = ("amount", "currency", "reference", "date")
METER = ("token", "meter_serial", "energy")
SHS = ("token", "device_serial", "duration", "unit")
TICKET = ("ticket_id", "category", "description", "due_date", "customer_name", "customer_phone",
          "agent_name", "agent_phone")


@dataclass(frozen=True)
class TemplateKind:
    key: str
    label: str
    placeholders: tuple[str, ...]
    default: str
    hint: str = ""


KINDS: dict[str, TemplateKind] = {k.key: k for k in (
    TemplateKind("transaction_meter", "Transaction confirmation — meter token", PERSON + PAYMENT + METER,
                 "Dear [name] [surname], your transaction is confirmed. Meter Serial: [meter_serial]. "
                 "Token: [token], Energy: [energy] kWh"),
    TemplateKind("transaction_shs", "Transaction confirmation — solar home system token", PERSON + PAYMENT + SHS,
                 "Dear [name] [surname], your transaction of [amount] [currency] is confirmed. "
                 "Device: [device_serial]. Token: [token], valid for [duration] [unit]"),
    TemplateKind("transaction_no_token", "Transaction confirmation — no token", PERSON + PAYMENT,
                 "Dear [name] [surname], we received your payment of [amount] [currency]. Thank you."),
    TemplateKind("ticket_created", "Ticket created — to the customer", PERSON + TICKET,
                 "Dear [name] [surname], we received your maintenance request #[ticket_id] ([category]). "
                 "Assigned to: [agent_name]. Due: [due_date]."),
    TemplateKind("ticket_created_assignee", "Ticket created — to the assigned agent or service provider",
                 PERSON + TICKET,
                 "New ticket #[ticket_id] ([category]) for [customer_name] [customer_phone], due [due_date]: "
                 "[description]"),
    TemplateKind("ticket_assigned", "Ticket assigned — to the customer", PERSON + TICKET,
                 "Dear [name] [surname], your maintenance request #[ticket_id] is now assigned to "
                 "[agent_name] [agent_phone]."),
    TemplateKind("ticket_assigned_assignee", "Ticket assigned — to the assigned agent or service provider",
                 PERSON + TICKET,
                 "Ticket #[ticket_id] ([category]) is assigned to you: [customer_name] [customer_phone], "
                 "due [due_date]: [description]"),
    TemplateKind("ticket_closed", "Ticket closed — to the customer", PERSON + TICKET,
                 "Dear [name] [surname], your maintenance request #[ticket_id] ([category]) is closed."),
    TemplateKind("ticket_closed_assignee", "Ticket closed — to the assigned agent or service provider",
                 PERSON + TICKET, "Ticket #[ticket_id] ([category]) for [customer_name] is closed. Thank you."),
    TemplateKind("resend_information", "Resend information — the customer's last transaction",
                 PERSON + PAYMENT + ("token_details",),
                 "Dear [name] [surname], your last transaction: [amount] [currency] on [date]. [token_details]",
                 "Sent when a customer texts the resend key."),
    TemplateKind("resend_not_found", "Resend information — no transaction found", PERSON + ("number",),
                 "Last transaction information not found for [number].",
                 "Sent when someone texts the resend key and has no transaction."),
    TemplateKind("header", "Header (before every automatic message)", PERSON, "",
                 "Leave empty for no header."),
    TemplateKind("footer", "Footer (after every automatic message)", PERSON, "[company]",
                 "Leave empty for no footer."),
)}

ALL_PLACEHOLDERS = sorted({p for kind in KINDS.values() for p in kind.placeholders})

# What the preview fills in, so staff see a realistic message and its length.
SAMPLE_VALUES = {
    "name": "Jane", "surname": "Wanjiru", "company": "Acme Mini-Grids", "amount": "500", "currency": "KES",
    "reference": "QK7H2XYZ9", "date": "2026-11-26", "token": "1234-5678-9012-3456-7890",
    "meter_serial": "47000123456", "energy": "12.5", "device_serial": "SHS-00042", "duration": "30",
    "unit": "days", "ticket_id": "42", "category": "Meter fault", "description": "No power since Monday",
    "due_date": "2026-12-01", "customer_name": "Jane Wanjiru", "customer_phone": "+254 712 345678",
    "agent_name": "Peter Otieno", "agent_phone": "+254 722 000111", "number": "+254 712 345678",
    "token_details": "Meter: 47000123456, Token: 1234-5678-9012-3456-7890, Energy: 12.5 kWh",
}


class TemplateInvalid(ValueError):
    """The template cannot be saved; str(exc) names what is wrong."""


def placeholders_in(body: str) -> list[str]:
    return PLACEHOLDER.findall(body or "")


def check_brackets(body: str) -> None:
    """Every [ must close with ] before the next [: "[name," would be sent as written, to everyone."""
    body = body or ""
    opened = None
    for i, ch in enumerate(body):
        if ch == "[":
            if opened is not None:
                break
            opened = i
        elif ch == "]":
            if opened is None:
                raise TemplateInvalid(f"“{_around(body, i)}” has a ] that closes no [. "
                                      "Write placeholders as [name], each in its own brackets.")
            opened = None
    else:
        if opened is None:
            return
    raise TemplateInvalid(f"“{_around(body, opened)}” opens a placeholder with [ that is never closed. "
                          "Write placeholders as [name], each in its own brackets.")


def _around(body: str, i: int) -> str:
    # The word the stray bracket belongs to, as the user typed it.
    start = max(body.rfind(" ", 0, i) + 1, 0)
    end = body.find(" ", i + 1)
    return body[start:end if end != -1 else len(body)][:30]


def check_template(key: str, body: str) -> None:
    """Refuse placeholders this trigger cannot fill, naming them, and unbalanced brackets."""
    kind = KINDS[key]
    if key not in ("header", "footer") and not (body or "").strip():
        raise TemplateInvalid("The template is empty: write the message, or press Reset to use the default.")
    check_brackets(body)
    unknown = []
    for name in placeholders_in(body):
        if name not in kind.placeholders and f"[{name}]" not in unknown:
            unknown.append(f"[{name}]")
    if unknown:
        allowed = " ".join(f"[{p}]" for p in kind.placeholders)
        word = "placeholder" if len(unknown) == 1 else "placeholders"
        raise TemplateInvalid(f"Unknown {word} {', '.join(unknown)} for “{kind.label}”. You can use: {allowed}")


def template_body(company_id: int, key: str) -> str:
    row = db.session.scalar(select(SmsTemplate).where(SmsTemplate.company_id == company_id,
                                                      SmsTemplate.trigger == key))
    return row.body if row is not None else KINDS[key].default


def all_templates(company_id: int) -> list[dict]:
    """Every trigger with its current body, for the settings page."""
    rows = {t.trigger: t for t in db.session.scalars(
        select(SmsTemplate).where(SmsTemplate.company_id == company_id))}
    return [{"kind": kind, "body": rows[key].body if key in rows else kind.default,
             "customised": key in rows and rows[key].body != kind.default}
            for key, kind in KINDS.items()]


def save_template(company_id: int, key: str, body: str, user_id: int | None) -> SmsTemplate:
    """Store the company's body for this trigger; raises TemplateInvalid and stores nothing."""
    if key not in KINDS:
        raise TemplateInvalid("There is no such template.")
    body = (body or "").replace("\r\n", "\n").strip()
    check_template(key, body)
    check_length(company_id, key, body)
    row = db.session.scalar(select(SmsTemplate).where(SmsTemplate.company_id == company_id,
                                                      SmsTemplate.trigger == key))
    if row is None:
        row = SmsTemplate(company_id=company_id, trigger=key)
        db.session.add(row)
    row.body = body
    row.updated_by_user_id = user_id
    audit(company_id, user_id, "sms_template.saved", KINDS[key].label, trigger=key)
    db.session.commit()
    return row


def fill(body: str, values: dict) -> str:
    """Replace each [placeholder] by its value; a value we do not have becomes empty text."""
    return PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), "") or ""), body or "")


def compose(header: str, body: str, footer: str, values: dict) -> str:
    parts = [fill(part, values).strip() for part in (header, body, footer)]
    text = "\n".join(part for part in parts if part)
    return re.sub(r"[ \t]{2,}", " ", text)


def render(company_id: int, key: str, values: dict) -> str:
    """Header + the trigger's body + footer, filled with values, as the recipient reads it."""
    company = db.session.get(Company, company_id)
    values = {"company": company.name, **values}
    return compose(template_body(company_id, "header"), template_body(company_id, key),
                   template_body(company_id, "footer"), values)


@dataclass
class Preview:
    text: str
    info: BodyInfo | None
    error: str | None


def sample_text(company_id: int, key: str, body: str) -> str:
    """The template as a customer would read it with sample values (header and footer around it)."""
    company = db.session.get(Company, company_id)
    values = {**SAMPLE_VALUES, "company": company.name, "currency": company.currency}
    if key in ("header", "footer"):
        header = body if key == "header" else template_body(company_id, "header")
        footer = body if key == "footer" else template_body(company_id, "footer")
        # Shown around a sample confirmation, since a header alone is not a message.
        text = compose(header, template_body(company_id, "transaction_no_token"), footer, values)
    else:
        text = compose(template_body(company_id, "header"), body, template_body(company_id, "footer"), values)
    return text


def check_length(company_id: int, key: str, body: str) -> BodyInfo | None:
    """Refuse a template whose message, with sample values, is longer than any SMS may be
    (SMS_MAX_SEGMENTS): every message made from it would be refused when sent."""
    text = sample_text(company_id, key, body)
    if not text:
        return None
    info = analyse(text)
    limit = current_app.config["SMS_MAX_SEGMENTS"]
    if info.segments > limit:
        raise TemplateInvalid(
            f"With sample values this message is {info.segments} SMS segments long ({info.encoding}); "
            f"at most {limit} segments can be sent, so it would never go out. Shorten it.")
    return info


def preview(company_id: int, key: str, body: str) -> Preview:
    """The template as a customer would read it with sample values, its encoding and segments."""
    if key not in KINDS:
        return Preview("", None, "There is no such template.")
    try:
        check_template(key, body)
        info = check_length(company_id, key, body)
    except TemplateInvalid as exc:
        return Preview("", None, str(exc))
    return Preview(sample_text(company_id, key, body), info, None)


def person_values(person) -> dict:
    if person is None:
        return {"name": "Customer", "surname": ""}
    return {"name": person.name, "surname": person.surname}
