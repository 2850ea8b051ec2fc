"""Maintenance tickets: create, assign, re-assign, close — each sends templated SMS to both parties."""
import pytest
from sqlalchemy import func, select

from conftest import csrf_token, enable_gateway, make_company, make_person, run_jobs
from mpm.extensions import db
from mpm.maintenance import tickets
from mpm.messaging import ledger, status
from mpm.models import MaintenanceTicket, Sms, TicketComment


@pytest.fixture
def people(company):
    enable_gateway(company, "africastalking")
    return {
        "customer": make_person(company, "Amina", "Otieno", "+254712000001"),
        "agent": make_person(company, "Peter", "Agent", "+254722000001", kind="agent"),
        "provider": make_person(company, "Sam", "Fixer", "+254722000002", kind="service_provider"),
    }


def sms_of(ticket_id):
    db.session.expire_all()
    return list(db.session.scalars(select(Sms).where(Sms.trigger == "maintenance", Sms.trigger_id == ticket_id)
                                   .order_by(Sms.id)))


def test_create_page_sends_to_customer_and_assignee(logged_in, people):
    response = logged_in.post("/maintenance/new", data={
        "customer_id": people["customer"].id, "category": "Meter fault", "description": "No power since Monday",
        "assignee_id": people["agent"].id, "due_date": "2026-12-01", "csrf_token": csrf_token(logged_in)},
        follow_redirects=True)
    page = response.get_data(as_text=True)
    assert "Ticket created; 2 SMS queued." in page
    ticket = db.session.scalar(select(MaintenanceTicket))
    to_customer, to_agent = sms_of(ticket.id)
    assert to_customer.number == "+254712000001"
    assert to_customer.body.startswith(f"Dear Amina Otieno, we received your maintenance request #{ticket.id} "
                                       "(Meter fault). Assigned to: Peter Agent. Due: 2026-12-01.")
    assert to_agent.number == "+254722000001"
    assert to_agent.body.startswith(f"New ticket #{ticket.id} (Meter fault) for Amina Otieno +254 712 000001, "
                                    "due 2026-12-01: No power since Monday")
    assert page.count('<span class="status status-queued">queued</span>') == 2


def test_reassign_and_close_notify_both_and_are_logged(company, people):
    outcome = tickets.create_ticket(company.id, people["customer"].id, "Wiring", "", people["agent"].id)
    ticket = outcome.ticket
    tickets.assign_ticket(ticket, people["provider"].id)
    tickets.close_ticket(ticket, note="Cable replaced")
    messages = sms_of(ticket.id)
    assert [m.number for m in messages] == ["+254712000001", "+254722000001",   # created
                                            "+254712000001", "+254722000002",   # re-assigned
                                            "+254712000001", "+254722000002"]   # closed
    assert "now assigned to Sam Fixer +254 722 000002" in messages[2].body
    assert "is assigned to you: Amina Otieno" in messages[3].body
    assert "is closed" in messages[4].body
    comments = [c.body for c in db.session.scalars(select(TicketComment).order_by(TicketComment.id))]
    assert comments == ["Assigned to Sam Fixer (was Peter Agent).", "Closed: Cable replaced"]
    with pytest.raises(tickets.TicketInvalid, match="already closed"):
        tickets.close_ticket(ticket)
    assert len(sms_of(ticket.id)) == 6


def test_ticket_without_assignee_tells_the_customer_and_assigning_later_notifies(company, people):
    ticket = tickets.create_ticket(company.id, people["customer"].id, "Other", "").ticket
    [created] = sms_of(ticket.id)
    assert "Assigned to: not assigned yet. Due: not set." in created.body
    tickets.assign_ticket(ticket, people["agent"].id)
    assert len(sms_of(ticket.id)) == 3


def test_invalid_input_stores_nothing(logged_in, company, people):
    other = make_person(make_company("Other"), "Their", "Customer", "+254712000050")
    token = csrf_token(logged_in)
    for data, words in (
        ({"customer_id": other.id, "category": "x"}, "Choose the customer"),
        ({"customer_id": people["customer"].id, "category": ""}, "category"),
        ({"customer_id": people["customer"].id, "category": "x", "assignee_id": people["customer"].id},
         "agent or service provider"),
        ({"customer_id": people["customer"].id, "category": "x", "due_date": "tomorrow"}, "due date"),
    ):
        response = logged_in.post("/maintenance/new", data={**data, "csrf_token": token})
        assert response.status_code == 422 and words in response.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(MaintenanceTicket)) == 0
    assert db.session.scalar(select(func.count()).select_from(Sms)) == 0


def test_refused_sms_is_reported_on_the_ticket(logged_in, company, people):
    nobody = make_person(company, "No", "Phone", None)
    response = logged_in.post("/maintenance/new", data={
        "customer_id": nobody.id, "category": "Wiring", "assignee_id": people["agent"].id,
        "csrf_token": csrf_token(logged_in)}, follow_redirects=True)
    page = response.get_data(as_text=True)
    assert "Ticket created; 1 SMS queued." in page
    assert "No SMS to No Phone (customer)" in page and "Turn Primary on" in page


def test_pages_list_detail_and_polling(logged_in, company, people):
    ticket = tickets.create_ticket(company.id, people["customer"].id, "Meter fault", "",
                                       people["agent"].id).ticket
    listing = logged_in.get("/maintenance/").get_data(as_text=True)
    assert f"#{ticket.id}" in listing and "Amina Otieno" in listing and "Peter Agent" in listing
    assert "Amina Otieno" not in logged_in.get("/maintenance/?status=closed").get_data(as_text=True)
    url = f"/maintenance/{ticket.id}/sms"
    assert "every 3s" in logged_in.get(url, headers={"HX-Request": "true"}).get_data(as_text=True)
    for sms in sms_of(ticket.id):
        for step in (status.SENDING, status.SENT, status.FAILED):
            ledger.move(sms.company_id, [sms.id], step, "Blacklisted")
    db.session.commit()
    fragment = logged_in.get(url, headers={"HX-Request": "true"}).get_data(as_text=True)
    assert fragment.count("status-failed") == 2 and "Blacklisted" in fragment and "every 3s" not in fragment


def test_staff_comment_appears_without_reload(logged_in, company, people):
    ticket = tickets.create_ticket(company.id, people["customer"].id, "Wiring", "").ticket
    token = csrf_token(logged_in)
    fragment = logged_in.post(f"/maintenance/{ticket.id}/comments", data={"body": "Called the customer",
                                                                         "csrf_token": token},
                              headers={"HX-Request": "true"}).get_data(as_text=True)
    assert fragment.lstrip().startswith('<section id="ticket-comments">') and "Called the customer" in fragment
    empty = logged_in.post(f"/maintenance/{ticket.id}/comments", data={"body": " ", "csrf_token": token},
                           headers={"HX-Request": "true"})
    assert empty.status_code == 422 and "Write the comment first" in empty.get_data(as_text=True)


def test_another_companys_ticket_is_404(logged_in, people):
    other = make_company("Other")
    theirs = make_person(other, "Their", "Customer", "+254712000050")
    ticket = MaintenanceTicket(company_id=other.id, customer_id=theirs.id, category="x")
    db.session.add(ticket)
    db.session.commit()
    token = csrf_token(logged_in)
    assert logged_in.get(f"/maintenance/{ticket.id}").status_code == 404
    assert logged_in.post(f"/maintenance/{ticket.id}/close", data={"csrf_token": token}).status_code == 404
    db.session.expire_all()
    assert db.session.get(MaintenanceTicket, ticket.id).status == "open"


def test_ticket_lifecycle_end_to_end_through_the_simulator(app, logged_in, company, simulator):
    from conftest import enable_simulated_gateway

    enable_simulated_gateway(company, simulator)
    customer = make_person(company, "Amina", "Otieno", "+254712000001")
    agent = make_person(company, "Peter", "Agent", "+254722000001", kind="agent")
    token = csrf_token(logged_in)
    logged_in.post("/maintenance/new", data={"customer_id": customer.id, "category": "Meter fault",
                                             "assignee_id": agent.id, "csrf_token": token})
    ticket_id = db.session.scalar(select(MaintenanceTicket.id))
    logged_in.post(f"/maintenance/{ticket_id}/close", data={"csrf_token": token})
    logged_in.post(f"/maintenance/{ticket_id}/close", data={"csrf_token": token})  # a double click
    run_jobs(app)
    received = simulator.received("africastalking")
    assert sorted(r["number"] for r in received) == ["+254712000001", "+254712000001",
                                                     "+254722000001", "+254722000001"]
    assert sum("is closed" in r["message"] for r in received) == 2
