"""In the browser: compose a broadcast to one mini-grid, confirm it, and watch the progress bar
finish while a real worker sends through the gateway simulator."""
import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from conftest import enable_simulated_gateway, make_person
from mpm.extensions import db
from mpm.models import MiniGrid, Sms
from mpm.plugins.gateway_settings import callback_url

pytestmark = [pytest.mark.browser, pytest.mark.queue]


def test_broadcast_to_one_mini_grid_from_compose_to_done(page, log_in, company, admin, simulator, worker):
    north, lamu = MiniGrid(company_id=company.id, name="Kisumu North"), MiniGrid(company_id=company.id, name="Lamu")
    db.session.add_all([north, lamu])
    db.session.commit()
    names = ["Achieng", "Baraka", "Chebet", "Daudi", "Eshe"]
    for n, name in enumerate(names):
        make_person(company, name=name, surname="Otieno", number=f"+25471100{n:04d}", mini_grid_id=north.id)
    for n in range(3):
        make_person(company, name=f"Lamu{n}", surname="Ali", number=f"+25472200{n:04d}", mini_grid_id=lamu.id)
    setting = enable_simulated_gateway(company, simulator)
    simulator.register_callback("africastalking", callback_url(company.id, "africastalking", setting.callback_secret))

    log_in(page, admin.email)
    page.goto("/broadcasts/new")
    page.get_by_label("Kisumu North").check()
    page.get_by_label("Body").fill("Hello [name], planned maintenance tomorrow 09:00-12:00.")
    expect(page.locator("#broadcast-summary")).to_contain_text("5")
    page.get_by_role("button", name="Continue to confirmation").click()

    expect(page.get_by_role("heading", level=1)).to_contain_text("Confirm broadcast")
    expect(page.locator("#confirm-summary")).to_contain_text("5 people")
    page.get_by_role("button", name="Send now to 5 people").click()

    # The progress section re-polls itself until the broadcast is done.
    progress = page.locator("#broadcast-progress")
    expect(progress.locator("h2 .status")).to_have_text("done", timeout=45_000)
    page.reload()
    expect(page.locator('#broadcast-progress td[data-status="delivered"]')).to_have_text("5", timeout=20_000)
    expect(page.locator("#progress-figures")).to_contain_text("5 delivered")
    expect(page.locator('.stacked-bar [data-part="delivered"]')).to_have_attribute("style", "width: 100.0%")
    expect(page).to_have_url(re.compile(r"/broadcasts/\d+$"))

    received = simulator.received("africastalking")
    assert sorted(m["message"] for m in received) == sorted(
        f"Hello {name}, planned maintenance tomorrow 09:00-12:00." for name in names)
    assert all(m["number"].startswith("+25471100") for m in received)  # nobody in Lamu
    db.session.expire_all()
    statuses = db.session.scalars(select(Sms.status).where(Sms.company_id == company.id)).all()
    assert sorted(statuses) == ["delivered"] * 5
