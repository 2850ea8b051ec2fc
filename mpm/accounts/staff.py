"""Settings → Staff: an admin adds staff of their company, changes roles, deactivates and
reactivates them, and hands out set-password links. The company always keeps an active admin."""
import secrets
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from werkzeug.security import generate_password_hash

from mpm import mail
from mpm.accounts import users
from mpm.accounts.users import AccountRefused
from mpm.audit import audit, recent_entries
from mpm.extensions import db
from mpm.models import Company, User

AUDIT_PREFIXES = ("staff.", "account.")
AUDIT_TEXT = {
    "staff.added": "added",
    "staff.role_changed": "role changed",
    "staff.deactivated": "deactivated",
    "staff.reactivated": "reactivated",
    "staff.password_link_issued": "new set-password link",
    "account.name_changed": "changed their name",
    "account.password_changed": "changed their password",
    "account.password_set": "set a password with a link",
    "account.sessions_ended": "logged out of other sessions",
}
ROLE_LABELS = {"admin": "Admin: everything, including plugins, templates, API tokens and staff",
               "manager": "Manager: customers, SMS, broadcasts, maintenance, transactions"}


class NoSuchUser(LookupError):
    """No user with that id in the company (another company's user is the same: not found)."""


@dataclass(frozen=True)
class IssuedLink:
    """A set-password link as the admin sees it once, and whether it was also e-mailed."""
    user: User
    url: str
    emailed: bool
    mail_error: str = ""


def staff_list(company_id: int) -> list[User]:
    return list(db.session.scalars(select(User).where(User.company_id == company_id)
                                   .order_by(User.active.desc(), func.lower(User.name), User.id)))


def recent_changes(company_id: int, limit: int = 15):
    return recent_entries(company_id, AUDIT_PREFIXES, limit)


def _user(company_id: int, user_id: int, lock: bool = False) -> User:
    if lock:
        # One change to the company's staff at a time, so two admins demoting each other at once
        # cannot leave the company without one (PostgreSQL row lock; SQLite serialises writers).
        db.session.execute(select(Company.id).where(Company.id == company_id).with_for_update())
    user = db.session.get(User, user_id)
    if user is None or user.company_id != company_id:
        raise NoSuchUser(user_id)
    return user


def _check_role(role: str) -> str:
    if role not in User.ROLES:
        raise AccountRefused("Choose a role: admin or manager.")
    return role


def _an_admin_remains(user: User, label: str) -> None:
    """After the change (flushed): refuse and roll back when the company has no active admin left.
    Counting after writing, with the company row locked, keeps two concurrent changes from both
    passing a check made before either wrote."""
    left = db.session.scalar(select(func.count(User.id)).where(
        User.company_id == user.company_id, User.role == "admin", User.active.is_(True)))
    if not left:
        db.session.rollback()
        raise AccountRefused(f"{label} is the last active admin: make someone else an admin first.")


def add_user(company_id: int, name: str, email: str, role: str, by_user_id: int) -> IssuedLink:
    """A new user without a password, and the one-time link with which they choose one."""
    name = users.checked_name(name)
    role = _check_role(role)
    email = users.checked_email(email)
    user = User(company_id=company_id, name=name, email=email, role=role)
    _unusable_password(user)
    db.session.add(user)
    db.session.flush()
    token = users.issue_password_link(user, by_user_id)
    audit(company_id, by_user_id, "staff.added", email, user_id=user.id, role=role)
    try:
        db.session.commit()
    except IntegrityError:
        # Another request took the same address a moment ago.
        db.session.rollback()
        raise AccountRefused(f"{email} already has an account (e-mail addresses are unique across all companies).")
    return _deliver(user, token, welcome=True)


def new_password_link(company_id: int, user_id: int, by_user_id: int) -> IssuedLink:
    """A fresh link (a forgotten password, or an expired invitation); older unused links stop working."""
    user = _user(company_id, user_id)
    if not user.active:
        raise AccountRefused(f"{user.email} is deactivated: reactivate the account first.")
    token = users.issue_password_link(user, by_user_id)
    audit(company_id, by_user_id, "staff.password_link_issued", user.email, user_id=user.id)
    db.session.commit()
    return _deliver(user, token, welcome=False)


def password_link_for_email(email: str) -> IssuedLink:
    """A new link from the command line, for whoever can run it on the server (no admin needed)."""
    user = db.session.scalar(select(User).where(func.lower(User.email) == (email or "").strip().lower()))
    if user is None:
        raise NoSuchUser(f"No user has the e-mail address {email}.")
    return new_password_link(user.company_id, user.id, None)


def change_role(company_id: int, user_id: int, role: str, by_user_id: int) -> User:
    user = _user(company_id, user_id, lock=True)
    role = _check_role(role)
    if user.role == role:
        return user
    label = user.name or user.email
    audit(company_id, by_user_id, "staff.role_changed", user.email, user_id=user.id, old=user.role, new=role)
    user.role = role
    db.session.flush()
    _an_admin_remains(user, label)
    db.session.commit()
    return user


def set_active(company_id: int, user_id: int, active: bool, by_user_id: int) -> User:
    """Deactivating ends the user's sessions at once: the session check refuses them from the next request."""
    user = _user(company_id, user_id, lock=True)
    if user.active == active:
        return user
    label, own_account = user.name or user.email, user.id == by_user_id
    user.active = active
    # A reactivated user logs in afresh: sessions from before the deactivation stay ended.
    user.session_version = (user.session_version or 0) + 1
    audit(company_id, by_user_id, "staff.reactivated" if active else "staff.deactivated", user.email, user_id=user.id)
    db.session.flush()
    _an_admin_remains(user, label)
    if own_account and not active:
        db.session.rollback()
        raise AccountRefused("You cannot deactivate your own account; another admin can.")
    db.session.commit()
    return user


def _unusable_password(user: User) -> None:
    # No one knows this one; the user chooses a real password with the link.
    user.password_hash = generate_password_hash(secrets.token_urlsafe(32))
    user.password_set_at = None


def _deliver(user: User, token: str, welcome: bool) -> IssuedLink:
    url = users.link_url(token)
    if not mail.configured():
        return IssuedLink(user, url, emailed=False)
    company = db.session.get(Company, user.company_id)
    if welcome:
        subject = f"Your MPM Messaging account at {company.name}"
        opening = f"An account was made for you at {company.name} in MPM Messaging."
    else:
        subject = f"Set your MPM Messaging password ({company.name})"
        opening = f"An admin of {company.name} asked for a new password link for your MPM Messaging account."
    body = (f"Hello {user.name},\n\n{opening}\nChoose your password here (the link works once, for 24 hours):\n\n"
            f"{url}\n\nThen log in with {user.email} and that password.\n")
    try:
        mail.send_mail(user.email, subject, body)
    except mail.MailNotSent as exc:
        return IssuedLink(user, url, emailed=False, mail_error=str(exc))
    return IssuedLink(user, url, emailed=True)
