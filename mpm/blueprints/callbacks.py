"""Providers' callbacks: delivery reports and incoming messages. No login, no CSRF (providers post
here); each is authenticated by the per-company secret in the registered URL and, where the
provider signs, by its signature. Bad input → 4xx and a log line, never a changed row."""
import hmac
import logging

from flask import Blueprint, jsonify, request

from mpm.extensions import csrf
from mpm.gateways.credentials import UnreadableCredentials
from mpm.gateways.registry import config_for, find_gateway_setting, get_gateway
from mpm.gateways.webhooks import WebhookRefused
from mpm.messaging.delivery import callback_secret_matches, forget_viber_subscriber, receive_delivery_reports
from mpm.messaging.inbound import store_incoming

log = logging.getLogger(__name__)

bp = Blueprint("callbacks", __name__, url_prefix="/api")
csrf.exempt(bp)


def _refuse(code: int, why: str, company_id: int, gateway: str):
    log.warning("callback refused (%s): %s company=%s gateway=%s from=%s", code, why, company_id, gateway,
                request.remote_addr)
    return jsonify({"error": why}), code


def _authenticated_setting(company_id: int, gateway: str, secret: str | None):
    """The company's setting of this gateway when `secret` is its callback secret, else None."""
    if company_id > 2**31 - 1:  # not an id the database can hold: no such company
        return None
    setting = find_gateway_setting(company_id, gateway)
    if setting is None or not secret or not hmac.compare_digest(setting.callback_secret.encode(), secret.encode()):
        return None
    return setting


def _secret_matches(company_id: int, gateway: str, secret: str | None) -> bool:
    """The token check alone (one column), for the delivery-report path that needs nothing else."""
    return callback_secret_matches(company_id, gateway, secret)


def _report(company_id: int, gateway: str, report):
    # Queued for the report writer; ids we do not know yet are parked there, so the provider gets its 200.
    receive_delivery_reports(company_id, gateway, [report])
    return jsonify({"ok": True})


# --- AfricasTalking ----------------------------------------------------------------------------
@bp.post("/africas-talking/callback/<int:company_id>/delivery-reports")
def africastalking_delivery_report(company_id: int):
    if not _secret_matches(company_id, "africastalking", request.args.get("token")):
        return _refuse(403, "wrong or missing token", company_id, "africastalking")
    try:
        report = get_gateway("africastalking").delivery_report_from_form(request.form)
    except ValueError as exc:
        return _refuse(400, str(exc), company_id, "africastalking")
    return _report(company_id, "africastalking", report)


@bp.post("/africas-talking/callback/<int:company_id>/incoming-messages")
def africastalking_incoming_message(company_id: int):
    if _authenticated_setting(company_id, "africastalking", request.args.get("token")) is None:
        return _refuse(403, "wrong or missing token", company_id, "africastalking")
    try:
        message = get_gateway("africastalking").incoming_message_from_form(request.form)
    except ValueError as exc:
        return _refuse(400, str(exc), company_id, "africastalking")
    store_incoming(company_id, "africastalking", message)
    return jsonify({"ok": True})


# --- TextBee and Viber: signed JSON webhooks ----------------------------------------------------------
def _signed_payload(company_id: int, gateway: str, signature_header: str):
    """(payload, None) or (None, refusal response)."""
    setting = _authenticated_setting(company_id, gateway, request.args.get("token"))
    if setting is None:
        return None, _refuse(403, "wrong or missing token", company_id, gateway)
    try:
        payload = get_gateway(gateway).webhook_payload(request.get_data(), request.headers.get(signature_header),
                                                       config_for(setting))
    except (WebhookRefused, UnreadableCredentials) as exc:
        return None, _refuse(403, str(exc), company_id, gateway)
    return payload, None


def _signed_webhook(company_id: int, gateway_key: str, signature_header: str):
    """A signed webhook: a delivery report, an incoming message, or an event that needs only a 200.
    Returns (payload, None) once handled, or (None, the refusal)."""
    payload, refusal = _signed_payload(company_id, gateway_key, signature_header)
    if refusal:
        return None, refusal
    gateway = get_gateway(gateway_key)
    try:
        report = gateway.delivery_report(payload)
        incoming = gateway.incoming_message(payload)
    except ValueError as exc:
        return None, _refuse(400, str(exc), company_id, gateway_key)
    if report is not None:
        return payload, _report(company_id, gateway_key, report)
    if incoming is not None:
        store_incoming(company_id, gateway_key, incoming)
    return payload, jsonify({"ok": True})


@bp.post("/textbee-sms-gateway/callback/<int:company_id>/webhook")
def textbee_webhook(company_id: int):
    return _signed_webhook(company_id, "textbee", "X-Signature")[1]


@bp.post("/viber-messaging/callback/<int:company_id>/webhook")
def viber_webhook(company_id: int):
    payload, response = _signed_webhook(company_id, "viber", "X-Viber-Content-Signature")
    # "webhook" (the set_webhook check), subscribed, conversation_started: the 200 is all Viber needs.
    leaver = payload and get_gateway("viber").unsubscribed_user(payload)
    if leaver:
        forget_viber_subscriber(company_id, leaver)
    return response


# --- Android (deprecated): the app confirms each message ------------------------------------------------
@bp.route("/sms-android-callback/<int:company_id>/<secret>/<kind>", methods=["GET", "POST"])
def android_confirmation(company_id: int, secret: str, kind: str):
    if _authenticated_setting(company_id, "android", secret) is None:
        return _refuse(403, "wrong secret", company_id, "android")
    data = request.form if request.method == "POST" else request.args
    try:
        report = get_gateway("android").confirmation(kind, data)
    except ValueError as exc:
        return _refuse(400, str(exc), company_id, "android")
    return _report(company_id, "android", report)

