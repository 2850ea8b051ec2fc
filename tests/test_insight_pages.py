"""Dashboard, plugin overview health, failure reasons and the alerts (banner, page, settings, e-mail)."""
import html
import re
from datetime import timedelta

import responses

from conftest import csrf_token, enable_gateway, make_company, make_user, login
from mpm.extensions import db
from mpm.insight import alerts
from mpm.insight.rollups import refresh_rollups
from mpm.messaging import ratelimit
from mpm.models import Company, Sms
from mpm.models.base import utcnow
from test_insight_rollups import add_sms

AT_FAILURE = "AfricasTalking: Failed, reason DeliveryFailure, network 99999"


def figures(page: str) -> dict:
    return dict(re.findall(r'data-figure="(\w+)">([^<]*)<', page))


def broadcast_day(company, delivered=18, failed=2, gateway="africastalking", created=None):
    for _ in range(delivered):
        add_sms(company, status="delivered", gateway=gateway, delivered_after=timedelta(seconds=40), created=created)
    for _ in range(failed):
        add_sms(company, status="failed", gateway=gateway, error=AT_FAILURE, cost=None, created=created)


def test_dashboard_draws_delivery_from_the_rollups(logged_in, company):
    enable_gateway(company, "africastalking")
    broadcast_day(company)
    broadcast_day(company, delivered=5, failed=5, created=utcnow() - timedelta(days=3))
    refresh_rollups()
    add_sms(company, status="delivered")  # not in the rollups yet: the figures wait for the minute job

    page = logged_in.get("/?range=7d").get_data(as_text=True)
    shown = figures(page)
    assert shown["messages"] == "30"
    assert shown["rate"] == "76.7 %"  # 23 of 30
    assert shown["cost"] == "KES 18.40"  # 23 delivered × 0.80
    assert shown["median"] == "45 s"  # read back from the 30–60 s bin of the histogram
    # One bar per day, the dip three days ago visible in the chart and in its table.
    rates = re.findall(r'<g class="chart-period" data-period="([\d-]+)" data-messages="(\d+)" data-rate="([\d.]*)"', page)
    assert len(rates) == 7
    assert [r for r in rates if r[1] != "0"] == [rates[3][:2] + ("50.0",), rates[6][:2] + ("90.0",)]
    assert '<table class="striped" id="delivery-table">' in page and "<td>50.0 %</td>" in page
    assert "AfricasTalking: Failed, reason DeliveryFailure" in page


def test_range_presets_swap_only_the_charts_for_htmx(logged_in, company):
    broadcast_day(company)
    refresh_rollups()
    fragment = logged_in.get("/?range=48h", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "<html" not in fragment and 'data-range="48h"' in fragment
    assert len(re.findall(r'class="chart-period"', fragment)) == 48
    # Unknown ranges fall back to 30 days instead of failing.
    assert 'data-range="30d"' in logged_in.get("/?range=9999999999d").get_data(as_text=True)


def test_csv_export_has_one_line_per_day(logged_in, company):
    broadcast_day(company)
    refresh_rollups()
    response = logged_in.get("/dashboard.csv?range=7d&gateway=africastalking")
    assert response.mimetype == "text/csv"
    lines = response.get_data(as_text=True).strip().splitlines()
    assert lines[0].startswith("period,messages,delivered")
    assert len(lines) == 8
    assert lines[-1].split(",")[1:4] == ["20", "18", "2"]
    assert logged_in.get("/dashboard.csv?gateway=nonsense").status_code == 200


def test_failure_reason_links_to_the_history_of_those_messages(logged_in, company):
    broadcast_day(company, delivered=3, failed=2)
    add_sms(company, status="failed", error="TextBee: Generic failure", gateway="textbee")
    refresh_rollups()
    page = logged_in.get("/").get_data(as_text=True)
    reasons = re.findall(r'<li><a href="([^"]+)">([^<]+)</a>', page.split('id="insight-reasons"')[1])
    assert [r[1] for r in reasons] == ["AfricasTalking: Failed, reason DeliveryFailure", "TextBee: Generic failure"]
    history = logged_in.get(reasons[0][0].replace("&amp;", "&")).get_data(as_text=True)
    assert history.count("DeliveryFailure") >= 2 and "Generic failure" not in history.split('id="reason-filter"')[1]


def test_waiting_now_says_why(logged_in, company):
    for reason in ("waiting for quota (resets 00:00)", "waiting for quota (resets 00:00)", None):
        sms = add_sms(company, status="queued", gateway=None)
        sms.waiting_reason = reason
    db.session.commit()
    page = logged_in.get("/").get_data(as_text=True)
    assert figures(page)["waiting"] == "3"
    assert "waiting for quota (resets 00:00): <strong>2</strong>" in page
    assert "queued, about to be sent: <strong>1</strong>" in page


@responses.activate
def test_plugin_overview_shows_circuit_errors_quota_and_phones(app, logged_in, company):
    responses.add_passthru("http://127.0.0.1")
    setting = enable_gateway(company, "textbee", options={"daily_quota": 50, "monthly_quota": 300})
    setting.circuit_state = "open"
    setting.circuit_since = utcnow() - timedelta(minutes=3)
    setting.last_error = "TextBee answered HTTP 500"
    setting.last_error_at = utcnow() - timedelta(minutes=3)
    db.session.commit()
    broadcast_day(company, delivered=6, failed=2, gateway="textbee")
    refresh_rollups()
    ratelimit.take_quota(company.id, "textbee", 46, {"day": 50, "month": 300})
    seen = (utcnow() - timedelta(minutes=40)).isoformat().replace("+00:00", "Z")
    responses.get("https://api.textbee.dev/api/v1/gateway/devices",
                  json={"data": [{"_id": "dev-1", "enabled": True, "brand": "Tecno", "model": "Spark",
                                  "updatedAt": seen}]})
    alerts.watch_alerts()

    page = logged_in.get("/plugins/textbee/").get_data(as_text=True)
    assert 'data-circuit="open"' in page and "TextBee answered HTTP 500" in page
    assert "25.0 % (2 of 8 failed or expired)" in page
    assert re.search(r'data-quota="day">46 of 50', page) and re.search(r'data-quota="month">46 of 300', page)
    assert "Tecno Spark" in page
    banner = html.unescape(page.split('id="alert-banner"')[1].split("</div>")[0])
    assert "TextBee is failing: its circuit is open" in banner
    assert "TextBee quota nearly spent: 46 of today's 50" in banner
    assert "The TextBee phone Tecno Spark has not been seen since" in banner
    assert "Delivery rate" not in banner  # 8 outcomes: too few to judge


def test_banner_on_every_page_when_no_gateway_is_active(logged_in, company):
    for path in ("/", "/sms/", "/plugins/", "/alerts/"):
        page = logged_in.get(path).get_data(as_text=True)
        assert 'data-alert="no_gateway"' in page, path


def test_banner_is_cached_for_a_minute(logged_in, company):
    assert 'data-alert="no_gateway"' in logged_in.get("/").get_data(as_text=True)
    enable_gateway(company, "africastalking")
    assert 'data-alert="no_gateway"' in logged_in.get("/").get_data(as_text=True)  # from the cache
    alerts.watch_alerts()  # the minute job refreshes it
    assert 'id="alert-banner"' not in logged_in.get("/").get_data(as_text=True)


def test_delivery_rate_alert_follows_the_admins_threshold(logged_in, company):
    enable_gateway(company, "africastalking")
    broadcast_day(company, delivered=17, failed=3)  # 85 %
    refresh_rollups()
    alerts.watch_alerts()
    assert 'id="alert-banner"' not in logged_in.get("/").get_data(as_text=True)
    token = csrf_token(logged_in, "/alerts/")
    response = logged_in.post("/alerts/settings", data={"csrf_token": token, "min_delivery_rate": "90"})
    assert response.status_code == 302
    page = logged_in.get("/").get_data(as_text=True)
    assert "Delivery rate of the last hour is 85 % (17 of 20 delivered), under your threshold of 90 %" in page


def test_bad_threshold_is_refused_and_changes_nothing(logged_in, company):
    token = csrf_token(logged_in, "/alerts/")
    for bad in ("0", "101", "abc", "1e9", "9" * 400, ""):
        response = logged_in.post("/alerts/settings", data={"csrf_token": token, "min_delivery_rate": bad})
        assert response.status_code == 422, bad
        assert "whole number of percent from 1 to 100" in response.get_data(as_text=True)
    assert alerts.alert_settings(db.session.get(Company, company.id)).min_delivery_rate == 80


def test_managers_see_alerts_but_cannot_change_settings(client, company):
    manager = make_user(company, role="manager")
    login(client, manager.email)
    assert 'data-alert="no_gateway"' in client.get("/alerts/").get_data(as_text=True)
    token = csrf_token(client, "/alerts/")
    assert client.post("/alerts/settings", data={"csrf_token": token, "min_delivery_rate": "50"}).status_code == 403


def test_other_companies_alerts_and_figures_stay_apart(logged_in, company):
    other = make_company("Other Power")
    broadcast_day(other)
    refresh_rollups()
    assert figures(logged_in.get("/").get_data(as_text=True))["messages"] == "0"
    assert db.session.query(Sms).count() == 20


class RecordingSmtp:
    """A tiny SMTP server on loopback that keeps every message it is given."""

    def __init__(self):
        import socketserver
        import threading

        received = self.received = []

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                self.wfile.write(b"220 test ESMTP\r\n")
                data, in_data = [], False
                for raw in self.rfile:
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    if in_data:
                        if line == ".":
                            received.append("\n".join(data))
                            data, in_data = [], False
                            self.wfile.write(b"250 queued\r\n")
                        else:
                            data.append(line)
                        continue
                    verb = line[:4].upper()
                    if verb == "DATA":
                        in_data = True
                        self.wfile.write(b"354 go on\r\n")
                    elif verb == "QUIT":
                        self.wfile.write(b"221 bye\r\n")
                        return
                    else:
                        self.wfile.write(b"250 ok\r\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_new_alerts_are_mailed_once_to_the_admins_when_switched_on(app, logged_in, company, admin):
    smtp = RecordingSmtp()
    try:
        app.config.update(SMTP_HOST="127.0.0.1", SMTP_PORT=smtp.port, SMTP_SECURITY="none", SMTP_FROM="mpm@op.test")
        alerts.watch_alerts()
        assert smtp.received == []  # off by default
        token = csrf_token(logged_in, "/alerts/")
        logged_in.post("/alerts/settings", data={"csrf_token": token, "min_delivery_rate": "80", "email": "on"})
        db.session.expire_all()  # the request saved it in its own session; a job starts with a fresh one
        alerts.watch_alerts()
        alerts.watch_alerts()  # the same alert a minute later: no second e-mail
        assert len(smtp.received) == 1
        assert f"To: {admin.email}" in smtp.received[0]
        assert "No gateway is active" in smtp.received[0]
    finally:
        smtp.close()


def test_plugin_overview_presets_swap_only_its_charts(logged_in, company):
    broadcast_day(company, gateway="textbee")
    broadcast_day(company, delivered=5, failed=0)
    refresh_rollups()
    fragment = logged_in.get("/plugins/textbee/?range=48h", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "<html" not in fragment and 'data-range="48h"' in fragment
    assert figures(fragment)["messages"] == "20"  # TextBee's only
    assert "/plugins/textbee/?range=7d" in fragment
