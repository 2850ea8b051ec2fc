"""Maintenance tickets: create for a customer, assign to an agent or service provider, comment, close.
Creating, (re-)assigning and closing each send a templated SMS to the customer and to the assignee."""
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import or_, select
from sqlalchemy.orm import selectinload

from mpm import sms_templates
from mpm.extensions import db
from mpm.messaging.send import SmsRefused, queue_messages, recipient_for_person
from mpm.models import MaintenanceTicket, Person, Sms, TicketComment
from mpm.models.base import utcnow
from mpm.paging import numbered_page
from mpm.people.phones import display
from mpm.queue import HIGH

DEFAULT_CATEGORIES = ("Electricity outage", "Meter fault", "Wiring", "Solar home system repair", "Other")
ASSIGNEE_KINDS = ("agent", "service_provider")


class TicketInvalid(ValueError):
    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass
class TicketOutcome:
    ticket: MaintenanceTicket
    sent: list[Sms] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # SMS that could not go, and why


def _person(company_id: int, person_id, kinds: tuple[str, ...], label: str, field_name: str) -> Person:
    try:
        person = db.session.get(Person, int(person_id))
    except (TypeError, ValueError):
        person = None
    if person is None or person.company_id != company_id or person.kind not in kinds:
        raise TicketInvalid(f"Choose the {label}.", field_name)
    return person


def assignee_choices(company_id: int) -> list[Person]:
    return list(db.session.scalars(select(Person).where(
        Person.company_id == company_id, Person.kind.in_(ASSIGNEE_KINDS)).order_by(Person.surname, Person.name)
        .options(selectinload(Person.phone_numbers), selectinload(Person.mini_grid))))


def category_choices(company_id: int) -> list[str]:
    used = db.session.scalars(select(MaintenanceTicket.category).where(
        MaintenanceTicket.company_id == company_id).distinct())
    return sorted(set(DEFAULT_CATEGORIES) | set(used))


def parse_due_date(raw: str | None) -> date | None:
    if not raw:
        return None
    try:
        return date.fromisoformat(raw.strip())
    except ValueError:
        raise TicketInvalid("The due date must be a date such as 2026-12-01.", "due_date") from None


def create_ticket(company_id: int, customer_id, category: str, description: str, assignee_id=None,
                  due_date: date | None = None, user_id: int | None = None) -> TicketOutcome:
    customer = _person(company_id, customer_id, ("customer",), "customer", "customer_id")
    category = (category or "").strip()
    if not category:
        raise TicketInvalid("Choose or type a category.", "category")
    if len(category) > 80:
        raise TicketInvalid("The category is longer than 80 characters.", "category")
    assignee = None
    if assignee_id not in (None, ""):
        assignee = _person(company_id, assignee_id, ASSIGNEE_KINDS, "agent or service provider", "assignee_id")
    ticket = MaintenanceTicket(company_id=company_id, customer_id=customer.id, category=category,
                               description=(description or "").strip(), due_date=due_date,
                               assignee_id=assignee.id if assignee else None,
                               assignment_count=1 if assignee else 0, created_by_user_id=user_id)
    db.session.add(ticket)
    db.session.commit()
    outcome = TicketOutcome(ticket)
    _notify(outcome, "created", customer, "ticket_created")
    if assignee is not None:
        _notify(outcome, "created", assignee, "ticket_created_assignee", role="assignee")
    return outcome


def assign_ticket(ticket: MaintenanceTicket, assignee_id, user_id: int | None = None) -> TicketOutcome:
    if ticket.status != "open":
        raise TicketInvalid("This ticket is closed.", "assignee_id")
    assignee = _person(ticket.company_id, assignee_id, ASSIGNEE_KINDS, "agent or service provider", "assignee_id")
    if assignee.id == ticket.assignee_id:
        raise TicketInvalid(f"The ticket is already assigned to {assignee.full_name}.", "assignee_id")
    previous = ticket.assignee
    ticket.assignee_id = assignee.id
    ticket.assignment_count += 1
    note = f"Assigned to {assignee.full_name}" + (f" (was {previous.full_name})." if previous else ".")
    db.session.add(TicketComment(company_id=ticket.company_id, ticket_id=ticket.id, author_user_id=user_id,
                                 body=note))
    db.session.commit()
    db.session.refresh(ticket)
    outcome = TicketOutcome(ticket)
    step = f"assigned:{ticket.assignment_count}"
    _notify(outcome, step, ticket.customer, "ticket_assigned")
    _notify(outcome, step, assignee, "ticket_assigned_assignee", role="assignee")
    return outcome


def close_ticket(ticket: MaintenanceTicket, user_id: int | None = None, note: str = "") -> TicketOutcome:
    if ticket.status == "closed":
        raise TicketInvalid("This ticket is already closed.")
    ticket.status = "closed"
    ticket.closed_at = utcnow()
    db.session.add(TicketComment(company_id=ticket.company_id, ticket_id=ticket.id, author_user_id=user_id,
                                 body=("Closed: " + note.strip()) if note and note.strip() else "Closed."))
    db.session.commit()
    outcome = TicketOutcome(ticket)
    _notify(outcome, "closed", ticket.customer, "ticket_closed")
    if ticket.assignee is not None:
        _notify(outcome, "closed", ticket.assignee, "ticket_closed_assignee", role="assignee")
    return outcome


def add_comment(ticket: MaintenanceTicket, body: str, user_id: int | None = None,
                person_id: int | None = None, sms_id: int | None = None) -> TicketComment:
    body = (body or "").strip()
    if not body:
        raise TicketInvalid("Write the comment first.", "body")
    comment = TicketComment(company_id=ticket.company_id, ticket_id=ticket.id, author_user_id=user_id,
                            author_person_id=person_id, sms_id=sms_id, body=body)
    db.session.add(comment)
    db.session.commit()
    return comment


def template_values(ticket: MaintenanceTicket, recipient: Person) -> dict:
    customer, assignee = ticket.customer, ticket.assignee

    def phone(person):
        number = person.primary_number if person else None
        return display(number.e164) if number else ""

    return {
        **sms_templates.person_values(recipient),
        "ticket_id": ticket.id, "category": ticket.category, "description": ticket.description,
        "due_date": ticket.due_date.isoformat() if ticket.due_date else "not set",
        "customer_name": customer.full_name, "customer_phone": phone(customer),
        "agent_name": assignee.full_name if assignee else "not assigned yet", "agent_phone": phone(assignee),
    }


def _notify(outcome: TicketOutcome, step: str, person: Person, template: str, role: str = "customer") -> None:
    """Queue one templated SMS; a refusal (no primary number, no provider) is reported, not raised."""
    ticket = outcome.ticket
    try:
        body = sms_templates.render(ticket.company_id, template, template_values(ticket, person))
        [sms] = queue_messages(ticket.company_id, [recipient_for_person(person)], body, trigger="maintenance",
                               trigger_id=ticket.id, dedupe_key=f"ticket:{ticket.id}:{step}:{role}", lane=HIGH)
        outcome.sent.append(sms)
    except SmsRefused as exc:
        db.session.rollback()
        problem = f"No SMS to {person.full_name} ({role}): {exc}"
        outcome.problems.append(problem)
        db.session.add(TicketComment(company_id=ticket.company_id, ticket_id=ticket.id, body=problem))
        db.session.commit()


def messages_for(ticket: MaintenanceTicket) -> list[Sms]:
    return list(db.session.scalars(select(Sms).where(
        Sms.company_id == ticket.company_id, Sms.trigger == "maintenance", Sms.trigger_id == ticket.id,
    ).order_by(Sms.created_at.desc(), Sms.id.desc())))


def open_ticket_for(company_id: int, person_id: int, ticket_id: int | None = None) -> MaintenanceTicket | None:
    """The person's most recent open ticket as customer or assignee (or the one they named)."""
    stmt = select(MaintenanceTicket).where(
        MaintenanceTicket.company_id == company_id, MaintenanceTicket.status == "open",
        or_(MaintenanceTicket.customer_id == person_id, MaintenanceTicket.assignee_id == person_id))
    if ticket_id is not None:
        named = db.session.scalar(stmt.where(MaintenanceTicket.id == ticket_id))
        if named is not None:
            return named
    return db.session.scalar(stmt.order_by(MaintenanceTicket.created_at.desc(), MaintenanceTicket.id.desc()).limit(1))


@dataclass
class TicketsPage:
    tickets: list[MaintenanceTicket]
    total: int
    page: int
    pages: int
    status: str


def tickets_page(company_id: int, status: str = "open", page: int = 1, per_page: int = 25) -> TicketsPage:
    status = status if status in (*MaintenanceTicket.STATES, "all") else "open"
    stmt = select(MaintenanceTicket).where(MaintenanceTicket.company_id == company_id)
    if status != "all":
        stmt = stmt.where(MaintenanceTicket.status == status)
    found = numbered_page(stmt.order_by(MaintenanceTicket.created_at.desc(), MaintenanceTicket.id.desc()), page, per_page)
    return TicketsPage(found.rows, found.total, found.page, found.pages, status)
