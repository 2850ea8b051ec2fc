"""The one interface every gateway module implements."""
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable


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


# --- settings: what the admin fills in on the gateway's settings page ------------------------------------

@dataclass(frozen=True)
class SettingField:
    """One field of a gateway's settings form, and how a typed value is checked."""

    name: str
    label: str
    secret: bool = False  # encrypted at rest, shown masked, kept when left empty on save
    credential: bool = False  # kept in the encrypted credentials (every secret is); the rest are plain options
    required: bool = False
    kind: str = "text"  # text / choice / int / number
    choices: tuple[str, ...] = ()
    default: object = None
    help: str = ""
    max_length: int = 500
    too_long: str = ""  # the message when longer than max_length

    @property
    def label_in_sentence(self) -> str:
        # "API key" and "FCM server key" keep their capitals; "Device ID" becomes "device ID".
        return self.label if self.label[:2].isupper() else self.label[0].lower() + self.label[1:]

    @property
    def encrypted(self) -> bool:
        return self.secret or self.credential

    def parse(self, raw: str):
        """The typed value of a non-empty entry; ValueError with the message for the admin."""
        if len(raw) > self.max_length:
            raise ValueError(self.too_long or f"At most {self.max_length} characters.")
        if self.kind == "choice":
            if raw not in self.choices:
                raise ValueError(f"Choose one of: {', '.join(self.choices)}.")
            return raw
        if self.kind == "int":
            if not (raw.isascii() and raw.isdigit() and 0 < int(raw) < 10**9):
                raise ValueError("Enter a whole number, 1 or more.")
            return int(raw)
        if self.kind == "number":
            try:
                number = float(raw)
            except ValueError:
                number = float("nan")
            if not 0 < number < 100_000:
                raise ValueError("Enter a number above 0, e.g. 5 or 0.5.")
            return number
        return raw


SEND_RATE_FIELD = SettingField("send_rate", "Send rate (messages per second)", kind="number",
                               help="Optional. Leave empty for the gateway's default pace.")


# --- callbacks: what the provider posts to us --------------------------------------------------------------

@dataclass(frozen=True)
class CallbackRoute:
    """One URL a provider calls. `path` is below the site root, with {company} and {secret} where
    the URL carries them (the secret goes in a `token` query parameter when the path has none);
    `rule_suffix` adds path parts the provider appends itself (e.g. "/<kind>")."""

    kind: str  # "delivery-reports", "incoming-messages", "webhook", "confirmation"…: passed to parse_callback
    label: str  # shown next to the URL on the gateway's page
    path: str
    methods: tuple[str, ...] = ("POST",)
    signature_header: str | None = None  # signed callbacks get the gateway's config to check the signature
    rule_suffix: str = ""

    @property
    def secret_in_path(self) -> bool:
        return "{secret}" in self.path

    def url(self, company_id: int, secret: str) -> str:
        """The path to register with the provider (without the site's base URL)."""
        path = self.path.format(company=company_id, secret=secret)
        return path if self.secret_in_path else f"{path}?token={secret}"

    @property
    def rule(self) -> str:
        """The URL rule that receives it."""
        return self.path.format(company="<int:company_id>", secret="<secret>") + self.rule_suffix


@dataclass(frozen=True)
class CallbackRequest:
    """A provider's request as plain values (parsed at the edge, no web framework objects)."""

    method: str
    path_params: dict[str, str]
    query: dict[str, str]
    headers: dict[str, str]  # header names lower-cased
    raw_body: bytes
    form: dict[str, str]

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class Unsubscribed:
    """The person left the operator's channel (Viber: the bot); the provider can no longer reach them."""

    viber_id: str


CallbackResult = DeliveryReport | IncomingMessage | Unsubscribed


class CallbackRefused(Exception):
    """The callback is not one to act on; nothing changes. status 403: not from the provider
    (bad signature, no signing key); 400: a payload of the wrong shape (the message names the field)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# A guard on what a parser accepts at all (Viber allows 7,000 characters); the SMS-part limit of what is
# stored is mpm.messaging.inbound's, which answers 413.
MAX_INCOMING_CHARS = 7000


# --- the interface ------------------------------------------------------------------------------------------

@runtime_checkable
class Gateway(Protocol):
    key: str  # "africastalking", "textbee", "viber", "android"; also the settings URL part
    label: str  # the plugin's full name
    short_label: str  # in sentences ("TextBee is used now")
    priority: int  # lower sends first; ties broken by key
    deprecated: bool
    fields: tuple[SettingField, ...]  # the settings form: credentials (encrypted) and options
    default_send_rate: float | None  # messages/s across all workers when the settings leave it empty; None: unpaced
    reaches_only: str  # "" when it reaches any phone number; else whom it reaches, in words
    callbacks: tuple[CallbackRoute, ...]

    def quotas(self, config: GatewayConfig) -> dict[str, int]:
        """Plan limits counted per company, {"day": n, "month": n}; {} for none."""

    def can_reach(self, message: OutboundMessage) -> bool:
        """Whether this gateway can carry this message at all (Viber: only to Viber users)."""

    def requests_for(self, messages: list[OutboundMessage], config: GatewayConfig) -> list[list[OutboundMessage]]:
        """How send_batch splits these messages into provider requests (one per message unless the
        provider takes many), so each request's outcome is recorded right after its answer."""

    def send_batch(self, messages: list[OutboundMessage], config: GatewayConfig) -> list[SendResult]:
        """Send and answer per message. Never raises for provider trouble: such a message gets
        NOT_SENT or MAYBE_SENT (see request_failure)."""

    def check_credentials(self, config: GatewayConfig) -> CredentialCheck:
        """Ask the provider whether these credentials work."""

    def parse_callback(self, kind: str, request: CallbackRequest, config: GatewayConfig | None) -> list[CallbackResult]:
        """What one callback says ([] for an event that needs only a 200). `config` is given for
        routes with a signature_header. Raises CallbackRefused."""


class GatewayDefaults:
    """What most gateways share; a gateway class may inherit it and override what differs."""

    priority = 100
    deprecated = False
    default_send_rate: float | None = None
    reaches_only = ""
    callbacks: tuple[CallbackRoute, ...] = ()

    def quotas(self, config: GatewayConfig) -> dict[str, int]:
        return {}

    def can_reach(self, message: OutboundMessage) -> bool:
        return True

    def requests_for(self, messages: list[OutboundMessage], config: GatewayConfig) -> list[list[OutboundMessage]]:
        return [[m] for m in messages]


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
