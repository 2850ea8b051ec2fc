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
from sqlalchemy import select

from mpm.audit import audit
from mpm.extensions import db
from mpm.gateways.base import CredentialCheck, SettingField
from mpm.gateways.registry import all_gateways, get_gateway
from mpm.messaging import circuit, status
from mpm.messaging.send import NO_ACTIVE_PROVIDER, Recipient, queue_messages
from mpm.models import AuditEntry, Company, GatewaySetting, Sms
from mpm.models.base import as_utc, utcnow
from mpm.people.phones import to_e164
from mpm.plugins import credentials as vault
from mpm.plugins.gateway_settings import callback_urls, config_with, gateway_setting, settings_by_key

AUDIT_PREFIX = "plugin."
TEST_SMS_BODY = "Test message from {company} (MPM Messaging). If you can read this, SMS sending works."


def priority_text() -> str:
    """The sending order in words, e.g. "AfricasTalking → TextBee → Viber (only for Viber users) → Android"."""
    return " → ".join(g.short_label + (f" (only for {g.short_label} users)" if g.reaches_only else "")
                      for g in all_gateways())


class UnknownPlugin(LookupError):
    pass


def check_key(key: str) -> str:
    try:
        get_gateway(key)
    except KeyError:
        raise UnknownPlugin(key) from None
    return key


def gateway_labels() -> list[tuple[str, str]]:
    """(key, label) of every gateway, in priority order."""
    return [(g.key, g.label) for g in all_gateways()]


def short_label(key: str) -> str:
    return get_gateway(check_key(key)).short_label


# ---------------------------------------------------------------- state and the priority rule

@dataclass
class PluginState:
    key: str
    label: str
    short_label: str
    position: int  # 1-based place in the priority order
    reaches_only: str = ""  # "" when it reaches any number; else whom it reaches (Viber: its bot's subscribers)
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
    viber_gateway: str | None  # first usable gateway for the people a gateway like Viber reaches (its subscribers)

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
            if not plugin.reaches_only and not plugin.usable:
                reasons.append(plugin.why_not_usable)
        return reasons

    @property
    def _subscribers_first(self) -> PluginState | None:
        """The usable gateway that reaches only its subscribers (Viber), when it comes first for them."""
        plugin = self.state_of(self.viber_gateway) if self.viber_gateway else None
        return plugin if plugin is not None and plugin.reaches_only else None

    @property
    def summary(self) -> str:
        """The one sentence at the top of Settings → Plugins."""
        if self.no_active_provider:
            return (f"{NO_ACTIVE_PROVIDER}: no gateway is enabled with valid credentials, so no SMS can be sent. "
                    f"Messages go through the first active gateway in this order: {priority_text()}.")
        if self.sms_gateway is None:
            only = self.state_of(self.viber_gateway)
            everyone = " or ".join(p.short_label for p in self.plugins if not p.reaches_only and not p.deprecated)
            return (f"{NO_ACTIVE_PROVIDER} for SMS: only {only.short_label} is active, so only {only.reaches_only} "
                    f"receive messages. Enable {everyone} to reach everyone else.")
        reasons = self._skipped_before(self.sms_gateway)
        sentence = f"{self.state_of(self.sms_gateway).short_label} is used now"
        if reasons:
            sentence = f"{'; '.join(reasons)}, so {sentence}"
            sentence = sentence[0].upper() + sentence[1:]
        if self._subscribers_first:
            sentence += f" ({self._subscribers_first.short_label} for {self._subscribers_first.reaches_only})"
        position = self.state_of(self.sms_gateway).position
        fallbacks = [p.short_label + (f" (for {p.short_label} users)" if p.reaches_only else "")
                     for p in self.plugins if p.usable and p.position > position]
        if fallbacks:
            sentence += f"; when it fails, {' then '.join(fallbacks)} take{'s' if len(fallbacks) == 1 else ''} over"
        return sentence + "."

    def role_of(self, key: str) -> str:
        """Whether `key` is the gateway used now, and why (the Overview page)."""
        plugin = self.state_of(key)
        label = plugin.short_label
        sms_label = self.state_of(self.sms_gateway).short_label if self.sms_gateway else ""
        if not plugin.usable:
            if self.sms_gateway:
                now = f"{sms_label} is used instead"
            elif self.viber_gateway:
                only = self.state_of(self.viber_gateway)
                now = f"Only {only.short_label} is active, for {only.reaches_only}; for everyone else: {NO_ACTIVE_PROVIDER}"
            else:
                now = NO_ACTIVE_PROVIDER
            return f"Not used: {plugin.why_not_usable}. {now}."
        if key == self.sms_gateway:
            reasons = self._skipped_before(key)
            first = self._subscribers_first
            except_them = f" ({first.reaches_only} get {first.short_label} messages)" if first else ""
            if reasons:
                return f"Used now: {'; '.join(reasons)}, so every SMS goes through {label}{except_them}."
            return (f"Used now: {label} is first in the priority order among the active gateways, "
                    f"so every SMS goes through it{except_them}.")
        if plugin.reaches_only:
            if self.viber_gateway == key:
                rest = (f"everyone else gets SMS through {sms_label}" if self.sms_gateway
                        else f"everyone else: {NO_ACTIVE_PROVIDER}")
                return f"Used now for {plugin.reaches_only}; {rest}."
            return (f"Standby: {self.state_of(self.viber_gateway).short_label} comes first in the priority order; "
                    f"{label} takes over for {plugin.reaches_only} when it fails.")
        first = sms_label
        return f"Standby: {first} comes first in the priority order; {label} takes over when {first} fails."


def _state(position: int, key: str, row: GatewaySetting | None) -> PluginState:
    gateway = get_gateway(key)
    state = PluginState(key=key, label=gateway.label, short_label=gateway.short_label, position=position,
                        reaches_only=gateway.reaches_only, deprecated=gateway.deprecated)
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
    rows = settings_by_key(company_id)
    plugins = [_state(i, g.key, rows.get(g.key)) for i, g in enumerate(all_gateways(), start=1)]
    usable = [p for p in plugins if p.usable]
    sms_gateway = next((p.key for p in usable if not p.reaches_only), None)
    return Selection(plugins=plugins, sms_gateway=sms_gateway, viber_gateway=usable[0].key if usable else None)


# ---------------------------------------------------------------- the audit log

def _audit(company_id: int, user_id: int | None, key: str, action: str, **details) -> None:
    audit(company_id, user_id, AUDIT_PREFIX + action, get_gateway(key).label, **details)


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
        stmt = stmt.where(AuditEntry.subject == get_gateway(check_key(key)).label)
    return list(db.session.scalars(stmt))


# ---------------------------------------------------------------- enabling

def set_enabled(company_id: int, key: str, on: bool, user_id: int | None) -> Selection:
    setting = gateway_setting(company_id, check_key(key))
    if bool(setting.enabled) != on:
        setting.enabled = on
        _audit(company_id, user_id, key, "enabled" if on else "disabled",
               credentials="valid" if setting.valid else ("invalid" if setting.credentials_encrypted else "none"))
    db.session.commit()
    return selection(company_id)


# ---------------------------------------------------------------- credentials

def _fields(key: str) -> tuple[SettingField, ...]:
    return get_gateway(key).fields


def _credential_names(key: str) -> frozenset[str]:
    """Fields the gateway keeps in its encrypted credentials; the rest are plain options."""
    return frozenset(f.name for f in _fields(key) if f.encrypted)


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
    fields: tuple[SettingField, ...]
    values: dict  # plain field name → text
    masked: dict  # secret field name → "••••••••abcd" or ""
    errors: dict = field(default_factory=dict)  # field name (or "__all__") → what is wrong
    check: CredentialCheck | None = None  # the provider's answer to the save
    saved: bool = False
    unreadable: str = ""


def settings_form(company_id: int, key: str) -> SettingsForm:
    check_key(key)
    stored = _stored(settings_by_key(company_id).get(key))
    values, masked = {}, {}
    for f in _fields(key):
        value = stored.value(key, f.name)
        if f.secret:
            masked[f.name] = vault.masked(value)
        else:
            value = f.default if value is None else value
            values[f.name] = "" if value is None else (f"{value:g}" if isinstance(value, float) else str(value))
    return SettingsForm(key=key, fields=_fields(key), values=values, masked=masked, unreadable=stored.unreadable)


def _parse(key: str, form: Mapping[str, str], stored: _Stored) -> tuple[dict, dict, list[str]]:
    """(values, errors, names of the secrets typed anew). An empty secret keeps the stored one."""
    values, errors, typed = {}, {}, []
    for f in _fields(key):
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
            continue
        try:
            values[f.name] = f.parse(raw)
        except ValueError as exc:
            errors[f.name] = str(exc)
    return values, errors, typed


def _check(setting: GatewaySetting, credentials: dict, options: dict) -> CredentialCheck:
    key = setting.gateway
    config = config_with(setting, credentials, options)
    secrets = {f.name: credentials.get(f.name) for f in _fields(key) if f.secret}
    try:
        result = get_gateway(key).check_credentials(config)
    except requests.RequestException as exc:
        # Gateways answer network trouble themselves; this only keeps a stray one from being a 500.
        result = CredentialCheck(False, f"{short_label(key)} could not be reached ({type(exc).__name__}).")
    return CredentialCheck(bool(result.ok), vault.scrub(result.message or "", secrets)[:500])


def save_settings(company_id: int, key: str, form: Mapping[str, str], user_id: int | None) -> SettingsForm:
    """Validate the typed credentials with the provider; store them only when they work.

    When the provider refuses them nothing stored changes (the old credentials keep working) and
    the form says what the provider complained about. Returns the form to show again."""
    setting = gateway_setting(company_id, check_key(key))
    stored = _stored(setting)
    values, errors, typed = _parse(key, form, stored)
    shown = settings_form(company_id, key)
    shown.values.update({f.name: (form.get(f.name) or "").strip() for f in _fields(key) if not f.secret})
    if errors:
        shown.errors = errors
        return shown
    names = _credential_names(key)
    credentials = {name: value for name, value in values.items() if name in names}
    # Options this form does not show (e.g. the simulator's base_url) are kept.
    options = {name: value for name, value in stored.options.items() if name not in {f.name for f in _fields(key)}}
    options.update({name: value for name, value in values.items() if name not in names})
    changed = [f.name for f in _fields(key) if values.get(f.name) != stored.value(key, f.name)]
    if stored.unreadable:
        changed = [f.name for f in _fields(key) if f.name in values]
    result = _check(setting, credentials, options)
    # Plain values may be named in the audit; secrets only by name.
    plain_changes = {f.name: values.get(f.name) for f in _fields(key) if not f.secret and f.name in changed}
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
    setting = gateway_setting(company_id, check_key(key))
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
    return sms.status not in status.FINAL and utcnow() - as_utc(sms.created_at) < timedelta(minutes=minutes)


# ---------------------------------------------------------------- the overview page

@dataclass
class Overview:
    plugin: PluginState
    role: str
    callback_urls: list[tuple[str, str]]
    selection: Selection


def overview(company_id: int, key: str) -> Overview:
    """State, role and callback URLs of one gateway (its delivery figures: mpm.insight.dashboard, from the rollups)."""
    check_key(key)
    chosen = selection(company_id)
    return Overview(
        plugin=chosen.state_of(key), role=chosen.role_of(key), selection=chosen,
        callback_urls=callback_urls(company_id, key),
    )
