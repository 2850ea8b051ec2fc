"""The RQ job that sends a batch of queued SMS: gateway priority with fallback, retry with
backoff, and an exactly-once effect per message.

Order of one run:
1. Expire what passed its validity; claim the rest (queued → sending) with one conditional
   UPDATE, so two jobs holding the same ids never both send a message.
2. For each active gateway in priority order, the messages it can carry (Viber: only people with a
   Viber id; TextBee: within the plan's quota), paced by the gateway's send rate shared by all
   workers (mpm.messaging.ratelimit): record the attempt (event with an idempotency key) and
   COMMIT, then call the provider. A crash after the commit leaves the message `sending`, which no
   run sends again (the sweep marks it failed later).
3. accepted → sent (provider id, cost); rejected → failed, no fallback; gateway error → next
   gateway. None left → back to queued with next_attempt_at stored, then scheduled with RQ; after
   SMS_MAX_ATTEMPTS rounds → failed with every attempt's reason.

Bookkeeping is written in bulk (_Ledger) and only to rows still `sending`, i.e. owned by this run;
status rules are those of mpm.messaging.status (forward only, except this retry back to queued).
"""
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import timedelta

from flask import current_app
from sqlalchemy import bindparam, insert, or_, select, update

from mpm.extensions import db
from mpm.gateways.base import ACCEPTED, GATEWAY_ERROR, REJECTED, OutboundMessage, SendResult
from mpm.credentials import UnreadableCredentials, scrub
from mpm.gateway_settings import active_gateway_settings, config_for
from mpm.gateways.registry import get_gateway
from mpm.messaging import ledger, ratelimit, status
from mpm.models import Broadcast, Person, Sms, SmsEvent
from mpm.models.base import utcnow
from mpm.queue import queue

log = logging.getLogger(__name__)

JOB = "mpm.messaging.dispatch.send_batch"
# Longest a job sleeps for a gateway's send rate; beyond it the rest of the batch is rescheduled
# (RQ's default job timeout is 180 s).
MAX_RATE_WAIT_SECONDS = 60


@dataclass
class _Claimed:
    """One message this run owns (status `sending`), with what happened to it so far."""

    id: int
    number: str
    body: str
    person_id: int | None
    attempts: int
    lane: str
    error: str | None
    tried: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


class _Ledger:
    """Events and final row values of one run, written in bulk: a batch of 100 costs a few
    statements, not a few hundred. Rows are only ever changed while still `sending` (this run's)."""

    def __init__(self, company_id: int):
        self.company_id = company_id
        self.events: list[dict] = []
        self.rows: list[dict] = []

    def event(self, sms_id: int, kind: str, detail: str, new_status: str | None = None, gateway: str | None = None):
        self.events.append({"company_id": self.company_id, "sms_id": sms_id, "kind": kind, "status": new_status,
                            "gateway": gateway, "detail": detail[:2000], "created_at": utcnow()})

    def settle(self, msg: _Claimed, new_status: str, detail: str, *, gateway=None, provider_message_id=None, cost=None,
               error=None, next_attempt_at=None, kind="attempt") -> None:
        self.rows.append({"_id": msg.id, "_status": new_status, "_gateway": gateway, "_provider_message_id": provider_message_id,
                          "_cost": cost, "_error": error[-2000:] if error else None, "_next_attempt_at": next_attempt_at,
                          "_tried_gateways": list(msg.tried), "_attempts": msg.attempts, "_updated_at": utcnow()})
        self.event(msg.id, kind, detail, new_status, gateway)

    def commit(self) -> None:
        if self.events:
            db.session.execute(insert(SmsEvent.__table__), self.events)
        if self.rows:
            table = Sms.__table__
            columns = ("status", "gateway", "provider_message_id", "cost", "error", "next_attempt_at", "attempts",
                       "tried_gateways", "updated_at")
            statement = (update(table)
                         .where(table.c.id == bindparam("_id"), table.c.status == status.SENDING)
                         .values({c: bindparam(f"_{c}", type_=table.c[c].type) for c in columns}))
            db.session.execute(statement, self.rows)
        db.session.commit()
        self.events, self.rows = [], []


def send_batch(company_id: int, sms_ids: list[int]) -> dict:
    """Send these queued SMS of this company. Safe to run twice. Returns counts per outcome."""
    now = utcnow()
    counts: dict[str, int] = defaultdict(int)
    counts["expired"] = _expire(company_id, sms_ids, now)
    # Claimed but not yet committed: the claim is committed together with the first attempts.
    claimed = _claim(company_id, sms_ids, now)
    if not claimed:
        db.session.commit()
        return dict(counts)
    settings = active_gateway_settings(company_id)
    viber_ids = (_viber_ids(company_id, {m.person_id for m in claimed if m.person_id})
                 if any(s.gateway == "viber" for s in settings) else {})
    pending: dict[int, _Claimed] = {m.id: m for m in claimed}
    ledger = _Ledger(company_id)
    retry_groups: dict[tuple[str, int], list[int]] = defaultdict(list)

    for setting in settings:
        if not pending:
            break
        key = setting.gateway
        gateway = get_gateway(key)
        label = get_gateway(key).label
        outbound = {sid: _outbound(company_id, msg, viber_ids, key) for sid, msg in pending.items()}
        candidates = [pending[sid] for sid, out in outbound.items() if gateway.can_reach(out)]
        if not candidates:
            continue
        try:
            config = config_for(setting)
        except UnreadableCredentials as exc:
            for msg in candidates:
                msg.reasons.append(f"{label}: {exc}")
            continue

        limits = gateway.quotas(config)
        if limits:
            granted = ratelimit.take_quota(company_id, key, len(candidates), limits)
            for msg in candidates[granted:]:
                msg.reasons.append(f"{label}: plan quota spent ({limits.get('day')}/day, {limits.get('month')}/month)")
                ledger.event(msg.id, "attempt", f"{label} skipped: plan quota spent", None, key)
            candidates = candidates[:granted]
            if not candidates:
                continue

        # An empty send rate on the settings page means the gateway's default pace.
        rate = (setting.options or {}).get("send_rate") or gateway.default_send_rate
        rate = float(rate) if rate else None
        # A rate-limited gateway gets at most one second's worth at a time, not the whole batch in a burst.
        step = max(1, int(rate)) if rate else len(candidates)
        not_taken = 0
        for start in range(0, len(candidates), step):
            chunk = candidates[start:start + step]
            wait = ratelimit.reserve_send_slot(company_id, key, len(chunk), rate, max_wait=MAX_RATE_WAIT_SECONDS)
            if wait > MAX_RATE_WAIT_SECONDS:
                # Far behind this gateway's pace (a big batch at a few messages/s): come back when the
                # slot is due rather than sleep past the job's timeout.
                rest = candidates[start:]
                not_taken += len(rest)
                _defer(rest, ledger, pending, label, wait, now, retry_groups)
                break
            if wait > 0:
                ledger.commit()  # never sleep holding the claim's uncommitted write
                time.sleep(wait)
            not_taken += _attempt(company_id, setting, config, chunk, outbound, ledger, pending, viber_ids, counts)
        if limits:
            ratelimit.give_back_quota(company_id, key, not_taken, limits)
        ledger.commit()

    retry_groups.update(_retry_or_fail(list(pending.values()), ledger, now, counts))
    ledger.commit()
    for (lane, delay), ids in retry_groups.items():
        queue(lane).enqueue_in(timedelta(seconds=delay), JOB, company_id, ids)
    return dict(counts)


def _attempt(company_id: int, setting, config, chunk: list[_Claimed], outbound: dict[int, OutboundMessage],
             ledger: _Ledger, pending: dict[int, _Claimed], viber_ids: dict[int, str], counts) -> int:
    """One call to one gateway for these messages; returns how many it did not take."""
    key = setting.gateway
    gateway = get_gateway(key)
    label = get_gateway(key).label
    # The attempt is on record before the provider hears of it.
    for msg in chunk:
        msg.tried.append(key)
        ledger.event(msg.id, "attempt", f"sending through {label} (key {outbound[msg.id].idempotency_key})",
                     status.SENDING, key)
    ledger.commit()
    results = _send(gateway, [outbound[m.id] for m in chunk], config)

    not_taken = 0
    for msg in chunk:
        result = results.get(msg.id) or SendResult(msg.id, GATEWAY_ERROR, detail=f"{label} gave no answer for it")
        if result.outcome == ACCEPTED:
            # Earlier rounds' reasons stay in the event log; the row's error is cleared.
            ledger.settle(msg, status.SENT, result.detail or f"accepted by {label}", gateway=key,
                          provider_message_id=result.provider_message_id,
                          cost=result.cost[:32] if result.cost else None)
            pending.pop(msg.id)
            counts["sent"] += 1
            continue
        not_taken += 1
        if result.outcome == REJECTED:
            reason = _joined(msg.reasons + [result.detail])
            history = ((msg.error + "\n") if msg.error else "") + reason
            ledger.settle(msg, status.FAILED, reason, gateway=key, error=history)
            pending.pop(msg.id)
            counts["failed"] += 1
            continue
        msg.reasons.append(result.detail)
        ledger.event(msg.id, "attempt", f"gateway error, trying the next one: {result.detail}", None, key)
        if result.recipient_unreachable and msg.person_id:
            _forget_viber_id(company_id, msg.person_id)
            ledger.event(msg.id, "note", f"Viber id removed from the person: {result.detail}", None, key)
            viber_ids.pop(msg.person_id, None)
    ledger.commit()
    return not_taken


def _defer(messages: list[_Claimed], ledger: _Ledger, pending: dict[int, _Claimed], label: str, wait: float, now,
           groups: dict[tuple[str, int], list[int]]) -> None:
    """Back to queued for when the send rate allows; not an attempt, so it does not count as one."""
    delay = int(wait) + 1
    for msg in messages:
        msg.attempts -= 1
        ledger.settle(msg, status.QUEUED, f"waiting for {label}'s send rate; continues in {delay} s",
                      error=msg.error, next_attempt_at=now + timedelta(seconds=delay), kind="status")
        pending.pop(msg.id)
        groups[(msg.lane, delay)].append(msg.id)


def _expire(company_id: int, sms_ids: list[int], now) -> int:
    expired = ledger.move(company_id, sms_ids, status.EXPIRED, "its validity period passed before it could be sent",
                          sources=(status.QUEUED,), where=Sms.expires_at.is_not(None) & (Sms.expires_at <= now))
    if expired:
        db.session.commit()
    return len(expired)


def _claim(company_id: int, sms_ids: list[int], now) -> list[_Claimed]:
    """queued → sending in one conditional UPDATE; returns the messages this run owns once the
    caller commits (a second run's UPDATE waits for that commit, then finds them `sending`)."""
    slack = now + timedelta(seconds=2)  # RQ's scheduler may fire a hair before the stored time
    statement = (
        update(Sms)
        .where(Sms.company_id == company_id, Sms.id.in_(sms_ids), Sms.direction == "outbound",
               Sms.status == status.QUEUED, Sms.provider_message_id.is_(None),
               or_(Sms.next_attempt_at.is_(None), Sms.next_attempt_at <= slack),
               # A paused broadcast's messages stay queued; resuming hands them to the queue again.
               or_(Sms.broadcast_id.is_(None),
                   Sms.broadcast_id.not_in(select(Broadcast.id).where(Broadcast.company_id == company_id,
                                                                      Broadcast.state == "paused"))))
        .values(status=status.SENDING, attempts=Sms.attempts + 1, tried_gateways=[], updated_at=now)
        .returning(Sms.id, Sms.number, Sms.body, Sms.person_id, Sms.attempts, Sms.lane, Sms.error)
        .execution_options(synchronize_session=False)
    )
    return sorted((_Claimed(*row) for row in db.session.execute(statement).all()), key=lambda m: m.id)


def _viber_ids(company_id: int, person_ids: set[int]) -> dict[int, str]:
    if not person_ids:
        return {}
    rows = db.session.execute(select(Person.id, Person.viber_id).where(
        Person.company_id == company_id, Person.id.in_(person_ids), Person.viber_id.is_not(None)))
    return {pid: vid for pid, vid in rows}


def _outbound(company_id: int, msg: _Claimed, viber_ids: dict[int, str], key: str) -> OutboundMessage:
    return OutboundMessage(sms_id=msg.id, number=msg.number, body=msg.body,
                           viber_id=viber_ids.get(msg.person_id) if msg.person_id else None,
                           idempotency_key=f"mpm-{company_id}-{msg.id}-{msg.attempts}-{key}")


def _send(gateway, messages: list[OutboundMessage], config) -> dict[int, SendResult]:
    try:
        results = gateway.send_batch(messages, config)
    except Exception as exc:  # a bug in a gateway module must not strand the batch in `sending`
        log.exception("gateway %s raised while sending", gateway.key)
        results = [SendResult(m.sms_id, GATEWAY_ERROR, detail=f"{gateway.label} failed: {type(exc).__name__}")
                   for m in messages]
    # What the provider says is stored and shown: never with a credential it echoed.
    return {r.sms_id: replace(r, detail=scrub(r.detail, config.credentials)) for r in results}


def _forget_viber_id(company_id: int, person_id: int) -> None:
    db.session.execute(update(Person).where(Person.company_id == company_id, Person.id == person_id)
                       .values(viber_id=None).execution_options(synchronize_session=False))


def _joined(reasons: list[str]) -> str:
    return "; ".join(r for r in reasons if r)


def retry_delay_seconds(attempts: int) -> int:
    """Exponential backoff after the given number of rounds: base, 2×base, 4×base…"""
    base = current_app.config["SMS_RETRY_BASE_SECONDS"]
    return int(base * 2 ** max(attempts - 1, 0))


def _retry_or_fail(messages: list[_Claimed], ledger: _Ledger, now, counts) -> dict[tuple[str, int], list[int]]:
    """No gateway took these: back to queued with the due time stored, or failed after the last attempt."""
    max_attempts = current_app.config["SMS_MAX_ATTEMPTS"]
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for msg in messages:
        reasons = "; ".join(msg.reasons) or "no active gateway can carry this message"
        history = ((msg.error + "\n") if msg.error else "") + f"attempt {msg.attempts}: {reasons}"
        last_gateway = msg.tried[-1] if msg.tried else None
        if msg.attempts >= max_attempts:
            ledger.settle(msg, status.FAILED, f"gave up after {msg.attempts} attempts", gateway=last_gateway,
                          error=f"gave up after {msg.attempts} attempts:\n{history}", kind="status")
            counts["failed"] += 1
            continue
        delay = retry_delay_seconds(msg.attempts)
        # Back to queued is not a step forward, so it is written here rather than through status.move.
        ledger.settle(msg, status.QUEUED, f"no gateway took it; retry {msg.attempts + 1} in {delay} s",
                      gateway=last_gateway, error=history, next_attempt_at=now + timedelta(seconds=delay), kind="status")
        groups[(msg.lane, delay)].append(msg.id)
        counts["retry"] += 1
    return groups
