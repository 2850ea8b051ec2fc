"""Settings → Plugins: which gateway plugins a company has switched on, their credentials, and why
a given gateway is the one used now. Plain functions: ids and values in, rows and figures out.

Secrets (API keys, tokens) are stored only Fernet-encrypted in GatewaySetting.credentials_encrypted;
plain settings (username, device id, quotas…) go to GatewaySetting.options. A secret is never
rendered back beyond its last 4 characters, and never written to the audit log or to a log line.
"""
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import requests
from flask import current_app
from sqlalchemy import func, select

from mpm.extensions import db
from mpm.gateways import credentials as vault
from mpm.gateways import registry
from mpm.gateways.base import CredentialCheck, GatewayConfig
from mpm.gateways.catalog import GATEWAY_LABELS, PRIORITY
from mpm.messaging import circuit, status
from mpm.messaging.send import NO_ACTIVE_PROVIDER, Recipient, queue_messages
from mpm.models import AuditEntry, Company, GatewaySetting, Sms
from mpm.models.base import utcnow
from mpm.phones import to_e164

SHORT_LABELS = {"africastalking": "AfricasTalking", "textbee": "TextBee", "viber": "Viber", "android": "Android"}
PRIORITY_TEXT = "AfricasTalking → TextBee → Viber (only for Viber users) → Android"
DEPRECATED = frozenset({"android"})
AUDIT_PREFIX = "plugin."
TEST_SMS_BODY = "Test message from {company} (MPM Messaging). If you can read this, SMS sending works."


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    secret: bool = False  # encrypted at rest, shown masked, kept when left empty on save
    required: bool = False
    kind: str = "text"  # text / choice / int / number
    choices: tuple[str, ...] = ()
    default: object = None
    help: str = ""

    @property
    def label_in_sentence(self) -> str:
        # "API key" and "FCM server key" keep their capitals; "Device ID" becomes "device ID".
        return self.label if self.label[:2].isupper() else self.label[0].lower() + self.label[1:]


_SEND_RATE = Field("send_rate", "Send rate (messages per second)", kind="number",
                   help="Optional. Leave empty for the gateway's default pace.")

# Which of these the gateway keeps in its encrypted credentials and which in its plain options is
# the gateway module's call (`credential_fields`); `secret` only decides what is shown masked.
FIELDS: dict[str, tuple[Field, ...]] = {
    "africastalking": (
        Field("username", "Username", required=True, help="Your AfricasTalking app's username (“sandbox” in the sandbox)."),
        Field("api_key", "API key", secret=True, required=True, help="AfricasTalking dashboard → Settings → API Key."),
        Field("sender_id", "Short code / sender ID",
              help="Optional. Leave empty to send from AfricasTalking's shared sender."),
        Field("environment", "Environment", kind="choice", choices=("live", "sandbox"), default="live"),
        _SEND_RATE,
    ),
    "textbee": (
        Field("api_key", "API key", secret=True, required=True, help="textbee.dev dashboard → API Settings."),
        Field("device_id", "Device ID", required=True, help="The id of the Android phone registered in TextBee."),
        Field("webhook_secret", "Webhook signing secret", secret=True,
              help="The signing secret of the webhook you create in TextBee; without it delivery reports are refused."),
        Field("daily_quota", "Daily quota (messages)", kind="int", default=50, help="Your TextBee plan's daily limit."),
        Field("monthly_quota", "Monthly quota (messages)", kind="int", default=300,
              help="Your TextBee plan's monthly limit."),
        _SEND_RATE,
    ),
    "viber": (
        Field("auth_token", "Bot authentication token", secret=True, required=True,
              help="Viber admin panel → your bot → its token."),
        Field("sender_name", "Sender name", help="The name customers see, at most 28 characters (empty: “MPM”)."),
        _SEND_RATE,
    ),
    "android": (
        Field("fcm_server_key", "FCM server key", secret=True, required=True,
              help="The Firebase Cloud Messaging server key of the project the old Android app is built with."),
        Field("device_token", "Device token", secret=True, required=True,
              help="The FCM registration token the Android app shows."),
        _SEND_RATE,
    ),
}


class UnknownPlugin(LookupError):
    pass


def check_key(key: str) -> str:
    if key not in PRIORITY:
        raise UnknownPlugin(key)
    return key


# ---------------------------------------------------------------- state and the priority rule

@dataclass
class PluginState:
    key: str
    label: str
    position: int  # 1-based place in the priority order
    enabled: bool = False
    valid: bool = False
    configured: bool = False  # credentials were saved at some point
    validation_message: str = ""
    validated_at: datetime | None = None
    deprecated: bool = False
    # Circuit breaker of the send engine (mpm.messaging.circuit): closed / open / probing.
    circuit: str = "closed"
    circuit_words: str = "in use"
    last_error: str = ""
    last_error_at: datetime | None = None
    last_success_at: datetime | None = None

    @property
    def usable(self) -> bool:
        return self.enabled and self.valid

    @property
    def short_label(self) -> str:
        return SHORT_LABELS[self.key]

    @property
    def state(self) -> str:
        """One word for a status pill."""
        if not self.enabled:
            return "disabled"
        if self.usable:
            return "active"
        return "invalid" if self.configured else "unconfigured"

    @property
    def why_not_usable(self) -> str:
        if not self.enabled:
            return f"{self.short_label} is not enabled"
        if not self.configured:
            return f"{self.short_label} is enabled but has no credentials yet"
        message = f": {self.validation_message}" if self.validation_message else ""
        return f"{self.short_label} is enabled but its credentials failed validation{message}"


@dataclass
class Selection:
    """Which gateway the dispatcher picks now (first enabled-and-valid in priority order), and why."""

    plugins: list[PluginState]
    sms_gateway: str | None  # first usable gateway that reaches any number (Viber does not)
    viber_gateway: str | None  # first usable gateway for people subscribed to the Viber bot

    @property
    def no_active_provider(self) -> bool:
        return self.sms_gateway is None and self.viber_gateway is None

    def state_of(self, key: str) -> PluginState:
        return next(p for p in self.plugins if p.key == key)

    def _skipped_before(self, key: str | None) -> list[str]:
        reasons = []
        for plugin in self.plugins:
            if plugin.key == key:
                break
            if plugin.key != "viber" and not plugin.usable:
                reasons.append(plugin.why_not_usable)
        return reasons

    @property
    def summary(self) -> str:
        """The one sentence at the top of Settings → Plugins."""
        if self.no_active_provider:
            return (f"{NO_ACTIVE_PROVIDER}: no gateway is enabled with valid credentials, so no SMS can be sent. "
                    f"Messages go through the first active gateway in this order: {PRIORITY_TEXT}.")
        if self.sms_gateway is None:
            return (f"{NO_ACTIVE_PROVIDER} for SMS: only Viber is active, so only people subscribed to the Viber bot "
                    "receive messages. Enable AfricasTalking or TextBee to reach everyone else.")
        reasons = self._skipped_before(self.sms_gateway)
        sentence = f"{SHORT_LABELS[self.sms_gateway]} is used now"
        if reasons:
            sentence = f"{'; '.join(reasons)}, so {sentence}"
            sentence = sentence[0].upper() + sentence[1:]
        if self.viber_gateway == "viber":
            sentence += " (Viber for people subscribed to the Viber bot)"
        position = self.state_of(self.sms_gateway).position
        fallbacks = [p.short_label + (" (for Viber users)" if p.key == "viber" else "")
                     for p in self.plugins if p.usable and p.position > position]
        if fallbacks:
            sentence += f"; when it fails, {' then '.join(fallbacks)} take{'s' if len(fallbacks) == 1 else ''} over"
        return sentence + "."

    def role_of(self, key: str) -> str:
        """Whether `key` is the gateway used now, and why (the Overview page)."""
        plugin = self.state_of(key)
        label = plugin.short_label
        if not plugin.usable:
            if self.sms_gateway:
                now = f"{SHORT_LABELS[self.sms_gateway]} is used instead"
            elif self.viber_gateway:
                now = f"Only Viber is active, for people subscribed to the Viber bot; for everyone else: {NO_ACTIVE_PROVIDER}"
            else:
                now = NO_ACTIVE_PROVIDER
            return f"Not used: {plugin.why_not_usable}. {now}."
        if key == self.sms_gateway:
            reasons = self._skipped_before(key)
            except_viber = " (people subscribed to the Viber bot get Viber messages)" if self.viber_gateway == "viber" else ""
            if reasons:
                return f"Used now: {'; '.join(reasons)}, so every SMS goes through {label}{except_viber}."
            return (f"Used now: {label} is first in the priority order among the active gateways, "
                    f"so every SMS goes through it{except_viber}.")
        if key == "viber":
            if self.viber_gateway == "viber":
                rest = (f"everyone else gets SMS through {SHORT_LABELS[self.sms_gateway]}" if self.sms_gateway
                        else f"everyone else: {NO_ACTIVE_PROVIDER}")
                return f"Used now for people subscribed to the Viber bot; {rest}."
            return (f"Standby: {SHORT_LABELS[self.viber_gateway]} comes first in the priority order; Viber takes over "
                    "for people subscribed to the Viber bot when it fails.")
        first = SHORT_LABELS[self.sms_gateway]
        return f"Standby: {first} comes first in the priority order; {label} takes over when {first} fails."


def _settings_by_key(company_id: int) -> dict[str, GatewaySetting]:
    rows = db.session.scalars(select(GatewaySetting).where(GatewaySetting.company_id == company_id))
    return {row.gateway: row for row in rows}


def _state(key: str, row: GatewaySetting | None) -> PluginState:
    state = PluginState(key=key, label=GATEWAY_LABELS[key], position=PRIORITY.index(key) + 1,
                        deprecated=key in DEPRECATED)
    if row is not None:
        state.enabled = bool(row.enabled)
        state.valid = bool(row.valid)
        state.configured = bool(row.credentials_encrypted)
        state.validation_message = row.validation_message or ""
        state.validated_at = row.validated_at
        state.circuit, state.circuit_words = row.circuit_state or "closed", circuit.describe(row)
        state.last_error, state.last_error_at = row.last_error or "", row.last_error_at
        state.last_success_at = row.last_success_at
    return state


def selection(company_id: int) -> Selection:
    rows = _settings_by_key(company_id)
    plugins = [_state(key, rows.get(key)) for key in PRIORITY]
    usable = [p.key for p in plugins if p.usable]
    sms_gateway = next((k for k in usable if k != "viber"), None)
    return Selection(plugins=plugins, sms_gateway=sms_gateway, viber_gateway=usable[0] if usable else None)


# ---------------------------------------------------------------- the audit log

def _audit(company_id: int, user_id: int | None, key: str, action: str, **details) -> None:
    db.session.add(AuditEntry(company_id=company_id, user_id=user_id, action=AUDIT_PREFIX + action,
                              subject=GATEWAY_LABELS[key], details=details))


AUDIT_TEXT = {
    "plugin.enabled": "enabled",
    "plugin.disabled": "disabled",
    "plugin.credentials_saved": "credentials saved and validated",
    "plugin.credentials_rejected": "credentials refused by the provider (not saved)",
    "plugin.connection_tested": "connection tested",
    "plugin.test_sms": "test SMS queued",
    "plugin.circuit_open": "skipped after repeated sending failures",
    "plugin.circuit_probing": "tested with one request after the cool-down",
    "plugin.circuit_closed": "in use again: the gateway answered",
}


def recent_audit(company_id: int, limit: int = 15, key: str | None = None) -> list[AuditEntry]:
    stmt = (select(AuditEntry)
            .where(AuditEntry.company_id == company_id, AuditEntry.action.like(AUDIT_PREFIX + "%"))
            .order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc())
            .limit(limit))
    if key is not None:
        stmt = stmt.where(AuditEntry.subject == GATEWAY_LABELS[check_key(key)])
    return list(db.session.scalars(stmt))


# ---------------------------------------------------------------- enabling

def set_enabled(company_id: int, key: str, on: bool, user_id: int | None) -> Selection:
    setting = registry.gateway_setting(company_id, check_key(key))
    if bool(setting.enabled) != on:
        setting.enabled = on
        _audit(company_id, user_id, key, "enabled" if on else "disabled",
               credentials="valid" if setting.valid else ("invalid" if setting.credentials_encrypted else "none"))
    db.session.commit()
    return selection(company_id)


# ---------------------------------------------------------------- credentials

def _credential_names(key: str) -> frozenset[str]:
    """Fields the gateway keeps in its encrypted credentials; the rest are plain options."""
    return frozenset(registry.get_gateway(key).credential_fields) | {f.name for f in FIELDS[key] if f.secret}


@dataclass
class _Stored:
    credentials: dict
    options: dict
    unreadable: str = ""  # why the credentials cannot be decrypted (the secret key changed)

    def value(self, key: str, name: str):
        return (self.credentials if name in _credential_names(key) else self.options).get(name)


def _stored(setting: GatewaySetting | None) -> _Stored:
    if setting is None:
        return _Stored({}, {})
    options = dict(setting.options or {})
    try:
        return _Stored(vault.decrypt(setting.credentials_encrypted), options)
    except vault.UnreadableCredentials as exc:
        return _Stored({}, options, str(exc))


@dataclass
class SettingsForm:
    """What the settings page shows: plain values as typed or stored, secrets only masked."""

    key: str
    fields: tuple[Field, ...]
    values: dict  # plain field name → text
    masked: dict  # secret field name → "••••••••abcd" or ""
    errors: dict = field(default_factory=dict)  # field name (or "__all__") → what is wrong
    check: CredentialCheck | None = None  # the provider's answer to the save
    saved: bool = False
    unreadable: str = ""


def settings_form(company_id: int, key: str) -> SettingsForm:
    check_key(key)
    stored = _stored(_settings_by_key(company_id).get(key))
    values, masked = {}, {}
    for f in FIELDS[key]:
        value = stored.value(key, f.name)
        if f.secret:
            masked[f.name] = vault.masked(value)
        else:
            value = f.default if value is None else value
            values[f.name] = "" if value is None else (f"{value:g}" if isinstance(value, float) else str(value))
    return SettingsForm(key=key, fields=FIELDS[key], values=values, masked=masked, unreadable=stored.unreadable)


def _parse(key: str, form: Mapping, stored: _Stored) -> tuple[dict, dict, list[str]]:
    """(values, errors, names of the secrets typed anew). An empty secret keeps the stored one."""
    values, errors, typed = {}, {}, []
    for f in FIELDS[key]:
        raw = (form.get(f.name) or "").strip()
        if f.secret:
            if raw:
                values[f.name] = raw
                typed.append(f.name)
            elif stored.value(key, f.name):
                values[f.name] = stored.value(key, f.name)
            elif f.required:
                errors[f.name] = f"Enter the {f.label_in_sentence}."
            continue
        if not raw:
            if f.required:
                errors[f.name] = f"Enter the {f.label_in_sentence}."
            elif f.default is not None:
                values[f.name] = f.default
        elif f.kind == "choice":
            if raw in f.choices:
                values[f.name] = raw
            else:
                errors[f.name] = f"Choose one of: {', '.join(f.choices)}."
        elif f.kind == "int":
            if raw.isdigit() and 0 < int(raw) < 10**9:
                values[f.name] = int(raw)
            else:
                errors[f.name] = "Enter a whole number, 1 or more."
        elif f.kind == "number":
            try:
                number = float(raw)
            except ValueError:
                number = float("nan")
            if 0 < number < 100_000:
                values[f.name] = number
            else:
                errors[f.name] = "Enter a number above 0, e.g. 5 or 0.5."
        else:
            values[f.name] = raw
    if key == "viber" and len(values.get("sender_name", "")) > 28:
        errors["sender_name"] = "Viber allows at most 28 characters."
    return values, errors, typed


def _check(setting: GatewaySetting, credentials: dict, options: dict) -> CredentialCheck:
    key = setting.gateway
    config = GatewayConfig(
        credentials=dict(credentials), options=dict(options),
        callback_base_url=registry.callback_url(setting.company_id, key, setting.callback_secret),
        timeout=float(current_app.config["GATEWAY_TIMEOUT_SECONDS"]),
    )
    secrets = {f.name: credentials.get(f.name) for f in FIELDS[key] if f.secret}
    try:
        result = registry.get_gateway(key).check_credentials(config)
    except requests.RequestException as exc:
        # Gateways answer network trouble themselves; this only keeps a stray one from being a 500.
        result = CredentialCheck(False, f"{SHORT_LABELS[key]} could not be reached ({type(exc).__name__}).")
    return CredentialCheck(bool(result.ok), vault.scrub(result.message or "", secrets)[:500])


def save_settings(company_id: int, key: str, form: Mapping, user_id: int | None) -> SettingsForm:
    """Validate the typed credentials with the provider; store them only when they work.

    When the provider refuses them nothing stored changes (the old credentials keep working) and
    the form says what the provider complained about. Returns the form to show again."""
    setting = registry.gateway_setting(company_id, check_key(key))
    stored = _stored(setting)
    values, errors, typed = _parse(key, form, stored)
    shown = settings_form(company_id, key)
    shown.values.update({f.name: (form.get(f.name) or "").strip() for f in FIELDS[key] if not f.secret})
    if errors:
        shown.errors = errors
        return shown
    names = _credential_names(key)
    credentials = {name: value for name, value in values.items() if name in names}
    # Options this form does not show (e.g. the simulator's base_url) are kept.
    options = {name: value for name, value in stored.options.items() if name not in {f.name for f in FIELDS[key]}}
    options.update({name: value for name, value in values.items() if name not in names})
    changed = [f.name for f in FIELDS[key] if values.get(f.name) != stored.value(key, f.name)]
    if stored.unreadable:
        changed = [f.name for f in FIELDS[key] if f.name in values]
    result = _check(setting, credentials, options)
    # Plain values may be named in the audit; secrets only by name.
    plain_changes = {f.name: values.get(f.name) for f in FIELDS[key] if not f.secret and f.name in changed}
    if not result.ok:
        _audit(company_id, user_id, key, "credentials_rejected", fields=changed, result="invalid",
               message=result.message, values=plain_changes)
        db.session.commit()
        shown.check = result
        shown.errors = {"__all__": result.message}
        return shown
    setting.credentials_encrypted = vault.encrypt(credentials)
    setting.options = options
    setting.valid = True
    setting.validation_message = result.message
    setting.validated_at = utcnow()
    _audit(company_id, user_id, key, "credentials_saved", fields=changed, result="valid", message=result.message,
           values=plain_changes)
    db.session.commit()
    saved = settings_form(company_id, key)
    saved.check, saved.saved = result, True
    return saved


def check_connection(company_id: int, key: str, user_id: int | None) -> CredentialCheck:
    """Check the stored credentials again and record the result (the dispatcher reads `valid`)."""
    setting = registry.gateway_setting(company_id, check_key(key))
    stored = _stored(setting)
    if not setting.credentials_encrypted:
        return CredentialCheck(False, "No credentials are saved yet: fill in the form and save them first.")
    result = (CredentialCheck(False, stored.unreadable) if stored.unreadable
              else _check(setting, stored.credentials, stored.options))
    setting.valid = result.ok
    setting.validation_message = result.message
    setting.validated_at = utcnow()
    _audit(company_id, user_id, key, "connection_tested", result="valid" if result.ok else "invalid",
           message=result.message)
    db.session.commit()
    return result


def send_test_sms(company_id: int, key: str, typed_number: str, user_id: int | None) -> Sms:
    """Queue a test SMS like any other message: it goes through the gateway used now, with fallback.
    Raises InvalidPhoneNumber or SmsRefused (e.g. "No active SMS provider") with nothing stored."""
    check_key(key)
    company = db.session.get(Company, company_id)
    number = to_e164(typed_number, company.default_region)
    [sms] = queue_messages(company_id, [Recipient(number=number)], TEST_SMS_BODY.format(company=company.name),
                           trigger="test", sender_user_id=user_id)
    _audit(company_id, user_id, key, "test_sms", sms_id=sms.id, number=sms.number)
    db.session.commit()
    return sms


def find_test_sms(company_id: int, sms_id: int) -> Sms | None:
    sms = db.session.get(Sms, sms_id)
    if sms is None or sms.company_id != company_id or sms.trigger != "test":
        return None
    return sms


def worth_polling(sms: Sms, minutes: int = 5) -> bool:
    """The test SMS panel refreshes itself until the message settles, or gives up after a few minutes
    (a provider that never reports delivery would otherwise keep it polling forever)."""
    created = sms.created_at if sms.created_at.tzinfo else sms.created_at.replace(tzinfo=utcnow().tzinfo)
    return sms.status not in status.FINAL and utcnow() - created < timedelta(minutes=minutes)


# ---------------------------------------------------------------- the overview page

@dataclass
class Overview:
    plugin: PluginState
    role: str
    sent: int
    delivered: int
    failed: int
    awaiting: int
    callback_urls: list[tuple[str, str]]
    selection: Selection


def overview(company_id: int, key: str, days: int = 7) -> Overview:
    check_key(key)
    chosen = selection(company_id)
    since = utcnow() - timedelta(days=days)
    counts = dict(db.session.execute(
        select(Sms.status, func.count())
        .where(Sms.company_id == company_id, Sms.direction == "outbound", Sms.gateway == key, Sms.created_at >= since)
        .group_by(Sms.status)
    ).all())
    return Overview(
        plugin=chosen.state_of(key), role=chosen.role_of(key), selection=chosen,
        sent=sum(counts.get(s, 0) for s in (status.SENT, status.DELIVERED, status.FAILED)),
        delivered=counts.get(status.DELIVERED, 0), failed=counts.get(status.FAILED, 0),
        awaiting=counts.get(status.SENT, 0),
        callback_urls=list(registry.callback_urls(company_id).get(key, [])),
    )
