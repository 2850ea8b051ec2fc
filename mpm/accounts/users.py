"""Staff accounts: log-in, sessions, passwords and one-time set-password links, and the first
company and admin of a new installation. Plain functions: ids and values in, rows out."""
import hashlib
import re
import secrets
from datetime import datetime, timedelta, timezone

from flask import current_app
from sqlalchemy import delete, func, select, update
from werkzeug.security import check_password_hash, generate_password_hash

from mpm.audit import audit
from mpm.extensions import db
from mpm.models import Company, PasswordLink, User
from mpm.models.base import utcnow
from mpm.people.phones import InvalidPhoneNumber

# Checked when the email is unknown, so a wrong email costs as long as a wrong password and the
# answer's timing does not tell which accounts exist.
_UNKNOWN_USER_HASH = generate_password_hash("no such user")

PASSWORD_MIN_LENGTH = 10
# Hashing is deliberately slow; a longer "password" is only a way to burn CPU.
PASSWORD_MAX_LENGTH = 128
NAME_MAX_LENGTH = 120
EMAIL_MAX_LENGTH = 254
LINK_LIFETIME = timedelta(hours=24)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")


class AccountRefused(ValueError):
    """The change is not allowed or the input is wrong; the message says why, nothing changed."""


class AccountDeactivated(Exception):
    """Right password, but an admin deactivated the account."""


class LinkNotUsable(Exception):
    """A set-password link that is unknown, already used or expired; the message says which."""


# ---------------------------------------------------------------- log-in and sessions

def authenticate(email: str, password: str) -> User | None:
    """The user whose email and password these are, with their log-in time noted; None when wrong."""
    user = db.session.scalar(select(User).where(func.lower(User.email) == (email or "").strip().lower()))
    if user is None or len(password or "") > PASSWORD_MAX_LENGTH:
        check_password_hash(_UNKNOWN_USER_HASH, password[:PASSWORD_MAX_LENGTH] if password else "")
        return None
    if not user.check_password(password):
        return None
    if not user.active:
        raise AccountDeactivated("This account is deactivated. Ask an admin of your company to reactivate it.")
    user.last_login_at = utcnow()
    db.session.commit()
    return user


def user_for_session(session_user_id: str) -> User | None:
    """Flask-Login's user loader: the session's "<id>.<version>" names an active user whose
    sessions have not been ended since (deactivation, password change, "log out other sessions")."""
    user_id, _, version = (session_user_id or "").partition(".")
    if not user_id.isdigit() or not (version or "0").isdigit():
        return None
    user = db.session.get(User, int(user_id))
    if user is None or not user.active or (user.session_version or 0) != int(version or "0"):
        return None
    return user


def _end_sessions(user: User) -> None:
    user.session_version = (user.session_version or 0) + 1


def end_other_sessions(user_id: int) -> User:
    """Every session of the user ends; the caller logs the current one in again with the new id."""
    user = db.session.get(User, user_id)
    _end_sessions(user)
    audit(user.company_id, user.id, "account.sessions_ended", user.email)
    db.session.commit()
    return user


# ---------------------------------------------------------------- names and passwords

def password_problem(password: str, email: str = "") -> str | None:
    """Why this password is refused, or None. A clear rule staff can follow: long enough, not the e-mail."""
    if len(password) < PASSWORD_MIN_LENGTH:
        return f"The password needs at least {PASSWORD_MIN_LENGTH} characters."
    if len(password) > PASSWORD_MAX_LENGTH:
        return f"The password can have at most {PASSWORD_MAX_LENGTH} characters."
    if email and email.strip().lower() in password.lower():
        return "The password must not contain your e-mail address."
    if len(set(password)) < 4:
        return "The password needs more different characters."
    return None


def checked_name(name: str) -> str:
    name = " ".join((name or "").split())
    if not name:
        raise AccountRefused("Enter a name.")
    if len(name) > NAME_MAX_LENGTH:
        raise AccountRefused(f"The name can have at most {NAME_MAX_LENGTH} characters.")
    return name


def change_name(user_id: int, name: str) -> User:
    user = db.session.get(User, user_id)
    name = checked_name(name)
    if name != user.name:
        audit(user.company_id, user.id, "account.name_changed", user.email, old=user.name, new=name)
        user.name = name
        db.session.commit()
    return user


def change_password(user_id: int, current: str, new: str, repeated: str) -> User:
    """Needs the current password; ends the user's other sessions (the caller renews this one)."""
    user = db.session.get(User, user_id)
    if len(current or "") > PASSWORD_MAX_LENGTH or not user.check_password(current or ""):
        raise AccountRefused("The current password is wrong.")
    _check_new_password(user, new, repeated)
    user.set_password(new)
    _end_sessions(user)
    audit(user.company_id, user.id, "account.password_changed", user.email)
    db.session.commit()
    return user


def _check_new_password(user: User, new: str, repeated: str) -> None:
    problem = password_problem(new or "", user.email)
    if problem:
        raise AccountRefused(problem)
    if new != repeated:
        raise AccountRefused("The two new passwords differ.")


# ---------------------------------------------------------------- one-time set-password links

def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def link_url(token: str) -> str:
    # The configured public address, never the request's Host header (a link may be e-mailed).
    return current_app.config["PUBLIC_BASE_URL"].rstrip("/") + "/set-password?token=" + token


def issue_password_link(user: User, created_by_id: int | None, now: datetime | None = None) -> str:
    """A new link for the user (in the caller's transaction); links not used yet stop working.
    Returns the plain token: it is never stored."""
    now = now or utcnow()
    db.session.execute(delete(PasswordLink).where(PasswordLink.user_id == user.id, PasswordLink.used_at.is_(None)))
    token = secrets.token_urlsafe(32)
    db.session.add(PasswordLink(company_id=user.company_id, user_id=user.id, token_hash=_token_hash(token),
                                created_by_id=created_by_id, created_at=now, expires_at=now + LINK_LIFETIME))
    return token


def user_for_link(token: str, now: datetime | None = None) -> User:
    """The user a link is for, while it can still be used; raises LinkNotUsable otherwise."""
    now = now or utcnow()
    link = None
    if token and len(token) <= 100:
        link = db.session.scalar(select(PasswordLink).where(PasswordLink.token_hash == _token_hash(token)))
    if link is None:
        raise LinkNotUsable("This link is not valid. Check that you copied all of it, or ask an admin of your "
                            "company for a new one.")
    if link.used_at is not None:
        raise LinkNotUsable("This link was already used: each link works once. Log in with your password, or ask "
                            "an admin of your company for a new link.")
    if _aware(link.expires_at) <= now:
        raise LinkNotUsable("This link has expired: links work for 24 hours. Ask an admin of your company for a "
                            "new one.")
    if not link.user.active:
        raise LinkNotUsable("This account is deactivated. Ask an admin of your company to reactivate it.")
    return link.user


def set_password_from_link(token: str, new: str, repeated: str, now: datetime | None = None) -> User:
    """Choose a password with a link. The link is spent by a compare-and-set, so two tabs posting
    at once cannot both use it; a refused password leaves the link usable."""
    now = now or utcnow()
    user = user_for_link(token, now)
    _check_new_password(user, new, repeated)
    spent = db.session.execute(
        update(PasswordLink)
        .where(PasswordLink.token_hash == _token_hash(token), PasswordLink.used_at.is_(None),
               PasswordLink.expires_at > now)
        .values(used_at=now)
        .execution_options(synchronize_session=False))
    if spent.rowcount != 1:
        db.session.rollback()
        raise LinkNotUsable("This link was already used: each link works once. Log in with your password, or ask "
                            "an admin of your company for a new link.")
    user.set_password(new)
    _end_sessions(user)
    audit(user.company_id, user.id, "account.password_set", user.email, by_link=True)
    db.session.commit()
    return user


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; every stored time is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


# ---------------------------------------------------------------- e-mail addresses

def checked_email(email: str) -> str:
    """The address as stored (trimmed, lower case); refuses a malformed one or one any company uses."""
    email = (email or "").strip().lower()
    if not email or len(email) > EMAIL_MAX_LENGTH or not _EMAIL.match(email):
        raise AccountRefused("Enter an e-mail address such as name@example.com.")
    if db.session.scalar(select(User.id).where(func.lower(User.email) == email)):
        raise AccountRefused(f"{email} already has an account (e-mail addresses are unique across all companies).")
    return email


# ---------------------------------------------------------------- a new installation

def create_company_with_admin(company_name: str, region: str, time_zone: str, currency: str,
                              email: str, password: str) -> User:
    """A new tenant and its first admin; refuses an email that is taken or a weak password."""
    import phonenumbers
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if region.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise InvalidPhoneNumber(f"{region!r} is not a region code such as KE, TZ or UG.")
    try:
        ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{time_zone!r} is not a time zone such as Africa/Nairobi.") from None
    problem = password_problem(password, email)
    if problem:
        raise ValueError(problem)
    email = checked_email(email)
    company = Company(name=company_name, default_region=region.upper(), time_zone=time_zone, currency=currency.upper())
    db.session.add(company)
    db.session.flush()
    admin = User(company_id=company.id, email=email, name="Admin", role="admin")
    admin.set_password(password)
    db.session.add(admin)
    db.session.commit()
    return admin
