"""Circuit breaker per company and gateway: a gateway that keeps failing is skipped for a while
instead of making every request wait for its timeout.

closed  → in use; CIRCUIT_FAILURES failed requests in a row (not sent or maybe sent) open it.
open    → skipped since `circuit_since`; after CIRCUIT_COOLDOWN_SECONDS one request may probe it.
probing → that one request is on its way (a Redis lease lets a single worker probe): success
          closes the circuit, failure opens it again for another cool-down.
State, last error and last success are columns of GatewaySetting (shown on the plugin pages);
the count of failures in a row lives in Redis. Every change of state is written to the audit log.
"""
import os
import socket
from datetime import datetime, timedelta, timezone

from flask import current_app

from mpm import leases
from mpm.audit import audit
from mpm.gateways.registry import get_gateway
from mpm.models import GatewaySetting
from mpm.queue import redis_connection

CLOSED, OPEN, PROBING = "closed", "open", "probing"
_SUCCESS_WRITE_EVERY = timedelta(seconds=60)  # last_success_at need not be written per request


def _failures_key(setting: GatewaySetting) -> str:
    return f"mpm:circuit:failures:{setting.company_id}:{setting.gateway}"


def _probe_lease(setting: GatewaySetting) -> str:
    return f"circuit-probe:{setting.company_id}:{setting.gateway}"


def reopens_at(setting: GatewaySetting) -> datetime | None:
    """When an open circuit may be probed."""
    if setting.circuit_state == CLOSED or setting.circuit_since is None:
        return None
    return _aware(setting.circuit_since) + timedelta(seconds=current_app.config["CIRCUIT_COOLDOWN_SECONDS"])


def admits(setting: GatewaySetting, now: datetime) -> bool:
    """Whether a request may go to this gateway now. Past the cool-down, only the caller that
    takes the probe lease gets a yes (and the circuit becomes `probing`)."""
    if setting.circuit_state == CLOSED:
        return True
    if setting.circuit_state == PROBING and leases.holder(_probe_lease(setting)) == _me():
        return True
    due = reopens_at(setting)
    if due is not None and due > now:
        return False
    # A probe whose worker died leaves `probing` behind: its lease expires and another may probe.
    probe_seconds = int(current_app.config.get("GATEWAY_TIMEOUT_SECONDS", 10)) * 2 + 30
    if not leases.take(_probe_lease(setting), probe_seconds, _me()):
        return False
    _change(setting, PROBING, now, reason="cool-down over: one request tests the gateway")
    return True


def healthy(setting: GatewaySetting) -> bool:
    """Closed, and its last answer known here was a success: the next request may leave before the
    previous one answered. A gateway in trouble (or being probed) gets one request at a time."""
    return setting.circuit_state == CLOSED and not _failed_since_success(setting)


def _failed_since_success(setting: GatewaySetting) -> bool:
    last_success = _aware(setting.last_success_at)
    return setting.last_error_at is not None and (last_success is None or _aware(setting.last_error_at) > last_success)


def record_success(setting: GatewaySetting, now: datetime) -> None:
    """The gateway answered (it took the message, or refused this number for good)."""
    if setting.circuit_state != CLOSED:
        redis_connection().delete(_failures_key(setting))
        leases.release(_probe_lease(setting))
        _change(setting, CLOSED, now, reason="the gateway answered again")
        return
    last_success = _aware(setting.last_success_at)
    if _failed_since_success(setting) or last_success is None or last_success + _SUCCESS_WRITE_EVERY < now:
        redis_connection().delete(_failures_key(setting))
        setting.last_success_at = now


def record_failure(setting: GatewaySetting, error: str, now: datetime) -> None:
    """A request that was not taken or whose outcome is unknown."""
    setting.last_error = error[:2000]
    setting.last_error_at = now
    failures = redis_connection().incr(_failures_key(setting))
    redis_connection().expire(_failures_key(setting), 24 * 3600)
    if setting.circuit_state == PROBING:
        leases.release(_probe_lease(setting))
        _change(setting, OPEN, now, reason=f"the test request failed: {error}")
    elif setting.circuit_state == CLOSED and failures >= current_app.config["CIRCUIT_FAILURES"]:
        _change(setting, OPEN, now, reason=f"{failures} failed requests in a row, the last: {error}")


def _change(setting: GatewaySetting, state: str, now: datetime, reason: str) -> None:
    """New state on the row, in the same transaction as an audit entry (the caller commits)."""
    before = setting.circuit_state
    setting.circuit_state = state
    setting.circuit_since = now if state != CLOSED else None
    if state == CLOSED:
        setting.last_success_at = now
    audit(setting.company_id, None, f"plugin.circuit_{state}", get_gateway(setting.gateway).label,
          **{"from": before, "to": state, "reason": reason[:500]})


def describe(setting: GatewaySetting) -> str:
    """One line for the plugin pages: the circuit state in words."""
    if setting.circuit_state == OPEN:
        since, due = _aware(setting.circuit_since), reopens_at(setting)
        return (f"skipped since {since:%Y-%m-%d %H:%M} UTC after repeated failures; tested again from {due:%H:%M} UTC"
                if since else "skipped after repeated failures")
    if setting.circuit_state == PROBING:
        return "being tested with one request"
    return "in use"


def _aware(value: datetime | None) -> datetime | None:
    """SQLite gives back naive datetimes; everything stored is UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def _me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
