"""Status vocabulary of an SMS and the rules of moving between them (read-only; the writes are
mpm.messaging.ledger's).

Outbound: queued → sending → sent → delivered | failed, plus expired and cancelled.
`unconfirmed`: a gateway may have taken the message but we could not see its answer (read timeout,
reset after the request was written, a worker killed mid-request). It waits for the provider's
report (→ sent / delivered / failed); when none comes within the window it stays `unconfirmed` and
says so. Status never moves backwards, with one exception the ledger alone makes: `sending` → `queued`
when the gateways said, for sure, that they did not take it (retry later)."""

QUEUED, SENDING, UNCONFIRMED, SENT, DELIVERED, FAILED, EXPIRED, CANCELLED = (
    "queued", "sending", "unconfirmed", "sent", "delivered", "failed", "expired", "cancelled")
RECEIVED = "received"  # inbound messages

ALL = (QUEUED, SENDING, UNCONFIRMED, SENT, DELIVERED, FAILED, EXPIRED, CANCELLED)
FINAL = frozenset({DELIVERED, FAILED, EXPIRED, CANCELLED, RECEIVED})
IN_FLIGHT = frozenset({QUEUED, SENDING, SENT})
# Ranks: a move must go up. `unconfirmed` sits between `sending` and `sent`: a report saying
# "Sent" (or an answer after all) moves it on; nothing moves it back to `sending`.
_RANK = {QUEUED: 0, SENDING: 1, UNCONFIRMED: 2, SENT: 3, DELIVERED: 4, FAILED: 4, EXPIRED: 4, CANCELLED: 4}


def can_move(current: str, new: str) -> bool:
    """Forward only. A retry puts a `sending` message back to `queued` through ledger.requeue, not here."""
    if current in FINAL or current == new:
        return False
    return _RANK[new] > _RANK[current]


def sources_of(new: str) -> frozenset[str]:
    """Every status from which `new` is a forward move: the WHERE of a compare-and-set UPDATE."""
    return frozenset(s for s in ALL if can_move(s, new))
