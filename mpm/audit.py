"""The audit log: who changed what and when. Never holds a secret value."""
from mpm.extensions import db
from mpm.models import AuditEntry


def audit(company_id: int, user_id: int | None, action: str, subject: str = "", **details) -> AuditEntry:
    """Add one entry to the session; it is committed with the change it records."""
    entry = AuditEntry(company_id=company_id, user_id=user_id, action=action, subject=subject[:200], details=details)
    db.session.add(entry)
    return entry
