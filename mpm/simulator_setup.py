"""Points the demo company's AfricasTalking plugin at the local gateway simulator (embedded run only)."""
import logging
import time

import requests
from sqlalchemy import select

from mpm.extensions import db
from mpm.credentials import encrypt
from mpm.gateway_settings import callback_url, gateway_setting
from mpm.models import Company

log = logging.getLogger(__name__)

SIMULATOR_CREDENTIALS = {"api_key": "simulator-key", "username": "sandbox"}


def enable_simulator_gateway(simulator_url: str, company_id: int | None = None) -> bool:
    """Enable AfricasTalking for the demo company against the simulator at `simulator_url` and
    register the delivery-report URL with the simulator. Nothing happens without a URL: the
    simulator is a development tool that only `make run` starts."""
    if not simulator_url:
        return False
    if company_id is None:
        company_id = db.session.scalar(select(Company.id).order_by(Company.id).limit(1))
        if company_id is None:
            return False
    setting = gateway_setting(company_id, "africastalking")
    if setting.credentials_encrypted and not (setting.options or {}).get("simulator"):
        return False  # the operator configured real credentials: leave them alone
    setting.enabled = True
    setting.valid = True
    setting.validation_message = "Local gateway simulator (development tool): messages never leave this machine."
    setting.credentials_encrypted = encrypt(SIMULATOR_CREDENTIALS)
    setting.options = {**(setting.options or {}), "base_url": simulator_url.rstrip("/"), "environment": "sandbox",
                       "simulator": True}
    db.session.commit()
    delivery_url = callback_url(company_id, "africastalking", setting.callback_secret)
    return register_with_simulator(simulator_url, "africastalking", delivery_url)


def register_with_simulator(simulator_url: str, gateway: str, url: str, secret: str = "", wait_seconds: float = 15) -> bool:
    """Tell the simulator where to post reports; it may still be starting, so try for a while."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            response = requests.post(f"{simulator_url.rstrip('/')}/_simulator/callbacks",
                                     json={"gateway": gateway, "url": url, "secret": secret}, timeout=2)
            return response.ok
        except requests.RequestException:
            if time.monotonic() > deadline:
                log.warning("gateway simulator at %s did not answer; delivery reports will not come", simulator_url)
                return False
            time.sleep(0.2)
