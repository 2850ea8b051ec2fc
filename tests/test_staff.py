"""Settings → Staff: an admin adds users who choose their password with a one-time link, changes
roles, deactivates and reactivates; the company always keeps an active admin; managers are refused."""
import re
import socketserver
import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from conftest import PASSWORD, IsolatedClient, csrf_token, enable_gateway, login, make_company, make_person, make_user
from mpm.accounts import users
from mpm.extensions import db
from mpm.models import AuditEntry, Broadcast, PasswordLink, Sms, User
from mpm.models.base import utcnow

NEW_PASSWORD = "Solar-panel-2026"


def add(client, name="Wanjiku Kamau", email="wanjiku@example.test", role="manager"):
    return client.post("/settings/staff/", data={"name": name, "email": email, "role": role,
                                                 "csrf_token": csrf_token(client)})


def link_token(response) -> str:
    return re.search(r"/set-password\?token=([A-Za-z0-9_\-]+)", response.get_data(as_text=True)).group(1)


def session_csrf(client) -> str:
    """The CSRF token of a logged-out browser's session, from the log-in form."""
    page = client.get("/login").get_data(as_text=True)
    return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)


def set_password(client, token, password=NEW_PASSWORD, repeat=None):
    return client.post("/set-password", data={"token": token, "password": password,
                                              "repeat": password if repeat is None else repeat,
                                              "csrf_token": session_csrf(client)})


def user_by_email(email) -> User | None:
    db.session.expire_all()
    return db.session.scalar(select(User).where(User.email == email))


def audit_actions(company_id) -> list[str]:
    db.session.expire_all()
    return list(db.session.scalars(select(AuditEntry.action).where(AuditEntry.company_id == company_id)
                                   .order_by(AuditEntry.id)))


def user_count() -> int:
    return db.session.scalar(select(func.count(User.id)))


def new_client(app) -> IsolatedClient:
    return app.test_client()


@pytest.fixture
def manager(company):
    return make_user(company, email="manager@example.test", role="manager")


# ---------------------------------------------------------------- adding a user and the link

def test_admin_adds_a_manager_who_sets_a_password_with_the_link_and_logs_in(app, logged_in, company, admin):
    response = add(logged_in)
    body = response.get_data(as_text=True)
    assert response.status_code == 201 and response.headers["Cache-Control"] == "no-store"
    assert "works once" in body and "E-mail is not set up: give them the link yourself." in body
    token = link_token(response)
    assert f"http://mpm.test/set-password?token={token}" in body
    user = user_by_email("wanjiku@example.test")
    assert (user.company_id, user.role, user.name, user.state) == (company.id, "manager", "Wanjiku Kamau", "invited")
    # Only a hash of the token is stored.
    link = db.session.scalar(select(PasswordLink).where(PasswordLink.user_id == user.id))
    assert token not in repr(db.session.execute(select(PasswordLink.__table__)).all()) and len(link.token_hash) == 64
    listing = logged_in.get("/settings/staff/").get_data(as_text=True)
    assert "wanjiku@example.test" in listing and "invited" in listing and token not in listing

    browser = new_client(app)
    form = browser.get(f"/set-password?token={token}")
    assert form.status_code == 200 and "wanjiku@example.test" in form.get_data(as_text=True)
    done = set_password(browser, token)
    assert done.status_code == 302 and done.headers["Location"].endswith("/login")
    assert login(browser, "wanjiku@example.test", NEW_PASSWORD).status_code == 302
    assert browser.get("/").status_code == 200 and browser.get("/settings/staff/").status_code == 403
    user = user_by_email("wanjiku@example.test")
    assert user.state == "active" and user.last_login_at is not None
    assert audit_actions(company.id) == ["staff.added", "account.password_set"]


def test_the_link_works_once(app, logged_in):
    token = link_token(add(logged_in))
    browser = new_client(app)
    assert set_password(browser, token).status_code == 302
    again = browser.get(f"/set-password?token={token}")
    assert again.status_code == 404 and "already used" in again.get_data(as_text=True)
    second = set_password(browser, token, "Another-pass-99")
    assert second.status_code == 404 and "already used" in second.get_data(as_text=True)
    # The password chosen first is the one that works.
    assert login(new_client(app), "wanjiku@example.test", "Another-pass-99").status_code == 401
    assert login(new_client(app), "wanjiku@example.test", NEW_PASSWORD).status_code == 302


def test_a_second_post_of_a_spent_link_is_refused_with_a_valid_form(app, logged_in):
    """Two tabs: both loaded the form while the link was fresh; the second submit finds it spent."""
    token = link_token(add(logged_in))
    first, second = new_client(app), new_client(app)
    forms = [c.get(f"/set-password?token={token}").get_data(as_text=True) for c in (first, second)]
    csrf = [re.search(r'name="csrf_token" value="([^"]+)"', f).group(1) for f in forms]
    ok = first.post("/set-password", data={"token": token, "password": NEW_PASSWORD, "repeat": NEW_PASSWORD,
                                           "csrf_token": csrf[0]})
    late = second.post("/set-password", data={"token": token, "password": "Intruder-pass-1",
                                              "repeat": "Intruder-pass-1", "csrf_token": csrf[1]})
    assert ok.status_code == 302
    assert late.status_code == 404 and "already used" in late.get_data(as_text=True)
    assert login(new_client(app), "wanjiku@example.test", NEW_PASSWORD).status_code == 302


def test_the_link_expires_after_24_hours(app, company, admin):
    user = make_user(company, email="late@example.test", role="manager")
    fresh = users.issue_password_link(user, admin.id, now=utcnow() - timedelta(hours=23, minutes=59))
    db.session.commit()
    browser = new_client(app)
    assert browser.get(f"/set-password?token={fresh}").status_code == 200
    stale = users.issue_password_link(user, admin.id, now=utcnow() - timedelta(hours=24, seconds=1))
    db.session.commit()
    page = browser.get(f"/set-password?token={stale}")
    assert page.status_code == 404 and "expired" in page.get_data(as_text=True)
    assert set_password(browser, stale).status_code == 404
    assert login(new_client(app), "late@example.test", NEW_PASSWORD).status_code == 401


def test_an_unknown_or_garbled_link_is_refused(app):
    browser = new_client(app)
    for token in ("", "nope", "x" * 5000):
        page = browser.get(f"/set-password?token={token}")
        assert page.status_code == 404 and "not valid" in page.get_data(as_text=True)


def test_a_weak_password_is_refused_and_the_link_stays_usable(app, logged_in):
    token = link_token(add(logged_in))
    browser = new_client(app)
    short = set_password(browser, token, "short1")
    assert short.status_code == 422 and "at least 10 characters" in short.get_data(as_text=True)
    mismatch = set_password(browser, token, NEW_PASSWORD, repeat=NEW_PASSWORD + "x")
    assert mismatch.status_code == 422 and "differ" in mismatch.get_data(as_text=True)
    with_email = set_password(browser, token, "wanjiku@example.test!")
    assert with_email.status_code == 422 and "e-mail" in with_email.get_data(as_text=True)
    huge = set_password(browser, token, "a1" * 100_000)
    assert huge.status_code == 422 and "at most 128" in huge.get_data(as_text=True)
    assert set_password(browser, token).status_code == 302


def test_an_invited_user_cannot_log_in_before_choosing_a_password(app, logged_in):
    add(logged_in)
    user = user_by_email("wanjiku@example.test")
    for guess in ("", PASSWORD, "None"):
        assert login(new_client(app), "wanjiku@example.test", guess).status_code == 401
    assert user_by_email("wanjiku@example.test").last_login_at is None and user.state == "invited"


def test_a_new_link_replaces_the_old_one(app, logged_in, company):
    first = link_token(add(logged_in))
    user = user_by_email("wanjiku@example.test")
    again = logged_in.post(f"/settings/staff/{user.id}/password-link", data={"csrf_token": csrf_token(logged_in)})
    assert again.status_code == 200 and again.headers["Cache-Control"] == "no-store"
    second = link_token(again)
    assert second != first
    browser = new_client(app)
    assert browser.get(f"/set-password?token={first}").status_code == 404
    assert set_password(browser, second).status_code == 302
    assert "staff.password_link_issued" in audit_actions(company.id)


def test_a_forgotten_password_is_replaced_with_a_new_link_and_old_sessions_end(app, logged_in, manager):
    old_session = new_client(app)
    login(old_session, manager.email)
    response = logged_in.post(f"/settings/staff/{manager.id}/password-link", data={"csrf_token": csrf_token(logged_in)})
    assert set_password(new_client(app), link_token(response)).status_code == 302
    assert old_session.get("/").status_code == 302  # back to the log-in page
    assert login(new_client(app), manager.email, PASSWORD).status_code == 401
    assert login(new_client(app), manager.email, NEW_PASSWORD).status_code == 302


# ---------------------------------------------------------------- bad input

def test_an_email_used_in_any_company_is_refused(logged_in, company):
    other = make_company("Other Power")
    make_user(other, email="taken@example.test", role="manager")
    before = user_count()
    for email in ("taken@example.test", " TAKEN@Example.test "):
        response = add(logged_in, email=email)
        body = response.get_data(as_text=True)
        assert response.status_code == 422
        assert "taken@example.test already has an account" in body and "unique across all companies" in body
    assert user_count() == before
    assert audit_actions(company.id) == []


@pytest.mark.parametrize("fields, message", [
    ({"name": ""}, "Enter a name."),
    ({"name": "x" * 121}, "at most 120 characters"),
    ({"name": "y" * 1_000_000}, "at most 120 characters"),
    ({"email": "not-an-email"}, "Enter an e-mail address"),
    ({"email": "a@b"}, "Enter an e-mail address"),
    ({"email": ""}, "Enter an e-mail address"),
    ({"role": "owner"}, "Choose a role"),
    ({"role": ""}, "Choose a role"),
])
def test_bad_input_is_refused_with_a_message_and_changes_nothing(logged_in, company, fields, message):
    before = user_count()
    response = add(logged_in, **{"name": "Wanjiku", "email": "w@example.test", "role": "manager", **fields})
    assert response.status_code == 422 and message in response.get_data(as_text=True)
    assert user_count() == before and audit_actions(company.id) == []


def test_the_email_is_stored_trimmed_and_in_lower_case_and_logs_in_either_way(app, logged_in):
    token = link_token(add(logged_in, email="  Neema.Otieno@Example.TEST "))
    assert user_by_email("neema.otieno@example.test") is not None
    set_password(new_client(app), token)
    assert login(new_client(app), "NEEMA.otieno@example.test", NEW_PASSWORD).status_code == 302


# ---------------------------------------------------------------- roles and the last admin

def test_an_admin_changes_a_role_and_it_applies_to_the_next_request(app, logged_in, company, manager):
    other = new_client(app)
    login(other, manager.email)
    assert other.get("/settings/staff/").status_code == 403
    promoted = logged_in.post(f"/settings/staff/{manager.id}/role", data={"role": "admin",
                                                                        "csrf_token": csrf_token(logged_in)})
    assert promoted.status_code == 302
    assert "is now admin" in logged_in.get("/settings/staff/").get_data(as_text=True)
    assert other.get("/settings/staff/").status_code == 200
    logged_in.post(f"/settings/staff/{manager.id}/role", data={"role": "manager", "csrf_token": csrf_token(logged_in)})
    assert other.get("/settings/staff/").status_code == 403
    entries = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "staff.role_changed")
                                 .order_by(AuditEntry.id)).all()
    assert [(e.details["old"], e.details["new"]) for e in entries] == [("manager", "admin"), ("admin", "manager")]


def test_a_bad_role_is_refused(logged_in, manager):
    response = logged_in.post(f"/settings/staff/{manager.id}/role", data={"role": "root",
                                                                        "csrf_token": csrf_token(logged_in)})
    assert response.status_code == 422 and "Choose a role" in response.get_data(as_text=True)
    assert user_by_email(manager.email).role == "manager"


def test_the_last_active_admin_can_be_neither_demoted_nor_deactivated(logged_in, company, admin):
    token = csrf_token(logged_in)
    demote = logged_in.post(f"/settings/staff/{admin.id}/role", data={"role": "manager", "csrf_token": token})
    assert demote.status_code == 422 and "last active admin" in demote.get_data(as_text=True)
    deactivate = logged_in.post(f"/settings/staff/{admin.id}/deactivate", data={"csrf_token": token})
    assert deactivate.status_code == 422 and "last active admin" in deactivate.get_data(as_text=True)
    # A deactivated second admin does not count.
    second = make_user(company, email="second-admin@example.test", role="admin")
    logged_in.post(f"/settings/staff/{second.id}/deactivate", data={"csrf_token": token})
    again = logged_in.post(f"/settings/staff/{admin.id}/role", data={"role": "manager", "csrf_token": token})
    assert again.status_code == 422
    assert user_by_email(admin.email).role == "admin" and user_by_email(admin.email).active
    # With another active admin, stepping down is allowed.
    logged_in.post(f"/settings/staff/{second.id}/reactivate", data={"csrf_token": token})
    down = logged_in.post(f"/settings/staff/{admin.id}/role", data={"role": "manager", "csrf_token": token})
    assert down.status_code == 302 and user_by_email(admin.email).role == "manager"
    assert down.headers["Location"] == "/" and "Admin is now manager." in logged_in.get("/").get_data(as_text=True)
    assert logged_in.get("/settings/staff/").status_code == 403


def test_another_companys_admins_do_not_count(logged_in, company, admin):
    other = make_company("Other Power")
    make_user(other, email="their-admin@example.test", role="admin")
    response = logged_in.post(f"/settings/staff/{admin.id}/role", data={"role": "manager",
                                                                      "csrf_token": csrf_token(logged_in)})
    assert response.status_code == 422 and user_by_email(admin.email).role == "admin"


def test_an_admin_cannot_deactivate_themselves(logged_in, company, admin):
    make_user(company, email="second-admin@example.test", role="admin")
    response = logged_in.post(f"/settings/staff/{admin.id}/deactivate", data={"csrf_token": csrf_token(logged_in)})
    assert response.status_code == 422 and "your own account" in response.get_data(as_text=True)
    assert user_by_email(admin.email).active


# ---------------------------------------------------------------- deactivation

def test_deactivation_ends_the_users_sessions_at_once_and_blocks_log_in(app, logged_in, company, manager):
    session = new_client(app)
    login(session, manager.email)
    assert session.get("/customers/").status_code == 200
    response = logged_in.post(f"/settings/staff/{manager.id}/deactivate", data={"csrf_token": csrf_token(logged_in)})
    assert response.status_code == 302
    page = logged_in.get("/settings/staff/").get_data(as_text=True)
    assert "logged out everywhere" in page and "deactivated" in page
    ended = session.get("/customers/")
    assert ended.status_code == 302 and "/login" in ended.headers["Location"]
    attempt = login(new_client(app), manager.email)
    assert attempt.status_code == 401 and "This account is deactivated" in attempt.get_data(as_text=True)
    # Reactivated: the user logs in afresh; the session from before stays ended.
    logged_in.post(f"/settings/staff/{manager.id}/reactivate", data={"csrf_token": csrf_token(logged_in)})
    assert session.get("/customers/").status_code == 302
    assert login(new_client(app), manager.email).status_code == 302
    assert audit_actions(company.id) == ["staff.deactivated", "staff.reactivated"]


def test_a_deactivated_users_link_does_not_work(app, logged_in, manager):
    token = link_token(logged_in.post(f"/settings/staff/{manager.id}/password-link",
                                      data={"csrf_token": csrf_token(logged_in)}))
    logged_in.post(f"/settings/staff/{manager.id}/deactivate", data={"csrf_token": csrf_token(logged_in)})
    page = new_client(app).get(f"/set-password?token={token}")
    assert page.status_code == 404 and "deactivated" in page.get_data(as_text=True)
    refused = logged_in.post(f"/settings/staff/{manager.id}/password-link", data={"csrf_token": csrf_token(logged_in)})
    assert refused.status_code == 422 and "reactivate the account first" in refused.get_data(as_text=True)


# ---------------------------------------------------------------- what a manager may do

def test_a_manager_is_refused_every_staff_page_and_sees_no_admin_links(app, client, company, manager, admin):
    login(client, manager.email)
    token = csrf_token(client)
    before = user_count()
    assert client.get("/settings/staff/").status_code == 403
    assert add(client, email="sneaky@example.test", role="admin").status_code == 403
    for action, data in (("role", {"role": "manager"}), ("deactivate", {}), ("password-link", {})):
        response = client.post(f"/settings/staff/{admin.id}/{action}", data={**data, "csrf_token": token})
        assert response.status_code == 403
    assert user_count() == before and user_by_email(admin.email).role == "admin"
    assert db.session.scalar(select(func.count(PasswordLink.id))) == 0
    for path in ("/plugins/", "/settings/api-tokens"):
        assert client.get(path).status_code == 403
    dashboard = client.get("/").get_data(as_text=True)
    assert 'href="/settings/staff/"' not in dashboard and 'href="/plugins/"' not in dashboard
    assert "SMS templates" in dashboard and "/account/" in dashboard
    admin_client = new_client(app)
    login(admin_client, admin.email)
    admin_page = admin_client.get("/").get_data(as_text=True)
    assert 'href="/settings/staff/"' in admin_page and 'href="/plugins/"' in admin_page


def test_a_manager_sends_an_sms_and_a_broadcast(client, company, manager):
    enable_gateway(company, "africastalking")
    jane = make_person(company, "Jane", "Wanjiru", "+254712345678")
    login(client, manager.email)
    token = csrf_token(client)
    sent = client.post(f"/sms/people/{jane.id}/send", data={"body": "Your meter is fixed", "csrf_token": token})
    assert sent.status_code in (200, 302)
    sms = db.session.scalar(select(Sms))
    assert (sms.body, sms.status, sms.sender_user_id) == ("Your meter is fixed", "queued", manager.id)
    saved = client.post("/broadcasts/new", data={"csrf_token": token, "all_customers": "on", "body": "Power off"})
    broadcast_id = int(re.search(r"/broadcasts/(\d+)/confirm", saved.headers["Location"]).group(1))
    confirmed = client.post(f"/broadcasts/{broadcast_id}/confirm", data={"csrf_token": token})
    assert confirmed.status_code == 302
    db.session.expire_all()
    assert db.session.get(Broadcast, broadcast_id).state == "sending"


# ---------------------------------------------------------------- e-mail (SMTP)

class _SmtpSink(socketserver.StreamRequestHandler):
    """Just enough SMTP for smtplib: accepts every message and keeps its text."""
    received: list[str] = []

    def handle(self):
        self.wfile.write(b"220 sink ESMTP\r\n")
        while line := self.rfile.readline():
            command = line.decode().strip().upper()
            if command.startswith(("EHLO", "HELO")):
                self.wfile.write(b"250 sink\r\n")
            elif command == "DATA":
                self.wfile.write(b"354 go on\r\n")
                lines = []
                while (data := self.rfile.readline()) not in (b".\r\n", b""):
                    lines.append(data.decode())
                _SmtpSink.received.append("".join(lines))
                self.wfile.write(b"250 queued\r\n")
            elif command == "QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


@pytest.fixture
def smtp_sink(app):
    _SmtpSink.received = []
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SmtpSink)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    app.config.update(SMTP_HOST="127.0.0.1", SMTP_PORT=server.server_address[1], SMTP_SECURITY="none",
                      SMTP_FROM="mpm@acme.test")
    yield _SmtpSink.received
    server.shutdown()
    server.server_close()


def test_with_smtp_the_link_is_also_emailed(logged_in, smtp_sink):
    response = add(logged_in)
    body = response.get_data(as_text=True)
    assert response.status_code == 201 and "It was also e-mailed to wanjiku@example.test." in body
    [message] = smtp_sink
    assert "To: wanjiku@example.test" in message and "From: mpm@acme.test" in message
    assert f"http://mpm.test/set-password?token={link_token(response)}" in message


def test_when_the_mail_server_is_down_the_admin_still_gets_the_link(app, logged_in):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app.config.update(SMTP_HOST="127.0.0.1", SMTP_PORT=port, SMTP_SECURITY="none", SMTP_PASSWORD="smtp-secret-9")
    response = add(logged_in)
    body = response.get_data(as_text=True)
    assert response.status_code == 201 and "The e-mail could not be sent" in body and "give them the link" in body
    assert "smtp-secret-9" not in body
    assert user_by_email("wanjiku@example.test") is not None and link_token(response)


def test_two_admins_demoting_each_other_at_once_leave_one_admin(app, company, admin):
    """Two requests at the same moment, each demoting the other admin: one wins, one is refused."""
    from mpm.accounts import staff

    second = make_user(company, email="second-admin@example.test", role="admin")
    pairs = [(admin.id, second.id), (second.id, admin.id)]
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def demote(actor_id, target_id):
        with app.app_context():
            barrier.wait()
            try:
                staff.change_role(company.id, target_id, "manager", actor_id)
                outcomes.append("done")
            except users.AccountRefused as exc:
                outcomes.append(str(exc))
            finally:
                db.session.remove()

    threads = [threading.Thread(target=demote, args=pair) for pair in pairs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcome == "done" for outcome in outcomes) == [False, True], outcomes
    assert any("last active admin" in outcome for outcome in outcomes)
    db.session.expire_all()
    roles = db.session.scalars(select(User.role).where(User.company_id == company.id)).all()
    assert sorted(roles) == ["admin", "manager"]


def test_the_command_line_gives_a_link_to_an_admin_who_forgot_their_password(app, company, admin):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["password-link", admin.email.upper()])
    assert result.exit_code == 0, result.output
    token = re.search(r"/set-password\?token=([A-Za-z0-9_\-]+)", result.output).group(1)
    assert set_password(new_client(app), token).status_code == 302
    assert login(new_client(app), admin.email, NEW_PASSWORD).status_code == 302
    unknown = runner.invoke(args=["password-link", "nobody@example.test"])
    assert unknown.exit_code != 0 and "No user has the e-mail address nobody@example.test" in unknown.output
