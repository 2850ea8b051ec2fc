"""What an oversized body costs: refusing a 50 MiB incoming message, and showing an old 50 MiB row.

    .venv/bin/python bench/huge_bodies.py        # SQLite in a temporary folder
    options: --mib N (default 50)  --runs N (default 3)

In process, through the test client (logged in): posts an AfricasTalking incoming message of N MiB
with the right token (refused with 413 before it is read), then stores a body of N MiB directly (a row
from before the limit existed) and asks for its detail page, the inbox conversation and the CSV export.
Prints the median time and the size of each answer.
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select  # noqa: E402

from mpm import create_app  # noqa: E402
from mpm.extensions import db  # noqa: E402
from mpm.models import Company, Sms, User  # noqa: E402
from mpm.plugins.credentials import encrypt  # noqa: E402
from mpm.plugins.gateway_settings import gateway_setting  # noqa: E402


def timed(runs: int, request) -> tuple[float, int, int]:
    """(median seconds, answer bytes, status) of `runs` calls."""
    times, size, status = [], 0, 0
    for _ in range(runs):
        start = time.perf_counter()
        response = request()
        body = response.get_data()
        times.append(time.perf_counter() - start)
        size, status = len(body), response.status_code
    return statistics.median(times), size, status


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="mpm-bench-huge-")
    app = create_app({"TESTING": True, "SECRET_KEY": "bench", "REDIS_URL": "", "WTF_CSRF_ENABLED": False,
                      "RATELIMIT_ENABLED": False, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{folder}/bench.sqlite3"})
    huge = "A" * (args.mib * 1024 * 1024)
    with app.app_context():
        db.create_all()
        company = Company(name="Bench Mini-Grids", default_region="KE", time_zone="Africa/Nairobi", currency="KES")
        db.session.add(company)
        db.session.flush()
        user = User(company_id=company.id, email="bench@example.test", role="admin", name="Bench")
        user.set_password("bench-password")
        setting = gateway_setting(company.id, "africastalking")
        setting.enabled, setting.valid = True, True
        setting.credentials_encrypted = encrypt({"api_key": "bench-key", "username": "bench"})
        db.session.add(user)
        db.session.commit()
        url = f"/api/africas-talking/callback/{company.id}/incoming-messages?token={setting.callback_secret}"
        client = app.test_client()
        form = urlencode({"from": "+254712000001", "text": huge, "id": "in-1"}).encode()  # encoded once, not timed
        seconds, size, status = timed(args.runs, lambda: client.post(
            url, data=form, content_type="application/x-www-form-urlencoded"))
        stored = db.session.scalar(select(func.count()).select_from(Sms))
        print(f"incoming message of {args.mib} MiB: HTTP {status} in {seconds * 1000:.0f} ms, "
              f"{size} bytes answered, {stored} rows stored")

        old = Sms(company_id=company.id, direction="inbound", number="+254712000001", body=huge, status="received",
                  gateway="africastalking", trigger="reply")
        db.session.add(old)
        db.session.commit()
        sms_id = old.id
        db.session.expunge_all()
        assert client.post("/login", data={"email": "bench@example.test",
                                           "password": "bench-password"}).status_code == 302
        for label, path in (("detail page", f"/sms/{sms_id}"), ("inbox conversation", f"/inbox/{sms_id}"),
                            ("CSV export", "/sms/export.csv")):
            seconds, size, status = timed(args.runs, lambda: client.get(path, buffered=True))
            print(f"{label} of a stored {args.mib} MiB body: HTTP {status} in {seconds * 1000:.0f} ms, "
                  f"{size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
