"""Security: login lockout, CSRF on every form and htmx request, cookie flags, headers."""
import re
from pathlib import Path

import pytest
from werkzeug.routing import IntegerConverter

from conftest import PASSWORD, csrf_token, login, make_user
from mpm import create_app
from mpm.extensions import csrf, db

TEMPLATES = Path(__file__).resolve().parent.parent / "mpm" / "templates"


def _is_machine_endpoint(rule) -> bool:
    """Provider callbacks and the JSON API authenticate with secrets/tokens, not a session + CSRF."""
    return rule.rule.startswith("/api/") or rule.endpoint.startswith(("callbacks.", "api."))


def _limited_app(app, **extra):
    """A second app on the same database with rate limiting on (the shared fixture turns it off)."""
    config = {key: app.config[key] for key in ("SECRET_KEY", "SQLALCHEMY_DATABASE_URI", "REDIS_URL")}
    return create_app({"TESTING": True, "RATELIMIT_ENABLED": True, "RATELIMIT_STORAGE_URI": "memory://",
                       **config, **extra})


def _login_form(client, email, password, address="10.0.0.1"):
    page = client.get("/login", environ_base={"REMOTE_ADDR": address}).get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    return client.post("/login", data={"email": email, "password": password, "csrf_token": token},
                       environ_base={"REMOTE_ADDR": address})


# --- login rate limiting -------------------------------------------------------------------------

def test_five_wrong_passwords_lock_the_account_with_a_clear_message(app, admin):
    client = _limited_app(app).test_client()
    for _ in range(5):
        assert _login_form(client, admin.email, "wrong-password").status_code == 401
    # Locked: even the right password is refused now, with a message that says for how long.
    response = _login_form(client, admin.email, PASSWORD)
    page = response.get_data(as_text=True)
    assert response.status_code == 429
    assert "Too many failed log-in attempts. Log-in is locked for 15 minutes" in page
    assert 800 < int(response.headers["Retry-After"]) <= 900
    assert '<form method="post"' in page  # still the login page, not a bare error
    assert client.get("/", environ_base={"REMOTE_ADDR": "10.0.0.1"}).status_code == 302  # not logged in


def test_lockout_is_per_account_and_address(app, company, admin):
    colleague = make_user(company, email="colleague@example.test", role="manager")
    client = _limited_app(app).test_client()
    for _ in range(5):
        _login_form(client, admin.email, "wrong-password")
    assert _login_form(client, admin.email, PASSWORD).status_code == 429
    # A colleague in the same office (same address) still logs in...
    assert _login_form(client, colleague.email, PASSWORD).status_code == 302
    # ...and so does the admin from another address.
    other = _limited_app(app).test_client()
    assert _login_form(other, admin.email, PASSWORD, address="10.0.0.9").status_code == 302


def test_one_address_cannot_try_many_accounts(app, admin):
    client = _limited_app(app, LOGIN_LIMIT_PER_ADDRESS="8 per 15 minutes").test_client()
    for n in range(8):
        assert _login_form(client, f"guess{n}@example.test", "password").status_code == 401
    response = _login_form(client, admin.email, PASSWORD)
    assert response.status_code == 429
    assert "Log-in is locked" in response.get_data(as_text=True)


def test_successful_logins_never_lock_anyone_out(app, admin):
    client = _limited_app(app).test_client()
    for _ in range(8):
        assert _login_form(client, admin.email, PASSWORD).status_code == 302
        token = csrf_token(client)
        client.post("/logout", data={"csrf_token": token}, environ_base={"REMOTE_ADDR": "10.0.0.1"})


def test_lockout_holds_across_web_workers_sharing_redis(app, admin, redis_url):
    """Production keeps the counters in Redis, so every gunicorn worker sees the same lockout."""
    storage = redis_url.replace("unix://", "redis+unix://", 1) if redis_url.startswith("unix://") else redis_url
    first = _limited_app(app, RATELIMIT_STORAGE_URI=storage).test_client()
    second = _limited_app(app, RATELIMIT_STORAGE_URI=storage).test_client()
    for _ in range(5):
        assert _login_form(first, admin.email, "wrong-password").status_code == 401
    assert _login_form(second, admin.email, PASSWORD).status_code == 429


def _login_via_proxy(client, email, password, forwarded_for):
    headers = {"X-Forwarded-For": forwarded_for}
    page = client.get("/login", headers=headers).get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    return client.post("/login", data={"email": email, "password": password, "csrf_token": token}, headers=headers)


def test_a_forged_forwarded_for_does_not_dodge_the_lockout(app, admin, monkeypatch):
    monkeypatch.delenv("MPM_TRUSTED_PROXIES", raising=False)
    client = _limited_app(app).test_client()
    for n in range(5):
        assert _login_via_proxy(client, admin.email, "wrong-password", f"203.0.113.{n}").status_code == 401
    assert _login_via_proxy(client, admin.email, PASSWORD, "203.0.113.99").status_code == 429


def test_behind_a_trusted_proxy_each_client_address_counts_apart(app, admin, monkeypatch):
    monkeypatch.setenv("MPM_TRUSTED_PROXIES", "1")
    client = _limited_app(app).test_client()
    for _ in range(5):
        assert _login_via_proxy(client, admin.email, "wrong-password", "203.0.113.7").status_code == 401
    assert _login_via_proxy(client, admin.email, PASSWORD, "203.0.113.7").status_code == 429
    assert _login_via_proxy(client, admin.email, PASSWORD, "198.51.100.20").status_code == 302


def test_with_redis_down_log_in_works_and_lockout_still_counts(app, admin):
    client = _limited_app(app, RATELIMIT_STORAGE_URI="redis://127.0.0.1:1/0").test_client()
    assert _login_form(client, admin.email, PASSWORD).status_code == 302
    client = _limited_app(app, RATELIMIT_STORAGE_URI="redis://127.0.0.1:1/0").test_client()
    for _ in range(5):
        assert _login_form(client, admin.email, "wrong-password").status_code == 401
    assert _login_form(client, admin.email, PASSWORD).status_code == 429


def test_production_counters_go_to_redis():
    from mpm.security import rate_limit_storage_uri

    assert rate_limit_storage_uri({"REDIS_URL": "redis://r:6379/0"}) == "redis://r:6379/0"
    assert rate_limit_storage_uri({"REDIS_URL": "unix:///run/redis.sock"}) == "redis+unix:///run/redis.sock"
    assert rate_limit_storage_uri({"REDIS_URL": "redis://r/0", "RATELIMIT_STORAGE_URI": "redis://other/1"}) \
        == "redis://other/1"
    assert rate_limit_storage_uri({"REDIS_URL": "redis://r/0", "TESTING": True}) == "memory://"


# --- CSRF ----------------------------------------------------------------------------------------

def _post_routes(app):
    for rule in app.url_map.iter_rules():
        if "POST" in rule.methods and not _is_machine_endpoint(rule):
            yield rule


def _url_for_rule(rule) -> str:
    # CSRF is checked before the view runs, so any id reaches the check.
    values = {name: 1 if isinstance(rule._converters[name], IntegerConverter) else "x"
              for name in rule.arguments}
    return rule.build(values, append_unknown=False)[1]


def test_every_form_post_without_the_token_is_refused(logged_in, app):
    routes = list(_post_routes(app))
    assert {"auth.login", "auth.logout", "customers.toggle_primary"} <= {r.endpoint for r in routes}
    for rule in routes:
        url = _url_for_rule(rule)
        plain = logged_in.post(url, data={"primary": "on", "body": "hello"})
        assert plain.status_code == 400, (rule.endpoint, plain.status_code)
        assert "Reload the page and try again" in plain.get_data(as_text=True), rule.endpoint
        htmx = logged_in.post(url, data={"body": "hello"}, headers={"HX-Request": "true"})
        assert htmx.status_code == 400, (rule.endpoint, htmx.status_code)
        forged = logged_in.post(url, data={"csrf_token": "forged"}, headers={"X-CSRFToken": "forged"})
        assert forged.status_code == 400, (rule.endpoint, forged.status_code)


def test_htmx_request_with_the_header_token_is_accepted_and_without_changes_nothing(logged_in, company):
    from conftest import make_person

    person = make_person(company, primary=False)
    number_id = person.phone_numbers[0].id
    url = f"/customers/{person.id}/numbers/{number_id}/primary"
    refused = logged_in.post(url, data={"primary": "on"}, headers={"HX-Request": "true"})
    assert refused.status_code == 400
    db.session.expire_all()
    assert db.session.get(type(person.phone_numbers[0]), number_id).is_primary is False
    token = csrf_token(logged_in)
    accepted = logged_in.post(url, data={"primary": "on"}, headers={"HX-Request": "true", "X-CSRFToken": token})
    assert accepted.status_code == 200
    db.session.expire_all()
    assert db.session.get(type(person.phone_numbers[0]), number_id).is_primary is True


def test_only_provider_callbacks_and_the_api_skip_csrf(app):
    exempt = set(csrf._exempt_views) | {f"blueprint:{getattr(bp, 'name', bp)}" for bp in csrf._exempt_blueprints}
    allowed = {view for view in exempt if any(part in view for part in ("callbacks", ".api", "blueprint:api"))}
    assert exempt == allowed, f"CSRF switched off outside callbacks/API: {sorted(exempt - allowed)}"


def test_every_post_form_in_the_templates_carries_the_csrf_token():
    forms = 0
    for template in TEMPLATES.rglob("*.html"):
        text = template.read_text()
        for match in re.finditer(r"<form\b([^>]*)>(.*?)</form>", text, re.S | re.I):
            attrs, inner = match.groups()
            if re.search(r'method="post"|hx-post=', attrs, re.I):
                forms += 1
                assert "csrf_token" in inner, f"{template.relative_to(TEMPLATES)}: POST form without csrf_token"
    assert forms >= 3
    # htmx requests outside forms carry the token from <body hx-headers>.
    assert '<body hx-headers=\'{"X-CSRFToken": "{{ csrf_token() }}"}\'>' in (TEMPLATES / "base.html").read_text()


# --- cookies and headers -------------------------------------------------------------------------

def _session_cookie(response) -> str:
    return next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("session="))


def test_session_cookie_is_httponly_and_samesite(client, admin):
    cookie = _session_cookie(login(client, admin.email))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # plain http in this test: a Secure cookie would never come back


def test_over_https_the_cookie_is_secure_and_hsts_is_sent(app, admin, monkeypatch):
    monkeypatch.setenv("MPM_HTTPS", "1")
    config = {key: app.config[key] for key in ("SECRET_KEY", "SQLALCHEMY_DATABASE_URI", "REDIS_URL")}
    https_app = create_app({"TESTING": True, "RATELIMIT_ENABLED": False, **config})
    client = https_app.test_client()
    page = client.get("/login", base_url="https://mpm.test").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    response = client.post("/login", data={"email": admin.email, "password": PASSWORD, "csrf_token": token},
                           base_url="https://mpm.test", headers={"Referer": "https://mpm.test/login"})
    assert response.status_code == 302
    cookie = _session_cookie(response)
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert response.headers["Strict-Transport-Security"].startswith("max-age=31536000")


@pytest.mark.parametrize("path", ["/login", "/", "/customers/"])
def test_pages_send_security_headers(logged_in, path):
    response = logged_in.get(path) if path != "/login" else logged_in.application.test_client().get(path)
    headers = response.headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "same-origin"
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "script-src" not in csp
    assert headers["Cache-Control"] == "no-store"
    assert "Strict-Transport-Security" not in headers  # only over HTTPS


def test_static_files_stay_cacheable(client):
    response = client.get("/static/app.css")
    assert response.status_code == 200
    assert response.headers.get("Cache-Control") != "no-store"
