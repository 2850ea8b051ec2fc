"""Local gateway simulator — a DEVELOPMENT TOOL, never part of a production setup.

`python -m mpm.simulator --port N` serves, on loopback, the parts of the providers' APIs this app
uses, answering in the providers' formats:
- AfricasTalking: POST /version1/messaging, GET /version1/user;
- TextBee: GET /api/v1/gateway/devices, POST /api/v1/gateway/devices/<id>/send-sms.
After a short delay it posts delivery reports to the callback URL the app registered with it
(AfricasTalking form reports; TextBee signed webhooks), from a background thread fed by a bounded
queue (reports beyond its size are dropped and counted).

Control endpoints (JSON), for tests and for trying failure handling by hand:
- POST /_simulator/config {"gateway": "africastalking"|"textbee", "mode": "ok"|"timeout"|"5xx"|"auth",
  "timeout_seconds": 30, "undeliverable_share": 0.0..1.0, "rejected_numbers": [...], "report_delay": 0.5}
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
import threading
import time
import uuid
from datetime import datetime, timezone
from dataclasses import dataclass, field

import socket

import requests
from flask import Flask, Response, jsonify, request
from werkzeug.serving import WSGIRequestHandler

log = logging.getLogger("mpm.simulator")

GATEWAYS = ("africastalking", "textbee")
DEVICE_ID = "sim-device-1"


@dataclass
class FailureMode:
    mode: str = "ok"  # ok / timeout / 5xx / auth
    timeout_seconds: float = 30.0
    undeliverable_share: float = 0.0  # share of numbers whose report says failed
    rejected_numbers: list = field(default_factory=list)  # refused at send time (InvalidPhoneNumber)
    report_delay: float = 0.5


class SimulatorState:
    def __init__(self, report_queue_size: int = 50_000):
        self.lock = threading.Lock()
        self.reports: queue.Queue = queue.Queue(maxsize=report_queue_size)
        self.reset()
        self._sender = requests.Session()
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

    def undeliverable(self, gateway: str, number: str) -> bool:
        share = self.modes[gateway].undeliverable_share
        # The same number always fails, so a test can predict which ones.
        return share > 0 and int(hashlib.sha256(number.encode()).hexdigest()[:8], 16) % 1000 < share * 1000

    def schedule_report(self, gateway: str, data: dict) -> None:
        target = self.callbacks.get(gateway)
        if not target:
            return
        due = time.monotonic() + self.modes[gateway].report_delay
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
            try:
                if gateway == "africastalking":
                    response = self._sender.post(target["url"], data=data, timeout=10)
                else:
                    body = json.dumps(data).encode()
                    signature = hmac.new((target.get("secret") or "").encode(), body, hashlib.sha256).hexdigest()
                    response = self._sender.post(target["url"], data=body, timeout=10, headers={
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


def create_simulator(report_queue_size: int = 50_000) -> Flask:
    app = Flask("mpm-gateway-simulator")
    state = SimulatorState(report_queue_size)
    app.extensions["simulator"] = state

    def trouble(gateway: str) -> Response | None:
        """The configured failure, or None to answer normally."""
        mode = state.modes[gateway]
        with state.lock:
            state.requests[gateway] += 1
        if mode.mode == "timeout":
            time.sleep(mode.timeout_seconds)
            return Response("simulated timeout", status=504)
        if mode.mode == "5xx":
            return Response("simulated server error", status=503)
        if mode.mode == "auth":
            if gateway == "africastalking":
                return Response("The supplied authentication is invalid", status=401, mimetype="text/plain")
            return jsonify({"error": "Unauthorized"}), 401
        return None

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
        if not request.headers.get("apiKey") or not request.args.get("username"):
            return Response("The supplied authentication is invalid", status=401, mimetype="text/plain")
        failure = trouble("africastalking")
        if failure is not None:
            return failure
        return jsonify({"UserData": {"balance": "KES 1000.0000"}})

    @app.post("/version1/messaging")
    def at_send():
        if not request.headers.get("apiKey") or not request.form.get("username"):
            return Response("The supplied authentication is invalid", status=401, mimetype="text/plain")
        failure = trouble("africastalking")
        if failure is not None:
            return failure
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
        for item in accepted:
            failed = state.undeliverable("africastalking", item["number"])
            report = {"id": item["id"], "status": "Failed" if failed else "Success", "phoneNumber": item["number"],
                      "networkCode": "99999"}
            if failed:
                report["failureReason"] = "DeliveryFailure"
            state.schedule_report("africastalking", report)
        total = sum(float(r["cost"].split()[1]) for r in recipients if r["statusCode"] == 101)
        return jsonify({"SMSMessageData": {
            "Message": f"Sent to {len(accepted)}/{len(numbers)} Total Cost: KES {total:.4f}",
            "Recipients": recipients}}), 201

    # --- TextBee -------------------------------------------------------------------------------
    @app.get("/api/v1/gateway/devices")
    def textbee_devices():
        if not request.headers.get("x-api-key"):
            return jsonify({"error": "Unauthorized"}), 401
        failure = trouble("textbee")
        if failure is not None:
            return failure
        # A phone that is on and online: TextBee stamps each device's last contact.
        seen = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return jsonify({"data": [{"_id": DEVICE_ID, "enabled": True, "brand": "Simulated", "model": "Phone",
                                  "lastHeartbeat": seen, "updatedAt": seen}]})

    @app.post("/api/v1/gateway/devices/<device_id>/send-sms")
    @app.post("/api/v1/gateway/devices/<device_id>/sendSMS")
    def textbee_send(device_id):
        if not request.headers.get("x-api-key"):
            return jsonify({"error": "Unauthorized"}), 401
        failure = trouble("textbee")
        if failure is not None:
            return failure
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
        for number in recipients:
            base = {"smsId": uuid.uuid4().hex[:24], "smsBatchId": batch_id, "message": message, "deviceId": device_id,
                    "recipient": number, "webhookSubscriptionId": "sim-subscription"}
            state.schedule_report("textbee", {**base, "webhookEvent": "MESSAGE_SENT", "status": "sent",
                                              "idempotencyKey": uuid.uuid4().hex})
            if state.undeliverable("textbee", number):
                final = {"webhookEvent": "MESSAGE_FAILED", "status": "failed", "errorCode": "1",
                         "errorMessage": "Generic failure"}
            else:
                final = {"webhookEvent": "MESSAGE_DELIVERED", "status": "delivered"}
            state.schedule_report("textbee", {**base, **final, "idempotencyKey": uuid.uuid4().hex})
        return jsonify({"data": {"success": True, "message": "SMS added to queue for processing",
                                 "smsBatchId": batch_id, "recipientCount": len(recipients)}}), 201

    # --- control ---------------------------------------------------------------------------------
    @app.post("/_simulator/config")
    def configure():
        body = request.get_json(silent=True) or {}
        gateway = body.get("gateway")
        if gateway not in GATEWAYS:
            return jsonify({"error": f"gateway must be one of {GATEWAYS}"}), 400
        mode = state.modes[gateway]
        if "mode" in body:
            if body["mode"] not in ("ok", "timeout", "5xx", "auth"):
                return jsonify({"error": "mode must be ok, timeout, 5xx or auth"}), 400
            mode.mode = body["mode"]
        for name in ("timeout_seconds", "undeliverable_share", "report_delay"):
            if name in body:
                setattr(mode, name, float(body[name]))
        if "rejected_numbers" in body:
            mode.rejected_numbers = list(body["rejected_numbers"])
        return jsonify({"gateway": gateway, **mode.__dict__})

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
    args = parser.parse_args()
    from werkzeug.serving import run_simple

    logging.basicConfig(level=logging.INFO)
    print(f"MPM gateway simulator (development tool) on http://127.0.0.1:{args.port}", flush=True)
    run_simple("127.0.0.1", args.port, create_simulator(), threaded=True, request_handler=NoDelayRequestHandler)
