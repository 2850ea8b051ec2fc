"""In the browser, what a new user tripped over (issue 18): the send panel follows the Primary
toggles, broadcast counts follow the audience before any text, the progress bar shows every
outcome and keeps following reports after the end, quiet hours are said before confirming, and
"No active SMS provider" is said before a message is written."""
import re
from datetime import timedelta

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from conftest import enable_gateway, make_person, run_jobs
from mpm.broadcasts import schedule
from mpm.extensions import db
from mpm.models import Broadcast, MiniGrid, PhoneNumber, Sms
from mpm.models.base import utcnow

pytestmark = pytest.mark.browser


def test_send_panel_follows_every_primary_toggle(page, log_in, company, admin):
    enable_gateway(company, "africastalking")
    jane = make_person(company, name="Jane", surname="Wanjiru", number="+254712345678")
    log_in(page, admin.email)
    page.goto(f"/customers/{jane.id}")
    destination = page.locator("#sms-destination")
    expect(destination).to_contain_text("+254 712 345678")

    page.get_by_label("New phone number").fill("0733 000 111")
    page.get_by_role("button", name="Add").click()
    expect(page.locator('input[data-number="+254733000111"]')).to_be_visible()
    expect(destination).to_contain_text("+254 712 345678")  # added, not primary: still the old one

    page.locator('input[data-number="+254733000111"]').check()
    expect(destination).to_contain_text("+254 733 000111")  # follows the toggle without a reload
    expect(destination).not_to_contain_text("712 345678")

    page.locator('input[data-number="+254733000111"]').uncheck()
    expect(destination.locator("[data-sms-cannot-receive]")).to_be_visible()  # nobody primary: no number named
    expect(destination).not_to_contain_text("+254")

    page.locator('input[data-number="+254712345678"]').check()
    expect(destination).to_contain_text("+254 712 345678")
    page.get_by_label("Message").fill("Your meter is back on.")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#sms-section [role=status]")).to_contain_text("is queued")
    db.session.expire_all()
    assert db.session.scalars(select(Sms.number)).all() == ["+254712345678"]


def test_broadcast_counts_follow_the_audience_before_any_text(page, log_in, company, admin):
    enable_gateway(company, "africastalking")
    homes = MiniGrid(company_id=company.id, name="Kisiwa")
    db.session.add(homes)
    db.session.commit()
    for n in range(3):
        make_person(company, name=f"Home{n}", surname="Ali", number=f"+25471100{n:04d}", mini_grid_id=homes.id)
    make_person(company, name="Broken", surname="Number", number="+254109675498", mini_grid_id=homes.id)
    log_in(page, admin.email)
    page.goto("/broadcasts/new")
    recipients = page.locator('#broadcast-summary [data-count="recipients"]')
    expect(recipients).to_have_text("0")
    page.get_by_label("Kisiwa").check()  # the body is still empty
    expect(recipients).to_have_text("3")
    expect(page.locator('#broadcast-summary [data-count="invalid-number"]')).to_contain_text("1 — excluded")
    page.get_by_label("Kisiwa").uncheck()
    expect(recipients).to_have_text("0")


def _broadcast_with(company, statuses: dict[str, int], state: str) -> Broadcast:
    now = utcnow()
    broadcast = Broadcast(company_id=company.id, body="Planned outage", audience={"all_customers": True},
                          state=state, recipient_count=sum(statuses.values()), confirmed_at=now, started_at=now,
                          finished_at=now, fanout_finished_at=now, expires_at=now + timedelta(hours=24))
    db.session.add(broadcast)
    db.session.flush()
    n = 0
    for state_name, count in statuses.items():
        for _ in range(count):
            db.session.add(Sms(company_id=company.id, number=f"+25471200{n:04d}", body="Planned outage",
                               status=state_name, trigger="broadcast", broadcast_id=broadcast.id, lane="bulk",
                               gateway="africastalking"))
            n += 1
    db.session.commit()
    return broadcast


def test_cancelled_broadcast_shows_every_outcome_and_follows_late_reports(page, log_in, company, admin):
    broadcast = _broadcast_with(company, {"delivered": 2, "sent": 1, "failed": 1, "cancelled": 6}, "cancelled")
    log_in(page, admin.email)
    page.goto(f"/broadcasts/{broadcast.id}")
    bar = page.locator(".stacked-bar")
    expect(bar.locator('[data-part="delivered"]')).to_have_attribute("style", "width: 20.0%")
    expect(bar.locator('[data-part="sent"]')).to_have_attribute("style", "width: 10.0%")
    expect(bar.locator('[data-part="failed"]')).to_have_attribute("style", "width: 10.0%")
    expect(bar.locator('[data-part="cancelled"]')).to_have_attribute("style", "width: 60.0%")
    figures = page.locator("#progress-figures")
    expect(figures).to_contain_text("2 delivered")
    expect(figures).to_contain_text("6 cancelled")
    expect(figures).not_to_contain_text("100")  # no "10 of 10 done (100 %)" for a cancelled broadcast
    expect(page.locator("#broadcast-progress")).to_have_attribute("data-polling", "yes")
    expect(page.locator("#finished-note")).to_contain_text("1 still await a delivery report; this page updates")

    # The last report arrives after the end: the page follows it without a reload, then stops polling.
    late = db.session.scalar(select(Sms).where(Sms.broadcast_id == broadcast.id, Sms.status == "sent"))
    late.status = "delivered"
    db.session.commit()
    expect(figures).to_contain_text("3 delivered", timeout=20_000)
    expect(page.locator("#broadcast-progress")).to_have_attribute("data-polling", "no")
    expect(bar.locator('[data-part="sent"]')).to_have_count(0)


def test_quiet_hours_are_said_before_confirming_and_the_broadcast_shows_waiting(app, page, log_in, company, admin):
    enable_gateway(company, "africastalking")
    grid = MiniGrid(company_id=company.id, name="Ziwa")
    db.session.add(grid)
    db.session.commit()
    make_person(company, name="Amina", surname="Ali", number="+254711000001", mini_grid_id=grid.id)
    local_now = schedule.as_utc(utcnow()).astimezone(schedule.zone(company.time_zone))
    start, end = (local_now - timedelta(hours=1)).strftime("%H:%M"), (local_now + timedelta(hours=2)).strftime("%H:%M")

    log_in(page, admin.email)
    page.goto("/broadcasts/new")
    page.get_by_label("Ziwa").check()
    page.get_by_label("Body").fill("Power back at noon.")
    page.get_by_label("Send nothing between").check()
    page.get_by_label("Quiet hours start").fill(start)
    page.get_by_label("Quiet hours end").fill(end)
    page.get_by_role("button", name="Continue to confirmation").click()

    expect(page.get_by_role("heading", level=1)).to_contain_text("Confirm broadcast")
    when = page.locator("#confirm-when")
    expect(when).to_contain_text(f"will start at {end} EAT")
    expect(when).not_to_contain_text("as soon as you confirm")

    page.get_by_role("button", name=re.compile(r"Send now to 1 person")).click()
    expect(page).to_have_url(re.compile(r"/broadcasts/\d+$"))
    run_jobs(app)  # the fan-out sees the quiet hours and waits for their end
    page.reload()
    expect(page.locator("#broadcast-progress h2 .status")).to_have_text("waiting")
    expect(page.locator("#quiet-wait")).to_contain_text("sending starts at")
    expect(page.locator("#quiet-wait")).to_contain_text(f"{end} EAT")
    db.session.expire_all()
    assert db.session.scalars(select(Sms.id)).all() == []  # nothing handed out in the quiet hours


def test_no_provider_guidance_is_shown_before_writing(page, log_in, company, admin):
    jane = make_person(company, name="Jane", surname="Wanjiru", number="+254712345678")
    log_in(page, admin.email)
    for url in ("/sms/new", "/broadcasts/new", f"/customers/{jane.id}"):
        page.goto(url)
        warning = page.locator("[data-no-provider]")
        expect(warning).to_contain_text("No active SMS provider")
        expect(warning.get_by_role("link", name=re.compile("Settings"))).to_have_attribute("href", "/plugins/")
    page.goto("/broadcasts/new")
    page.locator("[data-no-provider]").get_by_role("link").click()
    expect(page).to_have_url(re.compile(r"/plugins/$"))
    enable_gateway(company, "africastalking")
    page.goto("/sms/new")
    expect(page.locator("[data-no-provider]")).to_have_count(0)
    db.session.expire_all()
    assert db.session.scalar(select(PhoneNumber.valid).where(PhoneNumber.person_id == jane.id)) is True


def test_history_is_a_dense_console(page, log_in, company, admin):
    jane = make_person(company, name="Jane", surname="Wanjiru", number="+254712345678")
    long_body = "Planned maintenance on the Kisiwa feeder: power will be off from 09:00 to 13:00 on Saturday. " * 3
    for state, body in (("queued", "Token 1"), ("sending", "Token 2"), ("delivered", long_body), ("failed", "Token 4")):
        db.session.add(Sms(company_id=company.id, person_id=jane.id, number="+254712345678", body=body,
                           status=state, gateway="africastalking" if state != "queued" else None))
    db.session.commit()
    log_in(page, admin.email)
    page.goto("/sms/")
    expect(page.locator("#sms-total")).to_have_text("4 messages")

    # The filter bar is one line, its button sized to its text.
    tops = page.locator("form.filters > *").evaluate_all("els => els.map(e => Math.round(e.getBoundingClientRect().top))")
    assert max(tops) - min(tops) <= 8, tops
    button = page.locator("form.filters button").bounding_box()
    content = page.locator("main.content").bounding_box()
    assert button["width"] < 120 and button["x"] + button["width"] <= content["x"] + content["width"]

    # One line per message, the long body cut short.
    heights = page.locator("#sms-table tbody tr").evaluate_all("rows => rows.map(r => r.getBoundingClientRect().height)")
    assert len(heights) == 4 and max(heights) < 45, heights
    body_cell = page.locator("#sms-table tbody tr .sms-body-cell").nth(1)
    assert body_cell.evaluate("c => c.scrollWidth > c.clientWidth || c.textContent.trim().endsWith('...')")
    expect(page.locator("#sms-table tbody")).to_contain_text("AfricasTalking")

    colour = "e => getComputedStyle(e).backgroundColor"
    queued = page.locator("#sms-table .status-queued").evaluate(colour)
    sending = page.locator("#sms-table .status-sending").evaluate(colour)
    assert queued != sending
