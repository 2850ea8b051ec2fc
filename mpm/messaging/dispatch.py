"""The RQ job that sends a batch of queued SMS: gateway priority with fallback, retry with
backoff, and an exactly-once effect per message.

Order of one run:
1. Expire what passed its validity; claim the rest (queued → sending) with one conditional
   UPDATE, so two jobs holding the same ids never both send a message.
2. For each active gateway in priority order, the messages it can carry and has not tried yet
   this round: record the attempt (event with an idempotency key) and COMMIT, then call the
   provider. A crash after the commit leaves the message `sending`, which no run sends again.
3. accepted → sent (provider id, cost); rejected → failed, no fallback; gateway error → next
   gateway. None left → back to queued with next_attempt_at stored, then scheduled with RQ; after
   SMS_MAX_ATTEMPTS rounds → failed with every attempt's reason.
"""
import logging
from collections import defaultdict
from datetime import timedelta

from flask import current_app
from sqlalchemy import or_, select, update

from mpm.extensions import db
from mpm.gateways.base import ACCEPTED, GATEWAY_ERROR, REJECTED, OutboundMessage, SendResult
from mpm.gateways.catalog import GATEWAY_LABELS
from mpm.gateways.credentials import UnreadableCredentials
from mpm.gateways.registry import active_gateway_keys, config_for, find_gateway_setting, get_gateway
from mpm.messaging import ratelimit, status
from mpm.models import Person, Sms
from mpm.models.base import utcnow
from mpm.queue import queue

log = logging.getLogger(__name__)

JOB = "mpm.messaging.dispatch.send_batch"


def send_batch(company_id: int, sms_ids: list[int]) -> dict:
    """Send these queued SMS of this company. Safe to run twice. Returns counts per outcome."""
    now = utcnow()
    counts: dict[str, int] = defaultdict(int)
    counts["expired"] = _expire(company_id, sms_ids, now)
    claimed = _claim(company_id, sms_ids, now)
    if not claimed:
        return dict(counts)
    messages = db.session.scalars(select(Sms).where(Sms.id.in_(claimed)).order_by(Sms.id)).all()
    viber_ids = _viber_ids(company_id, {m.person_id for m in messages if m.person_id})
    pending: dict[int, Sms] = {m.id: m for m in messages}
    reasons: dict[int, list[str]] = defaultdict(list)

    for key in active_gateway_keys(company_id):
        if not pending:
            break
        gateway = get_gateway(key)
        label = GATEWAY_LABELS.get(key, key)
        outbound = {sid: _outbound(sms, viber_ids, key) for sid, sms in pending.items()}
        candidates = [pending[sid] for sid, out in outbound.items() if gateway.can_reach(out)]
        if not candidates:
            continue
        setting = find_gateway_setting(company_id, key)
        try:
            config = config_for(setting)
        except UnreadableCredentials as exc:
            for sms in candidates:
                reasons[sms.id].append(f"{label}: {exc}")
            continue

        limits = gateway.quotas(config) if hasattr(gateway, "quotas") else {}
        if limits:
            granted = ratelimit.take_quota(company_id, key, len(candidates), limits)
            for sms in candidates[granted:]:
                reasons[sms.id].append(f"{label}: plan quota spent ({limits.get('day')}/day, {limits.get('month')}/month)")
                status.log_event(sms, "attempt", f"{label} skipped: plan quota spent", None, key)
            candidates = candidates[:granted]
            if not candidates:
                db.session.commit()
                continue

        # The attempt is on record before the provider hears of it.
        for sms in candidates:
            sms.tried_gateways = [*(sms.tried_gateways or []), key]
            status.log_event(sms, "attempt", f"sending through {label} (key {outbound[sms.id].idempotency_key})",
                             status.SENDING, key)
        db.session.commit()

        rate = setting.options.get("send_rate", getattr(gateway, "default_send_rate", None))
        ratelimit.wait_for_send_slot(company_id, key, len(candidates), float(rate) if rate else None)
        results = _send(gateway, [outbound[s.id] for s in candidates], config)

        not_taken = 0
        for sms in candidates:
            result = results.get(sms.id) or SendResult(sms.id, GATEWAY_ERROR, detail=f"{label} gave no answer for it")
            if result.outcome == ACCEPTED:
                sms.gateway, sms.provider_message_id, sms.next_attempt_at = key, result.provider_message_id, None
                sms.error = None  # earlier rounds' reasons stay in the event log
                if result.cost:
                    sms.cost = result.cost[:32]
                status.move(sms, status.SENT, result.detail or f"accepted by {label}", key, kind="attempt")
                pending.pop(sms.id)
                counts["sent"] += 1
                continue
            not_taken += 1
            if result.outcome == REJECTED:
                sms.gateway, sms.next_attempt_at = key, None
                status.move(sms, status.FAILED, _joined(reasons[sms.id] + [result.detail]), key, kind="attempt")
                pending.pop(sms.id)
                counts["failed"] += 1
                continue
            reasons[sms.id].append(result.detail)
            status.log_event(sms, "attempt", f"gateway error, trying the next one: {result.detail}", None, key)
            if result.recipient_unreachable and sms.person_id:
                _forget_viber_id(company_id, sms, result.detail)
                viber_ids.pop(sms.person_id, None)
        if limits:
            ratelimit.give_back_quota(company_id, key, not_taken, limits)
        db.session.commit()

    for sms in pending.values():
        if not reasons[sms.id]:
            reasons[sms.id].append("no active gateway can carry this message")
    retry_groups = _retry_or_fail(pending.values(), reasons, now, counts)
    db.session.commit()
    for (lane, delay), ids in retry_groups.items():
        queue(lane).enqueue_in(timedelta(seconds=delay), JOB, company_id, ids)
    return dict(counts)


def _expire(company_id: int, sms_ids: list[int], now) -> int:
    expired = db.session.scalars(select(Sms).where(
        Sms.company_id == company_id, Sms.id.in_(sms_ids), Sms.status == status.QUEUED,
        Sms.expires_at.is_not(None), Sms.expires_at <= now)).all()
    for sms in expired:
        status.move(sms, status.EXPIRED, "its validity period passed before it could be sent")
    if expired:
        db.session.commit()
    return len(expired)


def _claim(company_id: int, sms_ids: list[int], now) -> list[int]:
    """queued → sending in one conditional UPDATE; returns the ids this run owns."""
    slack = now + timedelta(seconds=2)  # RQ's scheduler may fire a hair before the stored time
    statement = (
        update(Sms)
        .where(Sms.company_id == company_id, Sms.id.in_(sms_ids), Sms.direction == "outbound",
               Sms.status == status.QUEUED, Sms.provider_message_id.is_(None),
               or_(Sms.next_attempt_at.is_(None), Sms.next_attempt_at <= slack))
        .values(status=status.SENDING, attempts=Sms.attempts + 1, tried_gateways=[], updated_at=now)
        .returning(Sms.id)
        .execution_options(synchronize_session=False)
    )
    ids = list(db.session.scalars(statement).all())
    db.session.commit()
    return ids


def _viber_ids(company_id: int, person_ids: set[int]) -> dict[int, str]:
    if not person_ids:
        return {}
    rows = db.session.execute(select(Person.id, Person.viber_id).where(
        Person.company_id == company_id, Person.id.in_(person_ids), Person.viber_id.is_not(None)))
    return {pid: vid for pid, vid in rows}


def _outbound(sms: Sms, viber_ids: dict[int, str], key: str) -> OutboundMessage:
    return OutboundMessage(sms_id=sms.id, number=sms.number, body=sms.body,
                           viber_id=viber_ids.get(sms.person_id) if sms.person_id else None,
                           idempotency_key=f"mpm-{sms.company_id}-{sms.id}-{sms.attempts}-{key}")


def _send(gateway, messages: list[OutboundMessage], config) -> dict[int, SendResult]:
    try:
        results = gateway.send_batch(messages, config)
    except Exception as exc:  # a bug in a gateway module must not strand the batch in `sending`
        log.exception("gateway %s raised while sending", gateway.key)
        results = [SendResult(m.sms_id, GATEWAY_ERROR, detail=f"{gateway.label} failed: {type(exc).__name__}")
                   for m in messages]
    return {r.sms_id: r for r in results}


def _forget_viber_id(company_id: int, sms: Sms, detail: str) -> None:
    db.session.execute(update(Person).where(Person.company_id == company_id, Person.id == sms.person_id)
                       .values(viber_id=None).execution_options(synchronize_session=False))
    status.log_event(sms, "note", f"Viber id removed from the person: {detail}", None, "viber")


def _joined(reasons: list[str]) -> str:
    return "; ".join(r for r in reasons if r)


def retry_delay_seconds(attempts: int) -> int:
    """Exponential backoff after the given number of rounds: base, 2×base, 4×base…"""
    base = current_app.config["SMS_RETRY_BASE_SECONDS"]
    return int(base * 2 ** max(attempts - 1, 0))


def _retry_or_fail(messages, reasons, now, counts) -> dict[tuple[str, int], list[int]]:
    max_attempts = current_app.config["SMS_MAX_ATTEMPTS"]
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for sms in messages:
        history = ((sms.error + "\n") if sms.error else "") + f"attempt {sms.attempts}: " + "; ".join(reasons[sms.id])
        if sms.attempts >= max_attempts:
            sms.next_attempt_at = None
            status.move(sms, status.FAILED, f"gave up after {sms.attempts} attempts:\n{history}")
            counts["failed"] += 1
            continue
        delay = retry_delay_seconds(sms.attempts)
        sms.error = history[-2000:]
        sms.next_attempt_at = now + timedelta(seconds=delay)
        # Back to queued: not a status step forward, so set here rather than through status.move.
        sms.status = status.QUEUED
        status.log_event(sms, "status", f"no gateway took it; retry {sms.attempts + 1} in {delay} s", status.QUEUED)
        groups[(sms.lane, delay)].append(sms.id)
        counts["retry"] += 1
    return groups
