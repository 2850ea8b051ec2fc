"""Secrets (gateway credentials, callback secrets) never reach logs, pages or error messages."""
import logging

import pytest
from sqlalchemy import select

from conftest import csrf_token, run_jobs
from mpm.dev.simulator import DEVICE_ID
from mpm.extensions import db
from mpm.models import AuditEntry, Sms
from mpm.plugins.gateway_settings import callback_url, gateway_setting
from mpm.security import redact_url

AT_KEY = "atsk_5ecret_0123456789abcdef"
TB_KEY = "tbk_5ecret_fedcba9876543210"
TB_WEBHOOK = "whsec_5ecret_55aa55aa55aa"
SECRETS = (AT_KEY, TB_KEY, TB_WEBHOOK)


def _everything_logged(caplog) -> str:
    return "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)


def _point_at_simulator(company_id, simulator):
    for key, base in (("africastalking", simulator.url), ("textbee", simulator.url + "/api/v1")):
        setting = gateway_setting(company_id, key)
        setting.options = {"base_url": base}
    db.session.commit()


def test_credentials_stay_out_of_logs_pages_audit_and_errors(logged_in, company, simulator, caplog, app):
    caplog.set_level(logging.DEBUG)
    _point_at_simulator(company.id, simulator)
    token = csrf_token(logged_in)
    seen_pages = []

    def post(path, data):
        response = logged_in.post(path, data={**data, "csrf_token": token})
        seen_pages.append(response.get_data(as_text=True))
        return response

    # Refused by the provider first: the error message says why, without echoing the key.
    simulator.configure("africastalking", mode="auth")
    refused = post("/plugins/africastalking/settings", {"username": "op", "api_key": AT_KEY, "environment": "live"})
    assert refused.status_code == 422 and "Not saved" in refused.get_data(as_text=True)
    simulator.configure("africastalking", mode="ok")
    saved = post("/plugins/africastalking/settings", {"username": "op", "api_key": AT_KEY, "environment": "live"})
    assert saved.status_code in (200, 302)
    post("/plugins/textbee/settings", {"api_key": TB_KEY, "device_id": DEVICE_ID, "webhook_secret": TB_WEBHOOK,
                                       "daily_quota": "50", "monthly_quota": "300"})
    post("/plugins/africastalking/enabled", {"enabled": "on"})
    post("/plugins/africastalking/connection-test", {})
    # A gateway failure on send is logged and stored as the message's error: still no key.
    simulator.configure("africastalking", mode="5xx")
    post("/plugins/africastalking/test-sms", {"number": "0712 345 678"})
    run_jobs(app)

    for path in ("/plugins/", "/plugins/africastalking/", "/plugins/africastalking/settings",
                 "/plugins/textbee/", "/plugins/textbee/settings"):
        seen_pages.append(logged_in.get(path).get_data(as_text=True))
    db.session.expire_all()
    stored = {key: gateway_setting(company.id, key) for key in ("africastalking", "textbee")}
    assert stored["africastalking"].valid and stored["textbee"].valid  # the saves did happen
    audit = " ".join(repr((a.action, a.subject, a.details)) for a in db.session.scalars(select(AuditEntry)))
    errors = " ".join(f"{s.error} {[e.detail for e in s.events]}" for s in db.session.scalars(select(Sms)))
    assert "AfricasTalking" in errors or "africastalking" in errors  # the failed send left its reason
    logged = _everything_logged(caplog)
    assert logged  # the capture saw the app's logging
    for secret in SECRETS:
        assert secret not in logged, "a credential reached the logs"
        assert not any(secret in page for page in seen_pages), "a credential reached a page"
        assert secret not in audit and secret not in errors
        assert all(secret not in s.credentials_encrypted for s in stored.values())
        assert secret not in (stored["africastalking"].validation_message + stored["textbee"].validation_message)


def test_forged_callbacks_do_not_log_the_secret_they_carry(client, company, caplog):
    caplog.set_level(logging.DEBUG)
    setting = gateway_setting(company.id, "africastalking")
    wrong = "wrong-" + setting.callback_secret[::-1]
    url = callback_url(company.id, "africastalking", wrong).replace("http://mpm.test", "")
    response = client.post(url, data={"id": "ATXid_1", "status": "Success", "phoneNumber": "+254712345678"})
    assert 400 <= response.status_code < 500
    logged = _everything_logged(caplog)
    assert "callback refused" in logged
    assert wrong not in logged and setting.callback_secret not in logged


@pytest.mark.parametrize("raw, expected", [
    ("POST /api/africas-talking/callback/3/delivery-reports?token=abc123 HTTP/1.1",
     "POST /api/africas-talking/callback/3/delivery-reports?token=[redacted] HTTP/1.1"),
    ("token=abc&x=1", "token=[redacted]&x=1"),
    ("GET /api/sms-android-callback/3/s3cr3t/delivery HTTP/1.1",
     "GET /api/sms-android-callback/3/[redacted]/delivery HTTP/1.1"),
    ("GET /customers/?q=token HTTP/1.1", "GET /customers/?q=token HTTP/1.1"),
])
def test_access_log_lines_lose_their_secrets(raw, expected):
    assert redact_url(raw) == expected
