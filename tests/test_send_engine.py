"""The send engine under real timing: lost answers never fall back, a failing gateway is skipped by
its circuit breaker, the high lane and other companies are not stuck behind a big broadcast,
outages and spent quotas delay messages instead of failing them. Real Redis and RQ, the gateway
simulator, provider HTTP mocked with `responses` where the simulator has no such fault."""
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
import requests
import responses
from sqlalchemy import func, select

from mpm.extensions import db
from mpm.messaging.send import Recipient, queue_messages
from mpm.models import AuditEntry, Sms
from mpm.models.base import utcnow
from mpm.plugins.gateway_settings import find_gateway_setting
from mpm.queue import BULK
from tests.conftest import enable_gateway, enable_simulated_gateway, make_company, run_jobs

pytestmark = pytest.mark.queue

AT_URL = "https://at.test"


def _statuses(company_id: int) -> dict[str, int]:
    db.session.expire_all()
    return dict(db.session.execute(select(Sms.status, func.count()).where(Sms.company_id == company_id)
                                   .group_by(Sms.status)).all())


def _numbers(prefix: str, n: int) -> list[Recipient]:
    return [Recipient(number=f"{prefix}{i:05d}") for i in range(n)]


@pytest.mark.parametrize("lost_answer", [requests.ReadTimeout("read timed out"),
                                         requests.ConnectionError("Connection reset by peer")])
def test_an_answer_lost_after_the_request_never_falls_back_and_leaves_the_messages_unconfirmed(
        app, company, simulator, lost_answer):
    enable_gateway(company, "africastalking", options={"base_url": AT_URL})
    enable_simulated_gateway(company, simulator, "textbee", {"send_rate": 100})
    taken: list[str] = []

    def accept_then_lose_the_answer(request):
        taken.extend(requests.utils.unquote(dict(p.split("=", 1) for p in request.body.split("&"))["to"]).split(","))
        raise lost_answer

    queue_messages(company.id, _numbers("+2547120", 20), "Power returns at 18:00")
    with responses.RequestsMock() as mock:
        mock.add_passthru(simulator.url)
        mock.add_callback(responses.POST, f"{AT_URL}/version1/messaging", callback=accept_then_lose_the_answer)
        run_jobs(app)

    assert len(taken) == 20
    assert simulator.received("textbee") == []  # no recipient gets a second copy
    assert _statuses(company.id) == {"unconfirmed": 20}
    rows = db.session.scalars(select(Sms)).all()
    assert all(r.report_due_at is not None and "may have taken the message" in r.error for r in rows)
    assert all(r.gateway == "africastalking" for r in rows)


def test_a_refused_connection_falls_back_to_the_next_gateway(app, company, simulator):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    enable_gateway(company, "africastalking", options={"base_url": dead})
    enable_simulated_gateway(company, simulator, "textbee", {"send_rate": 100})
    queue_messages(company.id, _numbers("+2547120", 3), "Hello")

    run_jobs(app)

    assert _statuses(company.id) == {"sent": 3}
    assert len(simulator.received("textbee")) == 3


def test_after_the_breaker_opens_no_request_waits_for_the_dead_gateway_and_a_probe_closes_it(app, company, simulator):
    app.config.update(CIRCUIT_FAILURES=2, CIRCUIT_COOLDOWN_SECONDS=60, GATEWAY_TIMEOUT_SECONDS=0.5)
    enable_simulated_gateway(company, simulator, "africastalking")
    enable_simulated_gateway(company, simulator, "textbee", {"send_rate": 100})
    simulator.configure("africastalking", mode="timeout", timeout_seconds=2)
    # Different bodies: one AfricasTalking request each.
    for i in range(5):
        queue_messages(company.id, [Recipient(number=f"+25471200000{i}")], f"Message {i}")

    run_jobs(app)

    # Two requests timed out (maybe sent: unconfirmed, no fallback); then the circuit opened and
    # the other three went straight to TextBee.
    assert simulator.state.requests["africastalking"] == 2
    assert _statuses(company.id) == {"unconfirmed": 2, "sent": 3}
    setting = find_gateway_setting(company.id, "africastalking")
    assert setting.circuit_state == "open" and setting.circuit_since is not None
    assert "did not answer within 0.5 s" in setting.last_error and setting.last_error_at is not None
    audit = db.session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
    assert "plugin.circuit_open" in audit

    for i in range(5, 10):
        queue_messages(company.id, [Recipient(number=f"+25471200000{i}")], f"Message {i}")
    run_jobs(app)
    assert simulator.state.requests["africastalking"] == 2  # no request waited for its timeout again
    assert _statuses(company.id) == {"unconfirmed": 2, "sent": 8}
    waiting = _statuses(company.id)

    # Cool-down over and AfricasTalking back: one request probes it, then traffic returns.
    simulator.configure("africastalking", mode="ok")
    setting.circuit_since = utcnow() - timedelta(seconds=61)
    db.session.commit()
    queue_messages(company.id, [Recipient(number="+254712000099")], "Back again")
    run_jobs(app)
    db.session.expire_all()
    setting = find_gateway_setting(company.id, "africastalking")
    assert setting.circuit_state == "closed" and setting.last_success_at is not None
    assert [r["number"] for r in simulator.received("africastalking")] == ["+254712000099"]
    audit = db.session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
    assert audit[-2:] == ["plugin.circuit_probing", "plugin.circuit_closed"]
    assert waiting["sent"] + 1 == _statuses(company.id)["sent"]


def test_while_a_request_is_with_the_provider_only_it_is_claimed_and_the_previous_outcome_is_on_view(
        app, company, simulator):
    # Three requests (three bodies); the provider takes each at once and answers a second later.
    app.config.update(GATEWAY_TIMEOUT_SECONDS=5)
    enable_simulated_gateway(company, simulator, "africastalking")
    simulator.configure("africastalking", mode="late_accept", answer_delay=1.0)
    for i in range(3):
        queue_messages(company.id, [Recipient(number=f"+25471300000{i}")], f"Notice {i}")
    seen: dict[int, Counter] = {1: Counter(), 2: Counter()}  # provider requests received → statuses seen

    def watch() -> None:
        with app.app_context():
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                received = len(simulator.received("africastalking"))
                if received == 3:
                    return
                if received in seen:
                    seen[received][tuple(sorted(_statuses(company.id).items()))] += 1
                time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    run_jobs(app)  # the worker (RQ needs the main thread)
    watcher.join(30)

    # While the first request was with the provider (a second), it alone was claimed: a crash then
    # leaves no unsent message looking as if it might have gone. The second is claimed once the
    # first answered, a moment before it reaches the provider.
    alone, both = (("queued", 2), ("sending", 1)), (("queued", 1), ("sending", 2))
    assert seen[1][alone] > 5 * seen[1][both], seen[1]
    # While the second was with the provider, the first one's outcome was on view.
    assert (("queued", 1), ("sending", 1), ("sent", 1)) in seen[2]
    assert _statuses(company.id) == {"sent": 3}


def test_a_message_another_worker_claimed_after_the_run_read_it_is_not_sent_by_the_run(app, company, simulator):
    # Two requests (two bodies): while the first is with the provider, another worker claims one
    # message of the second. The run's claim then takes the other two only, and sends only them.
    app.config.update(GATEWAY_TIMEOUT_SECONDS=5)
    enable_simulated_gateway(company, simulator, "africastalking")
    simulator.configure("africastalking", mode="late_accept", answer_delay=1.0)
    queue_messages(company.id, [Recipient(number="+254713000000")], "Notice A")
    queue_messages(company.id, [Recipient(number=f"+25471300000{i}") for i in (1, 2, 3)], "Notice B")
    taken: list[int] = []

    def another_worker_claims_one() -> None:
        from mpm.messaging import ledger

        with app.app_context():
            deadline = time.monotonic() + 20
            while not simulator.received("africastalking") and time.monotonic() < deadline:
                time.sleep(0.02)
            sent_first = {m["number"] for m in simulator.received("africastalking")}
            row = db.session.scalars(select(Sms).where(Sms.body == "Notice B", Sms.number.not_in(sent_first))
                                     .order_by(Sms.id).offset(1)).first()
            taken.extend(ledger.claim(company.id, [row.id], "africastalking"))
            db.session.commit()

    other = threading.Thread(target=another_worker_claims_one)
    other.start()
    run_jobs(app)
    other.join(30)

    assert len(taken) == 1
    taken_row = db.session.get(Sms, taken[0])
    numbers = sorted(m["number"] for m in simulator.received("africastalking"))
    assert taken_row.number not in numbers and len(numbers) == 3  # the run sent the other three, once each
    assert _statuses(company.id) == {"sent": 3, "sending": 1}  # the one the other worker took is its own


def test_an_outage_delays_a_broadcast_without_failing_anything_and_it_completes_once(app, company, simulator):
    app.config.update(SMS_RETRY_BASE_SECONDS=1)
    enable_simulated_gateway(company, simulator)  # AfricasTalking only
    simulator.configure("africastalking", mode="5xx")
    recipients = _numbers("+2547120", 30)
    queue_messages(company.id, recipients, "Dear customer, maintenance on Saturday.", lane=BULK)

    run_jobs(app)
    assert _statuses(company.id) == {"queued": 30}
    row = db.session.scalars(select(Sms)).first()
    assert row.waiting_reason.startswith("gateway down, retrying at ") and "HTTP 503" in row.error

    simulator.configure("africastalking", mode="ok")  # the outage ends
    run_jobs(app, until=lambda: _statuses(company.id) == {"sent": 30}, timeout=30)
    numbers = [m["number"] for m in simulator.received("africastalking")]
    assert sorted(numbers) == sorted(r.number for r in recipients)  # everyone once
    assert db.session.scalar(select(func.count()).where(Sms.waiting_reason.is_not(None))) == 0


def test_a_spent_textbee_plan_waits_for_the_reset_instead_of_failing(app, company, simulator):
    enable_simulated_gateway(company, simulator, "textbee", {"daily_quota": 2, "monthly_quota": 300, "send_rate": 100})
    queue_messages(company.id, _numbers("+2547120", 3), "Quota")

    run_jobs(app)

    assert _statuses(company.id) == {"sent": 2, "queued": 1}
    waiting = db.session.scalar(select(Sms).where(Sms.status == "queued"))
    # The plan's day follows UTC: midnight UTC is 03:00 in Nairobi, the company's time zone.
    assert waiting.waiting_reason == "waiting for quota (resets 03:00)"
    due = waiting.next_attempt_at.replace(tzinfo=None)
    assert (due.hour, due.minute) == (0, 0) and due > utcnow().replace(tzinfo=None)


def test_a_person_waiting_is_served_within_seconds_while_a_paced_broadcast_keeps_its_pace(app, company, simulator):
    enable_simulated_gateway(company, simulator, "textbee", {"send_rate": 2})
    queue_messages(company.id, _numbers("+2547110", 16), "Broadcast", lane=BULK)
    queued_at = {}

    def a_person_asks_for_a_token():
        time.sleep(1.5)
        with app.app_context():
            [sms] = queue_messages(company.id, [Recipient(number="+254799999999")], "Your token is 1234")
            queued_at["id"] = sms.id

    helper = threading.Thread(target=a_person_asks_for_a_token)
    helper.start()
    run_jobs(app, until=lambda: any(r["number"] == "+254799999999" for r in simulator.received("textbee")))
    helper.join()

    received = simulator.received("textbee")
    token = next(r for r in received if r["number"] == "+254799999999")
    broadcast = sorted(r["at"] for r in received if r["number"] != "+254799999999")
    assert len([t for t in broadcast if t < token["at"]]) < 8  # long before the broadcast's end (16)
    # The broadcast kept its pace: 16 messages at 2/s span at least 7.5 s.
    assert broadcast[-1] - broadcast[0] >= 15 * 0.5 - 0.5


def test_a_small_send_of_another_company_is_not_stuck_behind_a_big_broadcast(app, company, simulator):
    other = make_company("Kisiwa Power")
    plan = {"send_rate": 20, "daily_quota": 1000, "monthly_quota": 1000}
    enable_simulated_gateway(company, simulator, "textbee", plan)
    enable_simulated_gateway(other, simulator, "textbee", plan)
    queue_messages(company.id, _numbers("+2547110", 120), "Big broadcast", lane=BULK)
    queue_messages(other.id, _numbers("+2547220", 10), "Small broadcast", lane=BULK)

    run_jobs(app, until=lambda: _statuses(other.id) == {"sent": 10} and _statuses(company.id) == {"sent": 120})

    received = simulator.received("textbee")
    big = sorted(r["at"] for r in received if r["number"].startswith("+2547110"))
    small = sorted(r["at"] for r in received if r["number"].startswith("+2547220"))
    assert len(small) == 10 and len(big) == 120
    assert small[-1] < big[len(big) // 2]  # all out before half of the big one


def test_why_a_message_waits_and_a_gateways_circuit_are_shown_to_staff(app, company, simulator, logged_in):
    from tests.conftest import make_person
    from mpm.messaging.send import recipient_for_person

    app.config.update(CIRCUIT_FAILURES=1)
    enable_simulated_gateway(company, simulator)
    simulator.configure("africastalking", mode="5xx")
    person = make_person(company)
    [sms] = queue_messages(company.id, [recipient_for_person(person)], "Your token is 1234")
    run_jobs(app)
    db.session.expire_all()
    reason = db.session.get(Sms, sms.id).waiting_reason
    assert reason.startswith("gateway down, retrying at ")

    for page in ("/sms/", f"/sms/{sms.id}", f"/sms/people/{person.id}/history"):
        html = logged_in.get(page).get_data(as_text=True)
        assert reason in html, page

    overview = logged_in.get("/plugins/africastalking/").get_data(as_text=True)
    assert 'data-circuit="open"' in overview and "skipped since" in overview
    assert "AfricasTalking answered HTTP 503" in overview
    listing = logged_in.get("/plugins/").get_data(as_text=True)
    assert 'data-circuit="open"' in listing
    assert "skipped after repeated sending failures" in listing  # the audit log's words
