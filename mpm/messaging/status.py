"""Status rules of an outbound SMS: queued → sending → sent → delivered | failed, plus expired and
cancelled. Status never moves backwards; a final status never changes. Every change and every
refused change is written to the SMS's event log."""
from mpm.extensions import db
from mpm.models import Sms, SmsEvent
from mpm.models.base import utcnow

QUEUED, SENDING, SENT, DELIVERED, FAILED, EXPIRED, CANCELLED = (
    "queued", "sending", "sent", "delivered", "failed", "expired", "cancelled")
RECEIVED = "received"  # inbound messages

ALL = (QUEUED, SENDING, SENT, DELIVERED, FAILED, EXPIRED, CANCELLED)
FINAL = frozenset({DELIVERED, FAILED, EXPIRED, CANCELLED, RECEIVED})
IN_FLIGHT = frozenset({QUEUED, SENDING, SENT})
_RANK = {QUEUED: 0, SENDING: 1, SENT: 2, DELIVERED: 3, FAILED: 3, EXPIRED: 3, CANCELLED: 3}


def can_move(current: str, new: str) -> bool:
    """Forward only. A retry puts a `sending` message back to `queued` through requeue(), not here."""
    if current in FINAL or current == new:
        return False
    return _RANK[new] > _RANK[current]


def log_event(sms: Sms, kind: str, detail: str = "", status: str | None = None, gateway: str | None = None) -> None:
    db.session.add(SmsEvent(company_id=sms.company_id, sms_id=sms.id, kind=kind, status=status,
                            gateway=gateway, detail=detail[:2000]))


def move(sms: Sms, new: str, detail: str = "", gateway: str | None = None, kind: str = "status") -> bool:
    """Apply `new` if it moves forward; log it either way. Returns whether the status changed.
    The caller commits."""
    if not can_move(sms.status, new):
        log_event(sms, kind, f"ignored {new}: message is already {sms.status}. {detail}".strip(), new, gateway)
        return False
    sms.status = new
    sms.updated_at = utcnow()
    if new == FAILED and detail:
        sms.error = detail[:2000]
    log_event(sms, kind, detail, new, gateway)
    return True
