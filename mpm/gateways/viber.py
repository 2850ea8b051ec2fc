"""Viber: messages through the operator's Viber bot, only to people subscribed to it.

Credentials (encrypted): `auth_token` (the bot's token from the Viber admin panel).
Options: `sender_name` (shown as the sender, at most 28 characters; default "MPM"),
`send_rate` (messages/s across all workers, default 10), `base_url` (tests only).

A person "has Viber" when their record holds a Viber id (set when they subscribe to the bot).
Send: POST {base}/send_message, header X-Viber-Auth-Token, JSON {receiver, type: "text", text,
sender: {name}, tracking_data}. The answer's `status` 0 means taken (message_token is the id);
5 receiverNotRegistered / 6 receiverNotSubscribed / 11 receiverNoSuitableDevice mean this person
cannot be reached through Viber: the dispatcher falls back and forgets their Viber id.
Callbacks: one webhook, signed with X-Viber-Content-Signature = hex HMAC-SHA256(auth token, raw
body); events delivered / seen / failed / subscribed / unsubscribed / message / webhook.
"""

import requests

from mpm.gateways.base import (ACCEPTED, MAYBE_SENT, NOT_SENT, REJECTED, CredentialCheck, DeliveryReport, GatewayConfig,
                               IncomingMessage, OutboundMessage, SendResult, failure_detail, request_failure,
                               send_one_by_one)
from mpm.gateways.webhooks import WebhookRefused, verified_json

LIVE_URL = "https://chatapi.viber.com/pa"

STATUS_NAMES = {
    0: "ok", 1: "invalidUrl", 2: "invalidAuthToken", 3: "badData", 4: "missingData", 5: "receiverNotRegistered",
    6: "receiverNotSubscribed", 7: "publicAccountBlocked", 8: "publicAccountNotFound", 9: "publicAccountSuspended",
    10: "webhookNotSet", 11: "receiverNoSuitableDevice", 12: "tooManyRequests", 13: "apiVersionNotSupported",
    14: "incompatibleWithVersion", 15: "publicAccountNotAuthorized",
}
UNREACHABLE = {5, 6, 11}
BAD_MESSAGE = {3, 4}

_http = requests.Session()


class ViberGateway:
    key = "viber"
    label = "Viber Messaging"
    deprecated = False
    credential_fields = ("auth_token",)
    option_fields = ("sender_name", "send_rate")
    default_send_rate = 10.0

    def base_url(self, config: GatewayConfig) -> str:
        return (config.options.get("base_url") or LIVE_URL).rstrip("/")

    def can_reach(self, message: OutboundMessage) -> bool:
        return bool(message.viber_id)

    def _headers(self, config: GatewayConfig) -> dict:
        return {"X-Viber-Auth-Token": config.credentials.get("auth_token", "")}

    def send_batch(self, messages: list[OutboundMessage], config: GatewayConfig) -> list[SendResult]:
        return send_one_by_one(messages, lambda message: self._send_one(message, config))

    def _send_one(self, message: OutboundMessage, config: GatewayConfig) -> tuple[SendResult, bool]:
        body = {"receiver": message.viber_id, "type": "text", "text": message.body,
                "sender": {"name": (config.options.get("sender_name") or "MPM")[:28]},
                "tracking_data": message.idempotency_key}
        try:
            response = _http.post(f"{self.base_url(config)}/send_message", json=body, headers=self._headers(config),
                                  timeout=(config.connect_timeout, config.timeout))
            answer = response.json()
            code = int(answer.get("status"))
        except requests.RequestException as exc:
            return SendResult(message.sms_id, request_failure(exc), detail=failure_detail("Viber", exc, config.timeout)), True
        except (ValueError, TypeError, AttributeError):
            # Viber answers 200 with a status field; a 2xx we cannot read may still have been taken.
            outcome = MAYBE_SENT if 200 <= response.status_code < 300 else NOT_SENT
            return SendResult(message.sms_id, outcome,
                              detail=f"Viber answered HTTP {response.status_code}: {response.text.strip()[:200]}"), response.status_code >= 500
        name = answer.get("status_message") or STATUS_NAMES.get(code, "unknown")
        if code == 0 and answer.get("message_token") is not None:
            return SendResult(message.sms_id, ACCEPTED, provider_message_id=str(answer["message_token"]),
                              detail="Viber: ok"), False
        if code in UNREACHABLE:
            return SendResult(message.sms_id, NOT_SENT, recipient_unreachable=True,
                              detail=f"Viber cannot reach this person: {name} ({code})"), False
        if code in BAD_MESSAGE:
            return SendResult(message.sms_id, REJECTED, detail=f"Viber refused the message: {name} ({code})"), False
        # Token, account or rate trouble: no Viber message can go now.
        return SendResult(message.sms_id, NOT_SENT, detail=f"Viber: {name} ({code})"), code != 12

    def check_credentials(self, config: GatewayConfig) -> CredentialCheck:
        if not config.credentials.get("auth_token"):
            return CredentialCheck(False, "Enter the authentication token of your Viber bot.")
        try:
            response = _http.post(f"{self.base_url(config)}/get_account_info", json={}, headers=self._headers(config),
                                  timeout=(config.connect_timeout, config.timeout))
            answer = response.json()
            code = int(answer.get("status"))
        except requests.Timeout:
            return CredentialCheck(False, f"Viber did not answer within {config.timeout:g} seconds. Try again later.")
        except requests.RequestException:
            return CredentialCheck(False, "Viber could not be reached (network error). Check this server's internet connection.")
        except (ValueError, TypeError, AttributeError):
            return CredentialCheck(False, f"Viber answered HTTP {response.status_code} with something unexpected.")
        if code == 2:
            return CredentialCheck(False, "Viber refused the authentication token: copy it again from the bot's admin panel.")
        if code != 0:
            return CredentialCheck(False, f"Viber refused: {answer.get('status_message') or STATUS_NAMES.get(code, code)}.")
        return CredentialCheck(True, f"Connected to the Viber bot \"{answer.get('name', '')}\".")

    def webhook_payload(self, raw_body: bytes, signature: str | None, config: GatewayConfig) -> dict:
        if not config.credentials.get("auth_token"):
            raise WebhookRefused("no Viber auth token is configured")
        return verified_json(raw_body, signature, config.credentials["auth_token"], "X-Viber-Content-Signature", "event")

    def delivery_report(self, payload: dict) -> DeliveryReport | None:
        event = payload.get("event")
        if event not in ("delivered", "seen", "failed"):
            return None
        token = payload.get("message_token")
        if token is None:
            raise ValueError(f"Viber {event} event without message_token")
        status = "failed" if event == "failed" else "delivered"
        detail = f"Viber: {event}" + (f", {payload['desc']}" if payload.get("desc") else "")
        return DeliveryReport(str(token), status, detail, event)

    def incoming_message(self, payload: dict) -> IncomingMessage | None:
        if payload.get("event") != "message":
            return None
        sender = payload.get("sender") or {}
        message = payload.get("message") or {}
        if not sender.get("id"):
            raise ValueError("Viber message event without sender id")
        return IncomingMessage(number="", body=message.get("text") or "", viber_id=sender["id"],
                               provider_message_id=str(payload.get("message_token") or ""))

    def unsubscribed_user(self, payload: dict) -> str | None:
        return payload.get("user_id") if payload.get("event") == "unsubscribed" else None


gateway = ViberGateway()
