"""In the browser: log in, find a customer by search, switch which number is primary."""
import re

import pytest
from playwright.sync_api import expect

from conftest import make_person
from mpm.extensions import db
from mpm.models import PhoneNumber

pytestmark = pytest.mark.browser


def test_find_a_customer_and_move_the_primary_toggle(page, log_in, company, admin):
    make_person(company, name="Peter", surname="Otieno", number="+254700000001")
    make_person(company, name="Grace", surname="Achieng", number="+254700000002")
    jane = make_person(company, name="Jane", surname="Wanjiru", number="+254712345678")
    second = PhoneNumber(company_id=company.id, person_id=jane.id, e164="+254733000111", is_primary=False)
    db.session.add(second)
    db.session.commit()

    log_in(page, admin.email)
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    page.get_by_role("link", name="Customers").click()
    rows = page.locator("#people-table tbody tr")
    expect(rows).to_have_count(3)

    # Typing filters the table through htmx, and the URL follows so a reload shows the same list.
    page.get_by_label("Search by name or phone").fill("wanji")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Jane Wanjiru")
    expect(page).to_have_url(re.compile(r"q=wanji"))

    page.get_by_role("link", name="Jane Wanjiru").click()
    expect(page.get_by_role("heading", name="Jane Wanjiru")).to_be_visible()
    first_switch = page.locator('input[data-number="+254712345678"]')
    second_switch = page.locator('input[data-number="+254733000111"]')
    expect(first_switch).to_be_checked()
    expect(second_switch).not_to_be_checked()

    second_switch.check()
    # The numbers card is swapped in place: the new number is primary, the old one no longer.
    expect(page.locator('input[data-number="+254733000111"]')).to_be_checked()
    expect(page.locator('input[data-number="+254712345678"]')).not_to_be_checked()

    page.reload()
    expect(page.locator('input[data-number="+254733000111"]')).to_be_checked()
    expect(page.locator('input[data-number="+254712345678"]')).not_to_be_checked()
    db.session.expire_all()
    assert db.session.get(PhoneNumber, second.id).is_primary is True


def test_a_wrong_number_shows_a_clear_message_and_adds_nothing(page, log_in, company, admin):
    jane = make_person(company, name="Jane", surname="Wanjiru", number="+254712345678")
    log_in(page, admin.email)
    page.goto(f"/customers/{jane.id}")
    page.get_by_label("New phone number").fill("12ab")
    page.get_by_role("button", name="Add").click()
    expect(page.locator("#number-error")).to_be_visible()
    expect(page.locator("#phone-numbers tbody tr")).to_have_count(1)
    page.get_by_label("New phone number").fill("0722 000 333")
    page.get_by_role("button", name="Add").click()
    expect(page.locator("#phone-numbers tbody tr")).to_have_count(2)
    expect(page.locator('input[data-number="+254722000333"]')).not_to_be_checked()

