"""Login rate limiting (Flask-Limiter) and the lockout message staff see.

Only failed log-ins count. Two limits: one per account and address, so a mistyping
colleague does not lock out the whole office behind one NAT address, and a looser one
per address, so nobody can try many accounts from one place. Counters live in Redis in
production (shared by every gunicorn worker and machine), in memory in tests.
"""
import os
import re
import time
from datetime import datetime, timezone

from flask import Flask, render_template, request
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address
from werkzeug.middleware.proxy_fix import ProxyFix

LOGIN_ENDPOINT = "auth.login"
# Defaults; MPM_LOGIN_LIMIT_PER_ACCOUNT / MPM_LOGIN_LIMIT_PER_ADDRESS override them.
LOGIN_LIMIT_PER_ACCOUNT = "5 per 15 minutes"
LOGIN_LIMIT_PER_ADDRESS = "30 per 15 minutes"


def rate_limit_storage_uri(config: dict) -> str:
    """An explicit RATELIMIT_STORAGE_URI wins; otherwise the app's Redis; memory only without one."""
    explicit = config.get("RATELIMIT_STORAGE_URI")
    if explicit and explicit != "memory://":
        return explicit
    redis_url = config.get("REDIS_URL") or ""
    if config.get("TESTING") or not redis_url:
        return "memory://"
    # The limits library names the unix-socket scheme differently from redis-py.
    if redis_url.startswith("unix://"):
        return "redis+unix://" + redis_url[len("unix://"):]
    return redis_url


def _address_and_account() -> str:
    email = (request.form.get("email") or "").strip().lower()
    return f"{get_remote_address()}|{email}"


def _failed_login(response) -> bool:
    return response.status_code == 401


def lockout_message(reset_at: float | None) -> str:
    if reset_at is None:
        return "Too many failed log-in attempts. Wait a few minutes, then try again."
    minutes = max(1, round((reset_at - time.time()) / 60))
    until = datetime.fromtimestamp(reset_at, timezone.utc).strftime("%H:%M UTC")
    unit = "minute" if minutes == 1 else "minutes"
    return (f"Too many failed log-in attempts. Log-in is locked for {minutes} {unit} "
            f"(until {until}). If you forgot your password, ask an admin of your company to reset it.")


def init_security(app: Flask) -> Limiter:
    # Behind nginx/a load balancer the client address is in X-Forwarded-For; trust only as
    # many hops as the deployment says, or anyone could pick their own address (and limit key).
    hops = int(os.environ.get("MPM_TRUSTED_PROXIES", "0") or 0)
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    app.config["RATELIMIT_STORAGE_URI"] = rate_limit_storage_uri(app.config)
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    # Redis away for a moment: keep counting in this process rather than refuse every log-in.
    app.config.setdefault("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)
    app.config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)
    # One limiter per app: its counters and limits never leak between apps (tests build many).
    limiter = Limiter(get_remote_address, app=app, default_limits=[])
    per_account = app.config.get("LOGIN_LIMIT_PER_ACCOUNT") or os.environ.get(
        "MPM_LOGIN_LIMIT_PER_ACCOUNT", LOGIN_LIMIT_PER_ACCOUNT)
    per_address = app.config.get("LOGIN_LIMIT_PER_ADDRESS") or os.environ.get(
        "MPM_LOGIN_LIMIT_PER_ADDRESS", LOGIN_LIMIT_PER_ADDRESS)
    view = app.view_functions[LOGIN_ENDPOINT]
    view = limiter.limit(per_account, key_func=_address_and_account, methods=["POST"],
                         deduct_when=_failed_login, scope="login-account")(view)
    view = limiter.limit(per_address, methods=["POST"], deduct_when=_failed_login, scope="login-address")(view)
    app.view_functions[LOGIN_ENDPOINT] = view

    @app.errorhandler(RateLimitExceeded)
    def rate_limited(error: RateLimitExceeded):
        limit = limiter.current_limit
        reset_at = limit.reset_at if limit is not None else None
        headers = {"Retry-After": str(max(1, int(reset_at - time.time())))} if reset_at else {}
        if request.endpoint == LOGIN_ENDPOINT:
            from mpm.blueprints.auth import LoginForm

            page = render_template("auth/login.html", form=LoginForm(), error=lockout_message(reset_at))
            return page, 429, headers
        page = render_template("error.html", code=429,
                               description="Too many requests. Wait a moment, then try again.")
        return page, 429, headers

    return limiter


# Callback URLs carry the company's secret (`?token=…`, or in the Android path): access logs must not.
_SECRET_IN_QUERY = re.compile(r"((?:^|[?&;])(?:token|secret|api_?key|signature)=)[^&;\s\"]*", re.IGNORECASE)
_SECRET_IN_PATH = re.compile(r"(/api/sms-android-callback/\d+/)[^/?\s\"]+")


def redact_url(text: str) -> str:
    """A request line, path or query string with callback secrets replaced by '[redacted]'."""
    if not text:
        return text
    text = _SECRET_IN_PATH.sub(r"\1[redacted]", text)
    return _SECRET_IN_QUERY.sub(r"\1[redacted]", text)
