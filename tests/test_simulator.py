"""The gateway simulator speaks the providers' formats and fails on demand."""
import requests

from mpm.extensions import db
from mpm.gateways.africastalking import gateway as africastalking
from mpm.gateways.base import ACCEPTED, MAYBE_SENT, NOT_SENT, REJECTED, GatewayConfig, OutboundMessage
from mpm.gateways.registry import gateway_setting
from mpm.gateways.textbee import gateway as textbee
from mpm.simulator import DEVICE_ID
from mpm.simulator_setup import enable_simulator_gateway
from mpm.messaging.send import Recipient, queue_messages
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
    from mpm.simulator import create_simulator

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
