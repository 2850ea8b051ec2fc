"""The one list of gateways. Everything shown or routed per gateway (labels, settings fields,
priority, deprecation, callback routes) is read from the gateway objects registered here."""
from mpm.gateways import africastalking, android, textbee, viber
from mpm.gateways.base import CallbackRoute, Gateway

_GATEWAYS: dict[str, Gateway] = {}


def register(gateway: Gateway) -> None:
    """Add a gateway (the four built-in ones are added below); its priority places it in the order."""
    if gateway.key in _GATEWAYS:
        raise ValueError(f"a gateway {gateway.key!r} is already registered")
    _GATEWAYS[gateway.key] = gateway


def unregister(key: str) -> None:
    _GATEWAYS.pop(key, None)


def get_gateway(key: str) -> Gateway:
    """The gateway object of a registered key; KeyError for anything else."""
    return _GATEWAYS[key]


def all_gateways() -> list[Gateway]:
    """Every registered gateway, in the fixed priority order of sending."""
    return sorted(_GATEWAYS.values(), key=lambda g: (g.priority, g.key))


def priority_order() -> list[str]:
    return [g.key for g in all_gateways()]


def callback_routes() -> list[tuple[Gateway, CallbackRoute]]:
    """Every callback URL the registered gateways receive."""
    return [(g, route) for g in all_gateways() for route in g.callbacks]


for _builtin in (africastalking.gateway, textbee.gateway, viber.gateway, android.gateway):
    register(_builtin)
