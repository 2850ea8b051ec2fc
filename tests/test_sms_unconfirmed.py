"""`unconfirmed` on screen: a status of its own in the history filter with its own badge, a detail page
that says what it means, and a resend once the wait for a report is over."""
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select

from conftest import csrf_token, enable_gateway, make_person
from mpm.extensions import db
from mpm.messaging import status
from mpm.models import Sms
from mpm.models.base import utcnow

HX = {"HX-Request": "true"}


def _unconfirmed(company, report_due_at, person=None, body="Your token 1234") -> Sms:
    sms = Sms(company_id=company.id, person_id=person.id if person else None, number="+254712345678", body=body,
              status=status.UNCONFIRMED, gateway="africastalking", report_due_at=report_due_at)
    db.session.add(sms)
    db.session.commit()
    return sms


def test_history_filters_unconfirmed_and_shows_its_own_badge(logged_in, company):
    waiting = _unconfirmed(company, utcnow() + timedelta(minutes=20), body="maybe sent")
    db.session.add(Sms(company_id=company.id, number="+254712345679", body="surely sent", status=status.SENT))
    db.session.commit()
    page = logged_in.get("/sms/").get_data(as_text=True)
    assert '<option value="unconfirmed">unconfirmed</option>' in page
    filtered = logged_in.get("/sms/?status=unconfirmed").get_data(as_text=True)
    assert "maybe sent" in filtered and "surely sent" not in filtered
    assert f'href="/sms/{waiting.id}"' in filtered and 'class="status status-unconfirmed"' in filtered
    css = logged_in.get("/static/app.css").get_data(as_text=True)
    assert ".status-unconfirmed" in css


def test_detail_explains_the_wait_in_the_company_time_zone_and_offers_no_resend_yet(logged_in, company):
    due = datetime.now(timezone.utc).replace(second=0, microsecond=0) + timedelta(minutes=30)
    sms = _unconfirmed(company, due)
    page = logged_in.get(f"/sms/{sms.id}").get_data(as_text=True)
    local = (due + timedelta(hours=3)).strftime("%H:%M")  # Africa/Nairobi, the company's zone
    assert ("The gateway may have taken this message; we could not see its answer. "
            f"Waiting for its delivery report until {local}.") in page
    assert "Resend</button>" not in page
    assert 'hx-trigger="every 3s"' in page  # a report may still come
    refused = logged_in.post(f"/sms/{sms.id}/resend", data={"csrf_token": csrf_token(logged_in)})
    assert refused.status_code == 422
    assert db.session.scalar(select(func.count()).select_from(Sms)) == 1


def test_a_final_unconfirmed_message_says_so_and_resends_in_one_click(logged_in, company):
    enable_gateway(company, "africastalking")
    person = make_person(company, "Jane", "Wanjiru", "+254712345678")
    sms = _unconfirmed(company, None, person=person)
    page = logged_in.get(f"/sms/{sms.id}").get_data(as_text=True)
    assert "The gateway may have sent it; no report came. Check with the recipient before resending." in page
    assert "Resend</button>" in page and 'hx-trigger="every 3s"' not in page
    response = logged_in.post(f"/sms/{sms.id}/resend", data={"csrf_token": csrf_token(logged_in)})
    assert response.status_code == 302
    db.session.expire_all()
    new = db.session.scalar(select(Sms).where(Sms.trigger == "resend"))
    assert new.trigger_id == sms.id and new.status == status.QUEUED and new.body == sms.body


def test_an_unconfirmed_message_whose_wait_passed_is_final_too(logged_in, company):
    sms = _unconfirmed(company, utcnow() - timedelta(minutes=1))
    page = logged_in.get(f"/sms/{sms.id}").get_data(as_text=True)
    assert "no report came" in page and "Resend</button>" in page
