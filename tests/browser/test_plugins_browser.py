"""In the browser: save a gateway's credentials (checked with the provider, here the simulator)
and enable the plugin; the secret never shows again, the sidebar gains the plugin's entry."""
import logging

import pytest
from playwright.sync_api import expect

from mpm.extensions import db
from mpm.plugins.credentials import decrypt
from mpm.plugins.gateway_settings import gateway_setting

pytestmark = pytest.mark.browser

API_KEY = "atsk_live_5f3e9c2b7a1d4e8f9a0b"


def test_save_credentials_and_enable_africastalking(page, log_in, company, admin, simulator, caplog):
    # Only the provider's address points at the simulator; the form is the real one.
    setting = gateway_setting(company.id, "africastalking")
    setting.options = {"base_url": simulator.url}
    db.session.commit()
    caplog.set_level(logging.DEBUG)

    log_in(page, admin.email)
    page.locator(".sidebar").get_by_role("link", name="Plugins", exact=True).click()
    page.locator("#plugin-list").get_by_role("link", name="Settings").first.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("AfricasTalking")
    page.get_by_label("Username").fill("mpm-operator")
    page.get_by_label("API key").fill(API_KEY)
    page.get_by_role("button", name="Save and validate").click()
    expect(page.locator("#plugin-settings [role=status]")).to_contain_text("Saved.")
    # The key is shown masked, never in full, and the input stays empty.
    expect(page.locator('[data-secret="api_key"]')).to_contain_text("9a0b")
    expect(page.locator("#field-api_key")).to_have_value("")
    assert API_KEY not in page.content()

    page.locator(".sidebar").get_by_role("link", name="Plugins", exact=True).click()
    switch = page.locator('input[data-plugin="africastalking"]')
    expect(switch).not_to_be_checked()
    switch.check()
    expect(page.locator('input[data-plugin="africastalking"]')).to_be_checked()
    expect(page.locator(".sidebar")).to_contain_text("AfricasTalking")
    page.reload()
    expect(page.locator('input[data-plugin="africastalking"]')).to_be_checked()

    db.session.expire_all()
    stored = gateway_setting(company.id, "africastalking")
    assert stored.enabled and stored.valid
    assert API_KEY not in stored.credentials_encrypted
    assert decrypt(stored.credentials_encrypted)["api_key"] == API_KEY
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "POST /plugins/africastalking/settings" in logged  # the capture did see the server's requests
    assert API_KEY not in logged
