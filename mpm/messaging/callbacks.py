"""Providers' callbacks: authenticate → parse → apply, for every callback route a registered
gateway declares. No login, no CSRF (providers post here): each is authenticated by the
per-company secret in the registered URL and, where the provider signs, by its signature.
Bad input → 4xx and a log line, never a changed row."""
import hmac
import logging
from dataclasses import dataclass, field

from mpm.gateways.base import CallbackRefused, CallbackRequest, DeliveryReport, IncomingMessage, Unsubscribed
from mpm.gateways.registry import callback_routes, get_gateway
from mpm.messaging.delivery import callback_secret_matches, forget_viber_subscriber, receive_delivery_reports
from mpm.messaging.inbound import IncomingRefused, store_incoming
from mpm.plugins.credentials import UnreadableCredentials
from mpm.plugins.gateway_settings import config_for, find_gateway_setting

log = logging.getLogger(__name__)

MAX_DB_ID = 2**31 - 1


@dataclass(frozen=True)
class Endpoint:
    """One URL to route: the gateway's key, the route's kind, its URL rule and methods."""

    name: str
    gateway: str
    kind: str
    rule: str
    methods: tuple[str, ...]


@dataclass(frozen=True)
class CallbackAnswer:
    status: int
    body: dict = field(default_factory=dict)


def endpoints() -> list[Endpoint]:
    """Every callback URL of the registered gateways."""
    return [Endpoint(f"{gateway.key}_{route.kind}".replace("-", "_"), gateway.key, route.kind, route.rule, route.methods)
            for gateway, route in callback_routes()]


def receive_callback(gateway_key: str, kind: str, company_id: int, request: CallbackRequest,
                     remote_addr: str | None = None) -> CallbackAnswer:
    """Authenticate, parse and apply one provider callback; the answer to give the provider."""
    gateway = get_gateway(gateway_key)
    route = next(r for r in gateway.callbacks if r.kind == kind)
    secret = request.path_params.get("secret") if route.secret_in_path else request.query.get("token")

    def refuse(status: int, why: str) -> CallbackAnswer:
        log.warning("callback refused (%s): %s company=%s gateway=%s from=%s", status, why, company_id,
                    gateway_key, remote_addr)
        return CallbackAnswer(status, {"error": why})

    config = None
    if route.signature_header:  # the signature key is in the decrypted credentials
        setting = find_gateway_setting(company_id, gateway_key) if 0 < company_id <= MAX_DB_ID else None
        if setting is None or not _same(setting.callback_secret, secret):
            return refuse(403, "wrong or missing token")
        try:
            config = config_for(setting)
        except UnreadableCredentials as exc:
            return refuse(403, str(exc))
    elif not (0 < company_id <= MAX_DB_ID and callback_secret_matches(company_id, gateway_key, secret)):
        return refuse(403, "wrong secret" if route.secret_in_path else "wrong or missing token")
    try:
        results = gateway.parse_callback(kind, request, config)
    except CallbackRefused as exc:
        return refuse(exc.status, str(exc))
    return _apply(company_id, gateway_key, results)


def _apply(company_id: int, gateway_key: str, results) -> CallbackAnswer:
    reports = [r for r in results if isinstance(r, DeliveryReport)]
    for result in results:
        if isinstance(result, IncomingMessage):
            try:
                store_incoming(company_id, gateway_key, result)
            except IncomingRefused as exc:  # logged where it was refused
                return CallbackAnswer(exc.status, {"error": str(exc)})
        elif isinstance(result, Unsubscribed):
            forget_viber_subscriber(company_id, result.viber_id)
    if reports:
        # Queued for the report writer; ids not stored yet are parked there, so the provider gets its 200.
        receive_delivery_reports(company_id, gateway_key, reports)
    return CallbackAnswer(200, {"ok": True})


def _same(stored: str | None, given: str | None) -> bool:
    return bool(stored) and bool(given) and hmac.compare_digest(stored.encode(), given.encode("utf-8", "replace"))
