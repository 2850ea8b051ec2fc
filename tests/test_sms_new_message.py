"""The New message page: pick people by search, write, send to everyone who can receive SMS."""
import re

import pytest
from sqlalchemy import func, select

from conftest import csrf_token, enable_gateway, make_company, make_person
from mpm.extensions import db
from mpm.models import Sms
from mpm.queue import HIGH, queue

HX = {"HX-Request": "true"}


@pytest.fixture
def people(company):
    return {
        "customer": make_person(company, "Amina", "Otieno", "+254712000011"),
        "agent": make_person(company, "Daudi", "Kiprono", "+254712000022", kind="agent"),
        "provider": make_person(company, "Esther", "Fundi", "+254712000033", kind="service_provider"),
        "no_primary": make_person(company, "Faraji", "Otieno", "+254712000044", primary=False),
    }


def sms_count() -> int:
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(Sms))


def post(client, ids, body, headers=HX):
    return client.post("/sms/new", data={"person_id": [str(i) for i in ids], "body": body,
                                         "csrf_token": csrf_token(client)}, headers=headers)


def test_search_finds_customers_agents_and_service_providers(logged_in, people):
    by_name = logged_in.get("/sms/new/search?q=otieno", headers=HX).get_data(as_text=True)
    assert by_name.lstrip().startswith('<div id="search-results">')
    assert "Amina Otieno" in by_name and "Faraji Otieno" in by_name and "no primary number" in by_name
    assert "Daudi Kiprono" in logged_in.get("/sms/new/search?q=daudi", headers=HX).get_data(as_text=True)
    by_number = logged_in.get("/sms/new/search?q=0712 000 033", headers=HX).get_data(as_text=True)
    assert "Esther Fundi" in by_number and "service provider" in by_number
    assert "Nobody matches" in logged_in.get("/sms/new/search?q=zzz", headers=HX).get_data(as_text=True)
    # Opened directly (a reload): the whole page with the same results.
    page = logged_in.get("/sms/new/search?q=daudi", follow_redirects=True).get_data(as_text=True)
    assert "<html" in page and "Daudi Kiprono" in page


def test_adding_recipients_shows_their_number_or_why_they_get_none(logged_in, people):
    amina, faraji = people["customer"].id, people["no_primary"].id
    first = logged_in.get(f"/sms/new/recipients?add={amina}", headers=HX).get_data(as_text=True)
    assert first.lstrip().startswith('<ul id="recipients"')
    assert f'name="person_id" value="{amina}"' in first and "+254 712 000011" in first
    both = logged_in.get(f"/sms/new/recipients?person_id={amina}&add={faraji}&add={amina}",
                         headers=HX).get_data(as_text=True)
    assert re.findall(r'name="person_id" value="(\d+)"', both) == [str(amina), str(faraji)]  # once each
    assert "Faraji Otieno has no number with the Primary toggle on" in both


def test_plain_page_without_javascript_carries_picks_and_search_in_the_url(logged_in, people):
    amina, daudi = people["customer"].id, people["agent"].id
    page = logged_in.get(f"/sms/new?person_id={amina}&q=daudi").get_data(as_text=True)
    assert "<html" in page and "New message" in page
    add_link = re.search(r'<a href="([^"]+)" role="button"[^>]*data-add="%d"' % daudi, page).group(1)
    page = logged_in.get(add_link.replace("&amp;", "&")).get_data(as_text=True)
    recipients = page[page.index('<ul id="recipients"'):]
    assert re.findall(r'name="person_id" value="(\d+)"', recipients) == [str(amina), str(daudi)]


def test_send_queues_for_the_reachable_and_lists_the_others_with_the_reason(logged_in, company, people):
    enable_gateway(company, "africastalking")
    ids = [p.id for p in people.values()]
    response = post(logged_in, ids, "Meeting at the powerhouse on Monday")
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert text.lstrip().startswith('<section id="compose">')
    assert "3 messages queued." in text
    assert "Not sent to 1 person who cannot receive SMS" in text
    assert "Faraji Otieno</a>: Faraji Otieno has no number with the Primary toggle on" in text
    assert re.search(r"<textarea[^>]*></textarea>", text)  # ready for the next message
    db.session.expire_all()
    rows = db.session.scalars(select(Sms).order_by(Sms.id)).all()
    assert [(s.person_id, s.number, s.status, s.trigger) for s in rows] == [
        (people["customer"].id, "+254712000011", "queued", "manual"),
        (people["agent"].id, "+254712000022", "queued", "manual"),
        (people["provider"].id, "+254712000033", "queued", "manual"),
    ]
    assert len(queue(HIGH)) == 1  # one batch job for the three


@pytest.mark.parametrize("case,expected", [
    ("nobody", "Choose at least one recipient"),
    ("only_unreachable", "None of the chosen people can receive SMS"),
    ("empty_body", "body is empty"),
    ("too_long", "segments long"),
    ("no_gateway", "No active SMS provider"),
])
def test_refusals_store_nothing_and_keep_what_was_typed(logged_in, company, people, case, expected):
    if case != "no_gateway":
        enable_gateway(company, "africastalking")
    ids = {"nobody": [], "only_unreachable": [people["no_primary"].id]}.get(case, [people["customer"].id])
    body = {"empty_body": "  ", "too_long": "é" * 1000}.get(case, "Hello 😀")
    response = post(logged_in, ids, body)
    assert response.status_code == 422
    text = response.get_data(as_text=True)
    error = re.search(r'<p id="compose-error" class="error" role="alert">(.*?)</p>', text, re.S).group(1)
    assert expected in error
    if case == "no_gateway":
        assert "Settings → Plugins" in error
    if body.strip():
        assert f">{body}</textarea>" in text
    for person_id in ids:
        assert f'name="person_id" value="{person_id}"' in text
    assert sms_count() == 0


def test_plain_post_renders_the_page_with_the_result(logged_in, company, people):
    enable_gateway(company, "africastalking")
    response = post(logged_in, [people["agent"].id], "Please visit Kisiwa", headers={})
    text = response.get_data(as_text=True)
    assert response.status_code == 200 and "<html" in text and "1 message queued." in text


def test_another_companys_people_are_never_recipients(logged_in, company, people):
    enable_gateway(company, "africastalking")
    stranger = make_person(make_company("Other"), "Other", "Person", "+254712999999")
    assert "Other Person" not in logged_in.get("/sms/new/search?q=other", headers=HX).get_data(as_text=True)
    assert "Other Person" not in logged_in.get(f"/sms/new/recipients?add={stranger.id}", headers=HX).get_data(as_text=True)
    response = post(logged_in, [stranger.id], "Hello")
    assert response.status_code == 422 and "Choose at least one recipient" in response.get_data(as_text=True)
    post(logged_in, [stranger.id, people["customer"].id], "Hello")
    db.session.expire_all()
    assert db.session.scalars(select(Sms.number)).all() == ["+254712000011"]
