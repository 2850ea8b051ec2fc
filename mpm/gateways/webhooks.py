"""Callback payloads: signed JSON webhooks (TextBee, Viber: a hex HMAC-SHA256 of the raw body) and
typed validation of every payload, so a field of the wrong type or size is a 400 that names it."""
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from mpm.gateways.base import CallbackRefused

# Ids as providers send them; an integer id must fit a signed 64-bit column.
MAX_ID = 2**63 - 1


class Payload(BaseModel):
    """Base of every callback shape: unknown fields are ignored, known ones must have their type."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, frozen=True)


P = TypeVar("P", bound=Payload)


def verified_body(raw_body: bytes, signature: str | None, key: str, header: str) -> None:
    """Nothing when `signature` is the HMAC of the body under `key`; CallbackRefused (403) otherwise."""
    if not key:
        raise CallbackRefused(f"no signing key is configured to check {header}", 403)
    expected = hmac.new(key.encode(), raw_body, hashlib.sha256).hexdigest()
    # Bytes: a forged header may carry any characters, and compare_digest refuses non-ASCII str.
    given = (signature or "").strip().lower().encode("utf-8", "replace")
    if not given or not hmac.compare_digest(expected.encode(), given):
        raise CallbackRefused(f"bad {header}", 403)


def json_payload(raw_body: bytes, shape: type[P]) -> P:
    """The body as `shape`; CallbackRefused (400) naming the first field that is wrong."""
    try:
        data = json.loads(raw_body)
    except RecursionError:  # thousands of nested brackets
        raise CallbackRefused("body is nested too deeply") from None
    except ValueError:
        raise CallbackRefused("body is not JSON") from None
    if not isinstance(data, dict):
        raise CallbackRefused("body is not a JSON object")
    return validated(data, shape)


def validated(data: Mapping, shape: type[P]) -> P:
    try:
        return shape.model_validate(dict(data))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "body"
        raise CallbackRefused(f"{where}: {error['msg']}") from None
