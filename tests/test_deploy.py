"""deploy/ is tested by running it: the Procfile's and the systemd units' web and worker commands
start for real on the test's database and Redis, /healthz sees the worker, and both stop cleanly."""
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from rq import Worker
from sqlalchemy import create_engine, inspect

from mpm.queue import redis_connection

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.queue


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def procfile() -> dict[str, str]:
    commands = {}
    for line in (DEPLOY / "Procfile").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, command = line.split(":", 1)
            commands[name.strip()] = command.strip()
    return commands


def unit(name: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def env_example() -> dict[str, str]:
    values = {}
    for line in (DEPLOY / "mpm.env.example").read_text().splitlines():
        if re.match(r"^[A-Z_]+=", line):
            key, value = line.split("=", 1)
            values[key] = value
    return values


def _environment(app, port: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MPM_", "DATABASE_URL", "REDIS_URL"))}
    env.update(env_example())
    env.update({
        "PATH": f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}",
        "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
        "REDIS_URL": app.config["REDIS_URL"],
        "MPM_SECRET_KEY": "deploy-test-secret",
        "MPM_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "MPM_HTTPS": "0",
        "MPM_TRUSTED_PROXIES": "0",
        "MPM_BIND": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
    })
    return env


def _systemd_command(exec_start: str, env: dict) -> str:
    """What systemd would run: ${VAR} from the EnvironmentFile, the venv where the unit expects /opt/mpm/.venv."""
    command = re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], exec_start)
    return command.replace("/opt/mpm/.venv/bin/", f"{VENV_BIN}/")


def _start(command: str, env: dict, log: Path) -> subprocess.Popen:
    # `exec`: the signal goes to gunicorn / the RQ worker themselves, as with systemd's KillMode=mixed.
    return subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=ROOT, env=env,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def _wait_for_worker_in_healthz(url: str, procs: list, logs: list[Path]) -> dict:
    deadline = time.monotonic() + 60
    report: dict = {}
    while time.monotonic() < deadline:
        for proc, log in zip(procs, logs):
            if proc.poll() is not None:
                pytest.fail(f"{log.name} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            report = requests.get(url + "/healthz", timeout=2).json()
            if report["workers"]["count"] >= 1:
                return report
        except requests.RequestException:
            pass
        time.sleep(0.2)
    pytest.fail(f"/healthz never reported a worker: {report}\n" + "\n".join(l.read_text()[-2000:] for l in logs))


def _stop_gracefully(procs: list[subprocess.Popen]) -> list[int]:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(40))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait())
    return codes


def _run_web_and_worker(app, tmp_path, web_command, worker_command, env):
    logs = [tmp_path / "web.log", tmp_path / "worker.log"]
    procs = [_start(web_command, env, logs[0]), _start(worker_command, env, logs[1])]
    url = f"http://127.0.0.1:{env['PORT']}"
    try:
        report = _wait_for_worker_in_healthz(url, procs, logs)
        assert report["status"] == "ok"
        assert report["database"]["ok"] and report["redis"]["ok"]
        assert report["database"]["dialect"] == app.config["SQLALCHEMY_DATABASE_URI"].split(":")[0].split("+")[0]
        login_page = requests.get(url + "/login", timeout=5)
        assert login_page.status_code == 200 and "Log in" in login_page.text
        assert login_page.headers["X-Frame-Options"] == "DENY"
        assert "gunicorn" in login_page.headers.get("Server", "")
        lite = requests.get(url + "/healthz-lite", timeout=5)
        assert lite.status_code == 200 and lite.text == "ok\n"
        # Providers put the company's callback secret in the URL; the access log must not keep it.
        requests.post(url + "/api/africas-talking/callback/1/delivery-reports?token=QUERYSECRET123",
                      data={"id": "x", "status": "Success"}, timeout=5)
        requests.get(url + "/api/sms-android-callback/1/PATHSECRET456/delivery", timeout=5)
    finally:
        codes = _stop_gracefully(procs)
    assert codes == [0, 0], f"exit codes {codes}:\n" + "\n".join(l.read_text()[-2000:] for l in logs)
    access_log = logs[0].read_text()
    assert "/api/africas-talking/callback/1/delivery-reports?token=[redacted]" in access_log
    assert "/api/sms-android-callback/1/[redacted]/delivery" in access_log
    assert "QUERYSECRET123" not in access_log and "PATHSECRET456" not in access_log
    with app.app_context():
        assert Worker.all(connection=redis_connection()) == []  # the stopped worker said goodbye


def test_procfile_web_and_worker_serve_and_stop_cleanly(app, tmp_path):
    commands = procfile()
    assert set(commands) == {"release", "web", "worker"}
    env = _environment(app, _free_port())
    _run_web_and_worker(app, tmp_path, commands["web"], commands["worker"], env)


def test_systemd_units_web_and_worker_serve_and_stop_cleanly(app, tmp_path):
    web, worker = unit("mpm-web.service"), unit("mpm-worker@.service")
    example = env_example()
    for settings in (web, worker):
        assert settings["EnvironmentFile"] == ["/etc/mpm/mpm.env"]
        for variable in re.findall(r"\$\{(\w+)\}", settings["ExecStart"][0]):
            assert variable in example, f"{variable} is used by a unit but not in mpm.env.example"
    # Graceful worker stop: only the worker gets SIGTERM, so the batch in its work horse can finish.
    assert worker["KillMode"] == ["mixed"] and int(worker["TimeoutStopSec"][0]) >= 60
    env = _environment(app, _free_port())
    _run_web_and_worker(app, tmp_path, _systemd_command(web["ExecStart"][0], env),
                        _systemd_command(worker["ExecStart"][0], env), env)


def test_release_command_migrates_an_empty_database(app, tmp_path):
    database = tmp_path / "fresh.sqlite3"
    env = _environment(app, _free_port())
    env["DATABASE_URL"] = f"sqlite:///{database}"
    for command in (procfile()["release"], _systemd_command(unit("mpm-migrate.service")["ExecStart"][0], env)):
        result = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
    tables = set(inspect(create_engine(f"sqlite:///{database}")).get_table_names())
    assert {"alembic_version", "company", "user", "person", "sms", "sms_event", "gateway_setting"} <= tables


def test_readme_deploying_section_names_every_variable_of_the_env_file():
    readme = (ROOT / "README.md").read_text()
    assert "## Deploying" in readme
    section = readme.split("## Deploying", 1)[1]
    for variable in env_example():
        assert variable in section, f"README's Deploying section does not explain {variable}"
    assert shlex.split(procfile()["worker"])[:4] == ["flask", "--app", "wsgi", "worker"]
