"""The one interface every gateway module implements."""
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

ACCEPTED = "accepted"  # the gateway took the message (provider id known)
REJECTED = "rejected"  # permanent for this message (bad number, blacklisted…): fail, no fallback
GATEWAY_ERROR = "gateway_error"  # the gateway could not take it (timeout, 5xx, auth, quota…): try the next

Outcome = Literal["accepted", "rejected", "gateway_error"]


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
    number: str = ""  # the recipient as the provider names it (AfricasTalking's phoneNumber), when it does


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
        """Send and answer per message. Never raises for provider trouble: such a message gets GATEWAY_ERROR."""

    def check_credentials(self, config: GatewayConfig) -> CredentialCheck:
        """Ask the provider whether these credentials work."""


def send_one_by_one(messages: list[OutboundMessage],
                    send_one: Callable[[OutboundMessage], tuple[SendResult, bool]]) -> list[SendResult]:
    """For providers that take one message per request. `send_one` answers (result, whole gateway
    down); once the gateway is down (unreachable, key refused) the rest get the same gateway error
    at once instead of a timeout each."""
    results: list[SendResult] = []
    for message in messages:
        result, whole_gateway_down = send_one(message)
        results.append(result)
        if whole_gateway_down:
            results.extend(SendResult(m.sms_id, GATEWAY_ERROR, detail=result.detail)
                           for m in messages[len(results):])
            break
    return results
