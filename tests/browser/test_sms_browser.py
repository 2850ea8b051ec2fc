"""In the browser: send an SMS from the customer panel and watch it turn delivered through the
gateway simulator (real RQ worker process, real delivery-report callback); see why one failed."""
import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from conftest import enable_simulated_gateway, make_person
from mpm.extensions import db
from mpm.models import Sms
from mpm.plugins.gateway_settings import callback_url

pytestmark = [pytest.mark.browser, pytest.mark.queue]


def _connect_simulator(company, simulator):
    setting = enable_simulated_gateway(company, simulator)
    # Delivery reports come back to the live server, as a provider would post them.
    simulator.register_callback("africastalking", callback_url(company.id, "africastalking", setting.callback_secret))


def _send_from_panel(page, person, body):
    page.goto(f"/customers/{person.id}")
    page.locator("#sms-body").fill(body)
    page.locator("#sms-section").get_by_role("button", name="Send").click()
    expect(page.locator("#sms-section [role=status]")).to_contain_text("is queued")


def test_send_from_the_customer_panel_and_watch_it_turn_delivered(page, log_in, company, admin, simulator, worker):
    jane = make_person(company, name="Jane", surname="Wanjiru", number="+254712345678")
    _connect_simulator(company, simulator)
    log_in(page, admin.email)
    _send_from_panel(page, jane, "Your token is 1234-5678-9012")

    row = page.locator("#sms-section tbody tr").first
    expect(row).to_contain_text("Your token is 1234-5678-9012")
    # queued → sent (the worker) → delivered (the simulator's report to the callback), without a reload.
    expect(row.locator(".status")).to_have_text("delivered", timeout=30_000)

    received = simulator.received("africastalking")
    assert [(m["number"], m["message"]) for m in received] == [("+254712345678", "Your token is 1234-5678-9012")]
    db.session.expire_all()
    sms = db.session.scalars(select(Sms).where(Sms.company_id == company.id)).one()
    assert (sms.status, sms.gateway) == ("delivered", "africastalking")


def test_a_failed_messages_reason_is_on_its_detail_page(page, log_in, company, admin, simulator, worker):
    peter = make_person(company, name="Peter", surname="Otieno", number="+254700000009")
    _connect_simulator(company, simulator)
    simulator.configure("africastalking", rejected_numbers=["+254700000009"])
    log_in(page, admin.email)
    _send_from_panel(page, peter, "Your meter is ready")

    expect(page.locator("#sms-section tbody tr").first.locator(".status")).to_have_text("failed", timeout=30_000)
    page.locator("#sms-section [role=status]").get_by_role("link").click()
    expect(page).to_have_url(re.compile(r"/sms/\d+$"))
    expect(page.locator(".status").first).to_have_text("failed")
    expect(page.locator("main")).to_contain_text("InvalidPhoneNumber")
    assert simulator.received("africastalking") == []
