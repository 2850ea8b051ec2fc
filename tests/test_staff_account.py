"""The account page of every user: their name, their password (current one required, a clear
minimum), and logging out of their other sessions; every change is in the audit log."""
import pytest
from sqlalchemy import select

from conftest import PASSWORD, csrf_token, login, make_user
from mpm.extensions import db
from mpm.models import AuditEntry, User

NEW_PASSWORD = "Mini-grid-lights-7"


@pytest.fixture
def manager(company):
    return make_user(company, email="manager@example.test", role="manager")


@pytest.fixture
def sessions(app, manager):
    """The manager logged in on two computers."""
    office, phone = app.test_client(), app.test_client()
    login(office, manager.email)
    login(phone, manager.email)
    return office, phone


def fresh(user: User) -> User:
    db.session.expire_all()
    return db.session.get(User, user.id)


def actions() -> list[str]:
    db.session.expire_all()
    return list(db.session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))


def change_password(client, current=PASSWORD, new=NEW_PASSWORD, repeat=None):
    return client.post("/account/password", data={"current": current, "password": new,
                                                  "repeat": new if repeat is None else repeat,
                                                  "csrf_token": csrf_token(client)})


def test_every_user_has_an_account_page(sessions, manager):
    office, _ = sessions
    page = office.get("/account/")
    body = page.get_data(as_text=True)
    assert page.status_code == 200 and manager.email in body and "Log out of other sessions" in body
    assert 'href="/account/"' in office.get("/").get_data(as_text=True)


def test_a_user_changes_their_name(sessions, manager):
    office, _ = sessions
    response = office.post("/account/name", data={"name": "  Amani   Njoroge ", "csrf_token": csrf_token(office)})
    assert response.status_code == 302
    assert fresh(manager).name == "Amani Njoroge"
    assert "Your name is saved." in office.get("/account/").get_data(as_text=True)
    entry = db.session.scalar(select(AuditEntry))
    assert (entry.action, entry.user_id, entry.details["new"]) == ("account.name_changed", manager.id, "Amani Njoroge")


@pytest.mark.parametrize("name, code, message", [("", 422, "Enter a name."), ("   ", 422, "Enter a name."),
                                                 ("n" * 121, 422, "at most 120 characters"),
                                                 ("n" * 2_000_000, 413, "too large")])
def test_a_bad_name_is_refused_and_nothing_changes(sessions, manager, name, code, message):
    office, _ = sessions
    response = office.post("/account/name", data={"name": name, "csrf_token": csrf_token(office)})
    assert response.status_code == code and message.lower() in response.get_data(as_text=True).lower()
    assert fresh(manager).name == "Manager" and actions() == []


def test_changing_the_password_needs_the_current_one_and_logs_out_the_other_sessions(app, sessions, manager):
    office, phone = sessions
    response = change_password(office)
    assert response.status_code == 302
    assert "Your other sessions are logged out" in office.get("/account/").get_data(as_text=True)
    assert office.get("/customers/").status_code == 200  # this session carries on
    ended = phone.get("/customers/")
    assert ended.status_code == 302 and "/login" in ended.headers["Location"]
    assert login(app.test_client(), manager.email, PASSWORD).status_code == 401
    assert login(app.test_client(), manager.email, NEW_PASSWORD).status_code == 302
    assert actions() == ["account.password_changed"]


@pytest.mark.parametrize("fields, message", [
    ({"current": "wrong-password"}, "The current password is wrong."),
    ({"current": ""}, "The current password is wrong."),
    ({"current": "x" * 100_000}, "The current password is wrong."),
    ({"new": "short-1"}, "at least 10 characters"),
    ({"new": "aaaaaaaaaaaa"}, "more different characters"),
    ({"new": "manager@example.test-2"}, "must not contain your e-mail address"),
    ({"new": "p" * 129}, "at most 128 characters"),
    ({"repeat": NEW_PASSWORD + "!"}, "The two new passwords differ."),
])
def test_a_refused_password_change_says_why_and_changes_nothing(app, sessions, manager, fields, message):
    office, phone = sessions
    response = change_password(office, **fields)
    assert response.status_code == 422 and message in response.get_data(as_text=True)
    assert fresh(manager).check_password(PASSWORD)
    assert phone.get("/customers/").status_code == 200 and actions() == []


def test_log_out_of_other_sessions_keeps_this_one(sessions, manager):
    office, phone = sessions
    response = office.post("/account/sessions", data={"csrf_token": csrf_token(office)})
    assert response.status_code == 302
    assert office.get("/customers/").status_code == 200
    assert phone.get("/customers/").status_code == 302
    assert actions() == ["account.sessions_ended"]


def test_a_session_cookie_from_before_the_change_cannot_be_replayed(app, sessions, manager):
    office, phone = sessions
    stolen = phone.get_cookie("session").value
    office.post("/account/sessions", data={"csrf_token": csrf_token(office)})
    thief = app.test_client()
    thief.set_cookie("session", stolen)
    assert thief.get("/customers/").status_code == 302


def test_the_account_routes_need_a_log_in_and_the_csrf_token(client, manager):
    assert client.get("/account/").status_code == 302
    login(client, manager.email)
    refused = client.post("/account/password", data={"current": PASSWORD, "password": NEW_PASSWORD,
                                                     "repeat": NEW_PASSWORD})
    assert refused.status_code == 400 and fresh(manager).check_password(PASSWORD)
