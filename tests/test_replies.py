"""Incoming SMS: STOP/START, the resend key, ticket comments from replies, and the SMS inbox."""
import pytest
from sqlalchemy import func, select

from conftest import csrf_token, enable_gateway, make_company, make_person, run_jobs
from mpm.extensions import db
from mpm.gateways.base import IncomingMessage
from mpm.maintenance import tickets
from mpm.messaging.inbound import store_incoming
from mpm.models import AuditEntry, Person, Sms, TicketComment
from mpm.payments import transactions


@pytest.fixture
def customer(company):
    enable_gateway(company, "africastalking")
    return make_person(company, "Amina", "Otieno", "+254712000001")


def incoming(company, body, number="+254712000001", message_id=""):
    return store_incoming(company.id, "africastalking", IncomingMessage(number=number, body=body,
                                                                        provider_message_id=message_id))


def outbound(trigger):
    db.session.expire_all()
    return list(db.session.scalars(select(Sms).where(Sms.direction == "outbound", Sms.trigger == trigger)))


def test_stop_opts_out_with_an_audit_entry_and_start_opts_back_in(company, customer):
    incoming(company, "stop")
    db.session.expire_all()
    assert db.session.get(Person, customer.id).opted_out_at is not None
    entry = db.session.scalar(select(AuditEntry))
    assert (entry.action, entry.subject, entry.details["word"]) == ("person.opted_out", "Amina Otieno", "stop")
    incoming(company, " Start. ")
    db.session.expire_all()
    assert db.session.get(Person, customer.id).opted_out_at is None
    assert [e.action for e in db.session.scalars(select(AuditEntry).order_by(AuditEntry.id))] == [
        "person.opted_out", "person.opted_in"]


def test_stop_inside_a_sentence_is_just_a_message(company, customer):
    incoming(company, "Please stop the noise from the generator")
    db.session.expire_all()
    assert db.session.get(Person, customer.id).opted_out_at is None


def test_configured_opt_out_words(company, customer):
    company.settings = {"opt_out_words": ["ACHA"], "opt_in_words": ["ANZA"]}
    db.session.commit()
    incoming(company, "Acha")
    db.session.expire_all()
    assert db.session.get(Person, customer.id).opted_out_at is not None


def test_opted_out_customer_still_gets_transaction_confirmation(company, customer):
    incoming(company, "STOP")
    payment = transactions.parse_payment(company.id, {"customer_id": customer.id, "amount": 100})
    transactions.record_transaction(company.id, payment)
    assert [s.number for s in outbound("transaction")] == ["+254712000001"]


def test_resend_key_sends_the_last_transaction_again(company, customer):
    for amount, serial in ((100, "M-OLD"), (250, "M-NEW")):
        payment = transactions.parse_payment(company.id, {"customer_id": customer.id, "amount": amount,
                                                          "meter_serial": serial, "token": "TOK-" + serial,
                                                          "energy": 3})
        transactions.record_transaction(company.id, payment)
    first = incoming(company, "resend", message_id="in-1")
    [answer] = outbound("resend_information")
    assert answer.number == "+254712000001"
    assert "your last transaction: 250 KES on" in answer.body
    assert "Meter: M-NEW, Token: TOK-M-NEW, Energy: 3 kWh" in answer.body
    # The provider retries the same incoming message: still one answer.
    assert incoming(company, "resend", message_id="in-1") is None
    assert len(outbound("resend_information")) == 1
    assert any("answered with the last transaction" in e.detail for e in first.events)


def test_resend_without_any_transaction_says_so(company, customer):
    incoming(company, "RESEND please")
    [answer] = outbound("resend_information")
    assert answer.body.startswith("Last transaction information not found for +254712000001.")
    stranger = incoming(company, "Resend", number="+254733000999")
    assert outbound("resend_information")[-1].number == "+254733000999"
    assert stranger.person_id is None


def test_ticket_keyword_adds_a_comment_to_the_senders_open_ticket(company, customer):
    agent = make_person(company, "Peter", "Agent", "+254722000001", kind="agent")
    older = tickets.create_ticket(company.id, customer.id, "Wiring", "", agent.id).ticket
    newer = tickets.create_ticket(company.id, customer.id, "Meter fault", "", agent.id).ticket
    incoming(company, "Ticket: the meter is beeping again")
    incoming(company, "TICKET #%d fixed the cable" % older.id, number="+254722000001")
    db.session.expire_all()
    by_ticket = {c.ticket_id: (c.body, c.author_person_id) for c in db.session.scalars(
        select(TicketComment).where(TicketComment.sms_id.is_not(None)))}
    assert by_ticket == {newer.id: ("the meter is beeping again", customer.id),
                         older.id: ("fixed the cable", agent.id)}


def test_ticket_keyword_from_a_stranger_or_without_open_ticket_adds_nothing(company, customer):
    tickets.close_ticket(tickets.create_ticket(company.id, customer.id, "Wiring", "").ticket)
    note = incoming(company, "ticket still broken")
    incoming(company, "ticket hello", number="+254733000999")
    assert db.session.scalar(select(func.count()).select_from(TicketComment).where(
        TicketComment.sms_id.is_not(None))) == 0
    assert any("no open ticket" in e.detail for e in note.events)


def test_ticket_comment_from_sms_shows_on_the_ticket_page(logged_in, company, customer):
    ticket = tickets.create_ticket(company.id, customer.id, "Wiring", "").ticket
    incoming(company, "ticket power is back, thanks")
    page = logged_in.get(f"/maintenance/{ticket.id}").get_data(as_text=True)
    assert "power is back, thanks" in page and "Amina Otieno (SMS)" in page


def test_inbox_shows_unread_and_opening_marks_read(logged_in, company, customer):
    message = incoming(company, "When is the technician coming?")
    incoming(company, "Hello from nobody", number="+254733000999")
    page = logged_in.get("/inbox/").get_data(as_text=True)
    assert "2 unread" in page and "When is the technician coming?" in page and "Amina Otieno" in page
    assert page.count('class="unread"') == 2
    conversation = logged_in.get(f"/inbox/{message.id}").get_data(as_text=True)
    assert "When is the technician coming?" in conversation
    unread_only = logged_in.get("/inbox/?unread=1", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert unread_only.lstrip().startswith('<section id="inbox-list"')
    assert "Hello from nobody" in unread_only and "technician" not in unread_only
    logged_in.post(f"/inbox/{message.id}/unread", data={"csrf_token": csrf_token(logged_in)})
    assert "2 unread" in logged_in.get("/inbox/").get_data(as_text=True)


def test_staff_reply_from_the_inbox(logged_in, company, customer):
    message = incoming(company, "My token does not work")
    token = csrf_token(logged_in)
    fragment = logged_in.post(f"/inbox/{message.id}/reply", data={"body": "We are checking it now.",
                                                                  "csrf_token": token},
                              headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    html = fragment.get_data(as_text=True)
    assert html.lstrip().startswith('<section id="conversation">') and "We are checking it now." in html
    [reply] = outbound("reply")
    assert (reply.number, reply.person_id, reply.trigger_id) == ("+254712000001", customer.id, message.id)
    empty = logged_in.post(f"/inbox/{message.id}/reply", data={"body": "  ", "csrf_token": token},
                           headers={"HX-Request": "true"})
    assert empty.status_code == 422 and "body is empty" in empty.get_data(as_text=True)
    assert len(outbound("reply")) == 1


def test_reply_without_active_gateway_says_no_active_sms_provider(logged_in, company):
    person = make_person(company, "No", "Gateway", "+254712000055")
    message = store_incoming(company.id, "africastalking", IncomingMessage(number=person.phone_numbers[0].e164,
                                                                           body="hi"))
    response = logged_in.post(f"/inbox/{message.id}/reply", data={"body": "hello",
                                                                  "csrf_token": csrf_token(logged_in)})
    assert response.status_code == 422 and "No active SMS provider" in response.get_data(as_text=True)
    assert outbound("reply") == []


def test_another_companys_inbox_message_is_404(logged_in, company):
    other = make_company("Other")
    message = store_incoming(other.id, "africastalking", IncomingMessage(number="+254712000001", body="secret"))
    assert logged_in.get(f"/inbox/{message.id}").status_code == 404
    assert "secret" not in logged_in.get("/inbox/").get_data(as_text=True)


def test_stop_and_resend_through_the_providers_callback_and_the_queue(app, client, company, simulator):
    from conftest import enable_simulated_gateway

    setting = enable_simulated_gateway(company, simulator)
    customer = make_person(company, "Amina", "Otieno", "+254712000001")
    url = f"/api/africas-talking/callback/{company.id}/incoming-messages?token={setting.callback_secret}"
    form = {"from": "+254712000001", "to": "12345", "text": "STOP", "id": "at-in-1", "date": "2026-11-26 10:00:00"}
    assert client.post(url, data=form).status_code == 200
    assert client.post(url, data={**form, "text": "Resend", "id": "at-in-2"}).status_code == 200
    run_jobs(app)
    db.session.expire_all()
    assert db.session.get(Person, customer.id).opted_out_at is not None
    [answer] = simulator.received("africastalking")
    assert answer["number"] == "+254712000001" and "Last transaction information not found" in answer["message"]
