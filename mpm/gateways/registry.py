"""The gateway objects, each company's settings of them, and their callback URLs."""
import secrets

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from mpm.extensions import db
from mpm.gateways import africastalking, android, textbee, viber
from mpm.gateways.base import GatewayConfig
from mpm.gateways.catalog import PRIORITY
from mpm.gateways.credentials import decrypt
from mpm.models import GatewaySetting

_GATEWAYS = {g.key: g for g in (africastalking.gateway, textbee.gateway, viber.gateway, android.gateway)}

# Path of each gateway's callbacks; the AfricasTalking one is the path MPM users already register.
CALLBACK_PATHS = {
    "africastalking": [("Delivery reports", "/api/africas-talking/callback/{company}/delivery-reports?token={secret}"),
                       ("Incoming messages", "/api/africas-talking/callback/{company}/incoming-messages?token={secret}")],
    "textbee": [("Webhook (all events)", "/api/textbee-sms-gateway/callback/{company}/webhook?token={secret}")],
    "viber": [("Webhook (set with set_webhook)", "/api/viber-messaging/callback/{company}/webhook?token={secret}")],
    "android": [("App callback base URL", "/api/sms-android-callback/{company}/{secret}")],
}


def get_gateway(key: str):
    """The gateway object for a key of catalog.PRIORITY; KeyError for anything else."""
    return _GATEWAYS[key]


def active_gateway_keys(company_id: int) -> list[str]:
    """Enabled and with valid credentials, in the fixed priority order."""
    rows = db.session.scalars(
        select(GatewaySetting.gateway).where(
            GatewaySetting.company_id == company_id,
            GatewaySetting.enabled.is_(True),
            GatewaySetting.valid.is_(True),
        )
    ).all()
    return [key for key in PRIORITY if key in set(rows)]


def active_gateway_settings(company_id: int) -> list[GatewaySetting]:
    """The settings rows behind active_gateway_keys, in the same order (one query)."""
    rows = db.session.scalars(select(GatewaySetting).where(
        GatewaySetting.company_id == company_id, GatewaySetting.enabled.is_(True), GatewaySetting.valid.is_(True))).all()
    by_key = {row.gateway: row for row in rows}
    return [by_key[key] for key in PRIORITY if key in by_key]


def find_gateway_setting(company_id: int, key: str) -> GatewaySetting | None:
    return db.session.scalar(select(GatewaySetting).where(
        GatewaySetting.company_id == company_id, GatewaySetting.gateway == key))


def gateway_setting(company_id: int, key: str) -> GatewaySetting:
    """The company's setting row of this gateway, created (disabled, with a random callback secret)
    and committed when missing."""
    if key not in _GATEWAYS:
        raise KeyError(key)
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
    return base + CALLBACK_PATHS[key][index][1].format(company=company_id, secret=secret)


def callback_urls(company_id: int) -> dict[str, list[tuple[str, str]]]:
    """{gateway: [(label, absolute URL)]} to register with each provider."""
    urls = {}
    for key in PRIORITY:
        secret = gateway_setting(company_id, key).callback_secret
        urls[key] = [(label, callback_url(company_id, key, secret, i)) for i, (label, _) in enumerate(CALLBACK_PATHS[key])]
    return urls


def config_for(setting: GatewaySetting) -> GatewayConfig:
    """Decrypted credentials and options; raises credentials.UnreadableCredentials."""
    return GatewayConfig(
        credentials=decrypt(setting.credentials_encrypted),
        options=dict(setting.options or {}),
        callback_base_url=callback_url(setting.company_id, setting.gateway, setting.callback_secret),
        timeout=float(current_app.config.get("GATEWAY_TIMEOUT_SECONDS", 10)),
    )


def gateway_config(company_id: int, key: str) -> GatewayConfig:
    return config_for(gateway_setting(company_id, key))
