"""In the browser: an admin adds a manager, the manager chooses a password with the one-time link,
logs in, sends an SMS and cannot open Settings → Plugins."""
import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from conftest import enable_gateway, make_person
from mpm.extensions import db
from mpm.models import Sms, User

pytestmark = [pytest.mark.browser]

MANAGER_PASSWORD = "Kisiwa-grid-2026"


def test_admin_adds_a_manager_who_sets_a_password_logs_in_and_sends_an_sms(browser, live_server, page, log_in,
                                                                             company, admin):
    enable_gateway(company, "africastalking")
    jane = make_person(company, name="Jane", surname="Wanjiru", number="+254712345678")

    log_in(page, admin.email)
    page.locator(".sidebar").get_by_role("link", name="Staff", exact=True).click()
    expect(page.get_by_role("heading", name="Settings → Staff")).to_be_visible()
    form = page.locator("#add-user")
    form.get_by_label("Name").fill("Neema Otieno")
    form.get_by_label("E-mail").fill("neema@example.test")
    form.get_by_label("Role").select_option("manager")
    form.get_by_role("button", name="Add user").click()
    expect(page.locator("#issued-link")).to_contain_text("works once")
    link = page.locator("#set-password-link").inner_text().strip()
    assert link.startswith(live_server + "/set-password?token=")
    expect(page.locator("#staff")).to_contain_text("neema@example.test")
    expect(page.locator("#staff")).to_contain_text("invited")

    # The manager, on another computer.
    context = browser.new_context(base_url=live_server, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    manager = context.new_page()
    try:
        manager.goto(link)
        expect(manager.get_by_role("heading", name="Choose your password")).to_be_visible()
        manager.get_by_label("New password", exact=True).fill(MANAGER_PASSWORD)
        manager.get_by_label("New password again").fill(MANAGER_PASSWORD)
        manager.get_by_role("button", name="Set password").click()
        expect(manager).to_have_url(re.compile(r"/login$"))
        expect(manager.locator("main")).to_contain_text("Your password is set")

        manager.get_by_label("Email").fill("neema@example.test")
        manager.get_by_label("Password").fill(MANAGER_PASSWORD)
        manager.get_by_role("button", name="Log in").click()
        manager.wait_for_url(re.compile(r"/$"))
        expect(manager.locator(".sidebar")).to_contain_text("neema@example.test · manager")
        expect(manager.locator(".sidebar").get_by_role("link", name="Plugins", exact=True)).to_have_count(0)
        expect(manager.locator(".sidebar").get_by_role("link", name="Staff", exact=True)).to_have_count(0)

        manager.goto(f"/customers/{jane.id}")
        manager.locator("#sms-body").fill("Your meter is fixed")
        manager.locator("#sms-section").get_by_role("button", name="Send").click()
        expect(manager.locator("#sms-section [role=status]")).to_contain_text("is queued")

        refused = manager.goto("/plugins/")
        assert refused.status == 403
        expect(manager.locator("main")).not_to_contain_text("AfricasTalking →")
    finally:
        context.close()

    db.session.expire_all()
    neema = db.session.scalar(select(User).where(User.email == "neema@example.test"))
    sms = db.session.scalar(select(Sms))
    assert (sms.person_id, sms.body, sms.sender_user_id, sms.status) == (jane.id, "Your meter is fixed", neema.id,
                                                                         "queued")
    page.goto("/settings/staff/")
    expect(page.locator(f"#user-{neema.id}")).to_contain_text("active")
    expect(page.locator("#staff-changes")).to_contain_text("neema@example.test set a password with a link")
