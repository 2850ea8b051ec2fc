"""Stopping a worker in the middle of a batch loses nothing and sends nothing twice.

A real `flask --app wsgi worker` process (the Procfile's command) sends through the gateway
simulator. The company's send rate is used up ahead of time, so the worker is caught holding a
claimed batch (rows `sending`, attempts on record) while it waits for its send slot."""
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from rq import Queue, Worker
from rq.registry import StartedJobRegistry
from sqlalchemy import func, select

from conftest import enable_simulated_gateway, run_jobs
from mpm.extensions import db
from mpm.messaging import ratelimit
from mpm.messaging.send import Recipient, queue_messages
from mpm.messaging.sweep import sweep_lost_messages
from mpm.models import Sms
from mpm.models.base import utcnow
from mpm.queue import HIGH, queue, redis_connection

ROOT = Path(__file__).resolve().parent.parent
RATE = 4  # messages per second through the simulated AfricasTalking

pytestmark = pytest.mark.queue


def _start_worker(app, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPM_")}
    env.update({"DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"], "REDIS_URL": app.config["REDIS_URL"],
                "MPM_SECRET_KEY": app.config["SECRET_KEY"], "PYTHONUNBUFFERED": "1"})
    return subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", "worker"], cwd=ROOT, env=env,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def _statuses(company_id) -> dict[str, int]:
    db.session.expire_all()
    rows = db.session.execute(select(Sms.status, func.count()).where(Sms.company_id == company_id)
                              .group_by(Sms.status)).all()
    return dict(rows)


def _wait_until(condition, timeout: float, what: str, proc=None, log=None):
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the worker exited early ({proc.returncode}): {log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}" + (f": {log.read_text()[-3000:]}" if log else ""))
        time.sleep(0.05)


def _queue_two_batches(app, company, simulator, numbers_per_batch=10):
    enable_simulated_gateway(company, simulator, options={"send_rate": RATE})
    app.config["SMS_BATCH_SIZE"] = numbers_per_batch
    recipients = [Recipient(number=f"+2547000{n:05d}") for n in range(2 * numbers_per_batch)]
    # Someone else used the send rate for the next few seconds: the first batch will wait for its slot.
    ratelimit.reserve_send_slot(company.id, "africastalking", 4 * RATE, RATE)
    messages = queue_messages(company.id, recipients, "Planned outage tonight 22:00-23:00")
    return [m.id for m in messages]


def _running_worker(app, log: Path) -> subprocess.Popen:
    """A worker process that is up and waiting (its start-up time must not eat the reserved wait)."""
    worker = _start_worker(app, log)
    _wait_until(lambda: bool(Worker.all(connection=redis_connection())), 60, "the worker to start", worker, log)
    return worker


def test_sigterm_mid_batch_finishes_the_batch_then_leaves_the_rest_queued(app, company, simulator, tmp_path):
    log = tmp_path / "worker.log"
    worker = _running_worker(app, log)
    ids = _queue_two_batches(app, company, simulator)
    try:
        # The first batch is claimed (rows `sending`) and waiting for its send slot.
        _wait_until(lambda: _statuses(company.id).get("sending") == 10, 30, "a claimed batch", worker, log)
        assert simulator.received() == []
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(60)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert code == 0, log.read_text()[-3000:]
    # The batch in hand went out, once; the other batch was not started and is still queued.
    assert _statuses(company.id) == {"sent": 10, "queued": 10}
    first = simulator.received()
    assert len(first) == 10 and len({m["number"] for m in first}) == 10
    assert queue(HIGH).count == 1

    # The next worker sends the rest; nobody receives anything twice.
    run_jobs(app)
    assert _statuses(company.id) == {"sent": 20}
    numbers = [m["number"] for m in simulator.received()]
    assert len(numbers) == 20 and len(set(numbers)) == 20
    db.session.expire_all()
    assert {s.number for s in db.session.scalars(select(Sms).where(Sms.id.in_(ids)))} == set(numbers)


def test_a_killed_worker_never_causes_a_double_send(app, company, simulator, tmp_path):
    """SIGKILL (power cut, OOM) mid-batch: the claimed messages are never sent again, not even when
    the abandoned job is requeued by hand; the sweep marks them failed with a reason staff can act on."""
    log = tmp_path / "worker.log"
    worker = _running_worker(app, log)
    _queue_two_batches(app, company, simulator)
    _wait_until(lambda: _statuses(company.id).get("sending") == 10, 30, "a claimed batch", worker, log)
    worker.kill()
    worker.wait(10)

    # An operator requeues the abandoned job (e.g. `rq requeue`): the claim lets it send nothing.
    connection = redis_connection()
    started = StartedJobRegistry(HIGH, connection=connection)
    abandoned = started.get_job_ids()
    assert len(abandoned) == 1
    lane = Queue(HIGH, connection=connection)
    lane.enqueue_job(lane.fetch_job(abandoned[0]))
    run_jobs(app)
    assert _statuses(company.id) == {"sending": 10, "sent": 10}
    assert len(simulator.received()) == 10  # only the untouched batch

    with app.app_context():
        result = sweep_lost_messages(now=utcnow() + timedelta(minutes=16))
    assert result["failed_stuck"] == 10
    assert _statuses(company.id) == {"failed": 10, "sent": 10}
    db.session.expire_all()
    failed = db.session.scalars(select(Sms).where(Sms.company_id == company.id, Sms.status == "failed")).all()
    assert all("Check with the recipient before resending" in (s.events[-1].detail or "") for s in failed)
    run_jobs(app)
    assert len(simulator.received()) == 10
