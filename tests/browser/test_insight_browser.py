"""In the browser: a broadcast with 5 % undeliverable numbers, then an AfricasTalking outage during a
second one; the dashboard shows the dip in the delivery-rate chart, the failure reasons and the alert
banner (screenshots under $MPM_TEST_OUTPUT/screenshots)."""
import os
import re
import time
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

from conftest import enable_simulated_gateway, make_person
from mpm.extensions import db
from mpm.insight import alerts
from mpm.insight.rollups import refresh_rollups
from mpm.models import GatewaySetting, MiniGrid, Sms
from mpm.plugins.gateway_settings import callback_url
from mpm.models.base import utcnow

pytestmark = [pytest.mark.browser, pytest.mark.queue]


@pytest.fixture
def quick_breaker(monkeypatch):
    """The worker's circuit breaker opens after one failed request (instead of five)."""
    monkeypatch.setenv("MPM_CIRCUIT_FAILURES", "1")


def numbers_with_undeliverable(simulator, total: int, undeliverable: int) -> list[str]:
    """`total` numbers of which exactly `undeliverable` are ones the simulator reports as failed."""
    state = simulator.state
    bad, good, n = [], [], 0
    while len(bad) < undeliverable or len(good) < total - undeliverable:
        number = f"+25471200{n:04d}"
        (bad if state.undeliverable("africastalking", number) else good).append(number)
        n += 1
    return bad[:undeliverable] + good[:total - undeliverable]


def past_week(company) -> None:
    """Six earlier days of ordinary traffic: 40 a day, 39 delivered."""
    for days in range(1, 7):
        created = utcnow() - timedelta(days=days)
        for i in range(40):
            failed = i == 0
            db.session.add(Sms(company_id=company.id, number="+254712000001", body="earlier", trigger="broadcast",
                               gateway="africastalking", status="failed" if failed else "delivered",
                               error="AfricasTalking: Failed, reason DeliveryFailure, network 99999" if failed else None,
                               cost=None if failed else "KES 0.8000", created_at=created,
                               updated_at=created + timedelta(seconds=20)))
    db.session.commit()


def send_broadcast(page, body: str, people: int, state: str = "done") -> None:
    page.goto("/broadcasts/new")
    page.get_by_label("Kisumu North").check()
    page.get_by_label("Body").fill(body)
    page.get_by_role("button", name="Continue to confirmation").click()
    page.get_by_role("button", name=f"Send now to {people} people").click()
    expect(page.locator("#broadcast-progress h2 .status")).to_have_text(state, timeout=60_000)


def wait_for_outage_to_be_seen(company, count: int, timeout: float = 60) -> None:
    """The outage's messages wait (retried until their validity ends) and AfricasTalking's circuit is open."""
    deadline = time.monotonic() + timeout
    while True:
        db.session.expire_all()
        waiting = db.session.scalar(select(func.count()).select_from(Sms).where(
            Sms.company_id == company.id, Sms.status == "queued", Sms.waiting_reason.like("gateway down%")))
        circuit = db.session.scalar(select(GatewaySetting.circuit_state).where(
            GatewaySetting.company_id == company.id, GatewaySetting.gateway == "africastalking"))
        if (waiting == count and circuit == "open") or time.monotonic() > deadline:
            assert (waiting, circuit) == (count, "open")
            return
        time.sleep(0.2)


def wait_for_outcomes(company, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        db.session.expire_all()
        settled = db.session.scalar(select(func.count()).select_from(Sms).where(
            Sms.company_id == company.id, Sms.body != "earlier", Sms.status.in_(("delivered", "failed"))))
        if settled >= count or time.monotonic() > deadline:
            assert settled == count
            return
        time.sleep(0.2)


def test_undeliverable_numbers_and_an_outage_show_on_the_dashboard(page, log_in, company, admin, simulator,
                                                                  quick_breaker, worker):
    north = MiniGrid(company_id=company.id, name="Kisumu North")
    db.session.add(north)
    db.session.commit()
    simulator.configure("africastalking", undeliverable_share=0.05, report_delay=0.2)
    for n, number in enumerate(numbers_with_undeliverable(simulator, 40, 2)):
        make_person(company, name=f"Person{n}", surname="Otieno", number=number, mini_grid_id=north.id)
    setting = enable_simulated_gateway(company, simulator)
    simulator.register_callback("africastalking", callback_url(company.id, "africastalking", setting.callback_secret))
    past_week(company)
    log_in(page, admin.email)

    send_broadcast(page, "Token prices change on Monday.", 40)
    wait_for_outcomes(company, 40)
    simulator.configure("africastalking", mode="5xx")  # AfricasTalking goes down
    send_broadcast(page, "Maintenance tomorrow 09:00-12:00.", 40, state="sending")
    wait_for_outage_to_be_seen(company, 40)
    refresh_rollups()  # what the worker's minute jobs do
    alerts.watch_alerts()

    page.goto("/?range=7d")
    periods = page.locator("#delivery-chart g.chart-period")
    expect(periods).to_have_count(7)
    rates = [float(periods.nth(i).get_attribute("data-rate")) for i in range(7)]
    assert all(rate == 97.5 for rate in rates[:6]), rates
    assert rates[6] == 95.0, rates  # 38 of the 40 with an outcome today: the dip; 40 more wait
    reasons = page.locator("#insight-reasons")
    expect(reasons).to_contain_text("AfricasTalking: Failed, reason DeliveryFailure")
    expect(page.locator("#insight-waiting")).to_contain_text("gateway down, retrying at")
    banner = page.locator("#alert-banner")
    expect(banner).to_contain_text("AfricasTalking is failing: its circuit is open since")
    page.screenshot(path=str(_screenshots() / "insight_dashboard_dip.png"), full_page=True)

    # The same figures as a table, for screen readers.
    page.get_by_text("Show the figures as a table").click()
    expect(page.locator("#delivery-table tbody tr").first).to_contain_text("95.0 %")

    # A preset swaps only the charts and keeps the address.
    page.get_by_role("button", name="Last 48 hours").click()
    expect(page.locator("#insight")).to_have_attribute("data-range", "48h")
    expect(page).to_have_url(re.compile(r"range=48h"))
    expect(page.locator("#delivery-chart g.chart-period")).to_have_count(48)

    # A failure reason leads to those messages in the SMS history.
    page.locator("#insight-reasons a", has_text="DeliveryFailure").first.click()
    expect(page.locator("#reason-filter")).to_contain_text("DeliveryFailure")
    expect(page.locator("#sms-table")).to_contain_text("failed")
    expect(page.locator("#alert-banner")).to_be_visible()  # on every page


def _screenshots() -> Path:
    path = Path(os.environ.get("MPM_TEST_OUTPUT", "test-output")) / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path
