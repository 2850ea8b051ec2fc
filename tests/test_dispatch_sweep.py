"""The sweep finds work whose job was lost and closes waits that are over; the worker enqueues it
once per interval."""
from datetime import timedelta

import pytest

from mpm.extensions import db
from mpm.messaging.send import Recipient, queue_messages
from mpm import jobs
from mpm.messaging import ledger
from mpm.messaging.sweep import NO_REPORT, sweep
from mpm.models import Sms
from mpm.models.base import utcnow
from mpm.queue import queue, redis_connection
from mpm.worker import enqueue_sweep_once_per_interval
from tests.conftest import enable_simulated_gateway, run_jobs

pytestmark = pytest.mark.queue


def _lose_jobs(app, company_id: int):
    """Redis lost the send jobs (and their leases lapsed)."""
    with app.app_context():
        for lane in ("high", "bulk"):
            queue(lane).empty()
            redis_connection().delete("mpm:lease:" + jobs.drain_lease(company_id, lane))


def test_queued_message_whose_job_was_lost_is_sent_after_the_sweep(app, company, simulator):
    enable_simulated_gateway(company, simulator)
    [sms] = queue_messages(company.id, [Recipient(number="+254712345678")], "Lost and found")
    with app.app_context():
        queue("high").empty()
    assert run_jobs(app) == 0

    # The lane's lease says a send job is still queued somewhere: left alone until it lapses.
    assert sweep()["lanes_restarted"] == 0
    _lose_jobs(app, company.id)
    assert sweep()["lanes_restarted"] == 1
    # Just restarted: the next sweep does not start it again.
    assert sweep()["lanes_restarted"] == 0

    assert run_jobs(app) == 1
    db.session.expire_all()
    assert db.session.get(Sms, sms.id).status == "sent"
    assert len(simulator.received()) == 1


def test_retry_whose_scheduled_job_was_lost_is_found_by_its_stored_due_time(app, company, simulator):
    enable_simulated_gateway(company, simulator)
    simulator.configure("africastalking", mode="5xx")
    [sms] = queue_messages(company.id, [Recipient(number="+254712345678")], "Retry me")
    run_jobs(app)
    with app.app_context():
        registry = queue("high").scheduled_job_registry
        for job_id in registry.get_job_ids():
            registry.remove(job_id, delete_job=True)
    simulator.configure("africastalking", mode="ok")
    db.session.expire_all()
    row = db.session.get(Sms, sms.id)
    assert row.status == "queued" and row.next_attempt_at is not None
    assert sweep()["lanes_restarted"] == 0  # not due yet
    row.next_attempt_at = utcnow() - timedelta(seconds=1)
    db.session.commit()

    assert sweep()["lanes_restarted"] == 1
    run_jobs(app)
    db.session.expire_all()
    assert db.session.get(Sms, sms.id).status == "sent"


def test_message_left_sending_by_a_dead_worker_becomes_unconfirmed_not_resent(app, company, simulator):
    enable_simulated_gateway(company, simulator)
    [sms] = queue_messages(company.id, [Recipient(number="+254712345678")], "Stuck")
    with app.app_context():
        queue("high").empty()
    row = db.session.get(Sms, sms.id)
    row.status = "sending"
    db.session.commit()

    # Its lane's send job is alive (lease held) and the request is fresh: it is that job's.
    assert sweep()["unconfirmed_after_crash"] == 0
    _lose_jobs(app, company.id)
    assert sweep()["unconfirmed_after_crash"] == 1
    db.session.expire_all()
    row = db.session.get(Sms, sms.id)
    assert row.status == "unconfirmed" and "may have taken it" in row.error and row.report_due_at is not None
    run_jobs(app)
    assert simulator.received() == []


def test_a_sending_row_older_than_a_request_can_last_is_an_orphan_even_while_its_lane_is_busy(app, company):
    from tests.conftest import enable_gateway

    enable_gateway(company, "africastalking")
    [sms] = queue_messages(company.id, [Recipient(number="+254712345678")], "Orphan")
    row = db.session.get(Sms, sms.id)
    row.status = "sending"
    row.updated_at = utcnow() - timedelta(seconds=jobs.running_lease_seconds() + 1)
    db.session.commit()
    with app.app_context():  # a newer send job of the same lane holds the lease
        assert redis_connection().exists("mpm:lease:" + jobs.drain_lease(company.id, "high"))
    assert sweep()["unconfirmed_after_crash"] == 1


def test_unconfirmed_past_its_report_window_says_so_and_stops_waiting(app, company):
    from tests.conftest import enable_gateway

    enable_gateway(company, "africastalking")
    waiting, over = queue_messages(company.id, [Recipient(number="+254712345678"),
                                                 Recipient(number="+254712345679")], "Maybe")
    for sms, due in ((waiting, utcnow() + timedelta(minutes=5)), (over, utcnow() - timedelta(seconds=1))):
        ledger.move(company.id, [sms.id], "unconfirmed", "read timeout", values={"report_due_at": due})
    db.session.commit()

    assert sweep()["unconfirmed_closed"] == 1
    db.session.expire_all()
    still = db.session.get(Sms, waiting.id)
    closed = db.session.get(Sms, over.id)
    assert still.status == "unconfirmed" and still.report_due_at is not None
    assert closed.status == "unconfirmed" and closed.report_due_at is None and closed.error == NO_REPORT
    assert sweep()["unconfirmed_closed"] == 0


def test_sweep_is_enqueued_once_per_interval_by_many_workers(app):
    assert enqueue_sweep_once_per_interval(app) is True
    assert enqueue_sweep_once_per_interval(app) is False
    with app.app_context():
        # The sweep, plus the rollups, the alerts and SQLite's planner statistics that come with it.
        assert sorted(job.func_name for job in queue("high").jobs) == [
            "mpm.jobs.refresh_planner_statistics", "mpm.jobs.refresh_rollups", "mpm.jobs.sweep",
            "mpm.jobs.watch_alerts"]
        assert redis_connection().ttl("mpm:sweep:enqueued") > 0
    run_jobs(app)
    with app.app_context():
        assert queue("high").count == 0
        assert queue("high").finished_job_registry.count == 4  # none failed


def test_rows_of_a_paused_broadcast_are_left_for_resume(app, company, simulator):
    from mpm.models import Broadcast

    enable_simulated_gateway(company, simulator)
    paused = Broadcast(company_id=company.id, body="Maintenance tonight", state="paused")
    db.session.add(paused)
    db.session.commit()
    queue_messages(company.id, [Recipient(number="+254712345678")], "Maintenance tonight",
                   trigger="broadcast", broadcast_id=paused.id, lane="bulk")
    _lose_jobs(app, company.id)

    assert sweep()["lanes_restarted"] == 0
    paused.state = "sending"
    db.session.commit()
    assert sweep()["lanes_restarted"] == 1
