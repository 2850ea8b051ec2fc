"""Each company's settings of the registered gateways: the GatewaySetting rows, their decrypted
config, and the callback URLs to register with the providers."""
import secrets

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from mpm.extensions import db
from mpm.gateways.base import GatewayConfig
from mpm.gateways.registry import get_gateway, priority_order
from mpm.models import GatewaySetting
from mpm.plugins.credentials import decrypt


def active_gateway_keys(company_id: int) -> list[str]:
    """Enabled and with valid credentials, in the fixed priority order."""
    return [setting.gateway for setting in active_gateway_settings(company_id)]


def active_gateway_settings(company_id: int) -> list[GatewaySetting]:
    """The enabled-and-valid settings rows of registered gateways, in priority order (one query)."""
    rows = db.session.scalars(select(GatewaySetting).where(
        GatewaySetting.company_id == company_id, GatewaySetting.enabled.is_(True), GatewaySetting.valid.is_(True))).all()
    by_key = {row.gateway: row for row in rows}
    return [by_key[key] for key in priority_order() if key in by_key]


def settings_by_key(company_id: int) -> dict[str, GatewaySetting]:
    rows = db.session.scalars(select(GatewaySetting).where(GatewaySetting.company_id == company_id))
    return {row.gateway: row for row in rows}


def find_gateway_setting(company_id: int, key: str) -> GatewaySetting | None:
    return db.session.scalar(select(GatewaySetting).where(
        GatewaySetting.company_id == company_id, GatewaySetting.gateway == key))


def callback_secret(company_id: int, key: str) -> str | None:
    """The secret in this gateway's callback URLs (one column), or None without a settings row."""
    return db.session.scalar(select(GatewaySetting.callback_secret).where(
        GatewaySetting.company_id == company_id, GatewaySetting.gateway == key))


def gateway_setting(company_id: int, key: str) -> GatewaySetting:
    """The company's setting row of this gateway, created (disabled, with a random callback secret)
    and committed when missing. KeyError for a key no gateway is registered under."""
    get_gateway(key)
    setting = find_gateway_setting(company_id, key)
    if setting is not None:
        return setting
    setting = GatewaySetting(company_id=company_id, gateway=key, enabled=False, valid=False,
                             callback_secret=secrets.token_urlsafe(24), options={})
    db.session.add(setting)
    try:
        db.session.commit()
    except IntegrityError:  # another request created it first
        db.session.rollback()
        setting = find_gateway_setting(company_id, key)
    return setting


def callback_url(company_id: int, key: str, secret: str, index: int = 0) -> str:
    base = current_app.config["PUBLIC_BASE_URL"].rstrip("/")
    return base + get_gateway(key).callbacks[index].url(company_id, secret)


def callback_urls(company_id: int, key: str) -> list[tuple[str, str]]:
    """[(label, absolute URL)] of one gateway, to register with its provider."""
    secret = gateway_setting(company_id, key).callback_secret
    return [(route.label, callback_url(company_id, key, secret, i))
            for i, route in enumerate(get_gateway(key).callbacks)]


def config_for(setting: GatewaySetting) -> GatewayConfig:
    """Decrypted credentials and options; raises credentials.UnreadableCredentials."""
    return config_with(setting, decrypt(setting.credentials_encrypted), dict(setting.options or {}))


def config_with(setting: GatewaySetting, credentials: dict, options: dict) -> GatewayConfig:
    """The config of this setting row with these credentials and options (e.g. typed, not yet saved)."""
    callbacks = get_gateway(setting.gateway).callbacks
    return GatewayConfig(
        credentials=dict(credentials), options=dict(options),
        callback_base_url=callback_url(setting.company_id, setting.gateway, setting.callback_secret) if callbacks else "",
        timeout=float(current_app.config.get("GATEWAY_TIMEOUT_SECONDS", 10)),
    )

