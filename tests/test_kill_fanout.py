"""Five SIGKILLs of the worker running a broadcast's fan-out (real `flask worker` processes, the
simulator as its own process): every broadcast completes, each recipient gets one message row
and one SMS."""
import random

import pytest
from sqlalchemy import func, select

from conftest import make_user
from killing import (PERSONALISED, UNIFORM, SimulatorProcess, WorkerPool, broadcast_states, copies_per_number,
                     enable_africastalking, kill_during, seed_people, serve_callbacks, start_broadcasts,
                     status_counts, wait_until)
from mpm.extensions import db
from mpm.models import Sms
from mpm.queue import redis_connection

pytestmark = pytest.mark.queue

PEOPLE = 400
SETTINGS = {"MPM_SMS_SWEEP_SECONDS": "4", "MPM_FANOUT_LEASE_SECONDS": "4", "MPM_BROADCAST_CHUNK_SIZE": "20",
            "MPM_SMS_UNCONFIRMED_WINDOW_SECONDS": "20"}
# A kill can also take along a send job the worker had just taken off the queue; its lane waits
# for the send job's lease (mpm.jobs.QUEUED_LEASE_SECONDS, 120 s) before the sweep restarts it.
DONE_WITHIN = 240


@pytest.fixture
def stack(app, tmp_path):
    simulator = SimulatorProcess(tmp_path / "simulator.log")
    pool = WorkerPool(app.config["SQLALCHEMY_DATABASE_URI"], app.config["REDIS_URL"], app.config["SECRET_KEY"],
                      tmp_path, SETTINGS)
    yield simulator, pool
    pool.stop()
    simulator.stop()


def test_five_kills_during_fanout_every_broadcast_completes_each_recipient_once(app, company, stack):
    simulator, pool = stack
    rng = random.Random()
    grid = seed_people(company.id, PEOPLE)
    enable_africastalking(company.id, simulator)
    server = serve_callbacks(app, company.id, simulator)
    try:
        for _ in range(2):
            pool.start()
        bodies = [UNIFORM.format(n=1), PERSONALISED.format(n=2), UNIFORM.format(n=3)]
        ids = start_broadcasts(company.id, make_user(company).id, grid, bodies)

        def fanning_out() -> bool:
            return any(state != "done" for state in broadcast_states(ids).values())

        kills = kill_during(pool, redis_connection(), 5, "fanout", fanning_out, rng)
        assert kills == 5, "the fan-outs ended before five kills"
        try:
            wait_until(lambda: set(broadcast_states(ids).values()) == {"done"}, DONE_WITHIN, "every broadcast to be done",
                       poll=0.5)
        except AssertionError as timeout:
            raise AssertionError(f"{timeout}: {broadcast_states(ids)} {status_counts(ids)}") from None
    finally:
        pool.stop()
        server.shutdown()

    received = simulator.received()
    for broadcast_id, body in zip(ids, bodies):
        people = db.session.scalars(select(Sms.person_id).where(Sms.broadcast_id == broadcast_id)).all()
        assert len(people) == PEOPLE and len(set(people)) == PEOPLE
        copies = copies_per_number(received, body.split(":")[0])
        assert len(copies) == PEOPLE and max(copies.values()) == 1
    counts = status_counts(ids)
    # Nothing failed; a request caught by a kill after all would wait visibly as unconfirmed.
    assert all(set(c) <= {"sent", "delivered", "unconfirmed"} for c in counts.values()), counts
    assert db.session.scalar(select(func.count(Sms.id))) == 3 * PEOPLE
