"""Configuration read from the environment, with the embedded defaults."""
import os
from pathlib import Path


def data_dir() -> Path:
    path = Path(os.environ.get("MPM_DATA_DIR", "instance")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def from_environment() -> dict:
    """Settings for create_app; tests pass their own dict on top of this."""
    database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{data_dir() / 'mpm.sqlite3'}"
    # Heroku-style URLs name the old driver; psycopg 3 is the one installed.
    if database_url.startswith("postgres://"):
        database_url = "postgresql+psycopg://" + database_url[len("postgres://"):]
    elif database_url.startswith("postgresql://"):
        database_url = "postgresql+psycopg://" + database_url[len("postgresql://"):]
    return {
        "SECRET_KEY": os.environ.get("MPM_SECRET_KEY", "dev-only-change-me"),
        "SQLALCHEMY_DATABASE_URI": database_url,
        # A SQLite connection reads the planner statistics (refreshed by a minute job) when it opens:
        # pooled connections are renewed every few minutes so that none plans with old ones.
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_recycle": 300},
        "REDIS_URL": os.environ.get("REDIS_URL", ""),
        # Where providers post delivery reports: the public base URL of this server.
        "PUBLIC_BASE_URL": os.environ.get("MPM_PUBLIC_BASE_URL", "http://127.0.0.1:5000"),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": os.environ.get("MPM_HTTPS", "") == "1",
        "REMEMBER_COOKIE_HTTPONLY": True,
        "WTF_CSRF_TIME_LIMIT": None,
        "CUSTOMERS_PER_PAGE": _int("MPM_CUSTOMERS_PER_PAGE", 25),
        "SMS_MAX_SEGMENTS": _int("MPM_SMS_MAX_SEGMENTS", 6),
        # An incoming message longer than this many concatenated SMS parts is refused, never stored.
        "INBOUND_SMS_MAX_SEGMENTS": _int("MPM_INBOUND_SMS_MAX_SEGMENTS", 10),
        # The largest request body: nothing this app takes is near it (413 beyond).
        "MAX_CONTENT_LENGTH": _int("MPM_MAX_REQUEST_BYTES", 1024 * 1024),
        "SMS_RETRY_BASE_SECONDS": _int("MPM_SMS_RETRY_BASE_SECONDS", 30),
        # Backoff doubles per round up to this; a message is retried until its validity ends.
        "SMS_RETRY_MAX_SECONDS": _int("MPM_SMS_RETRY_MAX_SECONDS", 600),
        # Validity of a single message (a broadcast sets its own): past it, `expired`.
        "SMS_VALIDITY_HOURS": _int("MPM_SMS_VALIDITY_HOURS", 24),
        # How long a maybe-sent (`unconfirmed`) message waits for the provider's report.
        "SMS_UNCONFIRMED_WINDOW_SECONDS": _int("MPM_SMS_UNCONFIRMED_WINDOW_SECONDS", 2 * 3600),
        # Due messages a send job reads at a time (a request carries at most the gateway's own limit).
        "SMS_BATCH_SIZE": _int("MPM_SMS_BATCH_SIZE", 500),
        # A send job works this long, then goes to the back of its queue (fairness between companies).
        "SMS_DRAIN_BUDGET_SECONDS": float(os.environ.get("MPM_SMS_DRAIN_BUDGET_SECONDS", "1.5")),
        "SMS_SWEEP_SECONDS": _int("MPM_SMS_SWEEP_SECONDS", 30),
        # Circuit breaker per company and gateway: consecutive failed requests before it opens,
        # and how long it stays open before one probe request.
        "CIRCUIT_FAILURES": _int("MPM_CIRCUIT_FAILURES", 5),
        "CIRCUIT_COOLDOWN_SECONDS": _int("MPM_CIRCUIT_COOLDOWN_SECONDS", 60),
        "GATEWAY_TIMEOUT_SECONDS": float(os.environ.get("MPM_GATEWAY_TIMEOUT", "10")),
        # How long a broadcast's fan-out lease lasts without renewal: with SMS_SWEEP_SECONDS it bounds
        # how soon a fan-out killed with its worker goes on.
        "FANOUT_LEASE_SECONDS": _int("MPM_FANOUT_LEASE_SECONDS", 45),
        # How long the report writer's lease lasts without renewal: how soon the reports a killed
        # writer left in Redis are picked up again (by the next report or the sweep).
        "REPORT_WRITER_LEASE_SECONDS": _int("MPM_REPORT_WRITER_LEASE_SECONDS", 15),
        # The local gateway simulator is a development tool: only the embedded run sets it.
        "SIMULATOR_URL": os.environ.get("MPM_SIMULATOR_URL", ""),
        "RATELIMIT_STORAGE_URI": os.environ.get("MPM_RATELIMIT_STORAGE_URI", "memory://"),
        # E-mail (set-password links, alerts to admins); off while SMTP_HOST is empty.
        "SMTP_HOST": os.environ.get("MPM_SMTP_HOST", ""),
        "SMTP_PORT": _int("MPM_SMTP_PORT", 587),
        "SMTP_SECURITY": os.environ.get("MPM_SMTP_SECURITY", "starttls"),  # starttls / ssl / none
        "SMTP_USERNAME": os.environ.get("MPM_SMTP_USERNAME", ""),
        "SMTP_PASSWORD": os.environ.get("MPM_SMTP_PASSWORD", ""),
        "SMTP_FROM": os.environ.get("MPM_SMTP_FROM", ""),
    }
