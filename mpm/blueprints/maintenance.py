"""Maintenance tickets: list, create, detail with SMS and comments, (re-)assign, comment, close."""
from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from mpm.maintenance import tickets
from mpm.messaging.status import IN_FLIGHT
from mpm.models import MaintenanceTicket
from mpm.people import customers
from mpm.web import company_id, get_for_company_or_404, page_or_fragment

bp = Blueprint("maintenance", __name__, url_prefix="/maintenance")


@bp.get("/")
@login_required
def index():
    result = tickets.tickets_page(company_id(), request.args.get("status", "open"),
                                      request.args.get("page", 1, type=int) or 1)
    return page_or_fragment("maintenance/index.html", "maintenance/_table.html", result=result)


def _form_page(form: dict, error: str | None = None, field: str | None = None, status: int = 200):
    customer = customers.company_person(company_id(), form.get("customer_id"))
    return render_template("maintenance/new.html", form=form, error=error, field=field, customer=customer,
                           assignees=tickets.assignee_choices(company_id()),
                           categories=tickets.category_choices(company_id())), status


@bp.get("/new")
@login_required
def new():
    return _form_page({"customer_id": request.args.get("customer_id", "")})


@bp.post("/new")
@login_required
def create():
    form = request.form.to_dict()
    try:
        outcome = tickets.create_ticket(
            company_id(), form.get("customer_id"), form.get("category", ""), form.get("description", ""),
            form.get("assignee_id"), tickets.parse_due_date(form.get("due_date")), user_id=current_user.id)
    except tickets.TicketInvalid as exc:
        return _form_page(form, str(exc), exc.field, 422)
    _flash_outcome(outcome, "Ticket created")
    return redirect(url_for("maintenance.detail", ticket_id=outcome.ticket.id))


def _flash_outcome(outcome: tickets.TicketOutcome, done: str) -> None:
    count = len(outcome.sent)
    flash(f"{done}; {count} SMS queued." if count else f"{done}.")
    for problem in outcome.problems:
        flash(problem, "error")


def _detail_page(ticket: MaintenanceTicket, error: str | None = None, status: int = 200):
    messages = tickets.messages_for(ticket)
    return render_template("maintenance/detail.html", ticket=ticket, messages=messages, error=error,
                           polling=any(m.status in IN_FLIGHT for m in messages),
                           assignees=tickets.assignee_choices(ticket.company_id)), status


@bp.get("/<int:ticket_id>")
@login_required
def detail(ticket_id: int):
    return _detail_page(get_for_company_or_404(MaintenanceTicket, ticket_id))


@bp.get("/<int:ticket_id>/sms")
@login_required
def sms(ticket_id: int):
    """htmx polling: this ticket's SMS with their current status."""
    ticket = get_for_company_or_404(MaintenanceTicket, ticket_id)
    messages = tickets.messages_for(ticket)
    return page_or_fragment("maintenance/detail.html", "maintenance/_sms.html", ticket=ticket, messages=messages,
                            polling=any(m.status in IN_FLIGHT for m in messages),
                            assignees=tickets.assignee_choices(ticket.company_id))


@bp.post("/<int:ticket_id>/assign")
@login_required
def assign(ticket_id: int):
    ticket = get_for_company_or_404(MaintenanceTicket, ticket_id)
    try:
        outcome = tickets.assign_ticket(ticket, request.form.get("assignee_id"), user_id=current_user.id)
    except tickets.TicketInvalid as exc:
        return _detail_page(ticket, str(exc), 422)
    _flash_outcome(outcome, f"Assigned to {outcome.ticket.assignee.full_name}")
    return redirect(url_for("maintenance.detail", ticket_id=ticket.id))


@bp.post("/<int:ticket_id>/close")
@login_required
def close(ticket_id: int):
    ticket = get_for_company_or_404(MaintenanceTicket, ticket_id)
    try:
        outcome = tickets.close_ticket(ticket, user_id=current_user.id, note=request.form.get("note", ""))
    except tickets.TicketInvalid as exc:
        return _detail_page(ticket, str(exc), 422)
    _flash_outcome(outcome, "Ticket closed")
    return redirect(url_for("maintenance.detail", ticket_id=ticket.id))


@bp.post("/<int:ticket_id>/comments")
@login_required
def comment(ticket_id: int):
    ticket = get_for_company_or_404(MaintenanceTicket, ticket_id)
    try:
        tickets.add_comment(ticket, request.form.get("body", ""), user_id=current_user.id)
    except tickets.TicketInvalid as exc:
        return page_or_fragment("maintenance/detail.html", "maintenance/_comments.html", ticket=ticket,
                                comment_error=str(exc), messages=tickets.messages_for(ticket),
                                assignees=tickets.assignee_choices(ticket.company_id)), 422
    return page_or_fragment("maintenance/detail.html", "maintenance/_comments.html", ticket=ticket,
                            messages=tickets.messages_for(ticket),
                            assignees=tickets.assignee_choices(ticket.company_id))
