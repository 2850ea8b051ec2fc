"""Local gateway simulator — a DEVELOPMENT TOOL, never part of a production setup.

`python -m mpm.dev.simulator --port N` serves, on loopback, the parts of the providers' APIs this app
uses, answering in the providers' formats:
- AfricasTalking: POST /version1/messaging, GET /version1/user;
- TextBee: GET /api/v1/gateway/devices, POST /api/v1/gateway/devices/<id>/send-sms.
After a short delay it posts delivery reports to the callback URL the app registered with it
(AfricasTalking form reports; TextBee signed webhooks), from a background thread fed by a bounded
queue (reports beyond its size are dropped and counted).

Control endpoints (JSON), for tests and for trying failure handling by hand:
Credentials: a request without an API key is refused as the provider would (401); started with
`--api-key KEY` (the embedded demo does), every other key is refused too, so "wrong credentials"
can be tried by hand. POST /_simulator/config {"api_key": "..."} sets the key ("" accepts any).

- POST /_simulator/config {"gateway": "africastalking"|"textbee", "mode": "ok"|"timeout"|"5xx"|"auth"|
  "late_accept"|"reset_after_accept", "timeout_seconds": 30, "answer_delay": 30, "undeliverable_share": 0.0..1.0,
  "rejected_numbers": [...], "report_delay": 0.5, "report_duplicates": 0.0..1.0, "report_shuffle": false,
  "outage": {"in_seconds": 0, "for_seconds": 60, "kind": "5xx"|"timeout"|"refuse"} | null}
  (the fault modes are described in the README's simulator section)
- POST /_simulator/callbacks {"gateway": ..., "url": ..., "secret": ... (TextBee signing secret)}
- GET /_simulator/received[?gateway=...]  what was accepted so far; GET /_simulator/stats
- POST /_simulator/reset
"""
import argparse
import hashlib
import hmac
import json
import logging
import queue
import random
import struct
import threading
import time
import uuid
from datetime import datetime, timezone
from dataclasses import dataclass, field

import socket

import requests
from flask import Flask, Response, jsonify, request
from werkzeug.serving import WSGIRequestHandler

log = logging.getLogger("mpm.dev.simulator")

GATEWAYS = ("africastalking", "textbee")
DEVICE_ID = "sim-device-1"


MODES = ("ok", "timeout", "5xx", "auth", "late_accept", "reset_after_accept")
OUTAGE_KINDS = ("5xx", "timeout", "refuse")
MAX_SECONDS = 24 * 3600.0


@dataclass
class FailureMode:
    mode: str = "ok"  # one of MODES
    timeout_seconds: float = 30.0
    answer_delay: float = 30.0  # late_accept: seconds between taking the messages and answering
    undeliverable_share: float = 0.0  # share of numbers whose report says failed
    rejected_numbers: list = field(default_factory=list)  # refused at send time (InvalidPhoneNumber)
    report_delay: float = 0.5  # 0: reports are posted before the send request is answered
    report_duplicates: float = 0.0  # share of reports posted twice
    report_shuffle: bool = False  # the reports of one message in a random order
    outage: dict | None = None  # {"kind", "in_seconds", "for_seconds"} as configured
    outage_window: tuple | None = None  # (start, end, kind) in time.monotonic()

    def outage_now(self) -> str | None:
        """The kind of the scheduled outage if it is on right now."""
        if self.outage_window is None:
            return None
        start, end, kind = self.outage_window
        return kind if start <= time.monotonic() < end else None

    def public(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "outage_window"}


class ConfigError(ValueError):
    pass


def _number(body: dict, name: str, low: float, high: float) -> float:
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(f"{name} must be a number from {low:g} to {high:g}")
    return float(value)


def apply_config(mode: FailureMode, body: dict) -> None:
    """Validate everything first, then change the mode: bad input changes nothing."""
    changes: dict = {}
    if "mode" in body:
        if body["mode"] not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}")
        changes["mode"] = body["mode"]
    for name in ("timeout_seconds", "answer_delay", "report_delay"):
        if name in body:
            changes[name] = _number(body, name, 0, MAX_SECONDS)
    for name in ("undeliverable_share", "report_duplicates"):
        if name in body:
            changes[name] = _number(body, name, 0, 1)
    if "report_shuffle" in body:
        if not isinstance(body["report_shuffle"], bool):
            raise ConfigError("report_shuffle must be true or false")
        changes["report_shuffle"] = body["report_shuffle"]
    if "rejected_numbers" in body:
        numbers = body["rejected_numbers"]
        if not isinstance(numbers, list) or not all(isinstance(n, str) for n in numbers):
            raise ConfigError("rejected_numbers must be a list of phone numbers")
        changes["rejected_numbers"] = list(numbers)
    if "outage" in body:
        outage = body["outage"]
        if outage is None:
            changes["outage"], changes["outage_window"] = None, None
        else:
            if not isinstance(outage, dict) or outage.get("kind") not in OUTAGE_KINDS:
                raise ConfigError(f"outage must be {{\"in_seconds\", \"for_seconds\", \"kind\": one of {', '.join(OUTAGE_KINDS)}}}")
            starts = _number(outage, "in_seconds", 0, MAX_SECONDS) if "in_seconds" in outage else 0.0
            if "for_seconds" not in outage:
                raise ConfigError("outage needs for_seconds")
            lasts = _number(outage, "for_seconds", 0, MAX_SECONDS)
            start = time.monotonic() + starts
            changes["outage"] = {"kind": outage["kind"], "in_seconds": starts, "for_seconds": lasts}
            changes["outage_window"] = (start, start + lasts, outage["kind"])
    for name, value in changes.items():
        setattr(mode, name, value)


_DROP = "mpm.dev.simulator.drop"


def drop_connection() -> Response:
    """Have the connection dropped without an answer (see DroppingMiddleware)."""
    request.environ[_DROP] = True
    return Response(status=204)


class DroppingMiddleware:
    """Drops the client's connection, with a TCP reset and no answer, when a view asked for it.
    Raising ConnectionResetError makes the werkzeug server treat it as a dropped connection."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        result = self.app(environ, start_response)
        if environ.get(_DROP):
            sock = environ.get("werkzeug.socket")
            if sock is None:
                raise RuntimeError("dropping connections needs the werkzeug development server")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.shutdown(socket.SHUT_RDWR)
            raise ConnectionResetError("simulated connection reset")
        return result


class SimulatorState:
    def __init__(self, report_queue_size: int = 50_000, api_key: str = ""):
        self.lock = threading.Lock()
        self.api_key = api_key  # the one key accepted; "" accepts any non-empty key (kept across resets)
        self.reports: queue.Queue = queue.Queue(maxsize=report_queue_size)
        self.reset()
        self._sessions = threading.local()  # report posting runs in several threads
        for _ in range(2):
            threading.Thread(target=self._post_reports, daemon=True, name="simulator-reports").start()

    def reset(self) -> None:
        with self.lock:
            self.modes = {g: FailureMode() for g in GATEWAYS}
            self.callbacks: dict[str, dict] = {}
            self.received: list[dict] = []
            self.requests = {g: 0 for g in GATEWAYS}
            self.reports_posted = 0
            self.reports_failed = 0
            self.reports_dropped = 0
        while not self.reports.empty():
            try:
                self.reports.get_nowait()
            except queue.Empty:
                break

    def _session(self) -> requests.Session:
        if not hasattr(self._sessions, "session"):
            self._sessions.session = requests.Session()
        return self._sessions.session

    def undeliverable(self, gateway: str, number: str) -> bool:
        share = self.modes[gateway].undeliverable_share
        # The same number always fails, so a test can predict which ones.
        return share > 0 and int(hashlib.sha256(number.encode()).hexdigest()[:8], 16) % 1000 < share * 1000

    def schedule_report(self, gateway: str, data: dict) -> None:
        self.schedule_reports(gateway, [[data]])

    def schedule_reports(self, gateway: str, per_message: list[list[dict]]) -> None:
        """Queue the reports of the messages just taken (each message's reports in their natural
        order), applying report_shuffle and report_duplicates. With report_delay 0 they are posted
        right here, so they reach the app before the send request is answered."""
        target = self.callbacks.get(gateway)
        if not target:
            return
        mode = self.modes[gateway]
        reports = []
        for own in per_message:
            own = list(own)
            if mode.report_shuffle:
                random.shuffle(own)
            for data in own:
                reports.append(data)
                if mode.report_duplicates and random.random() < mode.report_duplicates:
                    reports.append(data)
        if mode.report_delay == 0:
            for data in reports:
                self._post(gateway, target, data)
            return
        due = time.monotonic() + mode.report_delay
        for data in reports:
            try:
                self.reports.put_nowait((due, gateway, target, data))
            except queue.Full:
                with self.lock:
                    self.reports_dropped += 1

    def _post_reports(self) -> None:
        while True:
            due, gateway, target, data = self.reports.get()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._post(gateway, target, data)

    def _post(self, gateway: str, target: dict, data: dict) -> None:
        try:
            if gateway == "africastalking":
                response = self._session().post(target["url"], data=data, timeout=10)
            else:
                body = json.dumps(data).encode()
                signature = hmac.new((target.get("secret") or "").encode(), body, hashlib.sha256).hexdigest()
                response = self._session().post(target["url"], data=body, timeout=10, headers={
                    "Content-Type": "application/json", "X-Signature": signature})
            ok = response.status_code < 300
        except requests.RequestException:
            ok = False
        with self.lock:
            if ok:
                self.reports_posted += 1
            else:
                self.reports_failed += 1


class NoDelayRequestHandler(WSGIRequestHandler):
    """Werkzeug writes headers and body separately; without TCP_NODELAY, Nagle holds the body until
    the client's delayed ACK (~40 ms per request on a kept-alive connection)."""

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def unauthorized(gateway: str) -> Response:
    """The provider's answer to credentials it does not take."""
    if gateway == "africastalking":
        return Response("The supplied authentication is invalid", status=401, mimetype="text/plain")
    return Response(json.dumps({"error": "Unauthorized"}), status=401, mimetype="application/json")


def refused_credentials(state: SimulatorState, gateway: str, api_key: str | None, username: str | None = "-") -> Response | None:
    """The provider's answer to a missing or wrong API key (AfricasTalking also needs a username)."""
    if api_key and username and (not state.api_key or hmac.compare_digest(api_key, state.api_key)):
        return None
    return unauthorized(gateway)


def create_simulator(report_queue_size: int = 50_000, api_key: str = "") -> Flask:
    app = Flask("mpm-gateway-simulator")
    state = SimulatorState(report_queue_size, api_key)
    app.extensions["simulator"] = state

    app.wsgi_app = DroppingMiddleware(app.wsgi_app)

    @app.before_request
    def scheduled_outage():
        """During an outage window the gateway's endpoints fail before the request is read."""
        gateway = ("africastalking" if request.path.startswith("/version1/") else
                   "textbee" if request.path.startswith("/api/v1/") else None)
        if gateway is None:
            return None
        with state.lock:
            state.requests[gateway] += 1
        mode = state.modes[gateway]
        kind = mode.outage_now()
        if kind == "refuse":
            return drop_connection()
        if kind == "timeout":
            time.sleep(mode.timeout_seconds)
            return Response("simulated timeout", status=504)
        if kind == "5xx":
            return Response("simulated outage", status=503)
        return None

    def trouble(gateway: str) -> Response | None:
        """The configured failure, or None to answer normally."""
        mode = state.modes[gateway]
        if mode.mode == "timeout":
            time.sleep(mode.timeout_seconds)
            return Response("simulated timeout", status=504)
        if mode.mode == "5xx":
            return Response("simulated server error", status=503)
        if mode.mode == "auth":
            return unauthorized(gateway)
        return None

    def turned_away(gateway: str, api_key: str | None, username: str | None = "-") -> Response | None:
        """Wrong credentials or the configured failure: the answer instead of the normal one."""
        refused = refused_credentials(state, gateway, api_key, username)
        return refused if refused is not None else trouble(gateway)

    def answer(gateway: str, response):
        """Answer a request whose messages were taken: late, not at all, or now."""
        mode = state.modes[gateway]
        if mode.mode == "late_accept":
            time.sleep(mode.answer_delay)
        elif mode.mode == "reset_after_accept":
            return drop_connection()
        return response

    @app.get("/")
    def index():
        return Response(
            "<h1>MPM gateway simulator</h1><p>Development tool: fake AfricasTalking and TextBee endpoints. "
            f"Accepted {len(state.received)} messages.</p>", mimetype="text/html")

    @app.get("/healthz")
    def healthz():
        return jsonify({"ok": True, "simulator": True})

    # --- AfricasTalking --------------------------------------------------------------------
    @app.get("/version1/user")
    def at_user():
        blocked = turned_away("africastalking", request.headers.get("apiKey"), request.args.get("username"))
        if blocked is not None:
            return blocked
        return jsonify({"UserData": {"balance": "KES 1000.0000"}})

    @app.post("/version1/messaging")
    def at_send():
        blocked = turned_away("africastalking", request.headers.get("apiKey"), request.form.get("username"))
        if blocked is not None:
            return blocked
        numbers = [n.strip() for n in (request.form.get("to") or "").split(",") if n.strip()]
        message = request.form.get("message") or ""
        if not numbers or not message:
            return Response("Must have to and message", status=400, mimetype="text/plain")
        mode = state.modes["africastalking"]
        segments = max(1, -(-len(message) // 153)) if len(message) > 160 else 1
        recipients, accepted = [], []
        for number in numbers:
            if number in mode.rejected_numbers or not number.startswith("+"):
                recipients.append({"statusCode": 403, "number": number, "status": "InvalidPhoneNumber",
                                   "cost": "0", "messageId": "None"})
                continue
            message_id = f"ATXid_{uuid.uuid4().hex}"
            cost = f"KES {0.8 * segments:.4f}"
            recipients.append({"statusCode": 101, "number": number, "status": "Success", "cost": cost,
                               "messageId": message_id})
            accepted.append({"gateway": "africastalking", "id": message_id, "number": number, "message": message,
                             "from": request.form.get("from", ""), "at": time.time()})
        with state.lock:
            state.received.extend(accepted)
        reports = []
        for item in accepted:
            failed = state.undeliverable("africastalking", item["number"])
            report = {"id": item["id"], "status": "Failed" if failed else "Success", "phoneNumber": item["number"],
                      "networkCode": "99999"}
            if failed:
                report["failureReason"] = "DeliveryFailure"
            # With report_shuffle a message also gets the intermediate "Sent", so there is an order to break.
            sent = {k: v for k, v in report.items() if k != "failureReason"} | {"status": "Sent"}
            reports.append([sent, report] if mode.report_shuffle else [report])
        state.schedule_reports("africastalking", reports)
        total = sum(float(r["cost"].split()[1]) for r in recipients if r["statusCode"] == 101)
        return answer("africastalking", (jsonify({"SMSMessageData": {
            "Message": f"Sent to {len(accepted)}/{len(numbers)} Total Cost: KES {total:.4f}",
            "Recipients": recipients}}), 201))

    # --- TextBee -------------------------------------------------------------------------------
    @app.get("/api/v1/gateway/devices")
    def textbee_devices():
        blocked = turned_away("textbee", request.headers.get("x-api-key"))
        if blocked is not None:
            return blocked
        # A phone that is on and online: TextBee stamps each device's last contact.
        seen = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return jsonify({"data": [{"_id": DEVICE_ID, "enabled": True, "brand": "Simulated", "model": "Phone",
                                  "lastHeartbeat": seen, "updatedAt": seen}]})

    @app.post("/api/v1/gateway/devices/<device_id>/send-sms")
    @app.post("/api/v1/gateway/devices/<device_id>/sendSMS")
    def textbee_send(device_id):
        blocked = turned_away("textbee", request.headers.get("x-api-key"))
        if blocked is not None:
            return blocked
        if device_id != DEVICE_ID:
            return jsonify({"success": False, "error": "Device does not exist or is not enabled"}), 400
        body = request.get_json(silent=True) or {}
        recipients, message = body.get("recipients") or [], body.get("message") or ""
        if not message:
            return jsonify({"success": False, "error": "Message cannot be blank"}), 400
        if not recipients or any(r in state.modes["textbee"].rejected_numbers for r in recipients):
            return jsonify({"success": False, "error": "Invalid recipients"}), 400
        batch_id = uuid.uuid4().hex[:24]
        with state.lock:
            state.received.extend({"gateway": "textbee", "id": batch_id, "number": r, "message": message,
                                   "at": time.time()} for r in recipients)
        reports = []
        for number in recipients:
            base = {"smsId": uuid.uuid4().hex[:24], "smsBatchId": batch_id, "message": message, "deviceId": device_id,
                    "recipient": number, "webhookSubscriptionId": "sim-subscription"}
            if state.undeliverable("textbee", number):
                final = {"webhookEvent": "MESSAGE_FAILED", "status": "failed", "errorCode": "1",
                         "errorMessage": "Generic failure"}
            else:
                final = {"webhookEvent": "MESSAGE_DELIVERED", "status": "delivered"}
            reports.append([{**base, "webhookEvent": "MESSAGE_SENT", "status": "sent", "idempotencyKey": uuid.uuid4().hex},
                            {**base, **final, "idempotencyKey": uuid.uuid4().hex}])
        state.schedule_reports("textbee", reports)
        return answer("textbee", (jsonify({"data": {"success": True, "message": "SMS added to queue for processing",
                                                    "smsBatchId": batch_id, "recipientCount": len(recipients)}}), 201))

    # --- control ---------------------------------------------------------------------------------
    @app.post("/_simulator/config")
    def configure():
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return jsonify({"error": "send a JSON object"}), 400
        if isinstance(body.get("api_key"), str):
            state.api_key = body["api_key"]
            if "gateway" not in body:
                return jsonify({"api_key_required": bool(state.api_key)})
        gateway = body.get("gateway")
        if gateway not in GATEWAYS:
            return jsonify({"error": f"gateway must be one of {GATEWAYS}"}), 400
        mode = state.modes[gateway]
        try:
            apply_config(mode, body)
        except ConfigError as error:
            return jsonify({"error": str(error)}), 400
        return jsonify({"gateway": gateway, **mode.public()})

    @app.post("/_simulator/callbacks")
    def register_callback():
        body = request.get_json(silent=True) or {}
        if body.get("gateway") not in GATEWAYS or not body.get("url"):
            return jsonify({"error": "gateway and url are required"}), 400
        state.callbacks[body["gateway"]] = {"url": body["url"], "secret": body.get("secret", "")}
        return jsonify({"ok": True})

    @app.get("/_simulator/received")
    def received():
        gateway = request.args.get("gateway")
        with state.lock:
            items = [r for r in state.received if not gateway or r["gateway"] == gateway]
        return jsonify({"received": items})

    @app.get("/_simulator/stats")
    def stats():
        with state.lock:
            return jsonify({"received": len(state.received), "requests": dict(state.requests),
                            "reports_posted": state.reports_posted, "reports_failed": state.reports_failed,
                            "reports_dropped": state.reports_dropped, "reports_pending": state.reports.qsize()})

    @app.post("/_simulator/reset")
    def reset():
        state.reset()
        return jsonify({"ok": True})

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="MPM gateway simulator (development tool only)")
    parser.add_argument("--port", type=int, default=5055)
    parser.add_argument("--api-key", default="", help="accept only this API key (default: any non-empty key)")
    args = parser.parse_args()
    from werkzeug.serving import run_simple

    logging.basicConfig(level=logging.INFO)
    print(f"MPM gateway simulator (development tool) on http://127.0.0.1:{args.port}", flush=True)
    run_simple("127.0.0.1", args.port, create_simulator(api_key=args.api_key), threaded=True, request_handler=NoDelayRequestHandler)
