"""Size limits: a request body over MAX_CONTENT_LENGTH is 413 (JSON for machines, a page for people) and
logged; an incoming message longer than INBOUND_SMS_MAX_SEGMENTS SMS parts is refused on every gateway's
path and never stored; a huge body stored before these limits is shown and exported cut, with a note."""
import hashlib
import hmac
import json
import logging

import pytest
from sqlalchemy import func, select

from conftest import enable_gateway, make_person
from mpm.accounts import api_tokens
from mpm.extensions import db
from mpm.messaging.history import SHOWN_BODY_LIMIT
from mpm.models import Sms, Transaction

GSM_LIMIT = 10 * 153  # the default INBOUND_SMS_MAX_SEGMENTS of GSM-7 parts
UCS2_LIMIT = 10 * 67


def count(model, *where) -> int:
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


@pytest.fixture
def at_incoming(company):
    setting = enable_gateway(company, "africastalking")
    return f"/api/africas-talking/callback/{company.id}/incoming-messages?token={setting.callback_secret}"


def _at_message(text: str, n: int = 1) -> dict:
    return {"from": "+254712000001", "to": "12345", "text": text, "id": f"at-in-{n}", "date": "2026-01-01"}


def test_an_incoming_message_of_50_mib_is_413_logged_and_not_stored(client, at_incoming, caplog):
    caplog.set_level(logging.WARNING)
    response = client.post(at_incoming, data=_at_message("x" * (50 * 1024 * 1024)))
    assert response.status_code == 413
    assert "too large" in response.get_json()["error"]
    assert count(Sms) == 0
    assert any("413" in r.getMessage() and "incoming-messages" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("text, stored", [
    ("a" * GSM_LIMIT, True),
    ("a" * (GSM_LIMIT + 1), False),
    ("€" * 760, True),  # two septets each, never split: 76 to a part
    ("€" * 761, False),
    ("я" * UCS2_LIMIT, True),  # one character outside GSM-7: UCS-2, 67 per part
    ("я" * (UCS2_LIMIT + 1), False),
])
def test_an_incoming_message_longer_than_ten_sms_parts_is_refused(client, at_incoming, caplog, text, stored):
    caplog.set_level(logging.WARNING)
    response = client.post(at_incoming, data=_at_message(text))
    if stored:
        assert response.status_code == 200
        assert db.session.scalar(select(Sms.body)) == text
    else:
        assert response.status_code == 413
        assert "more than 10 SMS parts" in response.get_json()["error"]
        assert count(Sms) == 0
        assert any("incoming message refused" in r.getMessage() for r in caplog.records)


def test_the_incoming_limit_is_configured(app, client, at_incoming):
    app.config["INBOUND_SMS_MAX_SEGMENTS"] = 2
    assert client.post(at_incoming, data=_at_message("a" * 306)).status_code == 200
    assert client.post(at_incoming, data=_at_message("b" * 307, n=2)).status_code == 413
    assert count(Sms) == 1


@pytest.mark.parametrize("gateway, path, header, payload", [
    ("textbee", "/api/textbee-sms-gateway/callback/{c}/webhook?token={t}", "X-Signature",
     {"webhookEvent": "MESSAGE_RECEIVED", "sender": "+254712000001", "message": "{text}", "smsId": "tb-in-1"}),
    ("viber", "/api/viber-messaging/callback/{c}/webhook?token={t}", "X-Viber-Content-Signature",
     {"event": "message", "sender": {"id": "viber-user-1"}, "message": {"type": "text", "text": "{text}"},
      "message_token": 9001}),
])
def test_signed_webhooks_are_held_to_the_same_incoming_limit(client, company, gateway, path, header, payload):
    setting = enable_gateway(company, gateway)
    secret = {"textbee": "tb-webhook-secret", "viber": "viber-test-token"}[gateway]
    url = path.format(c=company.id, t=setting.callback_secret)

    def post(text):
        body = json.dumps(payload).replace("{text}", text).encode()
        signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return client.post(url, data=body, content_type="application/json", headers={header: signature})

    assert post("z" * (GSM_LIMIT + 1)).status_code == 413
    assert count(Sms) == 0
    assert post("z" * GSM_LIMIT).status_code == 200
    assert count(Sms) == 1


def test_api_and_pages_answer_413_for_a_body_over_the_request_limit(client, company):
    _, token = api_tokens.create_token(company.id, "payments")
    huge = b"{" + b" " * (1024 * 1024 + 1) + b"}"
    response = client.post("/api/v1/transactions", data=huge, content_type="application/json",
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 413 and "1,048,576 bytes" in response.get_json()["error"]
    page = client.post("/login", data={"email": "a@b.c", "password": "p" * (1024 * 1024 + 1)})
    assert page.status_code == 413 and "The request is too large" in page.get_data(as_text=True)
    assert page.mimetype == "text/html"
    assert count(Transaction) == 0


def test_a_huge_body_stored_earlier_is_shown_and_exported_cut_with_a_note(logged_in, company):
    person = make_person(company, "Amina", "Otieno", "+254712000001")
    huge = "A" * (5 * 1024 * 1024)
    sms = Sms(company_id=company.id, direction="inbound", person_id=person.id, number="+254712000001", body=huge,
              status="received", gateway="africastalking", trigger="reply")
    db.session.add(sms)
    db.session.commit()
    note = f"[cut: {len(huge) - SHOWN_BODY_LIMIT:,} more characters not shown]"
    for url in (f"/sms/{sms.id}", f"/inbox/{sms.id}", "/sms/export.csv"):
        response = logged_in.get(url, buffered=True)  # the CSV streams: read it in the request's context
        assert response.status_code == 200, url
        assert len(response.get_data()) < 100_000, url
        assert note in response.get_data(as_text=True), url
    assert f"{len(huge)} characters" in logged_in.get(f"/sms/{sms.id}").get_data(as_text=True)


def test_a_message_of_the_largest_size_is_shown_whole(logged_in, company, at_incoming):
    text = "w" * GSM_LIMIT
    assert logged_in.post(at_incoming, data=_at_message(text)).status_code == 200
    sms_id = db.session.scalar(select(Sms.id))
    page = logged_in.get(f"/sms/{sms_id}").get_data(as_text=True)
    assert text in page and "[cut:" not in page
    assert text in logged_in.get("/sms/export.csv", buffered=True).get_data(as_text=True)

