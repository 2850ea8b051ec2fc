"""Stopping a worker in the middle of a provider request loses nothing and sends nothing twice.

A real `flask --app wsgi worker` process (the Procfile's command) sends through the gateway
simulator, which is made to hang on each request, so the worker is caught inside one (its
messages `sending`)."""
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from rq import Worker
from sqlalchemy import func, select, update

from conftest import enable_simulated_gateway, run_jobs
from mpm import jobs
from mpm.extensions import db
from mpm.messaging.send import Recipient, queue_messages
from mpm.messaging.sweep import sweep
from mpm.models import Sms
from mpm.models.base import utcnow
from mpm.queue import HIGH, redis_connection

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.queue


def _start_worker(app, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPM_")}
    env.update({"DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"], "REDIS_URL": app.config["REDIS_URL"],
                "MPM_SECRET_KEY": app.config["SECRET_KEY"], "PYTHONUNBUFFERED": "1",
                "MPM_SMS_BATCH_SIZE": "10"})  # messages per request, as in _queue_two_requests
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


def _queue_two_requests(app, company, simulator, per_request=10):
    """Two requests' worth of messages (one body: one AfricasTalking request per SMS_BATCH_SIZE),
    with the simulated AfricasTalking hanging for a few seconds on each request."""
    enable_simulated_gateway(company, simulator)
    simulator.configure("africastalking", mode="timeout", timeout_seconds=4)
    app.config["SMS_BATCH_SIZE"] = per_request
    recipients = [Recipient(number=f"+2547000{n:05d}") for n in range(2 * per_request)]
    messages = queue_messages(company.id, recipients, "Planned outage tonight 22:00-23:00")
    return [m.id for m in messages]


def _running_worker(app, log: Path) -> subprocess.Popen:
    """A worker process that is up and waiting (its start-up time must not count)."""
    worker = _start_worker(app, log)
    _wait_until(lambda: bool(Worker.all(connection=redis_connection())), 60, "the worker to start", worker, log)
    return worker


def test_sigterm_mid_request_finishes_that_request_and_leaves_nothing_sending(app, company, simulator, tmp_path):
    log = tmp_path / "worker.log"
    worker = _running_worker(app, log)
    ids = _queue_two_requests(app, company, simulator)
    try:
        # Exactly the first request's messages are `sending`: the worker is inside that request.
        _wait_until(lambda: _statuses(company.id).get("sending") == 10, 30, "a request in flight", worker, log)
        assert _statuses(company.id) == {"sending": 10, "queued": 10}
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(60)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert code == 0, log.read_text()[-3000:]
    # The request in hand was answered (504: not taken) and settled; nothing is left `sending`.
    assert _statuses(company.id) == {"queued": 20}

    # The next worker sends everything once the gateway is back.
    simulator.configure("africastalking", mode="ok")
    db.session.execute(update(Sms).where(Sms.company_id == company.id).values(next_attempt_at=None))
    db.session.commit()
    run_jobs(app, until=lambda: _statuses(company.id) == {"sent": 20})
    numbers = [m["number"] for m in simulator.received()]
    assert len(numbers) == 20 and len(set(numbers)) == 20
    db.session.expire_all()
    assert {s.number for s in db.session.scalars(select(Sms).where(Sms.id.in_(ids)))} == set(numbers)


def test_a_worker_killed_mid_request_leaves_only_that_request_unconfirmed_and_the_rest_goes_out(
        app, company, simulator, tmp_path):
    """SIGKILL (power cut, OOM) inside a provider request: those messages may have reached the
    provider, so they become `unconfirmed` and are never sent again; everything else goes out
    once a new worker runs, each message once."""
    log = tmp_path / "worker.log"
    worker = _running_worker(app, log)
    _queue_two_requests(app, company, simulator)
    _wait_until(lambda: _statuses(company.id).get("sending") == 10, 30, "a request in flight", worker, log)
    worker.kill()
    worker.wait(10)
    simulator.configure("africastalking", mode="ok")

    # Right after the kill its send job's lease is still alive: nothing is decided yet.
    with app.app_context():
        assert sweep()["unconfirmed_after_crash"] == 0
        lease_left = redis_connection().ttl("mpm:lease:" + jobs.drain_lease(company.id, HIGH))
    assert 0 < lease_left <= jobs.running_lease_seconds()
    # The sweep after the lease lapsed (at most running_lease_seconds later, plus one sweep interval).
    later = utcnow() + timedelta(seconds=jobs.running_lease_seconds() + 1)
    with app.app_context():
        redis_connection().delete("mpm:lease:" + jobs.drain_lease(company.id, HIGH))
        result = sweep(now=later)
    assert result["unconfirmed_after_crash"] == 10 and result["lanes_restarted"] == 1
    assert _statuses(company.id) == {"unconfirmed": 10, "queued": 10}
    db.session.expire_all()
    unconfirmed = db.session.scalars(select(Sms).where(Sms.status == "unconfirmed")).all()
    assert all(s.report_due_at is not None and "worker stopped" in s.error for s in unconfirmed)

    run_jobs(app)  # the new worker: the restarted lane sends the rest
    assert _statuses(company.id) == {"unconfirmed": 10, "sent": 10}
    numbers = [m["number"] for m in simulator.received()]
    assert len(numbers) == 10 and not {s.number for s in unconfirmed} & set(numbers)
