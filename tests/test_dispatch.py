"""Sending through real Redis, a real RQ worker and the gateway simulator: priority, fallback,
retry with backoff until the validity ends, quota, pacing, exactly-once."""
import time
from datetime import timedelta

import pytest
import responses
from sqlalchemy import select

from mpm.extensions import db
from mpm import jobs
from mpm.messaging import dispatch, ledger, ratelimit
from mpm.messaging.send import NoActiveSmsProvider, Recipient, queue_messages, recipient_for_person
from mpm.models import Person, Sms, SmsEvent
from mpm.models.base import utcnow
from mpm.queue import BULK, HIGH, queue
from tests.conftest import enable_gateway, enable_simulated_gateway, make_person, run_jobs

pytestmark = pytest.mark.queue


def _reload(sms_id: int) -> Sms:
    db.session.expire_all()
    return db.session.get(Sms, sms_id)


def _events(sms_id: int) -> list[SmsEvent]:
    return db.session.scalars(select(SmsEvent).where(SmsEvent.sms_id == sms_id).order_by(SmsEvent.id)).all()


def test_message_goes_out_through_africastalking_with_cost_and_provider_id(app, company, simulator):
    enable_simulated_gateway(company, simulator)
    person = make_person(company)
    [sms] = queue_messages(company.id, [recipient_for_person(person)], "Your token is 1234")

    run_jobs(app)

    sms = _reload(sms.id)
    assert sms.status == "sent"
    assert sms.gateway == "africastalking"
    assert sms.cost == "KES 0.8000"
    [received] = simulator.received("africastalking")
    assert received["number"] == "+254712345678" and received["message"] == "Your token is 1234"
    assert sms.provider_message_id == received["id"]
    # One event per request and message: the attempt with the provider's answer.
    assert [(e.kind, e.status, e.gateway) for e in _events(sms.id)] == [
        ("status", "queued", None), ("attempt", "sent", "africastalking")]


def test_one_request_per_distinct_body_to_many_recipients(app, company, simulator):
    enable_simulated_gateway(company, simulator)
    recipients = [Recipient(number=f"+2547120000{i:02d}") for i in range(6)]
    queue_messages(company.id, recipients[:4], "Same body for four")
    queue_messages(company.id, recipients[4:], "Another body")

    run_jobs(app)

    assert simulator.state.requests["africastalking"] == 2
    assert len(simulator.received("africastalking")) == 6
    assert set(db.session.scalars(select(Sms.status))) == {"sent"}


def test_africastalking_outage_falls_back_to_textbee(app, company, simulator):
    enable_simulated_gateway(company, simulator, "africastalking")
    enable_simulated_gateway(company, simulator, "textbee", {"send_rate": 100})
    simulator.configure("africastalking", mode="5xx")
    [sms] = queue_messages(company.id, [Recipient(number="+254712345678")], "Hello")

    run_jobs(app)

    sms = _reload(sms.id)
    assert sms.status == "sent" and sms.gateway == "textbee"
    assert simulator.received("africastalking") == []
    assert [r["number"] for r in simulator.received("textbee")] == ["+254712345678"]
    details = " ".join(e.detail for e in _events(sms.id))
    assert "AfricasTalking answered HTTP 503" in details


def test_rejected_number_fails_without_fallback(app, company, simulator):
    enable_simulated_gateway(company, simulator, "africastalking")
    enable_simulated_gateway(company, simulator, "textbee")
    simulator.configure("africastalking", rejected_numbers=["+254712345678"])
    [sms] = queue_messages(company.id, [Recipient(number="+254712345678")], "Hello")

    run_jobs(app)

    sms = _reload(sms.id)
    assert sms.status == "failed"
    assert "InvalidPhoneNumber" in sms.error
    assert simulator.received() == []


def test_one_request_with_mixed_answers_gives_each_message_its_own_outcome(app, company, simulator):
    enable_simulated_gateway(company, simulator, "africastalking")
    simulator.configure("africastalking", rejected_numbers=["+254712000002"])
    numbers = [f"+25471200000{i}" for i in range(1, 5)]
    messages = queue_messages(company.id, [Recipient(number=n) for n in numbers], "Power returns at 18:00")

    run_jobs(app)

    assert simulator.state.requests["africastalking"] == 1
    provider_ids = {r["number"]: r["id"] for r in simulator.received("africastalking")}
    outcomes = {}
    for sms in messages:
        sms = _reload(sms.id)
        outcomes[sms.number] = (sms.status, sms.provider_message_id, [(e.kind, e.status) for e in _events(sms.id)])
        if sms.status == "failed":
            assert "InvalidPhoneNumber" in sms.error
    accepted = [n for n in numbers if n != "+254712000002"]
    assert len({provider_ids[n] for n in accepted}) == 3  # each accepted message its own provider id
    assert outcomes == {
        **{n: ("sent", provider_ids[n], [("status", "queued"), ("attempt", "sent")]) for n in accepted},
        "+254712000002": ("failed", None, [("status", "queued"), ("attempt", "failed")]),
    }


def test_a_status_write_of_hundreds_of_messages_gives_each_its_own_values_and_one_event(app, company):
    # Written in pieces (100, then powers of two): 237 = 100 + 100 + 32 + 4 + 1.
    enable_gateway(company, "africastalking")
    messages = queue_messages(company.id, [Recipient(number=f"+254712{i:06d}") for i in range(237)], "Notice")
    moved = ledger.move_each(company.id, "expired", [
        ledger.Change(m.id, f"reason {i}", values={"error": f"reason {i}"}) for i, m in enumerate(messages)])
    db.session.commit()

    assert moved == [m.id for m in messages]
    for i, sms in enumerate(messages):
        sms = _reload(sms.id)
        assert (sms.status, sms.error) == ("expired", f"reason {i}")
        assert [(e.status, e.detail) for e in _events(sms.id)][1:] == [("expired", f"reason {i}")]


def test_viber_only_for_people_with_a_viber_id(app, company, simulator):
    enable_gateway(company, "viber", options={"base_url": "https://viber.test/pa"})
    enable_simulated_gateway(company, simulator, "textbee", {"send_rate": 100})
    simulator.configure("textbee", mode="timeout", timeout_seconds=0)  # TextBee down (answers 504)
    with_viber = make_person(company, "Vera", number="+254711111111", viber_id="vbr-123")
    without = make_person(company, "Sam", number="+254722222222")
    queue_messages(company.id, [recipient_for_person(with_viber), recipient_for_person(without)], "Hi")

    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        mock.add_passthru(simulator.url)
        mock.post("https://viber.test/pa/send_message",
                  json={"status": 0, "status_message": "ok", "message_token": 5741311803571721087,
                        "chat_hostname": "SN-CHAT-05_"})
        run_jobs(app)
        viber_calls = [c for c in mock.calls if "viber.test" in c.request.url]

    assert len(viber_calls) == 1
    assert b'"receiver": "vbr-123"' in viber_calls[0].request.body
    by_person = {s.person_id: s for s in db.session.scalars(select(Sms))}
    assert by_person[with_viber.id].status == "sent" and by_person[with_viber.id].gateway == "viber"
    assert by_person[with_viber.id].provider_message_id == "5741311803571721087"
    # Sam has no Viber: nothing carried it, so it waits for a retry and says so.
    assert by_person[without.id].status == "queued" and by_person[without.id].next_attempt_at is not None
    assert by_person[without.id].waiting_reason.startswith("gateway down, retrying at ")


def test_viber_not_subscribed_falls_back_and_forgets_the_viber_id(app, company, simulator):
    enable_gateway(company, "viber", options={"base_url": "https://viber.test/pa"})
    enable_simulated_gateway(company, simulator, "textbee", {"send_rate": 100})
    person = make_person(company, number="+254711111111", viber_id="vbr-gone")
    [sms] = queue_messages(company.id, [recipient_for_person(person)], "Hi")
    # TextBee comes before Viber: make TextBee refuse so Viber is tried, then TextBee is not retried.
    simulator.configure("textbee", mode="auth")

    with responses.RequestsMock() as mock:
        mock.add_passthru(simulator.url)
        mock.post("https://viber.test/pa/send_message",
                  json={"status": 6, "status_message": "receiverNotSubscribed", "chat_hostname": "SN-CHAT-05_"})
        run_jobs(app)

    sms = _reload(sms.id)
    assert sms.status == "queued"  # nothing could carry it now: retry later
    assert db.session.get(Person, person.id).viber_id is None
    assert "receiverNotSubscribed" in sms.error


def test_textbee_quota_spent_falls_back_to_the_next_gateway(app, company, simulator):
    enable_simulated_gateway(company, simulator, "textbee", {"daily_quota": 2, "monthly_quota": 300, "send_rate": 100})
    enable_gateway(company, "android", options={"base_url": "https://fcm.test"})
    recipients = [Recipient(number=f"+25471200000{i}") for i in range(3)]
    queue_messages(company.id, recipients, "Quota test")

    with responses.RequestsMock() as mock:
        mock.add_passthru(simulator.url)
        mock.post("https://fcm.test/fcm/send", json={"multicast_id": 1, "success": 1, "failure": 0,
                                                    "canonical_ids": 0, "results": [{"message_id": "0:1"}]})
        run_jobs(app)

    gateways = sorted(s.gateway for s in db.session.scalars(select(Sms)))
    assert gateways == ["android", "textbee", "textbee"]
    assert len(simulator.received("textbee")) == 2
    with app.app_context():
        assert ratelimit.quota_used(company.id, "textbee", {"day": 2, "month": 300}) == {"day": 2, "month": 2}


def test_gateway_errors_retry_with_backoff_until_the_validity_ends_then_expire_with_every_reason(app, company, simulator):
    app.config.update(SMS_RETRY_BASE_SECONDS=30)
    enable_simulated_gateway(company, simulator)
    simulator.configure("africastalking", mode="5xx")
    [sms] = queue_messages(company.id, [Recipient(number="+254712345678")], "Hello")
    sms = _reload(sms.id)
    # A single message gets the default validity of 24 hours.
    assert abs((sms.expires_at.replace(tzinfo=None) - utcnow().replace(tzinfo=None)) - timedelta(hours=24)) < timedelta(minutes=1)

    run_jobs(app)
    sms = _reload(sms.id)
    assert sms.status == "queued" and sms.attempts == 1
    assert sms.waiting_reason.startswith("gateway down, retrying at ")
    # The retry is scheduled in RQ for the stored due time.
    with app.app_context():
        assert queue("high").scheduled_job_registry.count == 1

    jobs.send(company.id, HIGH)  # not due yet: nothing happens
    assert _reload(sms.id).attempts == 1
    _make_due(sms.id)
    jobs.send(company.id, HIGH)
    sms = _reload(sms.id)
    assert sms.attempts == 2 and sms.status == "queued"
    gap = (sms.next_attempt_at.replace(tzinfo=None) - utcnow().replace(tzinfo=None)).total_seconds()
    assert 55 < gap <= 60  # doubled

    # No attempt cap: the backoff stops growing at 10 minutes, and only the validity ends the retries.
    assert dispatch.retry_delay_seconds(40) == 600
    row = db.session.get(Sms, sms.id)
    row.expires_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    _make_due(sms.id)
    jobs.send(company.id, HIGH)
    sms = _reload(sms.id)
    assert sms.status == "expired" and sms.waiting_reason is None
    assert sms.error.count("AfricasTalking answered HTTP 503") == 2
    assert "validity period ended" in sms.error
    assert len(simulator.received()) == 0


def test_a_message_stored_without_a_validity_expires_by_its_age(app, company, simulator):
    # Rows stored before every message had its own validity (expires_at empty) get the default,
    # counted from when they were stored.
    enable_simulated_gateway(company, simulator)
    old, fresh = queue_messages(company.id, [Recipient(number="+254712345670"), Recipient(number="+254712345671")],
                                "Hello")
    for row, age in ((db.session.get(Sms, old.id), timedelta(hours=25)), (db.session.get(Sms, fresh.id), timedelta(0))):
        row.expires_at = None
        row.created_at = utcnow() - age
    db.session.commit()

    run_jobs(app)

    assert _reload(old.id).status == "expired" and "validity period ended" in _reload(old.id).error
    assert _reload(fresh.id).status == "sent"
    assert [r["number"] for r in simulator.received()] == ["+254712345671"]


def _make_due(sms_id: int) -> None:
    sms = db.session.get(Sms, sms_id)
    sms.next_attempt_at = utcnow() - timedelta(seconds=1)
    db.session.commit()


def test_job_run_twice_does_not_resend(app, company, simulator):
    enable_simulated_gateway(company, simulator)
    [sms] = queue_messages(company.id, [Recipient(number="+254712345678")], "Once only")
    # The send job enqueued again, as after a worker crash or a sweep.
    with app.app_context():
        queue("high").enqueue(jobs.send, company.id, HIGH, None)

    run_jobs(app)
    jobs.send(company.id, HIGH)

    assert len(simulator.received()) == 1
    assert _reload(sms.id).status == "sent"


def test_message_left_sending_by_a_crash_is_not_sent_again(app, company, simulator):
    enable_simulated_gateway(company, simulator)
    [sms] = queue_messages(company.id, [Recipient(number="+254712345678")], "Crash")
    row = db.session.get(Sms, sms.id)
    row.status = "sending"  # the attempt was committed, then the worker died during the HTTP call
    db.session.commit()

    run_jobs(app)

    assert simulator.received() == []
    assert _reload(sms.id).status == "sending"


def test_expired_and_cancelled_messages_are_not_sent(app, company, simulator):
    enable_simulated_gateway(company, simulator)
    expired, cancelled = queue_messages(
        company.id, [Recipient(number="+254712345678"), Recipient(number="+254712345679")], "Old news",
        lane=BULK, expires_at=utcnow() + timedelta(hours=1))
    db.session.get(Sms, expired.id).expires_at = utcnow() - timedelta(minutes=1)
    db.session.get(Sms, cancelled.id).status = "cancelled"
    db.session.commit()

    run_jobs(app)

    assert _reload(expired.id).status == "expired"
    assert _reload(cancelled.id).status == "cancelled"
    assert simulator.received() == []


def test_no_active_gateway_refuses_and_stores_nothing(app, company):
    enable_gateway(company, "africastalking", valid=False)
    with pytest.raises(NoActiveSmsProvider, match="No active SMS provider"):
        queue_messages(company.id, [Recipient(number="+254712345678")], "Hello")
    assert db.session.scalar(select(Sms.id)) is None


def test_send_rate_is_shared_by_all_workers(app, company):
    with app.app_context():
        waits = [ratelimit.wait_for_send_slot(company.id, "textbee", 1, 20.0) for _ in range(5)]
    # 5 messages at 20/s: the 5th may only go 0.2 s after the first.
    assert waits[0] == 0
    assert sum(waits) == pytest.approx(0.2, abs=0.05)


def test_rate_limited_gateway_is_paced_not_sent_in_one_burst(app, company, simulator):
    enable_simulated_gateway(company, simulator, "textbee", {"send_rate": 4})
    queue_messages(company.id, [Recipient(number=f"+25471200000{i}") for i in range(8)], "Paced")

    run_jobs(app, until=lambda: len(simulator.received("textbee")) == 8)

    times = sorted(r["at"] for r in simulator.received("textbee"))
    # 8 messages at 4/s: the fifth cannot start before one second after the first.
    assert times[4] - times[0] >= 0.9


def test_work_beyond_a_second_of_send_slots_is_handed_back_to_the_queue_not_slept_through(app, company, simulator):
    enable_simulated_gateway(company, simulator, "textbee", {"send_rate": 2})
    queue_messages(company.id, [Recipient(number=f"+25471200000{i}") for i in range(3)], "Slowly")
    with app.app_context():  # another worker took the next two seconds of this gateway's pace
        ratelimit.reserve_send_slot(company.id, "textbee", 4, 2.0)

    started = time.monotonic()
    run_jobs(app)  # scheduled jobs stay scheduled

    db.session.expire_all()
    rows = db.session.scalars(select(Sms).order_by(Sms.id)).all()
    # The job did not wait for the slot: it handed the work back, due at the slot time.
    assert [r.status for r in rows] == ["queued"] * 3
    assert all(r.attempts == 0 for r in rows)
    assert rows[0].waiting_reason == "paced at 2/s: about 2 s"
    with app.app_context():
        assert queue("high").scheduled_job_registry.count == 1

    run_jobs(app, until=lambda: len(simulator.received("textbee")) == 3)
    db.session.expire_all()
    assert [db.session.get(Sms, r.id).status for r in rows] == ["sent"] * 3
    assert time.monotonic() - started >= 1.9
