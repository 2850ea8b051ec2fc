"""Points the demo company's AfricasTalking and TextBee plugins at the local gateway simulator
(embedded run only). The simulator accepts only SIMULATOR_API_KEY, so typing another key in the
plugin settings shows what wrong credentials look like."""
import logging
import secrets
import time

import requests
from sqlalchemy import select

from mpm.extensions import db
from mpm.models import Company
from mpm.plugins.credentials import encrypt
from mpm.plugins.gateway_settings import callback_url, gateway_setting

log = logging.getLogger(__name__)

SIMULATOR_API_KEY = "simulator-key"
SIMULATOR_CREDENTIALS = {"api_key": SIMULATOR_API_KEY, "username": "sandbox"}
SIMULATOR_NOTE = "Local gateway simulator (development tool): messages never leave this machine."


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
    at_ready = _enable_africastalking(simulator_url, company_id)
    textbee_ready = _enable_textbee(simulator_url, company_id)
    return at_ready and textbee_ready


def _simulated(setting) -> bool:
    # Real credentials the operator typed are never replaced by the simulator's.
    return not setting.credentials_encrypted or bool((setting.options or {}).get("simulator"))


def _enable_africastalking(simulator_url: str, company_id: int) -> bool:
    setting = gateway_setting(company_id, "africastalking")
    if not _simulated(setting):
        return False
    setting.enabled = True
    setting.valid = True
    setting.validation_message = SIMULATOR_NOTE
    setting.credentials_encrypted = encrypt(SIMULATOR_CREDENTIALS)
    setting.options = {**(setting.options or {}), "base_url": simulator_url.rstrip("/"), "environment": "sandbox",
                       "simulator": True}
    db.session.commit()
    delivery_url = callback_url(company_id, "africastalking", setting.callback_secret)
    return register_with_simulator(simulator_url, "africastalking", delivery_url)


def _enable_textbee(simulator_url: str, company_id: int) -> bool:
    """TextBee (the guide's low-cost option) on the simulator's phone, second in priority: it carries
    what AfricasTalking cannot, and its signed webhooks come back like the real ones."""
    from mpm.dev.simulator import DEVICE_ID

    setting = gateway_setting(company_id, "textbee")
    if not _simulated(setting):
        return False
    webhook_secret = secrets.token_urlsafe(24)
    setting.enabled = True
    setting.valid = True
    setting.validation_message = SIMULATOR_NOTE
    setting.credentials_encrypted = encrypt({"api_key": SIMULATOR_API_KEY, "device_id": DEVICE_ID,
                                             "webhook_secret": webhook_secret})
    setting.options = {**(setting.options or {}), "base_url": simulator_url.rstrip("/") + "/api/v1", "simulator": True}
    db.session.commit()
    webhook_url = callback_url(company_id, "textbee", setting.callback_secret)
    return register_with_simulator(simulator_url, "textbee", webhook_url, secret=webhook_secret)


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


MAX_SIMULATED_BODY = 1600


def simulate_incoming_sms(company_id: int, typed_number: str, body: str):
    """Development tool: an SMS as if a person had texted the company (STOP, a ticket reply, the
    resend key), through the same path as a provider's incoming-message callback. Raises
    InvalidPhoneNumber or ValueError with a readable reason; nothing is stored then."""
    import uuid

    from mpm.gateways.base import IncomingMessage
    from mpm.messaging.inbound import store_incoming
    from mpm.people.phones import to_e164
    from mpm.plugins.gateway_settings import active_gateway_keys

    company = db.session.get(Company, company_id)
    number = to_e164(typed_number, company.default_region)
    body = (body or "").strip()
    if not body:
        raise ValueError("Write the text the person sends.")
    if len(body) > MAX_SIMULATED_BODY:
        raise ValueError(f"An incoming SMS is at most {MAX_SIMULATED_BODY} characters.")
    gateway = (active_gateway_keys(company_id) or ["africastalking"])[0]
    return store_incoming(company_id, gateway, IncomingMessage(number=number, body=body,
                                                               provider_message_id=f"simulated-{uuid.uuid4().hex}"))
