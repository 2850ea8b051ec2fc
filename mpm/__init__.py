"""MPM Messaging: the SMS module of MicroPowerManager."""
from pathlib import Path

from flask import Flask, jsonify, render_template, request
from sqlalchemy import event
from sqlalchemy.engine import Engine
from werkzeug.routing import IntegerConverter

from mpm import config
from mpm.extensions import csrf, db, login_manager, migrate
from mpm.models.base import DB_INT_MAX, utcnow

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
    def load_user(session_user_id: str):
        from mpm.accounts.users import user_for_session

        return user_for_session(session_user_id)


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


class DatabaseIdConverter(IntegerConverter):
    """`<int:…>` in every route: an id no database column can hold matches no route (404), instead of
    reaching PostgreSQL and failing there."""

    def __init__(self, url_map, *args, **kwargs):
        kwargs.setdefault("max", DB_INT_MAX)
        super().__init__(url_map, *args, **kwargs)


def register_blueprints(app: Flask) -> None:
    from mpm.blueprints import ALL_BLUEPRINTS, callbacks

    app.url_map.converters["int"] = DatabaseIdConverter
    for blueprint in ALL_BLUEPRINTS:
        app.register_blueprint(blueprint)
    callbacks.install(app)
    if app.config.get("SIMULATOR_URL"):
        # Development tools exist only beside the simulator; production never sets SIMULATOR_URL.
        from mpm.blueprints.simulator_tools import bp as simulator_tools

        app.register_blueprint(simulator_tools)


def register_errorhandlers(app: Flask) -> None:
    def render_error(error):
        code = getattr(error, "code", 500)
        return render_template("error.html", code=code, description=getattr(error, "description", "")), code

    for code in (400, 403, 404, 405, 429, 500):
        app.register_error_handler(code, render_error)

    @app.errorhandler(413)
    def request_too_large(error):
        # MAX_CONTENT_LENGTH or Werkzeug's form limits: refused before anything is read into the app.
        from mpm.web import too_large

        return _answer(too_large(request.method, request.path, request.content_length, request.remote_addr,
                                 app.config.get("MAX_CONTENT_LENGTH")), 413)

    def _answer(message: str, code: int):
        """JSON for machine clients (the API), a page for people."""
        if request.path.startswith("/api/"):
            return jsonify({"error": message}), code
        return render_template("error.html", code=code, description=message), code

    from flask_wtf.csrf import CSRFError

    @app.errorhandler(CSRFError)
    def csrf_error(error):
        message = "The form expired or did not come from this site. Reload the page and try again."
        return render_template("error.html", code=400, description=message), 400


def register_template_helpers(app: Flask) -> None:
    from flask_login import current_user

    from mpm import company_time, navigation
    from mpm.gateways.registry import get_gateway
    from mpm.messaging.history import TRIGGER_LABELS, shown_body
    from mpm.people import phones
    from mpm.plugins.gateway_settings import active_gateway_keys

    app.jinja_env.filters["phone"] = phones.display
    app.jinja_env.filters["shown_body"] = shown_body

    @app.template_filter("local_time")
    def local_time_filter(moment, precision: str = "minutes"):
        """{{ sms.created_at|local_time }} → '2026-11-27 03:40 EAT': the one way pages show a time."""
        return company_time.local_text(moment, current_company_zone(), precision)

    def gateway_label(key):
        try:
            return get_gateway(key).label if key else "—"
        except KeyError:
            return key

    # One spelling of gateways ("AfricasTalking") and triggers ("payment confirmation") on every page.
    app.jinja_env.filters["gateway_label"] = gateway_label
    app.jinja_env.filters["trigger_label"] = lambda key: TRIGGER_LABELS.get(key, (key or "").replace("_", " "))

    # The shared "No active SMS provider" fragment asks this once per include.
    app.jinja_env.globals["active_gateway_keys"] = lambda: active_gateway_keys(current_user.company_id) \
        if current_user.is_authenticated else []
    app.jinja_env.globals["company_zone_label"] = lambda: company_time.zone_label(utcnow(), current_company_zone())
    app.context_processor(navigation.sidebar_context)
    register_insight_helpers(app)


def register_insight_helpers(app: Flask) -> None:
    """Charts, durations and the alert banner of every page."""
    from mpm.insight import alerts, charts, dashboard

    app.jinja_env.filters["duration"] = dashboard.duration_text
    app.jinja_env.filters["delivery_chart"] = lambda view, chart_id, title: charts.delivery_chart(view.points, chart_id, title)
    app.jinja_env.globals["share_bar"] = charts.share_bar
    app.context_processor(alerts.banner_context)


def current_company_zone():
    """The logged-in user's company zone, looked up once per request."""
    from flask import g
    from flask_login import current_user

    from mpm import company_time

    if "company_zone" not in g:
        company = current_user.company if current_user.is_authenticated else None
        g.company_zone = company_time.zone(company.time_zone if company else None)
    return g.company_zone


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
    @app.get("/favicon.ico")
    def favicon():
        # Browsers ask for /favicon.ico on pages without a <link rel="icon"> (error pages, raw files).
        from flask import redirect, url_for

        return redirect(url_for("static", filename="favicon.svg"), code=301)

    @app.get("/healthz-lite")
    def healthz_lite():
        # Liveness only (no database, no Redis): for load balancers, and the benchmarks' baseline.
        return "ok\n", 200, {"Content-Type": "text/plain; charset=utf-8"}
