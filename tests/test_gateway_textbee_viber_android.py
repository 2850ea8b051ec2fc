"""TextBee, Viber and the deprecated Android gateway against their real payloads (`responses`)."""
import hashlib
import hmac
import json

import pytest
import requests
import responses

from mpm.gateways import android, textbee, viber
from mpm.gateways.base import ACCEPTED, NOT_SENT, REJECTED, GatewayConfig, OutboundMessage
from mpm.gateways.webhooks import WebhookRefused

TB = GatewayConfig(credentials={"api_key": "tb-key", "device_id": "6650c2a1e5f1", "webhook_secret": "whsec"})
TB_SEND = f"{textbee.LIVE_URL}/gateway/devices/6650c2a1e5f1/send-sms"
VB = GatewayConfig(credentials={"auth_token": "445da6az1s345z78-dazcczb2542zv51a-e0vc5fva17480im9"},
                   options={"sender_name": "Demo Power"})
AN = GatewayConfig(credentials={"fcm_server_key": "AAAA-key", "device_token": "phone-token"},
                   callback_base_url="http://mpm.test/api/sms-android-callback/1/s3cret")


@responses.activate
def test_textbee_send_takes_the_batch_id_as_provider_id():
    responses.post(TB_SEND, status=201, json={"data": {"success": True, "message": "SMS added to queue for processing",
                                                       "smsBatchId": "66a1b2c3d4e5f6a7b8c9d0e1", "recipientCount": 1}})
    [result] = textbee.gateway.send_batch([OutboundMessage(1, "+254711000001", "Hi")], TB)
    assert result.outcome == ACCEPTED and result.provider_message_id == "66a1b2c3d4e5f6a7b8c9d0e1"
    body = json.loads(responses.calls[0].request.body)
    assert body == {"recipients": ["+254711000001"], "message": "Hi"}
    assert responses.calls[0].request.headers["x-api-key"] == "tb-key"


@responses.activate
def test_textbee_plan_limit_and_bad_recipient():
    responses.post(TB_SEND, status=429, json={"message": "You have reached your daily limit", "hasReachedLimit": True,
                                              "dailyLimit": 50, "dailyRemaining": 0})
    results = textbee.gateway.send_batch([OutboundMessage(1, "+254711000001", "Hi"),
                                          OutboundMessage(2, "+254711000002", "Hi")], TB)
    assert [r.outcome for r in results] == [NOT_SENT, NOT_SENT]
    assert len(responses.calls) == 1  # the rest of the batch is not tried against a spent plan

    responses.replace(responses.POST, TB_SEND, status=400, json={"success": False, "error": "Invalid recipients"})
    [result] = textbee.gateway.send_batch([OutboundMessage(1, "12", "Hi")], TB)
    assert result.outcome == REJECTED


@responses.activate
def test_textbee_credential_check_finds_the_device():
    url = f"{textbee.LIVE_URL}/gateway/devices"
    responses.get(url, json={"data": [{"_id": "6650c2a1e5f1", "enabled": True, "brand": "Samsung", "model": "A12"}]})
    check = textbee.gateway.check_credentials(TB)
    assert check.ok and "Samsung A12" in check.message

    other = GatewayConfig(credentials={**TB.credentials, "device_id": "nope"})
    check = textbee.gateway.check_credentials(other)
    assert not check.ok and "no device nope" in check.message and "6650c2a1e5f1" in check.message

    responses.replace(responses.GET, url, status=401, json={"error": "Unauthorized"})
    check = textbee.gateway.check_credentials(TB)
    assert not check.ok and "refused the API key" in check.message


def test_textbee_webhook_signature_and_events():
    payload = {"smsId": "abc", "smsBatchId": "66a1", "message": "Hi", "deviceId": "6650c2a1e5f1",
               "webhookSubscriptionId": "w1", "webhookEvent": "MESSAGE_DELIVERED", "idempotencyKey": "k1",
               "status": "delivered", "recipient": "+254711000001", "deliveredAt": "2026-01-01T00:00:00Z"}
    raw = json.dumps(payload).encode()
    good = hmac.new(b"whsec", raw, hashlib.sha256).hexdigest()
    parsed = textbee.gateway.webhook_payload(raw, good, TB)
    report = textbee.gateway.delivery_report(parsed)
    assert report.provider_message_id == "66a1" and report.status == "delivered"
    with pytest.raises(WebhookRefused):
        textbee.gateway.webhook_payload(raw, "0" * 64, TB)
    with pytest.raises(WebhookRefused):
        textbee.gateway.webhook_payload(raw + b" ", good, TB)

    received = {"smsId": "r1", "message": "STOP", "deviceId": "d", "webhookEvent": "MESSAGE_RECEIVED",
                "sender": "+254711000001", "receivedAt": "2026-01-01T00:00:00Z"}
    incoming = textbee.gateway.incoming_message(received)
    assert incoming.number == "+254711000001" and incoming.body == "STOP"


@responses.activate
def test_viber_send_ok_not_subscribed_and_bad_token():
    url = f"{viber.LIVE_URL}/send_message"
    responses.post(url, json={"status": 0, "status_message": "ok", "message_token": 5741311803571721087,
                              "chat_hostname": "SN-CHAT-05_", "billing_status": 1})
    message = OutboundMessage(1, "+254711000001", "Hi", viber_id="01234567890A=")
    [result] = viber.gateway.send_batch([message], VB)
    assert result.outcome == ACCEPTED and result.provider_message_id == "5741311803571721087"
    sent = json.loads(responses.calls[0].request.body)
    assert sent["receiver"] == "01234567890A=" and sent["type"] == "text" and sent["sender"]["name"] == "Demo Power"
    assert responses.calls[0].request.headers["X-Viber-Auth-Token"] == VB.credentials["auth_token"]

    responses.replace(responses.POST, url, json={"status": 6, "status_message": "receiverNotSubscribed"})
    [result] = viber.gateway.send_batch([message], VB)
    assert result.outcome == NOT_SENT and result.recipient_unreachable

    responses.replace(responses.POST, url, json={"status": 2, "status_message": "invalidAuthToken"})
    [result] = viber.gateway.send_batch([message], VB)
    assert result.outcome == NOT_SENT and not result.recipient_unreachable


def test_viber_can_only_reach_people_with_a_viber_id():
    assert viber.gateway.can_reach(OutboundMessage(1, "+254711000001", "Hi", viber_id="x"))
    assert not viber.gateway.can_reach(OutboundMessage(1, "+254711000001", "Hi"))


@responses.activate
def test_viber_credential_check():
    url = f"{viber.LIVE_URL}/get_account_info"
    responses.post(url, json={"status": 0, "status_message": "ok", "id": "pa:75346594275468546724",
                              "name": "Demo Power Bot", "uri": "demopower"})
    check = viber.gateway.check_credentials(VB)
    assert check.ok and "Demo Power Bot" in check.message
    responses.replace(responses.POST, url, json={"status": 2, "status_message": "invalidAuthToken"})
    check = viber.gateway.check_credentials(VB)
    assert not check.ok and "refused the authentication token" in check.message
    responses.replace(responses.POST, url, body=requests.ConnectionError())
    assert "could not be reached" in viber.gateway.check_credentials(VB).message


def test_viber_webhook_events():
    def signed(payload):
        raw = json.dumps(payload).encode()
        return viber.gateway.webhook_payload(raw, hmac.new(VB.credentials["auth_token"].encode(), raw,
                                                           hashlib.sha256).hexdigest(), VB)

    seen = signed({"event": "seen", "timestamp": 1457764197627, "message_token": 4912661846655238145,
                   "user_id": "01234567890A="})
    assert viber.gateway.delivery_report(seen).status == "delivered"
    failed = signed({"event": "failed", "timestamp": 1457764197627, "message_token": 4912661846655238145,
                     "user_id": "01234567890A=", "desc": "failure description"})
    report = viber.gateway.delivery_report(failed)
    assert report.status == "failed" and "failure description" in report.detail
    gone = signed({"event": "unsubscribed", "timestamp": 1457764197627, "user_id": "01234567890A="})
    assert viber.gateway.unsubscribed_user(gone) == "01234567890A="
    with pytest.raises(WebhookRefused):
        viber.gateway.webhook_payload(b'{"event":"seen"}', "bad", VB)


@responses.activate
def test_android_pushes_through_fcm_and_is_marked_deprecated():
    url = f"{android.LIVE_URL}/fcm/send"
    responses.post(url, json={"multicast_id": 1, "success": 1, "failure": 0, "canonical_ids": 0,
                              "results": [{"message_id": "0:1500415314455276%31bd1c9631bd1c96"}]})
    [result] = android.gateway.send_batch([OutboundMessage(42, "+254711000001", "Hi")], AN)
    assert result.outcome == ACCEPTED and result.provider_message_id == "42"
    body = json.loads(responses.calls[0].request.body)
    assert body["to"] == "phone-token" and body["data"]["callback"] == AN.callback_base_url
    assert responses.calls[0].request.headers["Authorization"] == "key=AAAA-key"
    assert android.gateway.deprecated

    responses.replace(responses.POST, url, json={"multicast_id": 1, "success": 0, "failure": 1,
                                                 "results": [{"error": "NotRegistered"}]})
    [result] = android.gateway.send_batch([OutboundMessage(42, "+254711000001", "Hi")], AN)
    assert result.outcome == NOT_SENT and "NotRegistered" in result.detail
    check = android.gateway.check_credentials(AN)
    assert not check.ok and "NotRegistered" in check.message
