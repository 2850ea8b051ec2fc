"""The one interface every gateway module implements."""
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol


import requests
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

# What one provider request did with a message. The dispatcher acts on these four alone.
ACCEPTED = "accepted"  # the gateway took the message (provider id known)
REJECTED = "rejected"  # permanent for this number (bad number, blacklisted…): fail, no fallback
# Certainly not taken: connection refused, connect timeout, DNS, an HTTP error answer, auth, quota.
# Another gateway may carry it.
NOT_SENT = "not_sent"
# Perhaps taken: read timeout, connection reset after the request was written, a 2xx we cannot
# read. Never sent again by any gateway: it waits for the provider's report as `unconfirmed`.
MAYBE_SENT = "maybe_sent"

Outcome = Literal["accepted", "rejected", "not_sent", "maybe_sent"]


@dataclass(frozen=True)
class OutboundMessage:
    sms_id: int
    number: str  # E.164
    body: str
    viber_id: str | None = None
    # Stable per message and gateway; sent where the provider accepts one, stored before the call.
    idempotency_key: str = ""


@dataclass(frozen=True)
class SendResult:
    sms_id: int
    outcome: Outcome
    provider_message_id: str | None = None
    cost: str | None = None
    detail: str = ""  # what the provider said, for the message's event log
    # The provider says this recipient cannot be reached through it at all (Viber: not subscribed):
    # the dispatcher falls back for this message and remembers it for the person.
    recipient_unreachable: bool = False


@dataclass(frozen=True)
class CredentialCheck:
    ok: bool
    message: str  # shown to the admin: what is right or what is wrong


@dataclass(frozen=True)
class DeliveryReport:
    """One status update taken from a provider's callback."""

    provider_message_id: str
    status: str  # one of mpm.messaging.status: sent / delivered / failed
    detail: str = ""
    raw_status: str = ""


@dataclass(frozen=True)
class IncomingMessage:
    number: str
    body: str
    provider_message_id: str = ""
    viber_id: str | None = None


@dataclass
class GatewayConfig:
    """Decrypted credentials and plain options of one company's gateway, plus where callbacks go."""

    credentials: dict
    options: dict = field(default_factory=dict)
    callback_base_url: str = ""  # e.g. https://host/api/africas-talking/callback/<company>/<secret>
    timeout: float = 10.0  # read timeout of one provider request, seconds
    connect_timeout: float = 5.0


class Gateway(Protocol):
    key: str  # "africastalking", "textbee", "viber", "android"
    label: str
    deprecated: bool
    credential_fields: tuple[str, ...]  # names of the secret fields, for the settings form

    def can_reach(self, message: OutboundMessage) -> bool:
        """Whether this gateway can carry this message at all (Viber: only to Viber users)."""

    def send_batch(self, messages: list[OutboundMessage], config: GatewayConfig) -> list[SendResult]:
        """Send and answer per message. Never raises for provider trouble: such a message gets
        NOT_SENT or MAYBE_SENT (see request_failure)."""

    def check_credentials(self, config: GatewayConfig) -> CredentialCheck:
        """Ask the provider whether these credentials work."""


def request_failure(exc: requests.RequestException) -> str:
    """NOT_SENT when the request cannot have reached the provider (no connection, DNS, connect
    timeout, TLS handshake), MAYBE_SENT when it may have (read timeout, reset or close after the
    request was written)."""
    if isinstance(exc, (requests.ConnectTimeout, requests.exceptions.SSLError, requests.exceptions.ProxyError)):
        return NOT_SENT
    if isinstance(exc, requests.Timeout):
        return MAYBE_SENT  # the connection was up and the request written; only the answer is missing
    if isinstance(exc, requests.ConnectionError):
        cause = exc.args[0] if exc.args else None
        cause = getattr(cause, "reason", cause)  # urllib3 wraps connect failures in MaxRetryError
        if isinstance(cause, (NewConnectionError, ConnectTimeoutError)):
            return NOT_SENT
        return MAYBE_SENT
    return NOT_SENT  # invalid URL and the like: nothing left this machine


def failure_detail(label: str, exc: requests.RequestException, timeout: float) -> str:
    """Words for a request that failed without an answer."""
    if isinstance(exc, requests.ConnectTimeout):
        return f"{label} could not be reached (connect timeout)"
    if isinstance(exc, requests.Timeout):
        return f"{label} did not answer within {timeout:g} s; it may have taken the message"
    if request_failure(exc) == MAYBE_SENT:
        return f"{label} closed the connection without an answer ({type(exc).__name__}); it may have taken the message"
    return f"{label} could not be reached ({type(exc).__name__})"


def send_one_by_one(messages: list[OutboundMessage],
                    send_one: Callable[[OutboundMessage], tuple[SendResult, bool]]) -> list[SendResult]:
    """For providers that take one message per request. `send_one` answers (result, whole gateway
    down); once the gateway is down (unreachable, key refused, no answer) the rest are not tried and
    count as not sent, instead of a timeout each."""
    results: list[SendResult] = []
    for message in messages:
        result, whole_gateway_down = send_one(message)
        results.append(result)
        if whole_gateway_down:
            results.extend(SendResult(m.sms_id, NOT_SENT, detail=f"not tried: {result.detail}")
                           for m in messages[len(results):])
            break
    return results
