"""POST /api/v1/transactions: bearer token, JSON in and out, idempotent by provider reference."""
import pytest

from conftest import enable_gateway, make_company, make_person, make_user, run_jobs
from mpm.accounts import api_tokens
from mpm.extensions import db
from mpm.models import ApiToken, Sms, Transaction
from sqlalchemy import func, select

URL = "/api/v1/transactions"


@pytest.fixture
def token(company):
    _, plain = api_tokens.create_token(company.id, "M-Pesa payments")
    return plain


@pytest.fixture
def customer(company):
    enable_gateway(company, "africastalking")
    return make_person(company, "Amina", "Otieno", "+254712000001")


def post(client, body, token=None, **kwargs):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post(URL, json=body, headers=headers, **kwargs)


def count(model, *where):
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


def test_token_is_required_and_a_wrong_one_is_refused(client, customer, token):
    body = {"customer_id": customer.id, "amount": 500}
    missing = post(client, body)
    assert missing.status_code == 401
    assert "Authorization: Bearer" in missing.get_json()["error"]
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = post(client, body, token="mpm_not-a-real-token")
    assert wrong.status_code == 401
    assert "wrong" in wrong.get_json()["error"]
    basic = client.post(URL, json=body, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_code == 401
    assert count(Transaction) == 0 and count(Sms) == 0


def test_token_is_stored_hashed_and_revoking_it_locks_the_provider_out(client, company, customer, token):
    row = db.session.scalar(select(ApiToken))
    assert token not in (row.token_hash, row.name) and row.last_four == token[-4:]
    assert post(client, {"customer_id": customer.id, "amount": 10}, token).status_code == 201
    api_tokens.revoke_token(company.id, row.id)
    assert post(client, {"customer_id": customer.id, "amount": 10, "provider_reference": "B"}, token).status_code == 401


def test_meter_payment_is_recorded_and_its_confirmation_queued(client, customer, token):
    response = post(client, {"customer_id": customer.id, "amount": "500", "currency": "KES",
                             "provider_reference": "QK7H2XYZ9", "meter_serial": "47000123456",
                             "token": "1234-5678-9012", "energy_kwh": 12.5}, token)
    assert response.status_code == 201
    data = response.get_json()
    assert data["amount"] == "500.00" and data["currency"] == "KES" and data["customer_id"] == customer.id
    assert data["token"] == {"type": "meter", "meter_serial": "47000123456", "token": "1234-5678-9012",
                             "energy_kwh": "12.500"}
    assert data["confirmation_sms"]["status"] == "queued"
    sms = db.session.get(Sms, data["confirmation_sms"]["id"])
    assert sms.number == "+254712000001" and sms.trigger == "transaction" and sms.trigger_id == data["id"]
    assert sms.body.startswith("Dear Amina Otieno, your transaction is confirmed. Meter Serial: 47000123456. "
                               "Token: 1234-5678-9012, Energy: 12.5 kWh")


def test_same_provider_reference_twice_is_one_transaction_and_one_sms(client, customer, token):
    body = {"customer_id": customer.id, "amount": 200, "provider_reference": "REF-1"}
    first = post(client, body, token)
    again = post(client, body, token)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.get_json()["id"] == again.get_json()["id"]
    assert again.get_json()["confirmation_sms"]["id"] == first.get_json()["confirmation_sms"]["id"]
    assert count(Transaction) == 1
    assert count(Sms, Sms.trigger == "transaction") == 1


def test_another_companys_customer_is_404_and_nothing_is_stored(client, company, customer, token):
    other = make_company("Other Grid")
    stranger = make_person(other, "Other", "Person", "+254712000099")
    response = post(client, {"customer_id": stranger.id, "amount": 100}, token)
    assert response.status_code == 404
    assert "No customer" in response.get_json()["error"]
    # And a number that only the other company knows is not found either.
    by_number = post(client, {"sender_number": "+254712000099", "amount": 100}, token)
    assert by_number.status_code == 404
    assert count(Transaction) == 0 and count(Sms) == 0


def test_malformed_json_is_400_with_a_message(client, customer, token):
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    broken = client.post(URL, data='{"amount": 5,', headers=headers)
    assert broken.status_code == 400 and "not valid JSON" in broken.get_json()["error"]
    a_list = client.post(URL, data="[1, 2]", headers=headers)
    assert a_list.status_code == 400 and "JSON object" in a_list.get_json()["error"]
    assert count(Transaction) == 0


@pytest.mark.parametrize("body, field, words", [
    ({"amount": 100}, "customer_id", "customer"),
    ({"customer_id": "CUSTOMER", "amount": 100}, "customer_id", "whole number"),
    ({"amount": "abc", "sender_number": "+254712000001"}, "amount", "number"),
    ({"amount": -5, "sender_number": "+254712000001"}, "amount", "more than 0"),
    ({"amount": 5, "sender_number": "12"}, "sender_number", "not"),
    ({"amount": 5, "sender_number": "+254712000001", "token": "123"}, "meter_serial", "serial"),
    ({"amount": 5, "sender_number": "+254712000001", "device_serial": "SHS-1", "token": "1"}, "duration", "duration"),
])
def test_invalid_fields_are_400_naming_the_field(client, customer, token, body, field, words):
    response = post(client, body, token)
    assert response.status_code == 400
    assert response.get_json()["field"] == field and words in response.get_json()["error"]
    assert count(Transaction) == 0


def test_sender_number_finds_the_customer_and_gets_the_confirmation(client, company, customer, token):
    # The customer paid from their second phone: the confirmation goes where the payment came from.
    response = post(client, {"sender_number": "0712 000 001", "amount": 50, "provider_reference": "S-1"}, token)
    assert response.status_code == 201 and response.get_json()["customer_id"] == customer.id
    other_phone = post(client, {"customer_id": customer.id, "sender_number": "0733 000 777", "amount": 50,
                                "provider_reference": "S-2"}, token)
    assert other_phone.get_json()["confirmation_sms"]["number"] == "+254733000777"


def test_no_active_gateway_records_the_payment_and_says_why_there_is_no_sms(client, app_ctx, token):
    company_id = db.session.scalar(select(ApiToken.company_id))
    from mpm.models import Company

    person = make_person(db.session.get(Company, company_id), "No", "Gateway", "+254712000055")
    response = post(client, {"customer_id": person.id, "amount": 10}, token)
    assert response.status_code == 201
    assert response.get_json()["confirmation_sms"] is None
    assert "No active SMS provider" in response.get_json()["sms_note"]


def test_confirmation_is_delivered_once_through_queue_and_simulator(app, client, company, token, simulator):
    from conftest import enable_simulated_gateway

    enable_simulated_gateway(company, simulator)
    person = make_person(company, "Baraka", "Mwangi", "+254712000002")
    body = {"customer_id": person.id, "amount": 300, "provider_reference": "E2E-1",
            "device_serial": "SHS-00042", "token": "9999-8888", "duration": 30, "unit": "days"}
    assert post(client, body, token).status_code == 201
    run_jobs(app)
    assert post(client, body, token).status_code == 200  # the provider posts it again after the send
    run_jobs(app)
    received = simulator.received("africastalking")
    assert len(received) == 1
    assert received[0]["number"] == "+254712000002"
    assert "Device: SHS-00042. Token: 9999-8888, valid for 30 days" in received[0]["message"]
    db.session.expire_all()
    assert db.session.scalar(select(Sms)).status in ("sent", "delivered")


def test_settings_page_creates_a_token_shown_once(logged_in, company):
    from conftest import csrf_token

    token = csrf_token(logged_in)
    created = logged_in.post("/settings/api-tokens", data={"name": "Payments", "csrf_token": token})
    assert created.status_code == 201
    page = created.get_data(as_text=True)
    import re

    plain = re.search(r'id="new-token-value">(mpm_[^<]+)<', page).group(1)
    assert api_tokens.company_for_token(plain) == company.id
    later = logged_in.get("/settings/api-tokens").get_data(as_text=True)
    assert plain not in later and plain[-4:] in later and "Payments" in later


def test_a_manager_cannot_create_tokens(client, company):
    from conftest import csrf_token, login

    manager = make_user(company, role="manager")
    login(client, manager.email)
    response = client.post("/settings/api-tokens", data={"name": "x", "csrf_token": csrf_token(client)})
    assert response.status_code == 403
    assert count(ApiToken) == 0


def test_provider_reads_the_confirmation_status_back(client, company, customer, token):
    created = post(client, {"customer_id": customer.id, "amount": 10.005}, token).get_json()
    assert created["amount"] == "10.01"
    url = f"{URL}/{created['id']}"
    assert client.get(url).status_code == 401
    data = client.get(url, headers={"Authorization": f"Bearer {token}"}).get_json()
    assert data["confirmation_sms"]["status"] == "queued" and data["id"] == created["id"]
    _, their_token = api_tokens.create_token(make_company("Other").id, "theirs")
    assert client.get(url, headers={"Authorization": f"Bearer {their_token}"}).status_code == 404


@pytest.mark.parametrize("body, field, words", [
    ({"customer_id": 2**63, "amount": 100}, "customer_id", "whole number from 1 to"),
    ({"customer_id": 10**30, "amount": 100}, "customer_id", "whole number from 1 to"),
    ({"customer_id": True, "amount": 100}, "customer_id", "whole number"),
    ({"customer_id": 12.5, "amount": 100}, "customer_id", "whole number"),
    ({"customer_id": {"id": 1}, "amount": 100}, "customer_id", "whole number"),
    ({"sender_number": "+254712000001", "amount": 5, "device_serial": "SHS-1", "token": "1", "unit": "days",
      "duration": 10**30}, "duration", "whole number from 1 to"),
    ({"sender_number": "+254712000001", "amount": 5, "device_serial": "SHS-1", "token": "1", "unit": "days",
      "duration": "thirty"}, "duration", "whole number"),
    ({"sender_number": "+254712000001", "amount": 1e308}, "amount", "too large"),
    ({"sender_number": "+254712000001", "amount": "1e999999999"}, "amount", "too large"),
    ({"sender_number": "+254712000001", "amount": "NaN"}, "amount", "number"),
    ({"sender_number": "+254712000001", "amount": "Infinity"}, "amount", "too large"),
    ({"sender_number": "+254712000001", "amount": [5]}, "amount", "number"),
    ({"sender_number": "+254712000001", "amount": False}, "amount", "number"),
    ({"sender_number": "+254712000001", "amount": 0.004}, "amount", "rounds to 0.00 KES"),
    ({"sender_number": "+254712000001", "amount": "1e-400"}, "amount", "rounds to 0.00 KES"),
    ({"sender_number": "+254712000001", "amount": 0.4, "currency": "UGX"}, "amount", "rounds to 0 UGX"),
    ({"sender_number": ["+254712000001"], "amount": 5}, "sender_number", "text"),
    ({"sender_number": "+254712000001", "amount": 5, "provider_reference": "R" * 121}, "provider_reference",
     "longer than 120"),
    ({"sender_number": "+254712000001", "amount": 5, "provider_reference": {"$ne": None}}, "provider_reference",
     "text"),
])
def test_wrong_types_and_absurd_numbers_are_400_naming_the_field(client, customer, token, body, field, words):
    response = post(client, body, token)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["field"] == field and words in response.get_json()["error"]
    assert count(Transaction) == 0 and count(Sms) == 0


def test_a_body_nested_too_deep_is_400_not_a_crash(client, customer, token):
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    for body in ("[" * 100_000, '{"amount": ' + "[" * 100_000, '{"a":' * 50_000):
        response = client.post(URL, data=body, headers=headers)
        assert response.status_code == 400 and "not valid JSON" in response.get_json()["error"]
        assert len(response.get_data()) < 500  # the input is never echoed back
    assert count(Transaction) == 0


def test_amounts_round_to_the_currencys_minor_unit(client, customer, token):
    cents = post(client, {"customer_id": customer.id, "amount": "0.005"}, token)
    assert cents.status_code == 201 and cents.get_json()["amount"] == "0.01"
    shillings = post(client, {"customer_id": customer.id, "amount": "1500.50", "currency": "UGX"}, token)
    assert shillings.status_code == 201 and shillings.get_json()["amount"] == "1501.00"
    assert count(Transaction) == 2


def test_the_same_reference_with_other_data_is_409_naming_the_first_transaction(client, company, customer, token):
    first = post(client, {"customer_id": customer.id, "amount": 200, "provider_reference": "MP-77"}, token)
    assert first.status_code == 201
    first_id = first.get_json()["id"]
    other_amount = post(client, {"customer_id": customer.id, "amount": 250, "provider_reference": "MP-77"}, token)
    assert other_amount.status_code == 409
    data = other_amount.get_json()
    assert data["transaction_id"] == first_id and data["field"] == "provider_reference"
    assert f"#{first_id}" in data["error"] and "amount" in data["error"]
    other = make_person(company, "Baraka", "Mwangi", "+254712000002")
    other_customer = post(client, {"customer_id": other.id, "amount": 200, "provider_reference": "MP-77"}, token)
    assert other_customer.status_code == 409 and "customer_id" in other_customer.get_json()["error"]
    # The same data again stays an idempotent 200, and the first payment is untouched.
    same = post(client, {"customer_id": customer.id, "amount": "200.00", "provider_reference": "MP-77"}, token)
    assert same.status_code == 200 and same.get_json()["id"] == first_id
    assert count(Transaction) == 1 and count(Sms, Sms.trigger == "transaction") == 1
    db.session.expire_all()
    assert db.session.get(Transaction, first_id).amount == 200
