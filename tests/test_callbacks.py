"""Providers' callbacks: authenticated, idempotent, never backwards, never a 500."""
import hashlib
import hmac
import json
import time

import pytest
from flask import current_app
from sqlalchemy import func, select

from mpm.extensions import db
from mpm.messaging import status
from mpm.models import ParkedReport, Person, Sms, SmsEvent
from mpm.plugins.gateway_settings import gateway_setting
from tests.conftest import DEFAULT_CREDENTIALS, drain_reports, enable_gateway, make_person, run_jobs


def _sent_sms(company, gateway="africastalking", provider_id="ATXid_1", number="+254712345678") -> Sms:
    sms = Sms(company_id=company.id, direction="outbound", number=number, body="Hi", status=status.SENT,
              gateway=gateway, provider_message_id=provider_id)
    db.session.add(sms)
    db.session.commit()
    return sms


def _at_url(company, kind="delivery-reports", token=None):
    token = token if token is not None else gateway_setting(company.id, "africastalking").callback_secret
    return f"/api/africas-talking/callback/{company.id}/{kind}?token={token}"


def _status(sms_id):
    drain_reports(current_app._get_current_object())
    db.session.expire_all()
    return db.session.get(Sms, sms_id).status


def _snapshot():
    drain_reports(current_app._get_current_object())
    db.session.expire_all()
    return [(s.id, s.status, s.error) for s in db.session.scalars(select(Sms).order_by(Sms.id))]


def test_africastalking_report_moves_sent_to_delivered(client, company):
    enable_gateway(company, "africastalking")
    sms = _sent_sms(company)
    response = client.post(_at_url(company), data={"id": "ATXid_1", "status": "Success", "phoneNumber": "+254712345678",
                                                   "networkCode": "63902"})
    assert response.status_code == 200
    assert _status(sms.id) == "delivered"


def test_duplicate_and_out_of_order_reports_never_move_backwards(client, company):
    enable_gateway(company, "africastalking")
    sms = _sent_sms(company)
    for report in ("Success", "Success", "Buffered", "Sent", "Failed"):
        response = client.post(_at_url(company), data={"id": "ATXid_1", "status": report, "failureReason": "DeliveryFailure"})
        assert response.status_code == 200
    assert _status(sms.id) == "delivered"
    events = db.session.scalars(select(SmsEvent.detail).where(SmsEvent.sms_id == sms.id, SmsEvent.kind == "callback")).all()
    assert len(events) == 5 and sum("ignored" in e for e in events) == 4


def test_failed_report_keeps_the_reason(client, company):
    enable_gateway(company, "africastalking")
    sms = _sent_sms(company)
    client.post(_at_url(company), data={"id": "ATXid_1", "status": "Failed", "failureReason": "UserInBlackList"})
    drain_reports(current_app._get_current_object())
    db.session.expire_all()
    row = db.session.get(Sms, sms.id)
    assert row.status == "failed" and "UserInBlackList" in row.error


@pytest.mark.parametrize("token", ["", "wrong-token"])
def test_forged_report_is_refused_and_changes_nothing(client, company, token):
    enable_gateway(company, "africastalking")
    _sent_sms(company)
    before = _snapshot()
    response = client.post(_at_url(company, token=token), data={"id": "ATXid_1", "status": "Failed"})
    assert response.status_code == 403
    assert _snapshot() == before


def test_another_companys_secret_does_not_open_this_company(client, company):
    from tests.conftest import make_company

    other = make_company("Other Co")
    enable_gateway(company, "africastalking")
    enable_gateway(other, "africastalking")
    _sent_sms(company)
    before = _snapshot()
    other_secret = gateway_setting(other.id, "africastalking").callback_secret
    response = client.post(_at_url(company, token=other_secret), data={"id": "ATXid_1", "status": "Failed"})
    assert response.status_code == 403
    assert _snapshot() == before


def test_unknown_id_is_taken_and_malformed_reports_are_4xx(client, company):
    enable_gateway(company, "africastalking")
    _sent_sms(company)
    before = _snapshot()
    # An id we do not know (yet): the provider gets its 200, the report waits for the id.
    assert client.post(_at_url(company), data={"id": "ATXid_unknown", "status": "Success"}).status_code == 200
    assert client.post(_at_url(company), data={"status": "Success"}).status_code == 400
    assert client.post(_at_url(company), data={"id": "ATXid_1", "status": "Nonsense"}).status_code == 400
    assert client.post(_at_url(company), data=b"\xff\xfe", content_type="application/octet-stream").status_code == 400
    assert client.post("/api/africas-talking/callback/999/delivery-reports?token=x", data={}).status_code == 403
    assert _snapshot() == before
    assert db.session.scalars(select(ParkedReport.provider_message_id)).all() == ["ATXid_unknown"]


def test_africastalking_incoming_message_is_stored_once(client, company):
    enable_gateway(company, "africastalking")
    person = make_person(company)
    form = {"from": "+254712345678", "to": "12345", "text": "Hello office", "id": "ATInc_1", "date": "2026-01-01 10:00:00",
            "networkCode": "63902"}
    assert client.post(_at_url(company, "incoming-messages"), data=form).status_code == 200
    assert client.post(_at_url(company, "incoming-messages"), data=form).status_code == 200
    rows = db.session.scalars(select(Sms).where(Sms.direction == "inbound")).all()
    assert len(rows) == 1 and rows[0].body == "Hello office" and rows[0].person_id == person.id


def _textbee_post(client, company, payload, secret="tb-webhook-secret", token=None):
    raw = json.dumps(payload).encode()
    token = token if token is not None else gateway_setting(company.id, "textbee").callback_secret
    signature = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return client.post(f"/api/textbee-sms-gateway/callback/{company.id}/webhook?token={token}", data=raw,
                       content_type="application/json", headers={"X-Signature": signature})


def test_textbee_webhooks_move_status_and_refuse_bad_signatures(client, company):
    enable_gateway(company, "textbee")
    sms = _sent_sms(company, "textbee", "66a1b2")
    base = {"smsId": "s1", "smsBatchId": "66a1b2", "message": "Hi", "deviceId": "dev-1", "recipient": sms.number,
            "webhookSubscriptionId": "w", "idempotencyKey": "k"}
    assert _textbee_post(client, company, {**base, "webhookEvent": "MESSAGE_DELIVERED"}, secret="forged").status_code == 403
    assert _status(sms.id) == "sent"
    assert _textbee_post(client, company, {**base, "webhookEvent": "MESSAGE_DELIVERED"}).status_code == 200
    assert _status(sms.id) == "delivered"
    assert _textbee_post(client, company, {**base, "webhookEvent": "MESSAGE_SENT"}).status_code == 200
    assert _status(sms.id) == "delivered"
    assert _textbee_post(client, company, {**base, "smsBatchId": "zzz", "webhookEvent": "MESSAGE_FAILED"}).status_code == 200
    received = {"smsId": "r1", "message": "Balance?", "deviceId": "dev-1", "webhookEvent": "MESSAGE_RECEIVED",
                "sender": "+254799000000", "receivedAt": "2026-01-01T00:00:00Z", "idempotencyKey": "k2"}
    assert _textbee_post(client, company, received).status_code == 200
    assert db.session.scalar(select(func.count()).select_from(Sms).where(Sms.direction == "inbound")) == 1


def _viber_post(client, company, payload, token_secret=None):
    raw = json.dumps(payload).encode()
    signature = hmac.new((token_secret or DEFAULT_CREDENTIALS["viber"]["auth_token"]).encode(), raw,
                         hashlib.sha256).hexdigest()
    token = gateway_setting(company.id, "viber").callback_secret
    return client.post(f"/api/viber-messaging/callback/{company.id}/webhook?token={token}", data=raw,
                       content_type="application/json", headers={"X-Viber-Content-Signature": signature})


def test_viber_webhook_verification_delivery_and_unsubscribe(client, company):
    enable_gateway(company, "viber")
    person = make_person(company, viber_id="01234567890A=")
    sms = _sent_sms(company, "viber", "4912661846655238145")
    assert _viber_post(client, company, {"event": "webhook", "timestamp": 1457764197627,
                                         "message_token": 241256543215}).status_code == 200
    assert _viber_post(client, company, {"event": "delivered", "timestamp": 1457764197627,
                                         "message_token": 4912661846655238145, "user_id": "01234567890A="},
                       token_secret="forged").status_code == 403
    assert _status(sms.id) == "sent"
    assert _viber_post(client, company, {"event": "delivered", "timestamp": 1457764197627,
                                         "message_token": 4912661846655238145, "user_id": "01234567890A="}).status_code == 200
    assert _status(sms.id) == "delivered"
    assert _viber_post(client, company, {"event": "unsubscribed", "timestamp": 1457764197627,
                                         "user_id": "01234567890A="}).status_code == 200
    db.session.expire_all()
    assert db.session.get(Person, person.id).viber_id is None


def test_android_confirmation_uses_the_secret_in_the_url(client, company):
    enable_gateway(company, "android")
    sms = _sent_sms(company, "android", None)
    sms.provider_message_id = str(sms.id)
    db.session.commit()
    secret = gateway_setting(company.id, "android").callback_secret
    assert client.get(f"/api/sms-android-callback/{company.id}/wrong/delivered?id={sms.id}").status_code == 403
    assert client.post(f"/api/sms-android-callback/{company.id}/{secret}/bogus", data={"id": sms.id}).status_code == 400
    assert _status(sms.id) == "sent"
    assert client.post(f"/api/sms-android-callback/{company.id}/{secret}/delivered", data={"id": sms.id}).status_code == 200
    assert _status(sms.id) == "delivered"


@pytest.mark.queue
def test_simulator_reports_come_back_and_the_message_ends_delivered(app, company, simulated_provider):
    """End to end: queued → sent (worker + simulator) → delivered (simulator's report to the live app)."""
    simulator = simulated_provider
    simulator.configure("africastalking", report_delay=0.05, undeliverable_share=0.5)
    from mpm.messaging.send import Recipient, queue_messages

    numbers = [f"+2547120000{i:02d}" for i in range(10)]
    queue_messages(company.id, [Recipient(number=n) for n in numbers], "Power is back")
    run_jobs(app)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        drain_reports(app)
        db.session.expire_all()
        statuses = db.session.scalars(select(Sms.status)).all()
        if all(s in ("delivered", "failed") for s in statuses):
            break
        time.sleep(0.1)
    by_number = {s.number: s.status for s in db.session.scalars(select(Sms))}
    expected = {n: "failed" if simulator.state.undeliverable("africastalking", n) else "delivered" for n in numbers}
    assert by_number == expected
    assert set(expected.values()) == {"failed", "delivered"}


def test_a_callback_url_asked_with_the_wrong_method_is_a_405_in_json(client, company):
    enable_gateway(company, "africastalking")
    response = client.get(_at_url(company))
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert "not allowed" in response.get_json()["error"]


def test_with_redis_down_a_report_gets_a_500_so_the_provider_sends_it_again(app, company, caplog):
    from mpm import create_app

    enable_gateway(company, "africastalking")
    sms = _sent_sms(company)
    no_redis = create_app({key: app.config[key] for key in ("TESTING", "SECRET_KEY", "SQLALCHEMY_DATABASE_URI",
                                                            "PUBLIC_BASE_URL")} | {"REDIS_URL": "redis://127.0.0.1:1"})
    response = no_redis.test_client().post(_at_url(company), data={"id": "ATXid_1", "status": "Success"})
    assert response.status_code == 500
    assert response.get_json() == {"error": "internal error"}
    assert "callback failed: POST /api/africas-talking/callback/" in caplog.text
    assert _status(sms.id) == status.SENT  # nothing taken: the provider's retry brings it


def test_company_id_beyond_any_database_id_is_a_404_not_a_crash(client, company):
    response = client.post("/api/africas-talking/callback/99999999999999999999/delivery-reports?token=x",
                           data={"id": "a", "status": "Success"})
    assert response.status_code == 404


def test_an_id_beyond_any_database_id_in_a_page_address_is_a_404(logged_in):
    for path in ("/sms/2147483648", "/customers/99999999999999999999", "/broadcasts/2147483648"):
        assert logged_in.get(path).status_code == 404, path


def test_viber_message_from_a_subscriber_is_stored_for_that_person(client, company):
    enable_gateway(company, "viber")
    person = make_person(company, viber_id="01234567890A=")
    payload = {"event": "message", "timestamp": 1457764197627, "message_token": 4912661846655238145,
               "sender": {"id": "01234567890A=", "name": "John McClane", "language": "en", "country": "KE",
                          "api_version": 1},
               "message": {"type": "text", "text": "My meter is off"}}
    assert _viber_post(client, company, payload).status_code == 200
    assert _viber_post(client, company, payload).status_code == 200  # Viber's retry: stored once
    rows = db.session.scalars(select(Sms).where(Sms.direction == "inbound")).all()
    assert [(r.person_id, r.body, r.gateway) for r in rows] == [(person.id, "My meter is off", "viber")]


@pytest.mark.parametrize("gateway,payload,field", [
    ("textbee", {"webhookEvent": ["MESSAGE_DELIVERED"], "smsBatchId": "66a1b2"}, "webhookEvent"),
    ("textbee", {"webhookEvent": {"MESSAGE_DELIVERED": 1}, "smsBatchId": "66a1b2"}, "webhookEvent"),
    ("textbee", {"webhookEvent": "MESSAGE_RECEIVED", "sender": 254712345678, "message": "hi"}, "sender"),
    ("textbee", {"webhookEvent": "MESSAGE_RECEIVED", "sender": "+254712345678", "message": {"a": "b"}}, "message"),
    ("textbee", {"webhookEvent": "MESSAGE_RECEIVED", "sender": "+254712345678", "message": 10**40}, "message"),
    ("viber", {"event": "message", "sender": "01234567890A=", "message": {"text": "hi"}}, "sender"),
    ("viber", {"event": "message", "sender": {"id": "01234567890A="}, "message": "hi"}, "message"),
    ("viber", {"event": "unsubscribed", "user_id": {"id": "01234567890A="}}, "user_id"),
    ("viber", {"event": "unsubscribed", "user_id": 10**30}, "user_id"),
    ("viber", {"event": "delivered", "message_token": 10**30}, "message_token"),
])
def test_signed_webhook_with_a_field_of_the_wrong_type_is_a_400_naming_it(client, company, gateway, payload, field):
    enable_gateway(company, gateway)
    make_person(company, viber_id="01234567890A=")
    _sent_sms(company, gateway, "66a1b2")
    before = _snapshot()
    post = _textbee_post if gateway == "textbee" else _viber_post
    response = post(client, company, payload)
    assert response.status_code == 400 and response.get_json()["error"].startswith(field)
    assert _snapshot() == before
    assert db.session.scalar(select(Person.viber_id)) == "01234567890A="


def test_deeply_nested_signed_webhook_is_a_400_and_changes_nothing(client, company):
    enable_gateway(company, "textbee")
    raw = b"[" * 100_000 + b"]" * 100_000
    token = gateway_setting(company.id, "textbee").callback_secret
    signature = hmac.new(b"tb-webhook-secret", raw, hashlib.sha256).hexdigest()
    before = _snapshot()
    response = client.post(f"/api/textbee-sms-gateway/callback/{company.id}/webhook?token={token}", data=raw,
                           content_type="application/json", headers={"X-Signature": signature})
    assert response.status_code == 400 and _snapshot() == before


def test_incoming_message_longer_than_a_few_segments_is_refused(client, company):
    before = _snapshot()
    response = client.post(_at_url(company, "incoming-messages"),
                           data={"from": "+254712345678", "to": "12345", "text": "x" * 50_000, "id": "big-1"})
    assert response.status_code == 400 and "text" in response.get_json()["error"] and _snapshot() == before
