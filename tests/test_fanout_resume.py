"""A broadcast whose job chain died with its worker (or ran out of retries) is picked up again by
the sweep from its stored resume point, and never twice: a job the queue still holds, a fan-out
someone is working on, or a broadcast waiting for quiet hours is left alone."""
from datetime import timedelta

import pytest
from rq.job import Job, JobStatus
from sqlalchemy import func, select

from conftest import enable_simulated_gateway, make_person, make_user, run_jobs
from mpm import jobs, leases
from mpm.broadcasts import fanout, lifecycle
from mpm.broadcasts.audience import Audience
from mpm.broadcasts.lifecycle import BroadcastForm
from mpm.extensions import db
from mpm.messaging.sweep import sweep
from mpm.models import Broadcast, MiniGrid, Sms
from mpm.models.base import utcnow
from mpm.queue import BULK, queue, redis_connection


@pytest.fixture
def crowd(app, company, simulator):
    """A sending broadcast to 25 customers in chunks of 10, AfricasTalking on the simulator."""
    app.config["BROADCAST_CHUNK_SIZE"] = 10
    grid = MiniGrid(company_id=company.id, name="Big")
    db.session.add(grid)
    db.session.commit()
    for i in range(25):
        make_person(company, f"P{i:02d}", "Crowd", f"+2547120300{i:02d}", mini_grid_id=grid.id)
    enable_simulated_gateway(company, simulator)
    admin = make_user(company, email="resume-author@example.test")
    broadcast = lifecycle.save_draft(company.id, admin.id, BroadcastForm(
        audience=Audience(mini_grid_ids=(grid.id,)), body="Power off on Saturday."))
    lifecycle.confirm(company.id, broadcast.id, admin.id)
    return broadcast


def next_fanout_job(broadcast_id: int) -> Job:
    """The job the broadcast's chain goes on with."""
    job_id = redis_connection().get(jobs.NEXT_JOB + str(broadcast_id)).decode()
    return Job.fetch(job_id, connection=redis_connection())


def worker_died_running(job: Job) -> None:
    """What a SIGKILL leaves: the job taken off the queue, marked started, nobody renewing the lease."""
    queue(BULK).remove(job.id)
    job.set_status(JobStatus.STARTED)


def recipients(broadcast_id: int) -> list[int]:
    return db.session.scalars(select(Sms.person_id).where(Sms.broadcast_id == broadcast_id)).all()


def test_a_fanout_killed_mid_chunk_is_resumed_by_the_sweep_and_completes(app, crowd, simulator):
    assert fanout.resume_stalled_fanouts() == []  # its job waits in the queue: not stalled
    queue(BULK).remove(next_fanout_job(crowd.id).id)
    assert fanout.run_broadcast(crowd.id) == "10 created"  # chunk 1 as a worker runs it; the next job is queued
    worker_died_running(next_fanout_job(crowd.id))
    assert sweep()["broadcasts_resumed"] == 1
    assert fanout.resume_stalled_fanouts() == []  # the new job is queued now
    run_jobs(app)
    db.session.expire_all()
    assert db.session.get(Broadcast, crowd.id).state == "done"
    people = recipients(crowd.id)
    assert len(people) == 25 and len(set(people)) == 25
    numbers = [r["number"] for r in simulator.received()]
    assert len(numbers) == 25 and len(set(numbers)) == 25


def test_any_number_of_kills_and_retries_run_out(app, crowd):
    for _ in range(3):
        worker_died_running(next_fanout_job(crowd.id))
        assert fanout.resume_stalled_fanouts() == [crowd.id]
    job = next_fanout_job(crowd.id)
    queue(BULK).remove(job.id)
    job.set_status(JobStatus.FAILED)  # its retries ran out
    assert fanout.resume_stalled_fanouts() == [crowd.id]
    run_jobs(app)
    db.session.expire_all()
    assert db.session.get(Broadcast, crowd.id).state == "done"
    assert sorted(recipients(crowd.id)) == sorted(set(recipients(crowd.id))) and len(recipients(crowd.id)) == 25


def test_a_fanout_being_worked_on_is_left_alone(crowd):
    worker_died_running(next_fanout_job(crowd.id))
    leases.hold(fanout._lease(crowd.id), 30)  # a live job renewing its lease
    assert fanout.resume_stalled_fanouts() == []
    leases.release(fanout._lease(crowd.id))
    assert fanout.resume_stalled_fanouts() == [crowd.id]


def test_waiting_for_quiet_hours_is_not_a_stall(crowd):
    worker_died_running(next_fanout_job(crowd.id))
    crowd.waiting_until = utcnow() + timedelta(hours=3)
    db.session.commit()
    assert fanout.resume_stalled_fanouts() == []
    assert fanout.resume_stalled_fanouts(now=utcnow() + timedelta(hours=4)) == [crowd.id]


def test_a_duplicate_chain_stops_at_its_first_job(app, crowd):
    """A job that was given up for dead but runs after all (RQ's own cleanup retries it) finds a
    newer chain recorded and does nothing: one chain, each person once."""
    stale = next_fanout_job(crowd.id)
    worker_died_running(stale)
    assert fanout.resume_stalled_fanouts() == [crowd.id]
    queue(BULK).enqueue_job(stale)  # comes back after all
    run_jobs(app)
    assert Job.fetch(stale.id, connection=redis_connection()).return_value() == "superseded"
    db.session.expire_all()
    assert db.session.get(Broadcast, crowd.id).state == "done"
    assert db.session.scalar(select(func.count(Sms.id)).where(Sms.broadcast_id == crowd.id)) == 25


def test_a_finished_fanout_whose_done_check_died_is_settled(app, crowd):
    run_jobs(app)
    db.session.expire_all()
    assert db.session.get(Broadcast, crowd.id).state == "done"
    # The same, with the last done check killed before it could settle the broadcast.
    db.session.get(Broadcast, crowd.id).state = "sending"
    db.session.commit()
    assert fanout.resume_stalled_fanouts() == [crowd.id]
    run_jobs(app)
    db.session.expire_all()
    assert db.session.get(Broadcast, crowd.id).state == "done"


def test_a_scheduled_job_long_overdue_is_not_waited_for(crowd):
    """RQ's scheduler dies with its worker and another worker takes it over only minutes later: a
    check or retry due long ago is stuck, not waiting."""
    queue(BULK).remove(next_fanout_job(crowd.id).id)
    lifecycle.enqueue_fanout(crowd, at=utcnow() + timedelta(seconds=10))
    assert fanout.resume_stalled_fanouts() == []
    assert fanout.resume_stalled_fanouts(now=utcnow() + timedelta(seconds=25)) == []
    assert fanout.resume_stalled_fanouts(now=utcnow() + timedelta(seconds=60)) == [crowd.id]
