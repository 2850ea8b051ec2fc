"""MPM Messaging: the SMS module of MicroPowerManager."""
from pathlib import Path

from flask import Flask, render_template, request
from sqlalchemy import event
from sqlalchemy.engine import Engine

from mpm import config
from mpm.extensions import csrf, db, login_manager, migrate

MIGRATIONS_DIR = str(Path(__file__).parent / "migrations")


def create_app(test_config: dict | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(config.from_environment())
    if test_config:
        app.config.update(test_config)
    register_extensions(app)
    register_blueprints(app)
    register_errorhandlers(app)
    from mpm.security import init_security

    init_security(app)  # after the blueprints: it wraps the login view with its rate limits
    register_template_helpers(app)
    register_security_headers(app)
    register_liveness(app)
    from mpm.cli import register_commands

    register_commands(app)
    return app


def register_extensions(app: Flask) -> None:
    from mpm import models  # noqa: F401  (every table on the metadata)

    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR, render_as_batch=True)
    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please log in to continue."

    @login_manager.user_loader
    def load_user(user_id: str):
        return db.session.get(models.User, int(user_id))


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, connection_record):
    # WAL lets the web server read while the worker writes; foreign keys are off by default in SQLite.
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def register_blueprints(app: Flask) -> None:
    from mpm.blueprints import ALL_BLUEPRINTS

    for blueprint in ALL_BLUEPRINTS:
        app.register_blueprint(blueprint)


def register_errorhandlers(app: Flask) -> None:
    def render_error(error):
        code = getattr(error, "code", 500)
        return render_template("error.html", code=code, description=getattr(error, "description", "")), code

    for code in (400, 403, 404, 405, 429, 500):
        app.register_error_handler(code, render_error)

    from flask_wtf.csrf import CSRFError

    @app.errorhandler(CSRFError)
    def csrf_error(error):
        message = "The form expired or did not come from this site. Reload the page and try again."
        return render_template("error.html", code=400, description=message), 400


def register_template_helpers(app: Flask) -> None:
    from mpm import navigation, phones

    app.jinja_env.filters["phone"] = phones.display
    app.context_processor(navigation.sidebar_context)
    register_insight_helpers(app)


def register_insight_helpers(app: Flask) -> None:
    """Charts, durations and the alert banner of every page."""
    from mpm import alerts, charts, dashboard
    from mpm.plugins import SHORT_LABELS

    app.jinja_env.filters["duration"] = dashboard.duration_text
    app.jinja_env.filters["delivery_chart"] = lambda view, chart_id, title: charts.delivery_chart(view.points, chart_id, title)
    app.jinja_env.filters["gateway_label"] = lambda key: SHORT_LABELS.get(key, key) if key else "no gateway yet"
    app.jinja_env.globals["share_bar"] = charts.share_bar
    app.context_processor(alerts.banner_context)


def register_security_headers(app: Flask) -> None:
    @app.after_request
    def add_headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; "
            "base-uri 'self'; form-action 'self'; object-src 'none'",
        )
        response.headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()")
        response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        if app.config.get("SESSION_COOKIE_SECURE"):
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
        # Pages of a logged-in user hold customer data: no copy in a shared computer's cache.
        if response.mimetype == "text/html" and request.endpoint != "static":
            response.headers.setdefault("Cache-Control", "no-store")
        return response


def register_liveness(app: Flask) -> None:
    @app.get("/healthz-lite")
    def healthz_lite():
        # Liveness only (no database, no Redis): for load balancers, and the benchmarks' baseline.
        return "ok\n", 200, {"Content-Type": "text/plain; charset=utf-8"}
