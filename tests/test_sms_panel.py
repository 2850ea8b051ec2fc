"""The Send SMS panel on the customer page and the person's SMS history under it."""
import re

import pytest
from sqlalchemy import func, select

from conftest import csrf_token, enable_gateway, make_person
from mpm.extensions import db
from mpm.messaging import ledger, status
from mpm.models import GatewaySetting, Sms, SmsEvent

HX = {"HX-Request": "true"}


def sms_count() -> int:
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(Sms))


def send(client, person, body, headers=HX):
    return client.post(f"/sms/people/{person.id}/send", data={"body": body, "csrf_token": csrf_token(client)},
                       headers=headers)


@pytest.fixture
def jane(company):
    return make_person(company, "Jane", "Wanjiru", "+254712345678")


def test_panel_shows_the_number_the_sms_goes_to_and_a_live_counter(logged_in, company, jane):
    page = logged_in.get(f"/customers/{jane.id}").get_data(as_text=True)
    assert "Send SMS" in page
    assert "Goes to <strong data-sms-number>+254 712 345678</strong>" in page
    assert 'data-sms-counter="sms-counter"' in page and 'id="sms-counter"' in page
    assert "sms-counter.js" in page
    assert "No SMS to or from Jane Wanjiru yet." in page


def test_send_puts_the_message_on_top_of_the_history_as_queued(logged_in, company, jane):
    enable_gateway(company, "africastalking")
    older = Sms(company_id=company.id, person_id=jane.id, number="+254712345678", body="Older message",
                status="delivered", gateway="africastalking")
    db.session.add(older)
    db.session.commit()
    response = send(logged_in, jane, "Your token is 1234-5678")
    assert response.status_code == 200
    fragment = response.get_data(as_text=True)
    assert fragment.lstrip().startswith('<section id="sms-section">')
    assert "<html" not in fragment
    rows = re.findall(r'<tr id="sms-row-(\d+)">(.*?)</tr>', fragment, re.S)
    assert "Your token is 1234-5678" in rows[0][1] and "status-queued" in rows[0][1]
    assert "Older message" in rows[1][1]
    # The form is empty again and the history polls while the new row is in flight.
    assert re.search(r'<textarea[^>]*name="body"[^>]*></textarea>', fragment)
    assert 'hx-trigger="every 3s"' in fragment
    db.session.expire_all()
    sms = db.session.get(Sms, int(rows[0][0]))
    assert (sms.status, sms.person_id, sms.number, sms.trigger, sms.direction) == (
        "queued", jane.id, "+254712345678", "manual", "outbound")


def test_plain_form_post_redirects_back_to_the_customer_page(logged_in, company, jane):
    enable_gateway(company, "africastalking")
    response = send(logged_in, jane, "Hello without JavaScript", headers={})
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/customers/{jane.id}#sms-section")
    page = logged_in.get(f"/customers/{jane.id}").get_data(as_text=True)
    assert "is queued for Jane Wanjiru" in page and "Hello without JavaScript" in page


def refusal(response) -> str:
    assert response.status_code == 422
    text = response.get_data(as_text=True)
    return re.search(r'<p id="sms-error" class="error" role="alert">(.*?)</p>', text, re.S).group(1)


def test_refuses_a_customer_without_the_primary_toggle(logged_in, company):
    enable_gateway(company, "africastalking")
    person = make_person(company, "Juma", "Hassan", "+254712000001", primary=False)
    page = logged_in.get(f"/customers/{person.id}").get_data(as_text=True)
    assert "no number with the Primary toggle on" in page  # said before anyone types
    message = refusal(send(logged_in, person, "Hello"))
    assert "no number with the Primary toggle on" in message and "Turn Primary on" in message
    assert sms_count() == 0


def test_refuses_a_customer_without_a_valid_number(logged_in, company):
    enable_gateway(company, "africastalking")
    person = make_person(company, "Bad", "Number", "+2541234")
    message = refusal(send(logged_in, person, "Hello"))
    assert "is not a valid phone number" in message
    person_without = make_person(company, "No", "Number", number=None)
    assert "Primary toggle" in refusal(send(logged_in, person_without, "Hello"))
    assert sms_count() == 0


def test_refuses_an_empty_body_and_keeps_the_panel(logged_in, company, jane):
    enable_gateway(company, "africastalking")
    response = send(logged_in, jane, "   ")
    assert "body is empty" in refusal(response)
    assert response.get_data(as_text=True).lstrip().startswith('<section id="sms-section">')
    assert sms_count() == 0


def test_refuses_a_body_above_the_maximum_segments_and_keeps_the_text(app, logged_in, company, jane):
    enable_gateway(company, "africastalking")
    app.config["SMS_MAX_SEGMENTS"] = 2
    body = "x" * 307  # 3 GSM-7 segments
    response = send(logged_in, jane, body)
    assert "3 SMS segments long" in refusal(response) and "at most 2" in refusal(response)
    assert f">{body}</textarea>" in response.get_data(as_text=True)
    assert sms_count() == 0


def test_refuses_when_no_gateway_is_active_and_links_to_plugins(logged_in, company, jane):
    db.session.add(GatewaySetting(company_id=company.id, gateway="textbee", enabled=True, valid=False,
                                  callback_secret="x"))
    db.session.commit()
    message = refusal(send(logged_in, jane, "Hello"))
    assert "No active SMS provider" in message
    assert re.search(r'<a href="/plugins/?">Settings → Plugins</a>', message)
    assert sms_count() == 0
    assert db.session.scalar(select(func.count()).select_from(SmsEvent)) == 0


def test_plain_refusal_renders_the_whole_customer_page_with_the_reason(logged_in, company, jane):
    response = send(logged_in, jane, "Hello", headers={})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "<html" in page and "Jane Wanjiru" in page and "No active SMS provider" in page


def test_history_shows_both_directions_with_status_gateway_and_error(logged_in, company, jane):
    db.session.add_all([
        Sms(company_id=company.id, person_id=jane.id, number=jane.primary_number.e164, body="Out one",
            status="failed", gateway="textbee", error="Blacklisted number"),
        Sms(company_id=company.id, person_id=jane.id, number=jane.primary_number.e164, body="Thanks!",
            direction="inbound", status="received", gateway="africastalking", trigger="reply"),
    ])
    db.session.commit()
    page = logged_in.get(f"/customers/{jane.id}").get_data(as_text=True)
    history = page[page.index('id="person-sms-history"'):]
    assert history.index("Thanks!") < history.index("Out one")  # newest first
    assert "↓ received" in history and "↑ sent" in history
    assert "Blacklisted number" in history and "TextBee" in history
    assert 'status status-failed' in history and 'status status-received' in history
    assert "hx-trigger" not in history[:300]  # nothing in flight: no polling


def test_polling_fragment_shows_delivered_and_then_stops_polling(logged_in, company, jane):
    enable_gateway(company, "africastalking")
    send(logged_in, jane, "Track me")
    db.session.expire_all()
    sms = db.session.scalar(select(Sms))
    url = f"/sms/people/{jane.id}/history"
    first = logged_in.get(url, headers=HX).get_data(as_text=True)
    assert first.lstrip().startswith('<div id="person-sms-history"')
    assert 'hx-trigger="every 3s"' in first and "status-queued" in first
    ledger.move(sms.company_id, [sms.id], status.SENT, "accepted", gateway="africastalking")
    db.session.commit()
    second = logged_in.get(url, headers=HX).get_data(as_text=True)
    assert "status-sent" in second and 'hx-trigger="every 3s"' in second
    ledger.move(sms.company_id, [sms.id], status.DELIVERED, "DeliveryReport Success", gateway="africastalking",
                kind="callback")
    db.session.commit()
    third = logged_in.get(url, headers=HX).get_data(as_text=True)
    assert "status-delivered" in third
    assert "hx-trigger" not in third and "hx-get" not in third


def test_plain_request_for_the_history_fragment_gets_the_whole_page(logged_in, company, jane):
    page = logged_in.get(f"/sms/people/{jane.id}/history").get_data(as_text=True)
    assert "<html" in page and 'id="sms-section"' in page


def test_another_companys_person_cannot_be_messaged(logged_in, company):
    from conftest import make_company

    enable_gateway(company, "africastalking")
    other = make_company("Other")
    stranger = make_person(other, "Other", "Person", "+254712999999")
    assert send(logged_in, stranger, "Hello").status_code == 404
    assert logged_in.get(f"/sms/people/{stranger.id}/history").status_code == 404
    assert sms_count() == 0


def test_send_needs_the_csrf_token(logged_in, company, jane):
    enable_gateway(company, "africastalking")
    response = logged_in.post(f"/sms/people/{jane.id}/send", data={"body": "Hello"}, headers=HX)
    assert response.status_code == 400
    assert sms_count() == 0
