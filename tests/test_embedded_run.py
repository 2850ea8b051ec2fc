"""`make run`'s runner: the whole embedded stack comes up on an empty folder, prints a login that
works, and Ctrl-C stops every process it started."""
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_embedded_run_serves_the_demo_and_stops_everything_on_ctrl_c(tmp_path):
    port = _free_port()
    env = dict(os.environ, PORT=str(port), MPM_DATA_DIR=str(tmp_path / "data"))
    for name in ("DATABASE_URL", "REDIS_URL", "MPM_ADMIN_PASSWORD", "MPM_ADMIN_EMAIL", "MPM_SECRET_KEY"):
        env.pop(name, None)
    log = open(tmp_path / "run.log", "w+")
    runner = subprocess.Popen([sys.executable, "-m", "mpm.dev.embedded"], cwd=ROOT, env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        report = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                report = requests.get(f"{base}/healthz", timeout=2).json()
                if report["workers"]["ok"]:
                    break
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.5)
        assert report and report["status"] == "ok", Path(tmp_path / "run.log").read_text()[-2000:]
        assert report["database"]["dialect"] == "sqlite"
        assert (tmp_path / "data" / "mpm.sqlite3").exists()

        printed = Path(tmp_path / "run.log").read_text()
        email, password = re.search(r"Admin login: (\S+) / (\S+)", printed).groups()
        session = requests.Session()
        page = session.get(f"{base}/login", timeout=5).text
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
        session.post(f"{base}/login", data={"email": email, "password": password, "csrf_token": token}, timeout=5)
        customers = session.get(f"{base}/customers/", timeout=5).text
        assert "2000 people" in customers  # the demo data is there

        children = psutil.Process(runner.pid).children(recursive=True)
        assert len(children) >= 4  # simulator, worker, web server and its workers
    finally:
        runner.send_signal(signal.SIGINT)
        try:
            runner.wait(30)
        finally:
            if runner.poll() is None:
                runner.kill()
    assert runner.returncode == 0
    time.sleep(1)
    assert [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE] == []
