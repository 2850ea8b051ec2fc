"""The audit log: who changed what and when. `audit()` is the one way to write an entry; it joins
the caller's transaction, so the entry is committed (or rolled back) with the change it describes."""
from sqlalchemy import select

from mpm.extensions import db
from mpm.models import AuditEntry


def audit(company_id: int, user_id: int | None, action: str, subject: str = "", /, **details) -> AuditEntry:
    """Add an entry to the session (by `user_id`; None for the system); never a secret value in `details`."""
    entry = AuditEntry(company_id=company_id, user_id=user_id, action=action, subject=subject[:200], details=details)
    db.session.add(entry)
    return entry


def recent_entries(company_id: int, prefixes: tuple[str, ...], limit: int = 15) -> list[AuditEntry]:
    """The newest entries of the company whose action starts with one of `prefixes`."""
    condition = db.or_(*(AuditEntry.action.startswith(prefix) for prefix in prefixes))
    stmt = (select(AuditEntry).where(AuditEntry.company_id == company_id, condition)
            .order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc()).limit(limit))
    return list(db.session.scalars(stmt))
