"""Signed JSON webhooks (TextBee, Viber): the signature is a hex HMAC-SHA256 of the raw body."""
import hashlib
import hmac
import json


class WebhookRefused(Exception):
    """The webhook is not from the provider (bad or missing signature) or not a payload we know."""


def verified_json(raw_body: bytes, signature: str | None, key: str, header: str, event_field: str) -> dict:
    """The payload when `signature` is the HMAC of the body under `key`; WebhookRefused otherwise."""
    if not key:
        raise WebhookRefused(f"no signing key is configured to check {header}")
    expected = hmac.new(key.encode(), raw_body, hashlib.sha256).hexdigest()
    # Bytes: a forged header may carry any characters, and compare_digest refuses non-ASCII str.
    given = (signature or "").strip().lower().encode("utf-8", "replace")
    if not given or not hmac.compare_digest(expected.encode(), given):
        raise WebhookRefused(f"bad {header}")
    try:
        payload = json.loads(raw_body)
    except ValueError:
        raise WebhookRefused("body is not JSON") from None
    if not isinstance(payload, dict) or not payload.get(event_field):
        raise WebhookRefused(f"no {event_field}")
    return payload
