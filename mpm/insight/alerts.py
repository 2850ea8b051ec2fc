"""Alerts an operator can act on: no gateway active, a gateway's circuit open, the last hour's delivery
rate under the company's threshold, TextBee's quota nearly spent, a TextBee phone not seen for 15 minutes.

They show as a banner on every page (cached in Redis for a minute, so a page costs one GET) and on the
alerts page; the minute job (watch_alerts) polls TextBee's devices, refreshes the cache and, when the
company switched it on and the operator configured SMTP, e-mails the admins once per new alert."""
import json
import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from flask import current_app
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.orm.attributes import flag_modified

from mpm import mail
from mpm.extensions import db
from mpm.gateways.registry import get_gateway
from mpm.messaging import status as st
from mpm.models import Company, GatewaySetting, User
from mpm.models.base import utcnow
from mpm.plugins import gateway_health
from mpm.plugins.setup import selection
from mpm.queue import redis_connection

log = logging.getLogger(__name__)

DEFAULT_MIN_RATE = 80
QUOTA_NEARLY_SPENT = 0.9
MIN_OUTCOMES = 10  # fewer known outcomes in the hour say nothing about the rate
CACHE_KEY = "mpm:alerts:{company_id}"
CACHE_SECONDS = 60
MAILED_KEY = "mpm:alerts:mailed:{company_id}:{key}"
MAIL_AGAIN_AFTER = 6 * 3600


@dataclass(frozen=True)
class Alert:
    key: str  # stable per condition: one e-mail per alert, not per minute
    level: str  # error / warning
    message: str
    link: str = ""


# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class AlertSettings:
    min_delivery_rate: int = DEFAULT_MIN_RATE
    email: bool = False


def alert_settings(company: Company) -> AlertSettings:
    stored = (company.settings or {}).get("alerts") or {}
    try:
        rate = int(stored.get("min_delivery_rate", DEFAULT_MIN_RATE))
    except (TypeError, ValueError):
        rate = DEFAULT_MIN_RATE
    return AlertSettings(min_delivery_rate=rate, email=stored.get("email") is True)


def save_alert_settings(company_id: int, form) -> tuple[AlertSettings, str]:
    """Returns the settings and an error message (nothing saved when there is one)."""
    company = db.session.get(Company, company_id)
    text = (form.get("min_delivery_rate") or "").strip()
    if not text.isdigit() or not 1 <= int(text) <= 100:
        return alert_settings(company), "The delivery-rate threshold is a whole number of percent from 1 to 100."
    settings = AlertSettings(min_delivery_rate=int(text), email=form.get("email") == "on")
    company.settings = {**(company.settings or {}), "alerts": asdict(settings)}
    flag_modified(company, "settings")
    db.session.commit()
    forget_cached(company_id)
    return settings, ""


def smtp_configured() -> bool:
    return bool(current_app.config.get("SMTP_HOST"))


# ---------------------------------------------------------------- the conditions


def _time(moment: datetime | None) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if moment else "an unknown time"


def no_gateway_alert(chosen) -> list[Alert]:
    if not chosen.no_active_provider:
        return []
    return [Alert("no_gateway", "error", "No gateway is active: no SMS can be sent. Enable a gateway with valid "
                                         "credentials in Settings → Plugins.", "/plugins/")]


def circuit_open_alerts(company_id: int, chosen) -> list[Alert]:
    """Active gateways whose circuit breaker is open (the sending engine rests them after errors)."""
    usable = [p.key for p in chosen.plugins if p.usable]
    if not usable:
        return []
    settings = db.session.scalars(select(GatewaySetting).where(
        GatewaySetting.company_id == company_id, GatewaySetting.gateway.in_(usable),
        GatewaySetting.circuit_state == "open")).all()
    alerts = []
    for setting in settings:
        circuit = gateway_health.circuit_of(setting)
        error = f" Last error ({_time(circuit['last_error_at'])}): {circuit['last_error'][:200]}" if circuit["last_error"] else ""
        alerts.append(Alert(f"circuit:{setting.gateway}", "error",
                            f"{get_gateway(setting.gateway).short_label} is failing: its circuit is open since "
                            f"{_time(circuit['circuit_since'])}, so messages go to the next gateway or wait.{error}",
                            f"/plugins/{setting.gateway}/"))
    return alerts


def delivery_rate_alert(company_id: int, threshold: int, now: datetime) -> list[Alert]:
    hour = gateway_health.last_hour(company_id, now)
    delivered = hour.get(st.DELIVERED, 0)
    known = delivered + hour.get(st.FAILED, 0) + hour.get(st.EXPIRED, 0)
    if known < MIN_OUTCOMES or 100 * delivered >= threshold * known:
        return []
    return [Alert("delivery_rate", "warning",
                  f"Delivery rate of the last hour is {100 * delivered / known:.0f} % ({delivered} of {known} "
                  f"delivered), under your threshold of {threshold} %.", "/")]


def quota_alerts(company_id: int, chosen, now: datetime) -> list[Alert]:
    if not chosen.state_of("textbee").enabled:
        return []
    alerts = []
    for period, (used, limit) in gateway_health.textbee_quota(company_id, now).items():
        if limit and used >= QUOTA_NEARLY_SPENT * limit:
            word = "today's" if period == "day" else "this month's"
            spent = "spent" if used >= limit else "nearly spent"
            alerts.append(Alert(f"quota:textbee:{period}", "warning",
                                f"TextBee quota {spent}: {used} of {word} {limit} messages used. Messages go to "
                                "the next gateway, or wait for the quota to reset.", "/plugins/textbee/"))
    return alerts


def device_alerts(company_id: int, chosen, now: datetime) -> list[Alert]:
    """Registered TextBee phones that TextBee has not heard from for 15 minutes (or does not list)."""
    if not chosen.state_of("textbee").enabled:
        return []
    devices, checked_at = gateway_health.known_devices(company_id)
    if checked_at is None:
        return []
    by_id = {d.device_id: d for d in devices}
    alerts = []
    for device_id in gateway_health.registered_device_ids(company_id):
        device = by_id.get(device_id)
        if device is None:
            message = f"TextBee does not list the device {device_id} any more: check the phone and the TextBee app."
        elif device.quiet(now):
            message = (f"The TextBee phone {device.name} has not been seen since {_time(device.last_seen)}: "
                       "check that it is on, online and that the TextBee app runs.")
        else:
            continue
        alerts.append(Alert(f"device:{device_id}", "warning", message, "/plugins/textbee/"))
    return alerts


def compute_alerts(company_id: int, now: datetime | None = None) -> list[Alert]:
    now = now or utcnow()
    company = db.session.get(Company, company_id)
    chosen = selection(company_id)
    return [*no_gateway_alert(chosen), *circuit_open_alerts(company_id, chosen),
            *delivery_rate_alert(company_id, alert_settings(company).min_delivery_rate, now),
            *quota_alerts(company_id, chosen, now), *device_alerts(company_id, chosen, now)]


# ---------------------------------------------------------------- cache, banner, the minute job


def _store(company_id: int, alerts: list[Alert]) -> None:
    redis_connection().set(CACHE_KEY.format(company_id=company_id), json.dumps([asdict(a) for a in alerts]),
                           ex=CACHE_SECONDS)


def forget_cached(company_id: int) -> None:
    redis_connection().delete(CACHE_KEY.format(company_id=company_id))


def current_alerts(company_id: int) -> list[Alert]:
    """The alerts of the banner: computed at most once a minute per company."""
    cached = redis_connection().get(CACHE_KEY.format(company_id=company_id))
    if cached is not None:
        return [Alert(**item) for item in json.loads(cached)]
    alerts = compute_alerts(company_id)
    _store(company_id, alerts)
    return alerts


def banner_context() -> dict:
    if not current_user.is_authenticated:
        return {}
    try:
        return {"active_alerts": current_alerts(current_user.company_id)}
    except Exception:  # a banner must never take a page down with it
        log.exception("alerts unavailable")
        return {"active_alerts": []}


def watch_alerts() -> dict:
    """The minute job: poll TextBee devices, refresh every company's alerts, e-mail new ones."""
    mailed = 0
    companies = db.session.scalars(select(Company)).all()
    for company in companies:
        if selection(company.id).state_of("textbee").enabled:
            gateway_health.poll_textbee_devices(company.id)
        alerts = compute_alerts(company.id)
        _store(company.id, alerts)
        if alerts and alert_settings(company).email and smtp_configured():
            mailed += mail_new_alerts(company, alerts)
    return {"companies": len(companies), "mailed": mailed}


def mail_new_alerts(company: Company, alerts: list[Alert]) -> int:
    """One e-mail to the company's admins with the alerts not mailed in the last hours."""
    connection = redis_connection()
    new = [a for a in alerts if connection.set(MAILED_KEY.format(company_id=company.id, key=a.key), "1",
                                               nx=True, ex=MAIL_AGAIN_AFTER)]
    admins = db.session.scalars(select(User.email).where(User.company_id == company.id, User.role == "admin")).all()
    if not new or not admins:
        return 0
    subject = f"MPM Messaging: {len(new)} alert{'s' if len(new) > 1 else ''} for {company.name}"
    try:
        mail.send_mail(", ".join(admins), subject, "\n\n".join(f"- {a.message}" for a in new))
    except mail.MailNotSent as exc:
        log.warning("alert e-mail to company %s failed: %s", company.id, exc)
        for alert in new:  # try again next minute
            connection.delete(MAILED_KEY.format(company_id=company.id, key=alert.key))
        return 0
    return 1
