"""Staff record payments; each sends its confirmation once, by token type; list and detail pages."""
import re

import pytest
from sqlalchemy import func, select

from conftest import csrf_token, enable_gateway, make_company, make_person, run_jobs
from mpm.extensions import db
from mpm.messaging import ledger, status
from mpm.models import Sms, Transaction
from mpm.payments import transactions


@pytest.fixture
def customer(company):
    enable_gateway(company, "africastalking")
    return make_person(company, "Amina", "Otieno", "+254712000001")


def record(company, **data):
    payment = transactions.parse_payment(company.id, data)
    return transactions.record_transaction(company.id, payment)


def test_staff_record_a_payment_and_see_its_confirmation(logged_in, customer):
    token = csrf_token(logged_in)
    response = logged_in.post("/transactions/new", data={
        "customer_id": customer.id, "amount": "1250.5", "currency": "KES", "provider_reference": "",
        "csrf_token": token}, follow_redirects=True)
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Transaction recorded; its confirmation SMS is on its way." in page
    assert "1,250.50 KES" in page
    assert "we received your payment of 1,250.50 KES" in page
    assert '<span class="status status-queued">queued</span>' in page
    # The page polls while the SMS is in flight.
    assert 'hx-trigger="every 3s"' in page


def test_form_errors_are_shown_and_nothing_is_stored(logged_in, customer):
    token = csrf_token(logged_in)
    response = logged_in.post("/transactions/new", data={"customer_id": customer.id, "amount": "abc",
                                                         "csrf_token": token})
    assert response.status_code == 422
    assert "Amount must be a number" in response.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(Transaction)) == 0


def test_template_by_token_type(company, customer):
    meter, _ = record(company, customer_id=customer.id, amount=100, meter_serial="M-1", token="T-1", energy="5")
    shs, _ = record(company, customer_id=customer.id, amount=200, device_serial="D-1", token="T-2", duration=7,
                    unit="days")
    plain, _ = record(company, customer_id=customer.id, amount=300)
    bodies = {t.id: transactions.confirmations(company.id, [t.id])[t.id].body for t in (meter, shs, plain)}
    assert "Meter Serial: M-1. Token: T-1, Energy: 5 kWh" in bodies[meter.id]
    assert "of 200 KES is confirmed. Device: D-1. Token: T-2, valid for 7 days" in bodies[shs.id]
    assert "we received your payment of 300 KES" in bodies[plain.id]


def test_opted_out_customers_still_get_their_confirmation(company, customer):
    from mpm.models.base import utcnow

    customer.opted_out_at = utcnow()
    db.session.commit()
    transaction, _ = record(company, customer_id=customer.id, amount=100)
    assert transactions.confirmations(company.id, [transaction.id])[transaction.id].number == "+254712000001"


def test_the_setting_turns_confirmations_off(company, customer):
    transactions.set_sms_enabled(company.id, False)
    transaction, _ = record(company, customer_id=customer.id, amount=100)
    assert transactions.confirmations(company.id, [transaction.id]) == {}
    assert "turned off" in transaction.sms_note


def test_customer_without_primary_number_gets_a_clear_note(logged_in, company):
    enable_gateway(company, "africastalking")
    person = make_person(company, "No", "Primary", "+254712000077", primary=False)
    response = logged_in.post("/transactions/new", data={"customer_id": person.id, "amount": "10",
                                                         "csrf_token": csrf_token(logged_in)}, follow_redirects=True)
    assert "Turn Primary on" in response.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(Sms)) == 0


def test_list_shows_transactions_with_sms_status_and_search(logged_in, company, customer):
    other = make_person(company, "Baraka", "Mwangi", "+254712000002")
    first, _ = record(company, customer_id=customer.id, amount=100, provider_reference="AAA111")
    record(company, customer_id=other.id, amount=200, provider_reference="BBB222")
    sms = transactions.confirmations(company.id, [first.id])[first.id]
    ledger.move(sms.company_id, [sms.id], status.SENDING)
    ledger.move(sms.company_id, [sms.id], status.SENT)
    db.session.commit()
    page = logged_in.get("/transactions/").get_data(as_text=True)
    assert "2 transactions" in page and "Amina Otieno" in page and "Baraka Mwangi" in page
    assert '<span class="status status-sent">sent</span>' in page
    found = logged_in.get("/transactions/?q=baraka", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert found.lstrip().startswith('<section id="transactions-table">')
    assert "Baraka Mwangi" in found and "Amina Otieno" not in found


def test_detail_fragment_shows_live_status_and_stops_polling_when_final(logged_in, company, customer):
    transaction, _ = record(company, customer_id=customer.id, amount=100)
    sms = transactions.confirmations(company.id, [transaction.id])[transaction.id]
    url = f"/transactions/{transaction.id}/sms"
    assert 'hx-trigger="every 3s"' in logged_in.get(url, headers={"HX-Request": "true"}).get_data(as_text=True)
    for step in (status.SENDING, status.SENT, status.DELIVERED):
        ledger.move(sms.company_id, [sms.id], step)
    db.session.commit()
    fragment = logged_in.get(url, headers={"HX-Request": "true"}).get_data(as_text=True)
    assert '<span class="status status-delivered">delivered</span>' in fragment
    assert "every 3s" not in fragment


def test_another_companys_transaction_is_404(logged_in, company):
    other = make_company("Other")
    stranger = make_person(other, "Other", "Person", "+254712000099")
    transaction = Transaction(company_id=other.id, person_id=stranger.id, amount=5, currency="KES")
    db.session.add(transaction)
    db.session.commit()
    assert logged_in.get(f"/transactions/{transaction.id}").status_code == 404
    assert logged_in.get(f"/transactions/{transaction.id}/sms").status_code == 404
    # Another company's customer cannot be chosen on the form either.
    response = logged_in.post("/transactions/new", data={"customer_id": stranger.id, "amount": "5",
                                                         "csrf_token": csrf_token(logged_in)})
    assert response.status_code == 422 and "No customer" in response.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(Transaction)) == 1


def test_customer_search_offers_customers_to_pick(logged_in, company, customer):
    fragment = logged_in.get("/customers/picker?customer_q=amina").get_data(as_text=True)
    assert re.search(rf'name="customer_id" value="{customer.id}"', fragment) and "Amina Otieno" in fragment


def test_every_staff_payment_sends_once_end_to_end(app, logged_in, company, simulator):
    from conftest import enable_simulated_gateway

    enable_simulated_gateway(company, simulator)
    person = make_person(company, "Chege", "Kamau", "+254712000003")
    token = csrf_token(logged_in)
    for _ in range(2):  # the same M-Pesa code typed twice
        logged_in.post("/transactions/new", data={"customer_id": person.id, "amount": "75",
                                                  "provider_reference": "MPESA-9", "csrf_token": token})
    run_jobs(app)
    received = simulator.received("africastalking")
    assert [r["number"] for r in received] == ["+254712000003"]
    assert "we received your payment of 75 KES" in received[0]["message"]


def test_forms_and_sidebar_entries(logged_in, company, customer):
    page = logged_in.get(f"/transactions/new?customer_id={customer.id}").get_data(as_text=True)
    assert f'name="customer_id" value="{customer.id}" checked' in page and 'name="csrf_token"' in page
    ticket_form = logged_in.get(f"/maintenance/new?customer_id={customer.id}").get_data(as_text=True)
    assert f'name="customer_id" value="{customer.id}" checked' in ticket_form and "Meter fault" in ticket_form
    for href, label in (("/transactions/", "Transactions"), ("/maintenance/", "Maintenance"),
                        ("/inbox/", "Inbox"), ("/settings/sms", "SMS templates")):
        assert f'<a href="{href}">{label}</a>' in page or f'<a href="{href}" aria-current="page">{label}</a>' in page


def test_staff_send_the_confirmation_again(logged_in, company, customer):
    transaction, _ = record(company, customer_id=customer.id, amount=100, meter_serial="M-1", token="T-1")
    token = csrf_token(logged_in)
    page = logged_in.post(f"/transactions/{transaction.id}/resend", data={"csrf_token": token},
                          follow_redirects=True).get_data(as_text=True)
    assert "The confirmation is on its way again." in page and "(resent)" in page
    db.session.expire_all()
    messages = transactions.messages_for(db.session.get(Transaction, transaction.id))
    assert [m.trigger for m in messages] == ["resend_information", "transaction"]
    assert messages[0].body == messages[1].body
    # Without a gateway the staff member is told why, and nothing is stored.
    from mpm.models import GatewaySetting

    db.session.execute(GatewaySetting.__table__.update().values(enabled=False))
    db.session.commit()
    refused = logged_in.post(f"/transactions/{transaction.id}/resend", data={"csrf_token": token},
                             follow_redirects=True).get_data(as_text=True)
    assert "Not sent: No active SMS provider" in refused
    assert db.session.scalar(select(func.count()).select_from(Sms)) == 2


def test_staff_typing_a_used_reference_with_another_amount_is_told_which_transaction_has_it(logged_in, company,
                                                                                            customer):
    first, _ = record(company, customer_id=customer.id, amount=100, provider_reference="MP-9")
    token = csrf_token(logged_in)
    response = logged_in.post("/transactions/new", data={
        "customer_id": customer.id, "amount": "150", "provider_reference": "MP-9", "csrf_token": token})
    assert response.status_code == 409
    page = response.get_data(as_text=True)
    assert f"transaction #{first.id}" in page and "amount" in page
    assert db.session.scalar(select(func.count()).select_from(Transaction)) == 1
