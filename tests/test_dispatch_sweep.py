"""The sweep finds messages whose RQ job was lost; the worker enqueues it once per interval."""
from datetime import timedelta

import pytest

from mpm.extensions import db
from mpm.messaging.send import Recipient, queue_messages
from mpm.messaging.sweep import sweep_lost_messages
from mpm.models import Sms
from mpm.models.base import utcnow
from mpm.queue import queue, redis_connection
from mpm.worker import MINUTE_JOBS, SWEEP_JOB, enqueue_sweep_once_per_interval
from tests.conftest import enable_simulated_gateway, run_jobs

pytestmark = pytest.mark.queue


def _lose_jobs(app):
    with app.app_context():
        for lane in ("high", "bulk"):
            queue(lane).empty()


def test_queued_message_whose_job_was_lost_is_sent_after_the_sweep(app, company, simulator):
    enable_simulated_gateway(company, simulator)
    [sms] = queue_messages(company.id, [Recipient(number="+254712345678")], "Lost and found")
    _lose_jobs(app)
    assert run_jobs(app) == 0

    # Not old enough yet: left alone.
    assert sweep_lost_messages()["requeued"] == 0
    row = db.session.get(Sms, sms.id)
    row.created_at = utcnow() - timedelta(minutes=11)
    db.session.commit()
    assert sweep_lost_messages()["requeued"] == 1
    # Just re-enqueued: the next sweep does not enqueue it again.
    assert sweep_lost_messages()["requeued"] == 0

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
    row.next_attempt_at = utcnow() - timedelta(minutes=11)
    db.session.commit()

    assert sweep_lost_messages()["requeued"] == 1
    run_jobs(app)
    db.session.expire_all()
    assert db.session.get(Sms, sms.id).status == "sent"


def test_message_stuck_sending_is_failed_not_resent(app, company, simulator):
    enable_simulated_gateway(company, simulator)
    [sms] = queue_messages(company.id, [Recipient(number="+254712345678")], "Stuck")
    _lose_jobs(app)
    row = db.session.get(Sms, sms.id)
    row.status = "sending"
    row.updated_at = utcnow() - timedelta(minutes=20)
    db.session.commit()

    assert sweep_lost_messages()["failed_stuck"] == 1
    db.session.expire_all()
    row = db.session.get(Sms, sms.id)
    assert row.status == "failed" and "not sent again" in row.error
    assert simulator.received() == []


def test_sweep_is_enqueued_once_per_interval_by_many_workers(app):
    assert enqueue_sweep_once_per_interval(app) is True
    assert enqueue_sweep_once_per_interval(app) is False
    with app.app_context():
        # The sweep, plus the rollups and alerts of the minute (mpm.worker.MINUTE_JOBS).
        assert sorted(job.func_name for job in queue("high").jobs) == sorted([SWEEP_JOB, *MINUTE_JOBS])
        assert redis_connection().ttl("mpm:sweep:enqueued") > 0
    run_jobs(app)
    with app.app_context():
        assert queue("high").count == 0
        assert queue("high").finished_job_registry.count == 1 + len(MINUTE_JOBS)  # none failed


def test_rows_of_a_paused_broadcast_are_left_for_resume(app, company, simulator):
    from mpm.models import Broadcast

    enable_simulated_gateway(company, simulator)
    paused = Broadcast(company_id=company.id, body="Maintenance tonight", state="paused")
    db.session.add(paused)
    db.session.commit()
    [sms] = queue_messages(company.id, [Recipient(number="+254712345678")], "Maintenance tonight",
                           trigger="broadcast", broadcast_id=paused.id, lane="bulk")
    _lose_jobs(app)
    row = db.session.get(Sms, sms.id)
    row.created_at = utcnow() - timedelta(minutes=30)
    db.session.commit()

    assert sweep_lost_messages()["requeued"] == 0
    paused.state = "sending"
    db.session.commit()
    assert sweep_lost_messages()["requeued"] == 1
