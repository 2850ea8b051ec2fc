"""Staff accounts: checking a log-in, and the first company and admin of a new installation."""
from sqlalchemy import func, select
from werkzeug.security import check_password_hash, generate_password_hash

from mpm.extensions import db
from mpm.models import Company, User
from mpm.phones import InvalidPhoneNumber

# Checked when the email is unknown, so a wrong email costs as long as a wrong password and the
# answer's timing does not tell which accounts exist.
_UNKNOWN_USER_HASH = generate_password_hash("no such user")


def authenticate(email: str, password: str) -> User | None:
    user = db.session.scalar(select(User).where(func.lower(User.email) == email.strip().lower()))
    if user is None:
        check_password_hash(_UNKNOWN_USER_HASH, password)
        return None
    return user if user.check_password(password) else None


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
    if len(password) < 10:
        raise ValueError("The password needs at least 10 characters.")
    if db.session.scalar(select(User.id).where(func.lower(User.email) == email.strip().lower())):
        raise ValueError(f"{email} already has an account.")
    company = Company(name=company_name, default_region=region.upper(), time_zone=time_zone, currency=currency.upper())
    db.session.add(company)
    db.session.flush()
    admin = User(company_id=company.id, email=email.strip(), name="Admin", role="admin")
    admin.set_password(password)
    db.session.add(admin)
    db.session.commit()
    return admin
