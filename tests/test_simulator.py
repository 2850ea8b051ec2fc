"""The gateway simulator speaks the providers' formats and fails on demand."""
import json
import threading
import time
from urllib.parse import parse_qsl

import pytest
import requests
from werkzeug.serving import make_server

from mpm.dev.simulator import DEVICE_ID
from mpm.dev.simulator_setup import enable_simulator_gateway
from mpm.extensions import db
from mpm.gateways.africastalking import gateway as africastalking
from mpm.gateways.base import ACCEPTED, MAYBE_SENT, NOT_SENT, REJECTED, GatewayConfig, OutboundMessage
from mpm.gateways.textbee import gateway as textbee
from mpm.messaging.send import Recipient, queue_messages
from mpm.plugins.gateway_settings import gateway_setting
from tests.conftest import run_jobs


def _at(sim):
    return GatewayConfig(credentials={"api_key": "k", "username": "sandbox"}, options={"base_url": sim.url}, timeout=0.5)


def test_africastalking_send_answer_in_provider_format(simulator):
    response = requests.post(f"{simulator.url}/version1/messaging", headers={"apiKey": "k", "Accept": "application/json"},
                             data={"username": "sandbox", "to": "+254711000001,+254711000002", "message": "Hi"})
    data = response.json()["SMSMessageData"]
    assert response.status_code == 201
    assert data["Message"].startswith("Sent to 2/2 Total Cost: KES")
    assert {r["number"] for r in data["Recipients"]} == {"+254711000001", "+254711000002"}
    assert all(r["statusCode"] == 101 and r["messageId"].startswith("ATXid_") for r in data["Recipients"])


def test_failure_modes(simulator):
    message = [OutboundMessage(1, "+254711000001", "Hi")]
    simulator.configure("africastalking", mode="auth")
    assert not africastalking.check_credentials(_at(simulator)).ok
    [result] = africastalking.send_batch(message, _at(simulator))
    assert result.outcome == NOT_SENT and "refused the API key" in result.detail

    simulator.configure("africastalking", mode="timeout", timeout_seconds=2)
    [result] = africastalking.send_batch(message, _at(simulator))
    assert result.outcome == MAYBE_SENT and "did not answer" in result.detail

    simulator.configure("africastalking", mode="ok", rejected_numbers=["+254711000001"])
    [result] = africastalking.send_batch(message, _at(simulator))
    assert result.outcome == REJECTED
    simulator.configure("africastalking", rejected_numbers=[])
    assert africastalking.send_batch(message, _at(simulator))[0].outcome == ACCEPTED


def test_textbee_device_and_send(simulator):
    config = GatewayConfig(credentials={"api_key": "k", "device_id": DEVICE_ID}, options={"base_url": simulator.url + "/api/v1"})
    assert textbee.check_credentials(config).ok
    [result] = textbee.send_batch([OutboundMessage(1, "+254711000001", "Hi")], config)
    assert result.outcome == ACCEPTED and result.provider_message_id
    assert simulator.received("textbee")[0]["id"] == result.provider_message_id


def test_report_queue_is_bounded(simulator):
    from mpm.dev.simulator import create_simulator

    tiny = create_simulator(report_queue_size=1).extensions["simulator"]
    tiny.callbacks["africastalking"] = {"url": "http://127.0.0.1:9/unreachable", "secret": ""}
    tiny.modes["africastalking"].report_delay = 5
    for i in range(5):
        tiny.schedule_report("africastalking", {"id": str(i), "status": "Success"})
    assert tiny.reports_dropped >= 3


def test_demo_setup_points_africastalking_at_the_simulator(app, company, simulator):
    assert enable_simulator_gateway("", company.id) is False  # no simulator URL: nothing enabled
    assert enable_simulator_gateway(simulator.url, company.id) is True
    setting = gateway_setting(company.id, "africastalking")
    assert setting.enabled and setting.valid and setting.options["base_url"] == simulator.url
    assert simulator.state.callbacks["africastalking"]["url"].endswith(f"delivery-reports?token={setting.callback_secret}")

    [sms] = queue_messages(company.id, [Recipient(number="+254712345678")], "Demo")
    run_jobs(app)
    db.session.expire_all()
    assert db.session.get(type(sms), sms.id).status == "sent"


# --- fault modes ---------------------------------------------------------------------------------
AT_HEADERS = {"apiKey": "k", "Accept": "application/json"}


class ReportCollector:
    """A stand-in for the app's callback endpoints: records every delivery report posted to it."""

    def __init__(self):
        self.reports: list[dict] = []
        self.lock = threading.Lock()
        self.server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/reports"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _wsgi(self, environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)).decode()
        report = json.loads(body) if body.startswith("{") else dict(parse_qsl(body))
        with self.lock:
            self.reports.append(report)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    def wait_for(self, count: int, seconds: float = 5) -> list[dict]:
        deadline = time.monotonic() + seconds
        while len(self.reports) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.reports)


@pytest.fixture
def collector(simulator):
    reports = ReportCollector()
    simulator.register_callback("africastalking", reports.url)
    simulator.register_callback("textbee", reports.url, secret="s")
    yield reports
    reports.server.shutdown()


def _at_send(sim, numbers, timeout=5.0, session=None):
    return (session or requests).post(f"{sim.url}/version1/messaging", headers=AT_HEADERS, timeout=timeout,
                                      data={"username": "sandbox", "to": ",".join(numbers), "message": "Hi"})


def test_late_accept_takes_the_messages_and_answers_after_the_client_gave_up(simulator, collector):
    simulator.configure("africastalking", mode="late_accept", answer_delay=2, report_delay=0.1)
    started = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        _at_send(simulator, ["+254711000001", "+254711000002"], timeout=0.5)
    assert time.monotonic() - started < 1.5
    assert sorted(r["number"] for r in simulator.received()) == ["+254711000001", "+254711000002"]
    assert {r["status"] for r in collector.wait_for(2)} == {"Success"}  # reported although never answered

    simulator.configure("africastalking", answer_delay=0.3)
    response = _at_send(simulator, ["+254711000003"], timeout=5)
    assert response.status_code == 201  # a patient client does get the provider's answer


def test_reset_after_accept_drops_the_connection_after_recording(simulator, collector):
    simulator.configure("africastalking", mode="reset_after_accept", report_delay=0.1)
    with pytest.raises(requests.ConnectionError):
        _at_send(simulator, ["+254711000001"])
    assert [r["number"] for r in simulator.received()] == ["+254711000001"]
    assert collector.wait_for(1)[0]["phoneNumber"] == "+254711000001"

    config = GatewayConfig(credentials={"api_key": "k", "device_id": DEVICE_ID},
                           options={"base_url": simulator.url + "/api/v1"})
    simulator.configure("textbee", mode="reset_after_accept")
    [result] = textbee.send_batch([OutboundMessage(1, "+254711000009", "Hi")], config)
    assert result.outcome != ACCEPTED
    assert [r["number"] for r in simulator.received("textbee")] == ["+254711000009"]


def test_report_delay_zero_posts_reports_before_the_answer(simulator, collector):
    simulator.configure("africastalking", report_delay=0)
    numbers = [f"+2547110000{i:02d}" for i in range(20)]
    assert _at_send(simulator, numbers).status_code == 201
    assert sorted(r["phoneNumber"] for r in collector.reports) == numbers  # no waiting: already there

    simulator.configure("textbee", report_delay=0)
    config = GatewayConfig(credentials={"api_key": "k", "device_id": DEVICE_ID},
                           options={"base_url": simulator.url + "/api/v1"})
    [result] = textbee.send_batch([OutboundMessage(1, "+254711000099", "Hi")], config)
    assert result.outcome == ACCEPTED
    assert [r["webhookEvent"] for r in collector.reports[-2:]] == ["MESSAGE_SENT", "MESSAGE_DELIVERED"]


def test_report_duplicates_and_shuffle(simulator, collector):
    simulator.configure("africastalking", report_delay=0, report_duplicates=1)
    _at_send(simulator, ["+254711000001", "+254711000002"])
    assert sorted(r["phoneNumber"] for r in collector.reports) == ["+254711000001"] * 2 + ["+254711000002"] * 2

    collector.reports.clear()
    simulator.configure("africastalking", report_duplicates=0, report_shuffle=True)
    numbers = [f"+2547110001{i:02d}" for i in range(40)]
    _at_send(simulator, numbers)
    by_number: dict[str, list[str]] = {}
    for report in collector.reports:
        by_number.setdefault(report["phoneNumber"], []).append(report["status"])
    assert all(sorted(statuses) == ["Sent", "Success"] for statuses in by_number.values())
    assert len(by_number) == 40
    # 40 messages each in a random order: all 40 in the natural order has a chance of 2**-40.
    assert any(statuses == ["Success", "Sent"] for statuses in by_number.values())


def test_scheduled_outage_window(simulator):
    simulator.configure("africastalking", outage={"in_seconds": 0.6, "for_seconds": 1.0, "kind": "5xx"})
    assert _at_send(simulator, ["+254711000001"]).status_code == 201
    time.sleep(0.7)
    assert _at_send(simulator, ["+254711000002"]).status_code == 503
    time.sleep(1.0)
    assert _at_send(simulator, ["+254711000003"]).status_code == 201
    assert [r["number"] for r in simulator.received()] == ["+254711000001", "+254711000003"]

    simulator.configure("africastalking", timeout_seconds=2, outage={"for_seconds": 5, "kind": "timeout"})
    with pytest.raises(requests.ReadTimeout):
        _at_send(simulator, ["+254711000004"], timeout=0.5)

    simulator.configure("africastalking", outage={"for_seconds": 5, "kind": "refuse"})
    with pytest.raises(requests.ConnectionError):
        _at_send(simulator, ["+254711000005"])
    # the other gateway and the control endpoints keep working
    config = GatewayConfig(credentials={"api_key": "k", "device_id": DEVICE_ID},
                           options={"base_url": simulator.url + "/api/v1"})
    assert textbee.send_batch([OutboundMessage(1, "+254711000006", "Hi")], config)[0].outcome == ACCEPTED

    simulator.configure("africastalking", outage=None)
    assert _at_send(simulator, ["+254711000007"]).status_code == 201
    assert [r["number"] for r in simulator.received("africastalking")] == [
        "+254711000001", "+254711000003", "+254711000007"]


@pytest.mark.parametrize("body", [
    {"gateway": "africastalking", "mode": "sideways"},
    {"gateway": "africastalking", "mode": "late_accept", "answer_delay": "soon"},
    {"gateway": "africastalking", "mode": "5xx", "report_duplicates": 2},
    {"gateway": "africastalking", "report_shuffle": "yes"},
    {"gateway": "africastalking", "timeout_seconds": 1e300},
    {"gateway": "africastalking", "outage": {"in_seconds": 1, "for_seconds": 5, "kind": "flood"}},
    {"gateway": "africastalking", "outage": {"in_seconds": 1, "kind": "5xx"}},
    {"gateway": "africastalking", "rejected_numbers": "+254711000001"},
    ["not", "an", "object"],
])
def test_bad_config_is_refused_and_changes_nothing(simulator, body):
    response = requests.post(f"{simulator.url}/_simulator/config", json=body, timeout=5)
    assert response.status_code == 400 and response.json()["error"]
    assert _at_send(simulator, ["+254711000001"]).status_code == 201
    assert simulator.state.modes["africastalking"].mode == "ok"
