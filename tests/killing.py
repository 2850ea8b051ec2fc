"""Real processes for the kill tests: the gateway simulator as its own process, and RQ workers
started as the Procfile starts them (`flask --app wsgi worker`) against the test's database and
Redis, SIGKILLed at chosen or random moments and replaced by fresh ones.

Helpers, not fixtures: tests/test_kill_*.py and bench/kill_during_broadcast.py build on them."""
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout: float, what: str, poll: float = 0.1):
    """condition() until it returns something truthy; that value, or AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


class SimulatorProcess:
    """`python -m mpm.dev.simulator` on a free loopback port, driven over its control endpoints."""

    def __init__(self, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "mpm.dev.simulator", "--port", str(self.port)], cwd=ROOT,
                                     stdout=open(log, "wb"), stderr=subprocess.STDOUT)
        wait_until(self._up, 30, "the simulator to start")

    def _up(self) -> bool:
        try:
            return requests.get(f"{self.url}/healthz", timeout=1).ok
        except requests.RequestException:
            return False

    def configure(self, gateway: str, **settings) -> None:
        requests.post(f"{self.url}/_simulator/config", json={"gateway": gateway, **settings}, timeout=5).raise_for_status()

    def register_callback(self, gateway: str, url: str, secret: str = "") -> None:
        requests.post(f"{self.url}/_simulator/callbacks", json={"gateway": gateway, "url": url, "secret": secret},
                      timeout=5).raise_for_status()

    def received(self) -> list[dict]:
        return requests.get(f"{self.url}/_simulator/received", timeout=30).json()["received"]

    def stats(self) -> dict:
        return requests.get(f"{self.url}/_simulator/stats", timeout=5).json()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def copies_per_number(received: list[dict], marker: str) -> Counter:
    """How many copies of messages whose body contains `marker` (one broadcast's) each number got."""
    return Counter(m["number"] for m in received if marker in m["message"])


class WorkerPool:
    """Worker processes on the test's database and Redis. `settings` are extra environment
    variables (MPM_SMS_SWEEP_SECONDS, MPM_BROADCAST_CHUNK_SIZE, ...)."""

    def __init__(self, database_url: str, redis_url: str, secret_key: str, logs: Path, settings: dict | None = None):
        self.logs = logs
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MPM_")}
        self.env.update({"DATABASE_URL": database_url, "REDIS_URL": redis_url, "MPM_SECRET_KEY": secret_key,
                         "PYTHONUNBUFFERED": "1", **(settings or {})})
        self.running: list[subprocess.Popen] = []
        self.started = 0
        self.kills: list[float] = []  # time.monotonic() of each SIGKILL

    def start(self) -> subprocess.Popen:
        self.started += 1
        log = open(self.logs / f"worker-{self.started}.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", "worker"], cwd=ROOT, env=self.env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.running.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen) -> None:
        """SIGKILL the worker and its children (RQ's scheduler), as a power cut or the OOM killer would."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        self.kills.append(time.monotonic())
        self.running.remove(proc)

    def kill_and_replace(self, proc: subprocess.Popen | None = None) -> subprocess.Popen:
        self.kill(proc or random.choice(self.running))
        return self.start()

    def by_pid(self, pid: int) -> subprocess.Popen | None:
        return next((p for p in self.running if p.pid == pid), None)

    def ready(self, connection) -> list[subprocess.Popen]:
        """The running workers that finished starting (registered with RQ)."""
        from rq import Worker

        pids = {w.pid for w in Worker.all(connection=connection)}
        return [p for p in self.running if p.pid in pids]

    def check_alive(self) -> None:
        for proc in self.running:
            if proc.poll() is not None:
                raise AssertionError(f"a worker exited on its own ({proc.returncode}): {self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        logs = sorted(self.logs.glob("worker-*.log"), key=lambda p: p.stat().st_mtime)
        return logs[-1].read_text(errors="replace")[-chars:] if logs else ""

    def stop(self) -> None:
        for proc in list(self.running):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        self.running.clear()


def worker_running(connection, pool: WorkerPool, func_names: tuple[str, ...]):
    """The pool's worker process whose current job is one of `func_names`, or None."""
    from rq import Worker
    from rq.exceptions import NoSuchJobError

    for worker in Worker.all(connection=connection):
        proc = pool.by_pid(worker.pid) if worker.pid else None
        if proc is None:
            continue
        try:
            job = worker.get_current_job()
        except NoSuchJobError:  # it finished (and was deleted) between the two reads: not running it now
            continue
        if job is not None and job.func_name in func_names:
            return proc
    return None


# --- a broadcast scenario with kills, for the tests and the bench -----------------------------------

FANOUT_JOBS = ("mpm.broadcasts.fanout.run_broadcast", "mpm.jobs.fanout")
UNIFORM = "Notice U{n}: power will be off on Saturday 08:00-14:00 for maintenance."
PERSONALISED = "Notice P{n}: Dear [name], power will be off on Saturday 08:00-14:00 for maintenance."


def seed_people(company_id: int, count: int) -> int:
    """`count` customers with primary numbers on one new mini-grid (bulk INSERTs); the grid's id."""
    from sqlalchemy import func, insert, select

    from mpm.extensions import db
    from mpm.models import MiniGrid, Person, PhoneNumber
    from mpm.models.base import utcnow

    grid = MiniGrid(company_id=company_id, name=f"Kill grid {time.monotonic_ns()}")
    db.session.add(grid)
    db.session.commit()
    first = (db.session.scalar(select(func.max(Person.id))) or 0) + 1
    now = utcnow()
    ids = range(first, first + count)
    db.session.execute(insert(Person), [
        {"id": i, "company_id": company_id, "kind": "customer", "name": f"Name{i}", "surname": "Kill",
         "mini_grid_id": grid.id, "created_at": now} for i in ids])
    db.session.execute(insert(PhoneNumber), [
        {"company_id": company_id, "person_id": i, "e164": f"+2547{i:08d}", "is_primary": True} for i in ids])
    db.session.commit()
    return grid.id


def serve_callbacks(app, company_id: int, simulator: SimulatorProcess):
    """Serve `app` on loopback and point the simulator's AfricasTalking reports at it; the server."""
    import threading

    from werkzeug.serving import make_server

    from mpm.plugins.gateway_settings import gateway_setting

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    secret = gateway_setting(company_id, "africastalking").callback_secret
    simulator.register_callback(
        "africastalking",
        f"http://127.0.0.1:{server.server_port}/api/africas-talking/callback/{company_id}/delivery-reports?token={secret}")
    return server


def enable_africastalking(company_id: int, simulator: SimulatorProcess, **options):
    from mpm.extensions import db
    from mpm.plugins.credentials import encrypt
    from mpm.plugins.gateway_settings import gateway_setting

    setting = gateway_setting(company_id, "africastalking")
    setting.enabled, setting.valid = True, True
    setting.credentials_encrypted = encrypt({"api_key": "simulator-key", "username": "sandbox"})
    setting.options = {"base_url": simulator.url, "environment": "sandbox", **options}
    db.session.commit()
    return setting


def start_broadcasts(company_id: int, author_id: int, grid_id: int, bodies: list[str]) -> list[int]:
    from mpm.broadcasts import lifecycle
    from mpm.broadcasts.audience import Audience
    from mpm.broadcasts.lifecycle import BroadcastForm

    ids = []
    for body in bodies:
        draft = lifecycle.save_draft(company_id, author_id, BroadcastForm(audience=Audience(mini_grid_ids=(grid_id,)),
                                                                          body=body))
        lifecycle.confirm(company_id, draft.id, author_id)
        ids.append(draft.id)
    return ids


def status_counts(broadcast_ids: list[int]) -> dict[int, dict[str, int]]:
    from sqlalchemy import func, select

    from mpm.extensions import db
    from mpm.models import Sms

    db.session.rollback()  # a fresh snapshot of what the workers wrote
    counts: dict[int, dict[str, int]] = {b: {} for b in broadcast_ids}
    for broadcast_id, state, n in db.session.execute(
            select(Sms.broadcast_id, Sms.status, func.count()).where(Sms.broadcast_id.in_(broadcast_ids))
            .group_by(Sms.broadcast_id, Sms.status)):
        counts[broadcast_id][state] = n
    return counts


def broadcast_states(broadcast_ids: list[int]) -> dict[int, str]:
    from sqlalchemy import select

    from mpm.extensions import db
    from mpm.models import Broadcast

    db.session.rollback()
    return dict(db.session.execute(select(Broadcast.id, Broadcast.state).where(Broadcast.id.in_(broadcast_ids))).all())


def kill_during(pool: WorkerPool, connection, kills: int, moment: str, still_running, rng: random.Random,
                gap: tuple[float, float] = (0.5, 3.0), timeout: float = 120) -> int:
    """SIGKILL `kills` times, `gap` seconds (random) apart, each time replacing the worker at once.
    moment="fanout": the next worker seen running a broadcast's fan-out job, a random few ms into
    it (stopped and checked again before the kill, so a worker that moved on to sending is spared);
    moment="random": any worker that is up, whatever it does. Stops early when still_running() turns False
    (nothing left to kill into); returns how many kills were made."""
    deadline = time.monotonic() + timeout
    while len(pool.kills) < kills and time.monotonic() < deadline and still_running():
        pool.check_alive()
        time.sleep(rng.uniform(*gap))
        if moment == "random":  # any worker that is up: one still importing has nothing to lose
            up = wait_until(lambda: pool.ready(connection), 60, "a worker to start", poll=0.05)
            pool.kill_and_replace(rng.choice(up))
            continue
        while time.monotonic() < deadline and still_running():
            victim = worker_running(connection, pool, FANOUT_JOBS)
            if victim is not None:
                time.sleep(rng.uniform(0, 0.01))
                # Frozen, it cannot move on to another job between this look and the kill.
                os.kill(victim.pid, signal.SIGSTOP)
                if worker_running(connection, pool, FANOUT_JOBS) is victim:
                    pool.kill_and_replace(victim)
                    break
                os.kill(victim.pid, signal.SIGCONT)
            time.sleep(0.003)
    return len(pool.kills)


SETTLED = ("delivered", "failed", "expired", "cancelled", "unconfirmed")  # final, or waiting visibly for a report


def kill_while_sending(app, company_id: int, author_id: int, simulator: SimulatorProcess, pool: WorkerPool,
                       people: int, kills: int, rng: random.Random, workers: int = 2,
                       gap: tuple[float, float] = (0.5, 2.5), settle_timeout: float = 300,
                       answer_delay: float = 0.1) -> dict:
    """Two broadcasts to the same `people` customers, one body for all and one per person, sent
    by `workers` worker processes of which `kills` are SIGKILLed at random moments (each replaced
    at once). Waits until every message is final or unconfirmed and both broadcasts are done,
    at most `settle_timeout` seconds after the last kill. The simulated provider takes
    `answer_delay` seconds per request (as real ones take hundreds of ms), so kills land inside
    requests. Returns the figures of issue 12."""
    grid = seed_people(company_id, people)
    enable_africastalking(company_id, simulator)
    simulator.configure("africastalking", mode="late_accept", answer_delay=answer_delay)
    server = serve_callbacks(app, company_id, simulator)
    bodies = [UNIFORM.format(n=1), PERSONALISED.format(n=2)]
    try:
        for _ in range(workers):
            pool.start()
        from mpm.queue import redis_connection

        wait_until(lambda: len(pool.ready(redis_connection())) == workers, 60, "the workers to start")
        started = time.monotonic()
        ids = start_broadcasts(company_id, author_id, grid, bodies)

        def unsettled() -> int:
            counts = status_counts(ids)
            return sum(n for c in counts.values() for s, n in c.items() if s not in SETTLED)

        def all_settled() -> bool:
            return unsettled() == 0 and set(broadcast_states(ids).values()) == {"done"}

        made = kill_during(pool, redis_connection(), kills, "random", lambda: not all_settled(), rng, gap=gap,
                           timeout=settle_timeout)
        last_kill = pool.kills[-1] if pool.kills else started
        timed_out = False
        try:
            wait_until(all_settled, settle_timeout - (time.monotonic() - last_kill), "every message to settle",
                       poll=1)
        except AssertionError:
            timed_out = True
        settled_at = time.monotonic()
    finally:
        pool.stop()
        server.shutdown()

    received = simulator.received()
    counts = status_counts(ids)
    figures = {"kills": made, "people": people, "timed_out": timed_out, "statuses": counts,
               "states": broadcast_states(ids), "seconds_to_settle_after_last_kill": round(settled_at - last_kill, 1),
               "seconds_total": round(settled_at - started, 1)}
    figures["duplicates"] = sum(max(0, n - 1) for body in bodies
                                for n in copies_per_number(received, body.split(":")[0]).values())
    figures["lost"] = sum(n for c in counts.values() for s, n in c.items() if s not in SETTLED) + sum(
        people - sum(c.values()) for c in counts.values())
    figures["crash_affected"] = {kind: counts[b].get("failed", 0) + counts[b].get("unconfirmed", 0)
                                 for kind, b in zip(("uniform", "personalised"), ids)}
    return figures
