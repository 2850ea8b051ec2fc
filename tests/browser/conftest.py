"""Browser-test fixtures: the real app served on a loopback port, a real RQ worker process,
and Debian's chromium driven by Playwright (the gateway simulator is tests/conftest.py's).

Each test saves a screenshot of its final state under $MPM_TEST_OUTPUT/screenshots."""
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from werkzeug.serving import make_server

from conftest import PASSWORD

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-quic", "--disable-sync"]
OUTPUT = Path(os.environ.get("MPM_TEST_OUTPUT", "test-output"))
SCREENSHOTS = OUTPUT / "screenshots"
TEST_SECRET_KEY = "test-secret-key"  # the same key as the app fixture: both decrypt gateway credentials


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture
def live_port():
    return free_port()


@pytest.fixture
def live_url(live_port):
    return f"http://127.0.0.1:{live_port}"


@pytest.fixture
def app(app, live_url):
    # Callback URLs handed to providers (and the simulator) must point at the live server.
    app.config["PUBLIC_BASE_URL"] = live_url
    return app


@pytest.fixture
def live_server(app, live_port, live_url):
    """create_app() served by werkzeug in a thread, as a browser sees it."""
    server = make_server("127.0.0.1", live_port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    wait_for_http(live_url + "/login")
    yield live_url
    server.shutdown()
    thread.join(10)


def _process_env(app, **extra) -> dict:
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
        "REDIS_URL": app.config["REDIS_URL"],
        "MPM_SECRET_KEY": app.config["SECRET_KEY"],
        "MPM_PUBLIC_BASE_URL": app.config["PUBLIC_BASE_URL"],
        "MPM_SIMULATOR_URL": app.config.get("SIMULATOR_URL") or "",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


def stop_process(proc: subprocess.Popen, timeout: float = 20) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def worker(app, tmp_path):
    """A real `flask --app wsgi worker` process on the test's database and Redis."""
    log = open(tmp_path / "worker.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", "worker"], cwd=ROOT,
                            env=_process_env(app), stdout=log, stderr=subprocess.STDOUT)
    from rq import Worker

    from mpm.queue import redis_connection

    with app.app_context():
        connection = redis_connection()
    deadline = time.monotonic() + 30
    while not Worker.all(connection=connection):
        if proc.poll() is not None or time.monotonic() > deadline:
            log.close()
            pytest.fail("the RQ worker did not start:\n" + (tmp_path / "worker.log").read_text()[-3000:])
        time.sleep(0.1)
    yield proc
    stop_process(proc)
    log.close()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    yield browser
    browser.close()
    playwright.stop()


@pytest.fixture
def page(request, browser, live_server):
    context = browser.new_context(base_url=live_server, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # HTTP statuses are judged from the responses (422 is an expected validation answer), the
    # console only for script errors and CSP violations.
    page.on("console", lambda msg: errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
    page.on("response", lambda r: errors.append(f"{r.status} {r.request.method} {r.url}")
            if r.status >= 500 or (r.status == 404 and not r.url.endswith("/favicon.ico")) else None)
    yield page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    context.close()
    # A script error, a CSP violation or a server error is a broken page even if the test passed.
    assert not errors, f"browser errors: {errors}"


@pytest.fixture
def log_in():
    """log_in(page, email): through the real login form."""
    return _log_in


def _log_in(page, email: str, password: str = PASSWORD) -> None:
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/$"))
