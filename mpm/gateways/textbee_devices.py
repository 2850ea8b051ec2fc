"""Several TextBee phones per company (the guide's "backup device"): which one sends now.

The company lists its device ids (first = preferred). A phone is passed over while it rests after an
error (REST_SECONDS) or when TextBee's device list (polled every minute, mpm.plugins.gateway_health) says it
is disabled or has not been seen for 15 minutes; when every phone is passed over, the list order
is tried as it is. State lives in Redis, keyed by TextBee's device id (unique across accounts)."""
import json
import re
from datetime import datetime, timedelta, timezone

from mpm.queue import redis_connection

REST_SECONDS = 300
QUIET = timedelta(minutes=15)
_SEEN = "mpm:textbee:device:{device_id}"
_RESTING = "mpm:textbee:resting:{device_id}"


def device_ids(credentials: dict) -> list[str]:
    """The ids typed into "Device IDs" (commas or spaces between them), in order, without repeats."""
    ids = re.split(r"[\s,;]+", str(credentials.get("device_id") or "").strip())
    return list(dict.fromkeys(i for i in ids if i))


def record_seen(device_id: str, enabled: bool, last_seen: datetime | None) -> None:
    value = {"enabled": enabled, "last_seen": last_seen.isoformat() if last_seen else None}
    redis_connection().set(_SEEN.format(device_id=device_id), json.dumps(value), ex=86400)


def mark_failing(device_id: str, reason: str) -> None:
    redis_connection().set(_RESTING.format(device_id=device_id), reason[:200], ex=REST_SECONDS)


def mark_working(device_id: str) -> None:
    redis_connection().delete(_RESTING.format(device_id=device_id))


def _usable(device_id: str, now: datetime, seen_raw, resting) -> bool:
    if resting:
        return False
    if not seen_raw:
        return True  # not polled yet: nothing says it is down
    seen = json.loads(seen_raw)
    if not seen.get("enabled", True):
        return False
    if seen.get("last_seen"):
        last = datetime.fromisoformat(seen["last_seen"])
        return now - last <= QUIET
    return True


def sending_order(ids: list[str], now: datetime | None = None) -> list[str]:
    """The phones to try, usable ones first (each group in the company's order)."""
    if len(ids) <= 1:
        return ids
    now = now or datetime.now(timezone.utc)
    pipe = redis_connection().pipeline()
    for device_id in ids:
        pipe.get(_SEEN.format(device_id=device_id))
        pipe.get(_RESTING.format(device_id=device_id))
    values = pipe.execute()
    usable = [d for n, d in enumerate(ids) if _usable(d, now, values[2 * n], values[2 * n + 1])]
    return usable + [d for d in ids if d not in usable]


def resting(device_id: str) -> str | None:
    value = redis_connection().get(_RESTING.format(device_id=device_id))
    return value.decode() if value else None
