"""AfricasTalking: bulk SMS over its REST API, delivery reports and incoming SMS by callback.

Credentials (encrypted): `api_key`, `username` (the app's username; "sandbox" in the sandbox).
Options: `sender_id` (short code or alphanumeric sender id; AT's default sender when empty),
`environment` ("live" default, or "sandbox"), `send_rate` (messages/s across all workers; none
published by AT, unlimited when unset), `max_recipients` (per request, default 100),
`base_url` (only the local simulator sets it).

Send: POST {base}/version1/messaging, form fields username, to (comma separated), message, from,
bulkSMSMode=1, header apiKey. One request per distinct body (broadcast bodies are personalised).
The answer lists each recipient with a statusCode: 100/101/102 taken; the rest mapped below.
Callbacks (form-encoded): delivery reports (id, status, phoneNumber, networkCode, failureReason)
and incoming messages (from, to, text, id, date, linkId).
"""
import logging
from collections import defaultdict

import requests

from mpm.gateways.base import (ACCEPTED, MAYBE_SENT, NOT_SENT, REJECTED, CredentialCheck, DeliveryReport,
                               GatewayConfig, IncomingMessage, OutboundMessage, SendResult, failure_detail,
                               request_failure)

log = logging.getLogger(__name__)

LIVE_URL = "https://api.africastalking.com"
SANDBOX_URL = "https://api.sandbox.africastalking.com"

TAKEN = {100: "Processed", 101: "Sent", 102: "Queued"}
# Trouble on AT's or the account's side: another gateway may still carry the message.
GATEWAY_CODES = {401: "RiskHold", 402: "InvalidSenderId", 405: "InsufficientBalance",
                 500: "InternalServerError", 501: "GatewayError"}
# About this number: no other SMS gateway would do better.
REJECTED_CODES = {403: "InvalidPhoneNumber", 404: "UnsupportedNumberType", 406: "UserInBlacklist",
                  407: "CouldNotRoute", 409: "DoNotDisturbRejection", 502: "RejectedByGateway"}

# Delivery report statuses → our statuses. Sent/Submitted/Buffered only confirm the hand-over.
REPORT_STATUSES = {
    "Success": "delivered", "Sent": "sent", "Submitted": "sent", "Buffered": "sent",
    "Rejected": "failed", "Failed": "failed", "AbsentSubscriber": "failed", "Expired": "failed",
}

_http = requests.Session()


class AfricasTalkingGateway:
    key = "africastalking"
    label = "AfricasTalking"
    deprecated = False
    credential_fields = ("api_key", "username")
    option_fields = ("sender_id", "environment", "send_rate")
    default_send_rate = None

    def base_url(self, config: GatewayConfig) -> str:
        if config.options.get("base_url"):
            return config.options["base_url"].rstrip("/")
        return SANDBOX_URL if config.options.get("environment") == "sandbox" else LIVE_URL

    def can_reach(self, message: OutboundMessage) -> bool:
        return True

    def _headers(self, config: GatewayConfig) -> dict:
        return {"apiKey": config.credentials.get("api_key", ""), "Accept": "application/json"}

    # --- sending -------------------------------------------------------------------------------
    def requests_for(self, messages: list[OutboundMessage], config: GatewayConfig) -> list[list[OutboundMessage]]:
        """How send_batch splits these messages into provider requests (the dispatcher claims and
        settles one request at a time)."""
        return _requests_for(messages, int(config.options.get("max_recipients") or 100))

    def send_batch(self, messages: list[OutboundMessage], config: GatewayConfig) -> list[SendResult]:
        results: list[SendResult] = []
        for group in self.requests_for(messages, config):
            results.extend(self._send_group(group, config))
        return results

    def _send_group(self, group: list[OutboundMessage], config: GatewayConfig) -> list[SendResult]:
        form = {
            "username": config.credentials.get("username", ""),
            "to": ",".join(m.number for m in group),
            "message": group[0].body,
            "bulkSMSMode": "1",
        }
        if config.options.get("sender_id"):
            form["from"] = config.options["sender_id"]
        try:
            response = _http.post(f"{self.base_url(config)}/version1/messaging", data=form,
                                  headers=self._headers(config),
                                  timeout=(config.connect_timeout, config.timeout))
        except requests.RequestException as exc:
            return _all(group, request_failure(exc), failure_detail("AfricasTalking", exc, config.timeout))
        if response.status_code == 401:
            return _all(group, NOT_SENT, "AfricasTalking refused the API key or username "
                        f"(HTTP 401: {response.text.strip()[:200]})")
        try:
            recipients = response.json()["SMSMessageData"]["Recipients"]
            if not isinstance(recipients, list):
                raise TypeError("Recipients is not a list")
        except (ValueError, KeyError, TypeError):
            # A 409 (DND) still carries the JSON answer. An error answer without it was not taken;
            # a 2xx we cannot read may have been.
            outcome = MAYBE_SENT if 200 <= response.status_code < 300 else NOT_SENT
            return _all(group, outcome,
                        f"AfricasTalking answered HTTP {response.status_code}: {response.text.strip()[:200]}")
        by_number: dict[str, dict] = {}
        for entry in recipients:
            if not isinstance(entry, dict):
                continue
            by_number.setdefault(_digits(entry.get("number", "")), entry)
        return [self._result_for(m, by_number.get(_digits(m.number))) for m in group]

    def _result_for(self, message: OutboundMessage, entry: dict | None) -> SendResult:
        if entry is None:
            # The request was taken but says nothing of this number: it may still go out.
            return SendResult(message.sms_id, MAYBE_SENT, detail="AfricasTalking did not list this number in its answer")
        try:
            code = int(entry.get("statusCode"))
        except (TypeError, ValueError):
            code = 0
        status = entry.get("status", "")
        message_id = entry.get("messageId")
        cost = entry.get("cost") or None
        if code in TAKEN and message_id and message_id != "None":
            return SendResult(message.sms_id, ACCEPTED, provider_message_id=message_id, cost=cost,
                              detail=f"AfricasTalking: {status or TAKEN[code]} ({code})")
        if code in REJECTED_CODES:
            return SendResult(message.sms_id, REJECTED,
                              detail=f"AfricasTalking rejected the number: {status or REJECTED_CODES[code]} ({code})")
        name = status or GATEWAY_CODES.get(code, "unknown status")
        return SendResult(message.sms_id, NOT_SENT, detail=f"AfricasTalking: {name} ({code})")

    # --- credentials ---------------------------------------------------------------------------
    def check_credentials(self, config: GatewayConfig) -> CredentialCheck:
        username = config.credentials.get("username", "").strip()
        if not username or not config.credentials.get("api_key"):
            return CredentialCheck(False, "Enter both the username and the API key of your AfricasTalking app.")
        try:
            response = _http.get(f"{self.base_url(config)}/version1/user", params={"username": username},
                                 headers=self._headers(config), timeout=(config.connect_timeout, config.timeout))
        except requests.Timeout:
            return CredentialCheck(False, f"AfricasTalking did not answer within {config.timeout:g} seconds. "
                                          "Check this server's internet connection and try again.")
        except requests.RequestException:
            return CredentialCheck(False, "AfricasTalking could not be reached (network error). "
                                          "Check this server's internet connection and try again.")
        if response.status_code == 401:
            hint = (" In the sandbox the username is always \"sandbox\"."
                    if config.options.get("environment") == "sandbox" and username != "sandbox" else "")
            return CredentialCheck(False, f"AfricasTalking refused the API key for username \"{username}\": "
                                          "the key or the username is wrong, or the key is for the other "
                                          f"environment (sandbox/live). A new key can take ~20 minutes to work.{hint}")
        if response.status_code >= 500:
            return CredentialCheck(False, f"AfricasTalking has a problem right now (HTTP {response.status_code}). "
                                          "Try again later.")
        try:
            data = {k.lower(): v for k, v in response.json().items()}
            balance = data["userdata"].get("balance", "")
        except (ValueError, KeyError, AttributeError):
            return CredentialCheck(False, f"AfricasTalking answered HTTP {response.status_code} with something "
                                          "unexpected; check the environment (sandbox/live).")
        return CredentialCheck(True, f"Connected to AfricasTalking as \"{username}\". Balance: {balance}.")

    # --- callbacks -----------------------------------------------------------------------------
    def delivery_report_from_form(self, form) -> DeliveryReport:
        """Raises ValueError for a report that is not one."""
        message_id = (form.get("id") or "").strip()
        raw = (form.get("status") or "").strip()
        if not message_id or raw not in REPORT_STATUSES:
            raise ValueError(f"not an AfricasTalking delivery report (id={message_id!r}, status={raw!r})")
        parts = [f"AfricasTalking: {raw}"]
        if form.get("failureReason"):
            parts.append(f"reason {form['failureReason']}")
        if form.get("networkCode"):
            parts.append(f"network {form['networkCode']}")
        return DeliveryReport(message_id, REPORT_STATUSES[raw], ", ".join(parts), raw)

    def incoming_message_from_form(self, form) -> IncomingMessage:
        number = (form.get("from") or "").strip()
        if not number or form.get("text") is None:
            raise ValueError("not an AfricasTalking incoming message (from and text are required)")
        return IncomingMessage(number=number, body=form.get("text", ""), provider_message_id=(form.get("id") or "").strip())


def _digits(number: str) -> str:
    """Comparable form of a number as we send it (E.164) or as AT echoes it."""
    return number.replace("+", "").replace(" ", "").replace("-", "")


def _all(group: list[OutboundMessage], outcome: str, detail: str) -> list[SendResult]:
    return [SendResult(m.sms_id, outcome, detail=detail) for m in group]


def _requests_for(messages: list[OutboundMessage], max_recipients: int) -> list[list[OutboundMessage]]:
    """One request per body, at most max_recipients each, and a number at most once per request
    (AT answers per number, so a repeated number could not be told apart)."""
    by_body: dict[str, list[tuple[list[OutboundMessage], set[str]]]] = defaultdict(list)
    for message in messages:
        digits = _digits(message.number)
        chunks = by_body[message.body]
        for chunk, numbers in chunks:
            if len(chunk) < max_recipients and digits not in numbers:
                chunk.append(message)
                numbers.add(digits)
                break
        else:
            chunks.append(([message], {digits}))
    return [chunk for chunks in by_body.values() for chunk, _ in chunks]

gateway = AfricasTalkingGateway()
