"""AfricasTalking against its real payloads (HTTP mocked with `responses`)."""
import pytest
import requests
import responses

from mpm.gateways.africastalking import LIVE_URL, SANDBOX_URL, gateway
from mpm.gateways.base import (ACCEPTED, MAYBE_SENT, NOT_SENT, REJECTED, CallbackRefused, CallbackRequest, GatewayConfig,
                               OutboundMessage)
from mpm.gateways.registry import get_gateway
from mpm.plugins.gateway_settings import callback_urls

CONFIG = GatewayConfig(credentials={"api_key": "atsk_123", "username": "mpmapp"},
                       options={"sender_id": "MPM", "environment": "live"})
SEND_URL = f"{LIVE_URL}/version1/messaging"


def _msg(sms_id, number, body="Hello"):
    return OutboundMessage(sms_id=sms_id, number=number, body=body)


@responses.activate
def test_bulk_send_maps_each_recipient_status():
    responses.post(SEND_URL, status=201, json={"SMSMessageData": {
        "Message": "Sent to 1/3 Total Cost: KES 0.8000",
        "Recipients": [
            {"statusCode": 101, "number": "+254711000001", "status": "Success", "cost": "KES 0.8000",
             "messageId": "ATPid_SampleTxnId123"},
            {"statusCode": 403, "number": "+254711000002", "status": "InvalidPhoneNumber", "cost": "0",
             "messageId": "None"},
            {"statusCode": 405, "number": "+254711000003", "status": "InsufficientBalance", "cost": "0",
             "messageId": "None"},
        ]}})

    results = gateway.send_batch([_msg(1, "+254711000001"), _msg(2, "+254711000002"), _msg(3, "+254711000003")], CONFIG)

    assert [(r.sms_id, r.outcome) for r in results] == [(1, ACCEPTED), (2, REJECTED), (3, NOT_SENT)]
    assert results[0].provider_message_id == "ATPid_SampleTxnId123" and results[0].cost == "KES 0.8000"
    assert "InsufficientBalance" in results[2].detail
    [call] = responses.calls
    form = dict(p.split("=", 1) for p in call.request.body.split("&"))
    assert form["username"] == "mpmapp" and form["from"] == "MPM" and form["bulkSMSMode"] == "1"
    assert requests.utils.unquote(form["to"]) == "+254711000001,+254711000002,+254711000003"
    assert call.request.headers["apiKey"] == "atsk_123"


@responses.activate
def test_one_request_per_body_and_no_number_twice_in_a_request():
    responses.post(SEND_URL, status=201, json={"SMSMessageData": {"Message": "", "Recipients": [
        {"statusCode": 101, "number": "+254711000001", "status": "Success", "cost": "KES 0.8000", "messageId": "a"}]}})
    gateway.send_batch([_msg(1, "+254711000001", "A"), _msg(2, "+254711000001", "A"), _msg(3, "+254711000001", "B")],
                       CONFIG)
    assert len(responses.calls) == 3


@responses.activate
def test_do_not_disturb_answer_is_a_rejection():
    responses.post(SEND_URL, status=409, json={"SMSMessageData": {"Message": "Sent to 0/1 Total Cost: 0", "Recipients": [
        {"cost": "0", "messageId": "None", "number": "+2348012345678", "status": "DoNotDisturbRejection",
         "statusCode": 409}]}})
    [result] = gateway.send_batch([_msg(1, "+2348012345678")], CONFIG)
    assert result.outcome == REJECTED and "DoNotDisturbRejection" in result.detail


@responses.activate
def test_answers_before_acceptance_are_not_sent_and_lost_answers_are_maybe_sent():
    """Not sent (another gateway may carry it): an error answer, a refused key, no connection.
    Maybe sent (never sent again): the request went out but its answer was lost or unreadable."""
    def outcome_of(**answer):
        responses.replace(responses.POST, SEND_URL, **answer)
        [result] = gateway.send_batch([_msg(1, "+254711000001")], CONFIG)
        return result.outcome, result.detail

    responses.post(SEND_URL, status=200)
    assert outcome_of(status=401, body="The supplied authentication is invalid") == (
        NOT_SENT, "AfricasTalking refused the API key or username (HTTP 401: The supplied authentication is invalid)")
    outcome, detail = outcome_of(status=502, body="Bad Gateway")
    assert outcome == NOT_SENT and "HTTP 502" in detail
    outcome, detail = outcome_of(body=requests.ConnectTimeout())
    assert outcome == NOT_SENT and "could not be reached" in detail

    outcome, detail = outcome_of(body=requests.ReadTimeout())
    assert outcome == MAYBE_SENT and "did not answer" in detail and "may have taken" in detail
    outcome, detail = outcome_of(body=requests.ConnectionError("Connection reset by peer"))
    assert outcome == MAYBE_SENT and "closed the connection" in detail
    outcome, detail = outcome_of(status=201, body="<html>upstream proxy</html>")
    assert outcome == MAYBE_SENT and "HTTP 201" in detail
    outcome, detail = outcome_of(status=201, json={"SMSMessageData": {"Message": "", "Recipients": []}})
    assert outcome == MAYBE_SENT and "did not list this number" in detail


def test_a_refused_connection_is_not_sent():
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = GatewayConfig(credentials=CONFIG.credentials, options={"base_url": f"http://127.0.0.1:{port}"})
    [result] = gateway.send_batch([_msg(1, "+254711000001")], config)
    assert result.outcome == NOT_SENT and "could not be reached" in result.detail


@responses.activate
def test_credential_check_reports_balance_or_a_clear_reason():
    url = f"{LIVE_URL}/version1/user"
    responses.get(url, json={"UserData": {"balance": "KES 1785.50"}})
    check = gateway.check_credentials(CONFIG)
    assert check.ok and "KES 1785.50" in check.message
    assert responses.calls[0].request.url.endswith("username=mpmapp")

    responses.replace(responses.GET, url, status=401, body="The supplied authentication is invalid")
    check = gateway.check_credentials(CONFIG)
    assert not check.ok and "refused the API key" in check.message

    responses.replace(responses.GET, url, body=requests.ConnectTimeout())
    check = gateway.check_credentials(CONFIG)
    assert not check.ok and "did not answer" in check.message


@responses.activate
def test_sandbox_uses_the_sandbox_host_and_lowercase_user_data():
    responses.get(f"{SANDBOX_URL}/version1/user", json={"userData": {"balance": "KES 0.0000"}})
    config = GatewayConfig(credentials={"api_key": "k", "username": "sandbox"}, options={"environment": "sandbox"})
    assert gateway.check_credentials(config).ok


def test_missing_credentials_are_named():
    check = gateway.check_credentials(GatewayConfig(credentials={"username": "x"}))
    assert not check.ok and "API key" in check.message


@pytest.mark.parametrize("raw,status", [("Success", "delivered"), ("Failed", "failed"), ("Rejected", "failed"),
                                        ("Buffered", "sent"), ("Sent", "sent"), ("Submitted", "sent"),
                                        ("AbsentSubscriber", "failed"), ("Expired", "failed")])
def test_delivery_report_statuses(raw, status):
    [report] = gateway.parse_callback("delivery-reports", _form({"id": "ATXid_1", "status": raw, "phoneNumber": "+254711000001",
                                                                 "networkCode": "63902", "failureReason": "UserInBlackList"}), None)
    assert report.status == status and report.provider_message_id == "ATXid_1"


def _form(form: dict) -> CallbackRequest:
    return CallbackRequest(method="POST", path_params={}, query={}, headers={}, raw_body=b"", form=form)


def test_malformed_delivery_report_is_refused_naming_the_field():
    with pytest.raises(CallbackRefused, match="status"):
        gateway.parse_callback("delivery-reports", _form({"id": "ATXid_1", "status": "Whatever"}), None)
    with pytest.raises(CallbackRefused, match="^id"):
        gateway.parse_callback("delivery-reports", _form({"status": "Success"}), None)


def test_registry_and_callback_urls(app_ctx, company):
    assert get_gateway("africastalking") is gateway
    (label, url), (label2, url2) = callback_urls(company.id, "africastalking")
    assert url.startswith(f"http://mpm.test/api/africas-talking/callback/{company.id}/delivery-reports?token=")
    assert url2.startswith(f"http://mpm.test/api/africas-talking/callback/{company.id}/incoming-messages?token=")
    # Stable: the secret is stored once and reused.
    assert callback_urls(company.id, "africastalking")[0][1] == url
    # Each gateway has its own secret.
    textbee_url = callback_urls(company.id, "textbee")[0][1]
    assert textbee_url.split("token=")[1] != url.split("token=")[1]
