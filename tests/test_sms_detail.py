"""One message: its facts, the timeline of its events, and resending a failed one."""
import re

import pytest
from sqlalchemy import func, select

from conftest import csrf_token, enable_gateway, make_person
from mpm.extensions import db
from mpm.messaging import ledger, status
from mpm.models import PhoneNumber, Sms, SmsEvent
from mpm.queue import HIGH, queue

HX = {"HX-Request": "true"}


@pytest.fixture
def failed_sms(company):
    person = make_person(company, "Jane", "Wanjiru", "+254712345678")
    sms = Sms(company_id=company.id, person_id=person.id, number="+254712345678", body="Karibu 😀 token 1234",
              encoding="UCS-2", segments=1, status="queued", cost="KES 0.8000")
    db.session.add(sms)
    db.session.flush()
    ledger.note(sms.company_id, sms.id, "queued (manual)", kind="status", new_status=status.QUEUED)
    ledger.move(sms.company_id, [sms.id], status.SENDING, "batch of 1")
    ledger.note(sms.company_id, sms.id, "HTTP 500 Internal Server Error", kind="attempt", gateway="africastalking")
    ledger.note(sms.company_id, sms.id, "Status: InvalidPhoneNumber (403)", kind="attempt", gateway="textbee")
    ledger.move(sms.company_id, [sms.id], status.FAILED, "textbee: InvalidPhoneNumber", gateway="textbee")
    db.session.commit()
    return sms


def test_detail_shows_body_recipient_encoding_cost_and_the_timeline(logged_in, failed_sms):
    page = logged_in.get(f"/sms/{failed_sms.id}").get_data(as_text=True)
    assert "<html" in page and f"Message #{failed_sms.id}" in page
    assert "Karibu 😀 token 1234" in page and "Jane Wanjiru" in page and "+254 712 345678" in page
    assert "<dt>Encoding</dt><dd>UCS-2</dd>" in page
    assert "1 SMS (19 characters, 20 UTF-16 units)" in page
    assert "KES 0.8000" in page
    assert "textbee: InvalidPhoneNumber" in page
    timeline = page[page.index("<h2>Timeline</h2>"):]
    details = re.findall(r'<tr class="event-(\w+)">.*?<td>([^<]*)</td>\s*</tr>', timeline, re.S)
    assert details == [
        ("status", "queued (manual)"), ("status", "batch of 1"),
        ("attempt", "HTTP 500 Internal Server Error"), ("attempt", "Status: InvalidPhoneNumber (403)"),
        ("status", "textbee: InvalidPhoneNumber"),
    ]
    assert "Resend</button>" in page
    assert 'hx-trigger="every 3s"' not in page  # final: no polling


def test_detail_polls_while_in_flight_and_htmx_gets_the_fragment(logged_in, company):
    sms = Sms(company_id=company.id, number="+254712345678", body="On its way", status="sent")
    db.session.add(sms)
    db.session.commit()
    fragment = logged_in.get(f"/sms/{sms.id}", headers=HX).get_data(as_text=True)
    assert fragment.lstrip().startswith('<div id="sms-detail"') and 'hx-trigger="every 3s"' in fragment
    assert "Resend</button>" not in fragment  # only failed or expired messages are resent
    ledger.move(sms.company_id, [sms.id], status.DELIVERED, "delivered", gateway="africastalking", kind="callback")
    db.session.commit()
    fragment = logged_in.get(f"/sms/{sms.id}", headers=HX).get_data(as_text=True)
    assert "status-delivered" in fragment and "hx-trigger" not in fragment


def test_times_are_shown_in_the_company_time_zone(logged_in, company):
    from datetime import datetime, timezone

    sms = Sms(company_id=company.id, number="+254712345678", body="x", status="delivered",
              created_at=datetime(2026, 6, 30, 22, 15, tzinfo=timezone.utc))
    db.session.add(sms)
    db.session.commit()
    assert "2026-07-01 01:15:00" in logged_in.get(f"/sms/{sms.id}").get_data(as_text=True)
    company.time_zone = "Africa/Lagos"  # UTC+1
    db.session.commit()
    assert "2026-06-30 23:15:00" in logged_in.get(f"/sms/{sms.id}").get_data(as_text=True)


def test_resend_queues_a_new_message_linked_both_ways(logged_in, company, failed_sms):
    enable_gateway(company, "africastalking")
    response = logged_in.post(f"/sms/{failed_sms.id}/resend", data={"csrf_token": csrf_token(logged_in)})
    assert response.status_code == 302
    db.session.expire_all()
    new = db.session.scalar(select(Sms).where(Sms.id != failed_sms.id))
    assert response.headers["Location"].endswith(f"/sms/{new.id}")
    assert (new.status, new.trigger, new.trigger_id, new.body, new.number, new.person_id) == (
        "queued", "resend", failed_sms.id, failed_sms.body, "+254712345678", failed_sms.person_id)
    assert db.session.get(Sms, failed_sms.id).status == "failed"  # the original keeps its history
    assert len(queue(HIGH)) == 1
    new_page = logged_in.get(f"/sms/{new.id}").get_data(as_text=True)
    assert f"Resend of <a href=\"/sms/{failed_sms.id}\">message #{failed_sms.id}</a>" in new_page
    assert f"resend of message #{failed_sms.id}" in new_page
    assert "<dt>Sent by</dt><dd>Admin (admin-" in new_page  # who pressed Resend
    old_page = logged_in.get(f"/sms/{failed_sms.id}").get_data(as_text=True)
    assert f"Resent as <a href=\"/sms/{new.id}\">message #{new.id}</a>" in old_page
    assert f"resent as message #{new.id}" in old_page


def test_resend_twice_gives_back_the_first_resend(logged_in, company, failed_sms):
    enable_gateway(company, "africastalking")
    token = csrf_token(logged_in)
    first = logged_in.post(f"/sms/{failed_sms.id}/resend", data={"csrf_token": token})
    second = logged_in.post(f"/sms/{failed_sms.id}/resend", data={"csrf_token": token})
    assert first.headers["Location"] == second.headers["Location"]
    db.session.expire_all()
    assert db.session.scalar(select(func.count()).select_from(Sms)) == 2


def test_resend_goes_to_the_corrected_primary_number(logged_in, company, failed_sms):
    enable_gateway(company, "africastalking")
    person = failed_sms.person
    person.phone_numbers[0].is_primary = False
    db.session.flush()
    person.phone_numbers.append(PhoneNumber(company_id=company.id, e164="+254733111222", is_primary=True))
    db.session.commit()
    logged_in.post(f"/sms/{failed_sms.id}/resend", data={"csrf_token": csrf_token(logged_in)})
    db.session.expire_all()
    assert db.session.scalar(select(Sms.number).where(Sms.trigger == "resend")) == "+254733111222"


def test_resend_refusals_store_nothing(logged_in, company, failed_sms):
    token = csrf_token(logged_in)
    # No gateway active.
    response = logged_in.post(f"/sms/{failed_sms.id}/resend", data={"csrf_token": token})
    assert response.status_code == 422
    assert "No active SMS provider" in response.get_data(as_text=True)
    # The person lost the Primary toggle since.
    enable_gateway(company, "africastalking")
    failed_sms.person.phone_numbers[0].is_primary = False
    db.session.commit()
    response = logged_in.post(f"/sms/{failed_sms.id}/resend", data={"csrf_token": token})
    assert response.status_code == 422 and "Primary toggle" in response.get_data(as_text=True)
    # A delivered message is not resent.
    delivered = Sms(company_id=company.id, number="+254712345678", body="ok", status="delivered")
    db.session.add(delivered)
    db.session.commit()
    response = logged_in.post(f"/sms/{delivered.id}/resend", data={"csrf_token": token})
    assert response.status_code == 422 and "Only a failed or expired message" in response.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.scalar(select(func.count()).select_from(Sms)) == 2
    assert db.session.scalar(select(func.count()).select_from(SmsEvent).where(SmsEvent.kind == "note")) == 0
    assert len(queue(HIGH)) == 0


def test_another_companys_message_is_a_404_for_detail_and_resend(logged_in, app_ctx):
    from conftest import make_company

    other = make_company("Other")
    theirs = Sms(company_id=other.id, number="+254712345678", body="theirs", status="failed")
    db.session.add(theirs)
    db.session.commit()
    assert logged_in.get(f"/sms/{theirs.id}").status_code == 404
    assert logged_in.post(f"/sms/{theirs.id}/resend", data={"csrf_token": csrf_token(logged_in)}).status_code == 404
    assert logged_in.get("/sms/999999").status_code == 404


def test_a_received_message_shows_its_sender_and_cannot_be_resent(logged_in, company):
    person = make_person(company, "Juma", "Hassan", "+254712000001")
    sms = Sms(company_id=company.id, person_id=person.id, number="+254712000001", body="STOP",
              direction="inbound", status="received", gateway="africastalking", trigger="reply")
    db.session.add(sms)
    db.session.commit()
    page = logged_in.get(f"/sms/{sms.id}").get_data(as_text=True)
    assert "Received from" in page and "Juma Hassan" in page and "Resend</button>" not in page
    response = logged_in.post(f"/sms/{sms.id}/resend", data={"csrf_token": csrf_token(logged_in)})
    assert response.status_code == 422 and "this one was received" in response.get_data(as_text=True)
