"""Android gateway (DEPRECATED): the legacy MPM Android app sends SMS from a phone.

Kept for operators who still run it; prefer TextBee, which does the same with delivery reports
and a maintained app. Google shut down the legacy FCM API this relies on for new projects.

Credentials (encrypted): `fcm_server_key` (Firebase Cloud Messaging server key of the project
the app is built with), `device_token` (the FCM registration token the app shows).
Options: `send_rate` (messages/s across all workers, default 10, the pace MPM always used),
`base_url` (tests only; default https://fcm.googleapis.com).

Send: POST {base}/fcm/send, header `Authorization: key=<server key>`, JSON {to: device_token,
data: {sms_id, number, message, callback}}. The push being taken (`success` 1) counts as sent;
the app confirms each message at the callback URL (.../sent, .../delivered, .../failed).
"""
import requests

from mpm.gateways.base import (ACCEPTED, NOT_SENT, CredentialCheck, DeliveryReport, GatewayConfig,
                               OutboundMessage, SendResult, failure_detail, request_failure)

LIVE_URL = "https://fcm.googleapis.com"
CONFIRMATIONS = {"sent": "sent", "delivered": "delivered", "failed": "failed"}

_http = requests.Session()


class AndroidGateway:
    key = "android"
    label = "Android Gateway (deprecated)"
    deprecated = True
    credential_fields = ("fcm_server_key", "device_token")
    option_fields = ("send_rate",)
    default_send_rate = 10.0

    def base_url(self, config: GatewayConfig) -> str:
        return (config.options.get("base_url") or LIVE_URL).rstrip("/")

    def can_reach(self, message: OutboundMessage) -> bool:
        return True

    def _headers(self, config: GatewayConfig) -> dict:
        return {"Authorization": f"key={config.credentials.get('fcm_server_key', '')}"}

    def _push(self, data: dict, config: GatewayConfig, dry_run: bool = False) -> requests.Response:
        body = {"to": config.credentials.get("device_token", ""), "priority": "high", "data": data}
        if dry_run:
            body["dry_run"] = True
        return _http.post(f"{self.base_url(config)}/fcm/send", json=body, headers=self._headers(config),
                          timeout=(config.connect_timeout, config.timeout))

    def send_batch(self, messages: list[OutboundMessage], config: GatewayConfig) -> list[SendResult]:
        results = []
        for message in messages:
            # The app reports back with our own id; it is the provider id of this gateway.
            data = {"sms_id": str(message.sms_id), "number": message.number, "message": message.body,
                    "callback": config.callback_base_url}
            try:
                response = self._push(data, config)
                answer = response.json() if response.status_code == 200 else {}
            except requests.RequestException as exc:
                results.append(SendResult(message.sms_id, request_failure(exc),
                                          detail=failure_detail("Firebase", exc, config.timeout)))
                results.extend(SendResult(m.sms_id, NOT_SENT, detail="not tried: Firebase did not answer")
                               for m in messages[len(results):])
                break
            except ValueError:
                answer = {}
            if answer.get("success"):
                results.append(SendResult(message.sms_id, ACCEPTED, provider_message_id=str(message.sms_id),
                                          detail="pushed to the Android phone"))
            else:
                error = (answer.get("results") or [{}])[0].get("error") or f"HTTP {response.status_code}"
                results.append(SendResult(message.sms_id, NOT_SENT, detail=f"Firebase refused the push: {error}"))
        return results

    def check_credentials(self, config: GatewayConfig) -> CredentialCheck:
        if not config.credentials.get("fcm_server_key") or not config.credentials.get("device_token"):
            return CredentialCheck(False, "Enter the Firebase server key and the phone's device token.")
        try:
            response = self._push({"check": "1"}, config, dry_run=True)
        except requests.Timeout:
            return CredentialCheck(False, f"Firebase did not answer within {config.timeout:g} seconds.")
        except requests.RequestException:
            return CredentialCheck(False, "Firebase could not be reached (network error).")
        if response.status_code in (401, 403):
            return CredentialCheck(False, "Firebase refused the server key (the legacy FCM API may be shut down for "
                                          "this project). Consider TextBee instead: this gateway is deprecated.")
        try:
            answer = response.json()
        except ValueError:
            return CredentialCheck(False, f"Firebase answered HTTP {response.status_code} with something unexpected.")
        if not answer.get("success"):
            error = (answer.get("results") or [{}])[0].get("error", "unknown error")
            return CredentialCheck(False, f"Firebase does not know the phone's device token ({error}): "
                                          "copy it again from the app.")
        return CredentialCheck(True, "Firebase accepts the server key and the phone's token. "
                                     "This gateway is deprecated: prefer TextBee.")

    def confirmation(self, kind: str, form) -> DeliveryReport:
        if kind not in CONFIRMATIONS:
            raise ValueError(f"unknown confirmation {kind!r}")
        sms_id = (form.get("id") or form.get("sms_id") or "").strip()
        if not sms_id.isdigit():
            raise ValueError("confirmation without a message id")
        detail = f"Android app: {kind}" + (f", {form['error']}" if form.get("error") else "")
        return DeliveryReport(sms_id, CONFIRMATIONS[kind], detail, kind)


gateway = AndroidGateway()
