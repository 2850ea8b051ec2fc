"""Server-side time of the SMS history page on a million messages.

    .venv/bin/python bench/history_page.py                 # SQLite in a temporary folder
    MPM_BENCH_DATABASE_URL=postgresql://user@host/db .venv/bin/python bench/history_page.py
                                                           # PostgreSQL: its tables are DROPPED and refilled
    options: --rows N (default 1,000,000)  --runs N (default 5)  --keep PATH (SQLite file to reuse)
             --refill (fill again even when a previous run left the rows there)

Fills the database with bulk inserts, then asks the app (in process, through the test client, logged
in) for the first, a middle and the last page of the history, with and without filters, and prints the
median time of each request: routing, the keyset query, and rendering the page.
"""
import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, insert, select, text  # noqa: E402
from werkzeug.datastructures import MultiDict  # noqa: E402

from mpm import create_app  # noqa: E402
from mpm.extensions import db  # noqa: E402
from mpm.messaging.history import NEWEST_FIRST, HistoryFilter, _filtered, encode_cursor, history_page  # noqa: E402
from mpm.models import Company, Person, PhoneNumber, Sms, User  # noqa: E402

PEOPLE = 5000
START = datetime(2025, 1, 1, tzinfo=timezone.utc)


def build_app(database_url: str):
    if database_url.startswith("postgresql://"):
        database_url = "postgresql+psycopg://" + database_url[len("postgresql://"):]
    return create_app({
        "TESTING": True, "SECRET_KEY": "bench", "SQLALCHEMY_DATABASE_URI": database_url, "REDIS_URL": "",
        "WTF_CSRF_ENABLED": False, "RATELIMIT_ENABLED": False, "SMS_HISTORY_PER_PAGE": 50,
    })


def fill(rows: int) -> None:
    rng = random.Random(5)
    company = Company(name="Bench Mini-Grids", default_region="KE", time_zone="Africa/Nairobi", currency="KES")
    other = Company(name="Other tenant", default_region="KE", time_zone="Africa/Nairobi", currency="KES")
    db.session.add_all([company, other])
    db.session.flush()
    user = User(company_id=company.id, email="bench@example.test", role="admin", name="Bench")
    user.set_password("bench-password")
    db.session.add(user)
    db.session.commit()
    first_names = ["Amina", "Baraka", "Chege", "Daudi", "Esther", "Faraji", "Grace", "Hassan", "Imani", "Juma"]
    people = [dict(company_id=company.id, kind="customer", name=f"{rng.choice(first_names)}{i}",
                   surname=f"Surname{i}", created_at=START) for i in range(PEOPLE)]
    db.session.execute(insert(Person), people)
    person_ids = list(db.session.scalars(select(Person.id).where(Person.company_id == company.id).order_by(Person.id)))
    numbers = {pid: f"+2547{10000000 + i:08d}" for i, pid in enumerate(person_ids)}
    db.session.execute(insert(PhoneNumber), [dict(company_id=company.id, person_id=pid, e164=numbers[pid], is_primary=True)
                                             for pid in person_ids])
    db.session.commit()

    # A year of traffic; a broadcast stores many rows with the same created_at, as the real fan-out does.
    step = timedelta(days=365) / rows
    statuses = ["delivered"] * 80 + ["failed"] * 5 + ["sent"] * 5 + ["queued"] * 2 + ["expired"] * 1
    triggers = ["manual"] * 20 + ["broadcast"] * 60 + ["transaction"] * 15 + ["maintenance"] * 5
    gateways = ["africastalking"] * 70 + ["textbee"] * 25 + ["viber"] * 5
    table = Sms.__table__
    batch, started = [], time.perf_counter()
    for i in range(rows):
        pid = person_ids[rng.randrange(PEOPLE)]
        inbound = rng.random() < 0.07
        status = "received" if inbound else rng.choice(statuses)
        moment = START + step * (i - i % 20 if rng.random() < 0.5 else i)
        batch.append(dict(
            company_id=company.id if i % 100 else other.id, direction="inbound" if inbound else "outbound",
            person_id=pid, number=numbers[pid], body=f"Message {i}: your token is {rng.randrange(10**8):08d}",
            encoding="GSM-7", segments=1, status=status, gateway=rng.choice(gateways),
            provider_message_id=f"ATXid_{i}", cost="KES 0.8000", trigger="reply" if inbound else rng.choice(triggers),
            lane="high", attempts=1, tried_gateways=[], error="InvalidPhoneNumber" if status == "failed" else None,
            created_at=moment, updated_at=moment))
        if len(batch) == 20000:
            db.session.execute(insert(table), batch)
            db.session.commit()
            batch = []
            print(f"\r  {i + 1:>9,} rows inserted ({(i + 1) / (time.perf_counter() - started):,.0f}/s)", end="",
                  flush=True)
    if batch:
        db.session.execute(insert(table), batch)
        db.session.commit()
    print()
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    else:
        db.session.execute(text("ANALYZE"))
        db.session.commit()


def middle_cursor(company_id: int, query: dict) -> str:
    """Cursor of the row halfway down the filtered list (an OFFSET, once, while preparing)."""
    base = _filtered(company_id, HistoryFilter.from_args(MultiDict(query)))
    total = db.session.scalar(select(func.count()).select_from(base.subquery()))
    row = db.session.execute(base.with_only_columns(Sms.created_at, Sms.id).order_by(*NEWEST_FIRST)
                             .offset(total // 2).limit(1)).one()
    return encode_cursor(row.created_at, row.id)


def export_figures(client) -> None:
    """The whole company's history as CSV through the real route, read as it streams."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    response = client.get("/sms/export.csv")
    size = lines = 0
    for chunk in response.response:
        size += len(chunk)
        lines += chunk.count(b"\n")
    seconds = time.perf_counter() - started
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(f"CSV export: {lines - 1:,} rows, {size / 1e6:.0f} MB in {seconds:.1f} s "
          f"({(lines - 1) / seconds:,.0f} rows/s); peak memory grew by {grown:.0f} MB while streaming")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", help="SQLite file: filled once, reused by later runs")
    parser.add_argument("--refill", action="store_true", help="empty and fill again even if the rows are there")
    parser.add_argument("--export", action="store_true", help="also time the CSV export of every row, streamed")
    args = parser.parse_args()

    url = os.environ.get("MPM_BENCH_DATABASE_URL")
    tmp = None
    if not url:
        path = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mpm-bench-")) / "history.sqlite3"
        tmp = None if args.keep else path
        url = f"sqlite:///{path}"
    app = build_app(url)
    with app.app_context():
        print(f"database: {db.engine.dialect.name}  ({url.split('@')[-1]})")
        existing = db.inspect(db.engine).has_table("sms") and db.session.scalar(select(func.count()).select_from(Sms))
        if existing and existing >= args.rows and not args.refill:
            print(f"reusing {existing:,} rows")
        else:
            db.drop_all()
            db.create_all()
            started = time.perf_counter()
            fill(args.rows)
            print(f"filled {args.rows:,} rows in {time.perf_counter() - started:.1f} s")
        company_id = db.session.scalar(select(Company.id).where(Company.name == "Bench Mini-Grids"))
        person = db.session.scalar(select(Person).where(Person.company_id == company_id).order_by(Person.id).limit(1))
        number = person.primary_number.e164
        filters = [
            ("no filter", {}),
            ("status=failed", {"status": "failed"}),
            ("outbound via textbee", {"direction": "outbound", "gateway": "textbee"}),
            ("trigger=transaction", {"trigger": "transaction"}),
            ("one month", {"from": "2025-06-01", "to": "2025-06-30"}),
            ("search a name", {"q": person.name}),
            ("search a number", {"q": "0" + number[4:]}),
        ]
        cursors = {label: middle_cursor(company_id, query) for label, query in filters}

    client = app.test_client()
    login = client.post("/login", data={"email": "bench@example.test", "password": "bench-password"})
    assert login.status_code == 302, "bench login failed"

    print(f"\nmedian of {args.runs} runs, ms; 50 rows a page. 'page' = the whole request in process (route,")
    print("keyset query, rendering); 'query' = history_page() alone (the database part of it)")
    print(f"{'filter':<24}" + "".join(f"{h:>16}" for h in ("first page", "middle page", "last page")))
    print(f"{'':<24}" + "".join(f"{'page  query':>16}" for _ in range(3)))
    worst = 0.0
    for label, query in filters:
        cells = []
        for position in ({}, {"after": cursors[label]}, {"oldest": "1"}):
            params = {**query, **position}
            response = client.get("/sms/", query_string=params)  # warm-up, and a check
            assert response.status_code == 200 and b'id="sms-row-' in response.data, (label, position)
            page_times, query_times = [], []
            for _ in range(args.runs):
                started = time.perf_counter()
                client.get("/sms/", query_string=params)
                page_times.append((time.perf_counter() - started) * 1000)
                with app.app_context():
                    flt = HistoryFilter.from_args(MultiDict(params))
                    started = time.perf_counter()
                    history_page(company_id, flt, 50)
                    query_times.append((time.perf_counter() - started) * 1000)
            page_ms, query_ms = statistics.median(page_times), statistics.median(query_times)
            worst = max(worst, page_ms)
            cells.append(f"{page_ms:>9.1f}{query_ms:>7.1f}")
        print(f"{label:<24}" + "".join(cells))
    print(f"\nslowest page: {worst:.1f} ms (aim: under 50 ms)")
    if args.export:
        export_figures(client)
    if tmp:
        print(f"database file: {tmp} (delete it, or pass --keep to reuse)")


if __name__ == "__main__":
    main()
