"""TextBee: SMS sent by an Android phone running the TextBee app, through textbee.dev's API.

Credentials (encrypted): `api_key`, `device_id` (the phone's id in TextBee), `webhook_secret`
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

import requests

from mpm.gateways.base import (ACCEPTED, MAYBE_SENT, NOT_SENT, REJECTED, CredentialCheck, DeliveryReport,
                               GatewayConfig, IncomingMessage, OutboundMessage, SendResult, failure_detail,
                               request_failure, send_one_by_one)
from mpm.gateways.webhooks import WebhookRefused, verified_json

LIVE_URL = "https://api.textbee.dev/api/v1"
DEFAULT_DAILY_QUOTA = 50
DEFAULT_MONTHLY_QUOTA = 300

EVENT_STATUSES = {"MESSAGE_SENT": "sent", "MESSAGE_DELIVERED": "delivered", "MESSAGE_FAILED": "failed"}

_http = requests.Session()


class TextBeeGateway:
    key = "textbee"
    label = "TextBee SMS Gateway"
    deprecated = False
    credential_fields = ("api_key", "device_id", "webhook_secret")
    option_fields = ("daily_quota", "monthly_quota", "send_rate")
    default_send_rate = 2.0

    def base_url(self, config: GatewayConfig) -> str:
        return (config.options.get("base_url") or LIVE_URL).rstrip("/")

    def quotas(self, config: GatewayConfig) -> dict[str, int]:
        """Plan limits counted by the dispatcher: {"day": n, "month": n}."""
        return {"day": int(config.options.get("daily_quota") or DEFAULT_DAILY_QUOTA),
                "month": int(config.options.get("monthly_quota") or DEFAULT_MONTHLY_QUOTA)}

    def can_reach(self, message: OutboundMessage) -> bool:
        return True

    def _headers(self, config: GatewayConfig) -> dict:
        return {"x-api-key": config.credentials.get("api_key", ""), "Accept": "application/json"}

    def send_batch(self, messages: list[OutboundMessage], config: GatewayConfig) -> list[SendResult]:
        return send_one_by_one(messages, lambda message: self._send_one(message, config))

    def _send_one(self, message: OutboundMessage, config: GatewayConfig) -> tuple[SendResult, bool]:
        device = config.credentials.get("device_id", "")
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
        device_id = config.credentials.get("device_id", "").strip()
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
        device = next((d for d in devices if str(d.get("_id")) == device_id), None)
        if device is None:
            known = ", ".join(str(d.get("_id")) for d in devices) or "none"
            return CredentialCheck(False, f"The API key works, but no device {device_id} is registered on this "
                                          f"TextBee account (devices: {known}).")
        name = " ".join(str(device.get(k)) for k in ("brand", "model") if device.get(k)) or device_id
        if device.get("enabled") is False:
            return CredentialCheck(False, f"The device {name} is disabled in TextBee: enable it in the TextBee app.")
        if not config.credentials.get("webhook_secret"):
            return CredentialCheck(True, f"Connected to TextBee device {name}. Add the webhook signing secret "
                                         "to receive delivery reports.")
        return CredentialCheck(True, f"Connected to TextBee device {name}.")

    def webhook_payload(self, raw_body: bytes, signature: str | None, config: GatewayConfig) -> dict:
        if not config.credentials.get("webhook_secret"):
            raise WebhookRefused("no webhook secret is configured for TextBee")
        return verified_json(raw_body, signature, config.credentials["webhook_secret"], "X-Signature", "webhookEvent")

    def delivery_report(self, payload: dict) -> DeliveryReport | None:
        event = payload.get("webhookEvent")
        if event not in EVENT_STATUSES:
            return None
        batch_id = payload.get("smsBatchId") or ""
        if not batch_id:
            raise ValueError("TextBee delivery event without smsBatchId")
        detail = f"TextBee: {event}"
        if payload.get("errorMessage") or payload.get("errorCode"):
            detail += f", {payload.get('errorCode') or ''} {payload.get('errorMessage') or ''}".rstrip()
        return DeliveryReport(str(batch_id), EVENT_STATUSES[event], detail, event)

    def incoming_message(self, payload: dict) -> IncomingMessage | None:
        if payload.get("webhookEvent") != "MESSAGE_RECEIVED":
            return None
        if not payload.get("sender"):
            raise ValueError("TextBee MESSAGE_RECEIVED without sender")
        return IncomingMessage(number=payload["sender"], body=payload.get("message") or "",
                               provider_message_id=str(payload.get("smsId") or payload.get("idempotencyKey") or ""))


gateway = TextBeeGateway()
