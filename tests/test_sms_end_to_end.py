"""Send from the customer panel, through the real queue, worker and gateway simulator, and watch the
panel's history turn delivered without a reload."""
import time

import pytest
from sqlalchemy import select

from conftest import csrf_token, drain_reports, make_person, run_jobs
from mpm.extensions import db
from mpm.models import Sms

HX = {"HX-Request": "true"}


@pytest.mark.queue
def test_panel_send_ends_delivered_in_the_polled_history(app, logged_in, company, simulated_provider):
    simulator = simulated_provider  # its delivery reports reach this app over HTTP
    simulator.configure("africastalking", report_delay=0.05)
    person = make_person(company, "Jane", "Wanjiru", "+254712345678")

    sent = logged_in.post(f"/sms/people/{person.id}/send",
                          data={"body": "Your token: 1234 5678 9012", "csrf_token": csrf_token(logged_in)},
                          headers=HX)
    assert sent.status_code == 200 and "status-queued" in sent.get_data(as_text=True)
    run_jobs(app)
    assert [r["number"] for r in simulator.received("africastalking")] == ["+254712345678"]

    url = f"/sms/people/{person.id}/history"
    deadline = time.monotonic() + 10
    while True:
        drain_reports(app)  # the worker's report writer, as it runs in production
        fragment = logged_in.get(url, headers=HX).get_data(as_text=True)
        if "status-delivered" in fragment or time.monotonic() > deadline:
            break
        assert 'hx-trigger="every 3s"' in fragment  # still polling while sent
        time.sleep(0.1)
    assert "status-delivered" in fragment and "AfricasTalking" in fragment
    assert "hx-trigger" not in fragment  # all final: polling stops

    db.session.expire_all()
    sms = db.session.scalar(select(Sms))
    detail = logged_in.get(f"/sms/{sms.id}").get_data(as_text=True)
    assert sms.provider_message_id and sms.provider_message_id in detail
    timeline = detail[detail.index("<h2>Timeline</h2>"):]
    assert 'class="event-callback"' in timeline and "status-delivered" in timeline
