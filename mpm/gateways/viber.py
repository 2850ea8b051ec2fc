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
from typing import Annotated

import requests
from pydantic import Field, StringConstraints

from mpm.gateways.base import (ACCEPTED, MAYBE_SENT, NOT_SENT, MAX_INCOMING_CHARS, REJECTED, SEND_RATE_FIELD,
                               CallbackRefused, CallbackRequest, CallbackResult, CallbackRoute, CredentialCheck,
                               DeliveryReport, GatewayConfig, GatewayDefaults, IncomingMessage, OutboundMessage,
                               SendResult, failure_detail, request_failure, SettingField, Unsubscribed, send_one_by_one)
from mpm.gateways.webhooks import MAX_ID, Payload, json_payload, verified_body

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


UserId = Annotated[str, StringConstraints(min_length=1, max_length=100)]


class Sender(Payload):
    id: UserId


class Message(Payload):
    text: Annotated[str, StringConstraints(max_length=MAX_INCOMING_CHARS)] | None = None


class WebhookEvent(Payload):
    event: Annotated[str, StringConstraints(min_length=1, max_length=50)]
    message_token: Annotated[int, Field(ge=0, le=MAX_ID)] | Annotated[str, StringConstraints(max_length=100)] | None = None
    desc: Annotated[str, StringConstraints(max_length=500)] | None = None
    sender: Sender | None = None
    message: Message | None = None
    user_id: UserId | None = None


class ViberGateway(GatewayDefaults):
    key = "viber"
    label = "Viber Messaging"
    short_label = "Viber"
    priority = 30
    default_send_rate = 10.0
    reaches_only = "people subscribed to the Viber bot"
    fields = (
        SettingField("auth_token", "Bot authentication token", secret=True, required=True,
                     help="Viber admin panel → your bot → its token."),
        SettingField("sender_name", "Sender name", max_length=28, too_long="Viber allows at most 28 characters.",
                     help="The name customers see, at most 28 characters (empty: “MPM”)."),
        SEND_RATE_FIELD,
    )
    callbacks = (CallbackRoute("webhook", "Webhook (set with set_webhook)", "/api/viber-messaging/callback/{company}/webhook",
                               signature_header="X-Viber-Content-Signature"),)

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

    def parse_callback(self, kind: str, request: CallbackRequest, config: GatewayConfig | None) -> list[CallbackResult]:
        """delivered / seen / failed → a report; message → an incoming message; unsubscribed → the
        person leaves; "webhook" (the set_webhook check), subscribed, conversation_started: a 200 is all."""
        token = (config.credentials.get("auth_token") if config else "") or ""
        if not token:
            raise CallbackRefused("no Viber auth token is configured", 403)
        verified_body(request.raw_body, request.header("X-Viber-Content-Signature"), token, "X-Viber-Content-Signature")
        event = json_payload(request.raw_body, WebhookEvent)
        if event.event in ("delivered", "seen", "failed"):
            if event.message_token is None:
                raise CallbackRefused(f"message_token: a {event.event} event needs it")
            status = "failed" if event.event == "failed" else "delivered"
            detail = f"Viber: {event.event}" + (f", {event.desc}" if event.desc else "")
            return [DeliveryReport(str(event.message_token), status, detail, event.event)]
        if event.event == "message":
            if event.sender is None:
                raise CallbackRefused("sender: a message event needs it")
            text = event.message.text if event.message else None
            return [IncomingMessage(number="", body=text or "", viber_id=event.sender.id,
                                    provider_message_id=str(event.message_token or ""))]
        if event.event == "unsubscribed" and event.user_id:
            return [Unsubscribed(event.user_id)]
        return []


gateway = ViberGateway()
