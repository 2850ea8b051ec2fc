"""How each gateway of a company is doing: its circuit breaker, last success and last error, the error
rate of the last hour (from the hourly rollups), TextBee's plan quota and its phones' last-seen times.

TextBee devices are polled by the minute job (GET /gateway/devices) and kept in Redis for pages and
alerts to read: a page never waits for TextBee."""
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import requests
from sqlalchemy import func, select

from mpm.extensions import db
from mpm.gateways import registry, textbee, textbee_devices
from mpm.messaging import ratelimit
from mpm.messaging import status as st
from mpm.models import GatewaySetting, SmsRollup
from mpm.models.base import utcnow
from mpm.plugins import credentials
from mpm.plugins.gateway_settings import config_for, find_gateway_setting
from mpm.queue import redis_connection

log = logging.getLogger(__name__)

DEVICE_QUIET = timedelta(minutes=15)
DEVICES_KEY = "mpm:textbee:devices:{company_id}"
DEVICES_TTL = 86400
# Fields of a TextBee device that tell when the phone last talked to textbee.dev, best first.
SEEN_FIELDS = ("lastHeartbeat", "lastSeenAt", "lastSeen", "updatedAt")


@dataclass
class Device:
    device_id: str
    name: str
    enabled: bool
    last_seen: datetime | None

    def quiet(self, now: datetime) -> bool:
        # No time at all in TextBee's answer says nothing either way: no alert on a guess.
        return self.last_seen is not None and now - self.last_seen > DEVICE_QUIET


@dataclass
class Health:
    gateway: str
    circuit_state: str = "closed"
    circuit_since: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    last_success_at: datetime | None = None
    hour_messages: int = 0
    hour_failed: int = 0
    quota: dict[str, tuple[int, int]] = field(default_factory=dict)  # period → (used, limit)
    devices: list[Device] = field(default_factory=list)
    devices_checked_at: datetime | None = None
    registered: list[str] = field(default_factory=list)  # the company's phones, in sending preference
    sending_device: str | None = None  # the phone the next message goes through
    resting: dict[str, str] = field(default_factory=dict)  # phone → the error it rests after

    @property
    def error_rate(self) -> float | None:
        return self.hour_failed / self.hour_messages if self.hour_messages else None


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def circuit_of(setting: GatewaySetting | None) -> dict:
    """The circuit-breaker columns of a gateway (kept by the sending engine)."""
    if setting is None:
        return {}
    return {"circuit_state": setting.circuit_state or "closed", "circuit_since": _utc(setting.circuit_since),
            "last_error": setting.last_error, "last_error_at": _utc(setting.last_error_at),
            "last_success_at": _utc(setting.last_success_at)}


def last_hour(company_id: int, now: datetime, gateway: str | None = None) -> dict[str, int]:
    """Outbound messages by outcome in the hourly rollups of this hour and the one before."""
    since = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    r = SmsRollup
    query = (select(r.outcome, func.sum(r.messages))
             .where(r.company_id == company_id, r.grain == "hour", r.bucket >= since).group_by(r.outcome))
    if gateway:
        query = query.where(r.gateway == gateway)
    return {outcome: int(n) for outcome, n in db.session.execute(query)}


def textbee_quota(company_id: int, now: datetime | None = None) -> dict[str, tuple[int, int]]:
    """TextBee plan quota: {"day": (used, limit), "month": (used, limit)} (counted by the dispatcher)."""
    setting = find_gateway_setting(company_id, "textbee")
    if setting is None:
        return {}
    options = setting.options or {}
    limits = {"day": int(options.get("daily_quota") or textbee.DEFAULT_DAILY_QUOTA),
              "month": int(options.get("monthly_quota") or textbee.DEFAULT_MONTHLY_QUOTA)}
    used = ratelimit.quota_used(company_id, "textbee", limits, now)
    return {period: (used[period], limit) for period, limit in limits.items()}


def gateway_health(company_id: int, key: str, now: datetime | None = None) -> Health:
    now = now or utcnow()
    health = Health(gateway=key, **circuit_of(find_gateway_setting(company_id, key)))
    hour = last_hour(company_id, now, key)
    health.hour_messages = sum(n for outcome, n in hour.items() if outcome in (st.DELIVERED, st.FAILED, st.EXPIRED,
                                                                                st.SENT, st.UNCONFIRMED))
    health.hour_failed = hour.get(st.FAILED, 0) + hour.get(st.EXPIRED, 0)
    if key == "textbee":
        health.quota = textbee_quota(company_id, now)
        health.devices, health.devices_checked_at = known_devices(company_id)
        health.registered = registered_device_ids(company_id)
        order = textbee_devices.sending_order(health.registered, now)
        health.sending_device = order[0] if order else None
        health.resting = {d: r for d in health.registered if (r := textbee_devices.resting(d))}
    return health


# ---------------------------------------------------------------- TextBee devices


def _parse_time(value) -> datetime | None:
    if not value:
        return None
    try:
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(value / 1000 if value > 1e11 else value, timezone.utc)
        return _utc(datetime.fromisoformat(str(value).replace("Z", "+00:00")))
    except (ValueError, OverflowError, OSError):
        return None


def _device(item: dict) -> Device:
    seen = next((t for t in (_parse_time(item.get(f)) for f in SEEN_FIELDS) if t), None)
    name = " ".join(str(item.get(k)) for k in ("brand", "model") if item.get(k)) or str(item.get("_id", ""))
    return Device(device_id=str(item.get("_id", "")), name=name[:80], enabled=item.get("enabled") is not False,
                  last_seen=seen)


def poll_textbee_devices(company_id: int, now: datetime | None = None) -> list[Device] | None:
    """Ask TextBee for this company's devices and keep what it says; None when TextBee did not answer
    (the last known list stays)."""
    now = now or utcnow()
    setting = find_gateway_setting(company_id, "textbee")
    if setting is None or not setting.enabled or not setting.credentials_encrypted:
        return None
    gateway = registry.get_gateway("textbee")
    try:
        config = config_for(setting)
    except credentials.UnreadableCredentials:
        return None
    try:
        response = requests.get(f"{gateway.base_url(config)}/gateway/devices",
                                headers={"x-api-key": config.credentials.get("api_key", ""), "Accept": "application/json"},
                                timeout=(config.connect_timeout, config.timeout))
        items = response.json()["data"] if response.status_code == 200 else None
    except (requests.RequestException, ValueError, KeyError, TypeError):
        items = None
    if not isinstance(items, list):
        log.info("TextBee device list unavailable for company %s", company_id)
        return None
    devices = [_device(item) for item in items if isinstance(item, dict)]
    for device in devices:  # what the sending side reads to pick a phone
        textbee_devices.record_seen(device.device_id, device.enabled, device.last_seen)
    record = {"checked_at": now.isoformat(),
              "devices": [{"id": d.device_id, "name": d.name, "enabled": d.enabled,
                           "last_seen": d.last_seen.isoformat() if d.last_seen else None} for d in devices]}
    redis_connection().set(DEVICES_KEY.format(company_id=company_id), json.dumps(record), ex=DEVICES_TTL)
    return devices


def known_devices(company_id: int) -> tuple[list[Device], datetime | None]:
    """The devices of the last poll, with when it was."""
    raw = redis_connection().get(DEVICES_KEY.format(company_id=company_id))
    if not raw:
        return [], None
    record = json.loads(raw)
    devices = [Device(d["id"], d["name"], d["enabled"], _parse_time(d["last_seen"])) for d in record["devices"]]
    return devices, _parse_time(record["checked_at"])


def registered_device_ids(company_id: int) -> list[str]:
    """The device ids this company sends through (from its TextBee credentials)."""
    setting = find_gateway_setting(company_id, "textbee")
    if setting is None or not setting.credentials_encrypted:
        return []
    try:
        return textbee_devices.device_ids(config_for(setting).credentials)
    except credentials.UnreadableCredentials:
        return []
