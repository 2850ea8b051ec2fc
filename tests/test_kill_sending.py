"""Issue 12's proof at test size: SIGKILLs at random moments while two broadcasts (one body for
all, one per person) go out through real `flask worker` processes and the simulator process.
Nobody gets an SMS twice, no message is lost, a kill costs at most the one provider request in
flight (its messages `unconfirmed` or failed), and everything is final within 5 minutes.
bench/kill_during_broadcast.py runs the same at full size (3,000 recipients, 10 kills)."""
import random

import pytest

from conftest import make_user
from killing import SimulatorProcess, WorkerPool, kill_while_sending

pytestmark = pytest.mark.queue

PEOPLE = 300
KILLS = 6
BATCH = 50  # messages per provider request with one body for all
SETTINGS = {
    "MPM_SMS_SWEEP_SECONDS": "5",  # how soon a dead worker's work is noticed
    "MPM_FANOUT_LEASE_SECONDS": "5",
    "MPM_BROADCAST_CHUNK_SIZE": "100",
    "MPM_SMS_BATCH_SIZE": str(BATCH),
    "MPM_SMS_UNCONFIRMED_WINDOW_SECONDS": "30",  # how long an unconfirmed message waits for its report
    "MPM_GATEWAY_TIMEOUT": "3",
}


@pytest.fixture
def stack(app, tmp_path):
    simulator = SimulatorProcess(tmp_path / "simulator.log")
    pool = WorkerPool(app.config["SQLALCHEMY_DATABASE_URI"], app.config["REDIS_URL"], app.config["SECRET_KEY"],
                      tmp_path, SETTINGS)
    yield simulator, pool
    pool.stop()
    simulator.stop()


def test_random_kills_while_sending_no_duplicates_none_lost_all_final_in_time(app, company, stack):
    simulator, pool = stack
    figures = kill_while_sending(app, company.id, make_user(company).id, simulator, pool, PEOPLE, KILLS,
                                 random.Random(), gap=(0.3, 1.5), settle_timeout=300, answer_delay=0.1)
    print(figures)
    assert figures["kills"] == KILLS, figures
    assert figures["duplicates"] == 0, figures
    assert not figures["timed_out"] and figures["lost"] == 0, figures
    assert set(figures["states"].values()) == {"done"}, figures
    # A kill leaves at most the request in flight unresolved: a whole batch, or one personal message.
    assert figures["crash_affected"]["uniform"] <= KILLS * BATCH, figures
    assert figures["crash_affected"]["personalised"] <= KILLS, figures
