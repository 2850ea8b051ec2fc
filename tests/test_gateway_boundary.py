"""The gateway boundary: a gateway is one object behind one interface, registered in one list.
A fifth gateway defined here alone gets the plugins page, a settings form, its callback URL and a
place in fallback; and the import rules that keep gateways, routes and domain apart hold."""
import ast
from pathlib import Path

import pytest
import requests
import responses
from sqlalchemy import select

from mpm.extensions import db
from mpm.gateways import registry
from mpm.gateways.africastalking import LIVE_URL as AT_URL
from mpm.gateways.base import (ACCEPTED, NOT_SENT, SEND_RATE_FIELD, CallbackRefused, CallbackRequest, CallbackRoute,
                               CredentialCheck, DeliveryReport, Gateway, GatewayConfig, GatewayDefaults, OutboundMessage,
                               SendResult, SettingField)
from mpm.gateways.webhooks import Payload, validated
from mpm.messaging.send import Recipient, queue_messages
from mpm.models import GatewaySetting, Sms
from mpm.plugins.credentials import decrypt
from mpm.plugins.gateway_settings import callback_url, gateway_setting
from tests.conftest import csrf_token, enable_gateway, run_jobs, drain_reports

PIGEON_URL = "https://api.pigeon.example/v2"


class PigeonReport(Payload):
    ref: str
    state: str


class PigeonGateway(GatewayDefaults):
    """A provider that takes one message per request and reports delivery by a form post."""

    key = "pigeon"
    label = "Pigeon Post SMS"
    short_label = "Pigeon"
    priority = 50  # after the four built-in gateways
    fields = (
        SettingField("token", "Access token", secret=True, required=True),
        SettingField("account", "Account number", credential=True, required=True),
        SettingField("daily_limit", "Daily limit", kind="int", default=100),
        SEND_RATE_FIELD,
    )
    callbacks = (CallbackRoute("reports", "Delivery reports", "/api/pigeon/{company}/reports"),)

    def send_batch(self, messages: list[OutboundMessage], config: GatewayConfig) -> list[SendResult]:
        results = []
        for message in messages:
            response = requests.post(f"{PIGEON_URL}/messages", json={"to": message.number, "text": message.body},
                                     headers={"Authorization": f"Bearer {config.credentials['token']}"}, timeout=5)
            if response.status_code == 201:
                results.append(SendResult(message.sms_id, ACCEPTED, provider_message_id=response.json()["ref"]))
            else:
                results.append(SendResult(message.sms_id, NOT_SENT, detail=f"Pigeon: HTTP {response.status_code}"))
        return results

    def check_credentials(self, config: GatewayConfig) -> CredentialCheck:
        response = requests.get(f"{PIGEON_URL}/accounts/{config.credentials['account']}", timeout=5,
                                headers={"Authorization": f"Bearer {config.credentials['token']}"})
        return CredentialCheck(response.status_code == 200, f"Pigeon answered HTTP {response.status_code}.")

    def parse_callback(self, kind: str, request: CallbackRequest, config: GatewayConfig | None) -> list:
        report = validated(request.form, PigeonReport)
        if report.state not in ("delivered", "failed"):
            raise CallbackRefused(f"state: unknown ({report.state[:20]!r})")
        return [DeliveryReport(report.ref, report.state, f"Pigeon: {report.state}", report.state)]


def test_every_registered_gateway_declares_the_whole_interface():
    gateways = registry.all_gateways()
    assert [g.key for g in gateways] == ["africastalking", "textbee", "viber", "android", "pigeon"]
    assert all(isinstance(g, Gateway) for g in gateways)
    # Every callback path is distinct, and each gateway's settings fields are named once.
    rules = [route.rule for _, route in registry.callback_routes()]
    assert len(rules) == len(set(rules))
    assert all(len({f.name for f in g.fields}) == len(g.fields) for g in gateways)


@pytest.fixture(autouse=True)
def pigeon():
    """Registered before the app is made (the `app` fixture comes after autouse fixtures)."""
    gateway = PigeonGateway()
    registry.register(gateway)
    yield gateway
    registry.unregister(gateway.key)


def test_a_fifth_gateway_appears_on_the_plugins_page_and_gets_a_settings_form_that_validates(logged_in, company):
    page = logged_in.get("/plugins/").get_data(as_text=True)
    assert "Pigeon Post SMS" in page and "AfricasTalking → TextBee → Viber (only for Viber users) → Android → Pigeon" in page

    form = logged_in.get("/plugins/pigeon/settings").get_data(as_text=True)
    assert "Access token" in form and "Account number" in form and "Daily limit" in form

    refused = logged_in.post("/plugins/pigeon/settings", data={"token": "", "account": "A-1", "daily_limit": "lots",
                                                               "csrf_token": csrf_token(logged_in)})
    text = refused.get_data(as_text=True)
    assert refused.status_code == 422 and "Enter the access token." in text and "Enter a whole number, 1 or more." in text
    assert gateway_setting(company.id, "pigeon").credentials_encrypted is None

    with responses.RequestsMock() as provider:
        provider.get(f"{PIGEON_URL}/accounts/A-1", status=200, json={"ok": True})
        saved = logged_in.post("/plugins/pigeon/settings", data={"token": "pigeon-secret-1", "account": "A-1",
                                                                "daily_limit": "20", "csrf_token": csrf_token(logged_in)})
    assert saved.status_code in (200, 302)
    db.session.expire_all()
    row = db.session.scalar(select(GatewaySetting).where(GatewaySetting.gateway == "pigeon"))
    assert row.valid and decrypt(row.credentials_encrypted) == {"token": "pigeon-secret-1", "account": "A-1"}
    assert row.options["daily_limit"] == 20
    assert "pigeon-secret-1" not in logged_in.get("/plugins/pigeon/settings").get_data(as_text=True)


def _sent_through_pigeon(company) -> Sms:
    sms = Sms(company_id=company.id, direction="outbound", number="+254712345678", body="Hi", status="sent",
              gateway="pigeon", provider_message_id="pg-77", trigger="manual", lane="high")
    db.session.add(sms)
    db.session.commit()
    return sms


def test_a_fifth_gateway_receives_its_callbacks_at_its_declared_path(app, client, company):
    sms = _sent_through_pigeon(company)
    url = callback_url(company.id, "pigeon", gateway_setting(company.id, "pigeon").callback_secret)
    assert url.startswith(f"http://mpm.test/api/pigeon/{company.id}/reports?token=")
    path = url.removeprefix("http://mpm.test")

    assert client.post(path.split("?")[0] + "?token=wrong", data={"ref": "pg-77", "state": "delivered"}).status_code == 403
    assert client.post(path, data={"ref": ["pg-77"], "state": "lost"}).status_code == 400
    answer = client.post(path, data={"ref": "pg-77", "state": "delivered"})
    assert answer.status_code == 200
    drain_reports(app)
    db.session.expire_all()
    assert db.session.get(Sms, sms.id).status == "delivered"


@pytest.mark.queue
def test_a_fifth_gateway_takes_over_when_the_gateway_before_it_fails(app, company):
    enable_gateway(company, "africastalking")
    enable_gateway(company, "pigeon", credentials={"token": "pigeon-secret-1", "account": "A-1"})
    [sms] = queue_messages(company.id, [Recipient(number="+254712345678")], "Your token is ready")

    with responses.RequestsMock() as provider:
        provider.post(f"{AT_URL}/version1/messaging", status=503, body="down for maintenance")
        provider.post(f"{PIGEON_URL}/messages", status=201, json={"ref": "pg-1"})
        run_jobs(app)
        sent = [call.request.url for call in provider.calls]

    db.session.expire_all()
    sms = db.session.get(Sms, sms.id)
    assert sms.status == "sent" and sms.gateway == "pigeon" and sms.provider_message_id == "pg-1"
    assert sent == [f"{AT_URL}/version1/messaging", f"{PIGEON_URL}/messages"]


# ---------------------------------------------------------------- the import rules

MPM = Path(__file__).resolve().parent.parent / "mpm"


# App wiring and the web layer's own helpers may read the request; so does the simulator, a Flask app of its own.
WEB_LAYER = {"mpm/__init__.py", "mpm/web.py", "mpm/security.py", "mpm/navigation.py", "mpm/dev/simulator.py"}


def _imports(source: str) -> set[str]:
    """Every module a file imports (absolute names; `from a import b` counts as a and a.b)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _breaks(relative: str, source: str) -> list[str]:
    """The rules: gateways know HTTP and payloads, not our tables or the web framework; routes never
    talk to gateways; domain modules never read the request (it is parsed in the blueprints)."""
    if relative.startswith("mpm/gateways/"):
        forbidden = ("mpm.models", "mpm.extensions", "flask", "flask_sqlalchemy", "sqlalchemy", "werkzeug")
    elif relative.startswith("mpm/blueprints/"):
        forbidden = ("mpm.gateways",)
    elif relative.startswith("mpm/migrations/") or relative in WEB_LAYER:
        return []
    else:
        forbidden = ("flask.request",)
    return [f"{relative} imports {name}" for name in sorted(_imports(source))
            if any(name == rule or name.startswith(rule + ".") for rule in forbidden)]


def test_no_module_imports_across_the_boundaries():
    files = sorted(MPM.rglob("*.py"))
    assert len(files) > 50
    assert [b for path in files for b in _breaks(path.relative_to(MPM.parent).as_posix(), path.read_text())] == []


@pytest.mark.parametrize("relative,source,expected", [
    ("mpm/gateways/pigeon.py", "from mpm.models import Sms\n", "imports mpm.models"),
    ("mpm/gateways/pigeon.py", "import sqlalchemy.orm\n", "imports sqlalchemy.orm"),
    ("mpm/gateways/pigeon.py", "def f():\n    from flask import current_app\n", "imports flask"),
    ("mpm/blueprints/pigeon.py", "from mpm.gateways.registry import get_gateway\n", "imports mpm.gateways.registry"),
    ("mpm/blueprints/pigeon.py", "from mpm.gateways import registry\n", "imports mpm.gateways"),
    ("mpm/messaging/pigeon.py", "from flask import current_app, request\n", "imports flask.request"),
])
def test_the_import_rules_catch_a_module_that_breaks_them(relative, source, expected):
    assert any(expected in b for b in _breaks(relative, source))
