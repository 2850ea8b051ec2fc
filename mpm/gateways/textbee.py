"""TextBee: SMS sent by an Android phone running the TextBee app, through textbee.dev's API.

Credentials (encrypted): `api_key`, `device_id` (the phone's id in TextBee; several, comma-separated,
for backup phones: mpm.gateways.textbee_devices picks the one that sends), `webhook_secret`
(the signing secret of the webhook subscription; webhooks are refused without it).
Options: `daily_quota` (default 50) and `monthly_quota` (default 300), the TextBee plan's limits,
counted here per company: once spent the gateway counts as unavailable and sending falls back;
`send_rate` (messages/s across all workers, default 2: a phone drops what exceeds its carrier's
pace); `base_url` (only the local simulator sets it).

Send: POST {base}/gateway/devices/{device_id}/send-sms with header x-api-key and JSON
{"recipients": [number], "message": body}; one request per message so the smsBatchId of the
answer identifies it. Delivery comes from the signed webhook (X-Signature: hex HMAC-SHA256 of
the raw body with the webhook secret), events MESSAGE_SENT / MESSAGE_DELIVERED / MESSAGE_FAILED /
MESSAGE_RECEIVED.
"""
from typing import Annotated

import requests
from pydantic import Field, StringConstraints

from mpm.gateways import textbee_devices
from mpm.gateways.base import (ACCEPTED, MAYBE_SENT, NOT_SENT, MAX_INCOMING_CHARS, REJECTED, SEND_RATE_FIELD, CallbackRefused,
                               CallbackRequest, CallbackResult, CallbackRoute, CredentialCheck, DeliveryReport,
                               GatewayConfig, GatewayDefaults, IncomingMessage, OutboundMessage, SendResult, failure_detail, request_failure,
                               SettingField, send_one_by_one)
from mpm.gateways.webhooks import MAX_ID, Payload, json_payload, verified_body

LIVE_URL = "https://api.textbee.dev/api/v1"
DEFAULT_DAILY_QUOTA = 50
DEFAULT_MONTHLY_QUOTA = 300

EVENT_STATUSES = {"MESSAGE_SENT": "sent", "MESSAGE_DELIVERED": "delivered", "MESSAGE_FAILED": "failed"}

_http = requests.Session()
NOT_THIS_DEVICE = "Device does not exist or is not enabled"  # TextBee's 400 for a phone it will not use


Short = Annotated[str, StringConstraints(max_length=200)]
Id = Annotated[str, StringConstraints(max_length=100)] | Annotated[int, Field(ge=0, le=MAX_ID)]


class WebhookEvent(Payload):
    webhookEvent: Annotated[str, StringConstraints(min_length=1, max_length=50)]
    smsBatchId: Id | None = None
    smsId: Id | None = None
    idempotencyKey: Short | None = None
    sender: Annotated[str, StringConstraints(max_length=50)] | None = None
    message: Annotated[str, StringConstraints(max_length=MAX_INCOMING_CHARS)] | None = None
    errorCode: Short | Annotated[int, Field(ge=-MAX_ID, le=MAX_ID)] | None = None
    errorMessage: Short | None = None


class TextBeeGateway(GatewayDefaults):
    key = "textbee"
    label = "TextBee SMS Gateway"
    short_label = "TextBee"
    priority = 20
    default_send_rate = 2.0
    fields = (
        SettingField("api_key", "API key", secret=True, required=True, help="textbee.dev dashboard → API Settings."),
        SettingField("device_id", "Device ID", credential=True, required=True,
                     help="The id of the Android phone registered in TextBee."),
        SettingField("webhook_secret", "Webhook signing secret", secret=True,
                     help="The signing secret of the webhook you create in TextBee; without it delivery reports are refused."),
        SettingField("daily_quota", "Daily quota (messages)", kind="int", default=DEFAULT_DAILY_QUOTA,
                     help="Your TextBee plan's daily limit."),
        SettingField("monthly_quota", "Monthly quota (messages)", kind="int", default=DEFAULT_MONTHLY_QUOTA,
                     help="Your TextBee plan's monthly limit."),
        SEND_RATE_FIELD,
    )
    callbacks = (CallbackRoute("webhook", "Webhook (all events)", "/api/textbee-sms-gateway/callback/{company}/webhook",
                               signature_header="X-Signature"),)

    def base_url(self, config: GatewayConfig) -> str:
        return (config.options.get("base_url") or LIVE_URL).rstrip("/")

    def quotas(self, config: GatewayConfig) -> dict[str, int]:
        """Plan limits counted by the dispatcher: {"day": n, "month": n}."""
        return {"day": int(config.options.get("daily_quota") or DEFAULT_DAILY_QUOTA),
                "month": int(config.options.get("monthly_quota") or DEFAULT_MONTHLY_QUOTA)}

    def _headers(self, config: GatewayConfig) -> dict:
        return {"x-api-key": config.credentials.get("api_key", ""), "Accept": "application/json"}

    def send_batch(self, messages: list[OutboundMessage], config: GatewayConfig) -> list[SendResult]:
        return send_one_by_one(messages, lambda message: self._send_one(message, config))

    def _send_one(self, message: OutboundMessage, config: GatewayConfig) -> tuple[SendResult, bool]:
        """Through the first usable phone (mpm.gateways.textbee_devices). A phone TextBee calls
        missing or disabled certainly did not take the message: the next one is tried at once. Any
        other error rests the phone (the next round uses the next one) and is answered as it is, as a
        timed-out phone may still send it."""
        ids = textbee_devices.device_ids(config.credentials)
        if len(ids) <= 1:  # one phone: nothing to choose, nothing to remember
            return self._send_via(ids[0] if ids else "", message, config)
        devices = textbee_devices.sending_order(ids)
        for position, device in enumerate(devices):
            result, retry = self._send_via(device, message, config)
            if result.outcome == ACCEPTED:
                textbee_devices.mark_working(device)
                return result, retry
            if result.outcome in (NOT_SENT, MAYBE_SENT):
                textbee_devices.mark_failing(device, result.detail)
                if NOT_THIS_DEVICE in result.detail and position + 1 < len(devices):
                    continue
            return result, retry
        return result, retry

    def _send_via(self, device: str, message: OutboundMessage, config: GatewayConfig) -> tuple[SendResult, bool]:
        url = f"{self.base_url(config)}/gateway/devices/{device}/send-sms"
        try:
            response = _http.post(url, json={"recipients": [message.number], "message": message.body},
                                  headers=self._headers(config), timeout=(config.connect_timeout, config.timeout))
        except requests.RequestException as exc:
            return SendResult(message.sms_id, request_failure(exc), detail=failure_detail("TextBee", exc, config.timeout)), True
        text = response.text.strip()[:200]
        if response.status_code in (401, 403):
            return SendResult(message.sms_id, NOT_SENT, detail=f"TextBee refused the API key (HTTP {response.status_code})"), True
        if response.status_code == 429:
            return SendResult(message.sms_id, NOT_SENT, detail=f"TextBee limit reached (HTTP 429): {text}"), True
        if response.status_code == 400 and "recipient" in text.lower():
            return SendResult(message.sms_id, REJECTED, detail=f"TextBee rejected the number: {text}"), False
        if response.status_code >= 300:
            return SendResult(message.sms_id, NOT_SENT, detail=f"TextBee answered HTTP {response.status_code}: {text}"), response.status_code >= 500
        try:
            data = response.json()["data"]
        except (ValueError, KeyError, TypeError):
            # A 2xx: the request went through, so the phone may send it.
            return SendResult(message.sms_id, MAYBE_SENT, detail=f"TextBee answered something unexpected: {text}"), False
        batch_id = data.get("smsBatchId") if isinstance(data, dict) else None
        if isinstance(data, dict) and data.get("failureCount") and not data.get("successCount"):
            return SendResult(message.sms_id, NOT_SENT, detail="TextBee could not push the message to the phone"), False
        said = data.get("message", "accepted") if isinstance(data, dict) else "accepted"
        return SendResult(message.sms_id, ACCEPTED, provider_message_id=batch_id, detail=f"TextBee: {said}"), False

    def check_credentials(self, config: GatewayConfig) -> CredentialCheck:
        ids = textbee_devices.device_ids(config.credentials)
        device_id = ids[0] if ids else ""
        if not config.credentials.get("api_key") or not device_id:
            return CredentialCheck(False, "Enter the API key and the device id shown in your TextBee dashboard.")
        try:
            response = _http.get(f"{self.base_url(config)}/gateway/devices", headers=self._headers(config),
                                 timeout=(config.connect_timeout, config.timeout))
        except requests.Timeout:
            return CredentialCheck(False, f"TextBee did not answer within {config.timeout:g} seconds. Try again later.")
        except requests.RequestException:
            return CredentialCheck(False, "TextBee could not be reached (network error). "
                                          "Check this server's internet connection.")
        if response.status_code in (401, 403):
            return CredentialCheck(False, "TextBee refused the API key: copy it again from the TextBee dashboard.")
        try:
            devices = response.json()["data"]
        except (ValueError, KeyError, TypeError):
            return CredentialCheck(False, f"TextBee answered HTTP {response.status_code} with something unexpected.")
        listed = {str(d.get("_id")) for d in devices if isinstance(d, dict)}
        missing = next((i for i in ids if i not in listed), None)
        if missing is not None:
            known = ", ".join(sorted(listed)) or "none"
            return CredentialCheck(False, f"The API key works, but no device {missing} is registered on this "
                                          f"TextBee account (devices: {known}).")
        device = next(d for d in devices if isinstance(d, dict) and str(d.get("_id")) == device_id)
        name = " ".join(str(device.get(k)) for k in ("brand", "model") if device.get(k)) or device_id
        if device.get("enabled") is False:
            return CredentialCheck(False, f"The device {name} is disabled in TextBee: enable it in the TextBee app.")
        if not config.credentials.get("webhook_secret"):
            return CredentialCheck(True, f"Connected to TextBee device {name}. Add the webhook signing secret "
                                         "to receive delivery reports.")
        backups = f" ({len(ids) - 1} more as backup)" if len(ids) > 1 else ""
        return CredentialCheck(True, f"Connected to TextBee device {name}{backups}.")

    def parse_callback(self, kind: str, request: CallbackRequest, config: GatewayConfig | None) -> list[CallbackResult]:
        secret = (config.credentials.get("webhook_secret") if config else "") or ""
        if not secret:
            raise CallbackRefused("no webhook secret is configured for TextBee", 403)
        verified_body(request.raw_body, request.header("X-Signature"), secret, "X-Signature")
        event = json_payload(request.raw_body, WebhookEvent)
        if event.webhookEvent in EVENT_STATUSES:
            if event.smsBatchId in (None, ""):
                raise CallbackRefused("smsBatchId: a delivery event needs it")
            detail = f"TextBee: {event.webhookEvent}"
            if event.errorMessage or event.errorCode:
                detail += f", {event.errorCode or ''} {event.errorMessage or ''}".rstrip()
            return [DeliveryReport(str(event.smsBatchId), EVENT_STATUSES[event.webhookEvent], detail, event.webhookEvent)]
        if event.webhookEvent == "MESSAGE_RECEIVED":
            if not event.sender:
                raise CallbackRefused("sender: MESSAGE_RECEIVED needs it")
            return [IncomingMessage(number=event.sender, body=event.message or "",
                                    provider_message_id=str(event.smsId or event.idempotencyKey or ""))]
        return []


gateway = TextBeeGateway()
