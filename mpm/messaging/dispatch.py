"""Sending: one run drains the due queued messages of one company's lane, provider request by
provider request, for a short time budget (mpm.jobs runs it and puts it back at the end of its
queue, so other companies and the high lane get the worker in between).

One provider request:
1. claim exactly its messages (queued → sending, one compare-and-set UPDATE through the ledger)
   and COMMIT: `sending` means "inside a provider request right now";
2. call the provider;
3. commit that request's outcome right away: accepted → sent (provider id, cost); rejected →
   failed, no fallback; not sent → queued again for the next gateway, or, when every gateway of
   the round said no, for a retry with backoff; maybe sent → `unconfirmed` (never sent again; the
   provider's report settles it, mpm.messaging.sweep closes the wait).
While one request is with the provider (on the run's provider thread), the previous one's
outcome is committed; the next is claimed once that one answered. A gateway that just failed gets
one request at a time. A crash leaves at most two requests' messages `sending` (one answered, not
yet written); the sweep turns them `unconfirmed`.
A message is sent at most once: only the run whose claim moved it calls the provider.

Waiting is never sleeping: a rate-limited gateway gives the slots available within a second;
beyond that the run hands the work back to the queue, due at the slot time. A spent TextBee plan
quota, a gateway whose circuit is open (mpm.messaging.circuit) or a round with no taker make the
message wait with its reason in `waiting_reason`, until its validity ends (then `expired`).
"""
import json
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from flask import current_app
from sqlalchemy import Integer, Text, bindparam, func, or_, select, type_coerce, update

from mpm import company_time
from mpm.extensions import db
from mpm.gateways.base import ACCEPTED, MAYBE_SENT, NOT_SENT, REJECTED, OutboundMessage, SendResult
from mpm.gateways.registry import get_gateway
from mpm.messaging import circuit, delivery, ledger, ratelimit, status
from mpm.models import Broadcast, Company, Person, Sms
from mpm.models.base import utcnow
from mpm.models.sms import IS_QUEUED
from mpm.plugins.credentials import UnreadableCredentials, scrub
from mpm.plugins.gateway_settings import active_gateway_settings, config_for

log = logging.getLogger(__name__)

MAX_RATE_WAIT_SECONDS = 1.0  # longest a run sleeps for a send slot; beyond it the work is handed back
HISTORY_LIMIT = 4000  # characters of attempt history kept on the row (the events keep everything)
_sms = Sms.__table__


@dataclass(slots=True)
class _Row:
    """A due queued message as the run sees it."""

    id: int
    number: str
    body: str
    person_id: int | None
    attempts: int
    tried: list
    error: str | None
    expires_at: datetime | None
    created_at: datetime
    last: str = ""  # the latest answer about it in this run
    outbound: dict = field(default_factory=dict)  # gateway key → the message as that gateway gets it


@dataclass
class DrainResult:
    counts: dict = field(default_factory=dict)
    resume_at: datetime | None = None  # handed back: continue then (a send slot)
    more: bool = False  # the time budget ran out with due work left

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n


class _Run:
    """What one drain knows of its company: gateways in priority order, their configs, time zone."""

    def __init__(self, company_id: int, lane: str, provider_thread: "_ProviderThread"):
        self.company_id = company_id
        self.lane = lane
        self.provider_thread = provider_thread  # provider calls run here, one at a time
        self.settings = active_gateway_settings(company_id)
        self.configs: dict = {}
        self.unreadable: dict[str, str] = {}
        for setting in self.settings:
            try:
                self.configs[setting.gateway] = config_for(setting)
            except UnreadableCredentials as exc:
                self.unreadable[setting.gateway] = str(exc)
        company = db.session.get(Company, company_id)
        self.tz = company_time.zone(company.time_zone if company else None)
        self.viber_ids: dict[int, str] = {}
        self.in_flight: _InFlight | None = None  # the provider request on its way
        self.ids_stored: set[str] = set()  # gateways whose provider ids were stored since the last look at parked reports

    def settle_in_flight(self, result: "DrainResult") -> None:
        """Commit the outcome of the request with the provider, once it answered."""
        in_flight, self.in_flight = self.in_flight, None
        if in_flight is not None:
            in_flight.settle(self, result)

    def usable(self):
        return [s for s in self.settings if s.gateway in self.configs]

    def local(self, moment: datetime) -> str:
        return moment.astimezone(self.tz).strftime("%H:%M")


def drain(company_id: int, lane: str, *, budget: float, renew=lambda: None) -> DrainResult:
    """Send the due queued messages of this company's lane for about `budget` seconds."""
    started = time.monotonic()
    result = DrainResult()
    # Each request commits twice; the run's own objects (gateway settings) need not be reloaded
    # after every commit. Another worker's circuit change is seen by the next run.
    session = db.session()
    expire_on_commit, session.expire_on_commit = session.expire_on_commit, False
    try:
        with _ProviderThread(current_app._get_current_object()) as provider_thread:
            run = _Run(company_id, lane, provider_thread)
            try:
                _drain(run, budget, renew, started, result)
                run.settle_in_flight(result)
            except BaseException:
                if run.in_flight is not None:
                    run.in_flight.abandon()  # its messages stay `sending`: the sweep explains them
                raise
            _wake_parked_reports(run)
            return result
    finally:
        session.expire_on_commit = expire_on_commit


def _drain(run: _Run, budget: float, renew, started: float, result: DrainResult) -> DrainResult:
    company_id, lane = run.company_id, run.lane
    batch = current_app.config["SMS_BATCH_SIZE"]
    while True:
        now = utcnow()
        rows = _due_rows(company_id, lane, now, batch)
        if not rows:
            return result
        rows = _expire(run, rows, now, result)
        if any(s.gateway == "viber" for s in run.settings):
            run.viber_ids.update(_viber_ids(company_id, {r.person_id for r in rows if r.person_id} - set(run.viber_ids)))
        for key, group in _route(run, rows, now, result):
            handed_back = _send_group(run, key, group, result, deadline=started + budget, renew=renew)
            _wake_parked_reports(run)
            if handed_back is not None:
                result.resume_at = handed_back
                return result
            if result.more:
                return result
        if time.monotonic() - started >= budget:
            result.more = True
            return result


def next_due(company_id: int, lane: str) -> datetime | None:
    """When this lane has work next: now when something is due, else the earliest retry."""
    return db.session.scalar(
        select(func.min(func.coalesce(_sms.c.next_attempt_at, _sms.c.created_at)))
        .where(_sms.c.company_id == company_id, _sms.c.lane == lane, IS_QUEUED, _not_paused(company_id)))


# ----------------------------------------------------------------------------- reading the queue

# The queue's statements name table columns, not the model's attributes: an ORM-enabled select
# runs through the ORM's loading machinery, most of the cost of reading 500 due rows.
def _not_paused(company_id: int):
    # A paused broadcast's messages stay queued; resuming hands them to the queue again.
    broadcasts = Broadcast.__table__
    return or_(_sms.c.broadcast_id.is_(None),
               _sms.c.broadcast_id.not_in(select(broadcasts.c.id).where(broadcasts.c.company_id == company_id,
                                                                       broadcasts.c.state == "paused")))


def _due(company, due_by):
    """Retry time reached by `due_by`, broadcast not paused (both bindparams of the caller's statement)."""
    return (or_(_sms.c.next_attempt_at.is_(None), _sms.c.next_attempt_at <= due_by)) & _not_paused(company)


def _claimable():
    """The claim's condition: due (the `due_by` parameter), broadcast not paused."""
    return _due(bindparam("claim_company_id", type_=_sms.c.company_id.type),
                bindparam("due_by", type_=_sms.c.next_attempt_at.type))


def _due_by(now: datetime) -> datetime:
    return now + timedelta(seconds=1)  # RQ's scheduler may fire a hair before the stored time


def _due_rows_statement():
    company = bindparam("company_id", type_=_sms.c.company_id.type)
    return (select(_sms.c.id, _sms.c.number, _sms.c.body, _sms.c.person_id, _sms.c.attempts,
                   type_coerce(_sms.c.tried_gateways, Text), _sms.c.error, _sms.c.expires_at, _sms.c.created_at)
            .where(_sms.c.company_id == company, _sms.c.lane == bindparam("lane", type_=_sms.c.lane.type), IS_QUEUED,
                   _due(company, bindparam("due_by", type_=_sms.c.next_attempt_at.type)))
            .order_by(_sms.c.id).limit(bindparam("limit", type_=Integer)))


# Built once: building it (the paused-broadcast subquery and all) took as long as running it.
_DUE_ROWS = _due_rows_statement()


def _due_rows(company_id: int, lane: str, now: datetime, limit: int) -> list[_Row]:
    rows = db.session.connection().execute(
        _DUE_ROWS, {"company_id": company_id, "lane": lane, "due_by": _due_by(now), "limit": limit}).all()
    db.session.commit()  # no transaction stays open across provider calls
    return [_Row(sms_id, number, body, person_id, attempts, _tried(tried), error, expires_at, created_at)
            for sms_id, number, body, person_id, attempts, tried, error, expires_at, created_at in rows]


def _tried(stored) -> list:
    """tried_gateways read without the JSON type, whose decoder cost more than the rest of a due row:
    SQLite gives the text ("[]" for a message no gateway tried yet), PostgreSQL's driver the list."""
    if not stored or stored == "[]":
        return []
    return json.loads(stored) if isinstance(stored, str) else list(stored)


def _valid_until(row: _Row) -> datetime:
    if row.expires_at is not None:
        return _aware(row.expires_at)
    return _aware(row.created_at) + timedelta(hours=current_app.config["SMS_VALIDITY_HOURS"])


def _expire(run: _Run, rows: list[_Row], now: datetime, result: DrainResult) -> list[_Row]:
    """Past their validity: `expired`, with every attempt's reason."""
    # _valid_until's rule, one comparison per row, with `now` as the driver gives times (SQLite: naive, in UTC).
    stored_now = now.replace(tzinfo=None) if rows and rows[0].created_at.tzinfo is None else now
    created_by = stored_now - timedelta(hours=current_app.config["SMS_VALIDITY_HOURS"])
    late = [r for r in rows if (r.created_at <= created_by if r.expires_at is None else r.expires_at <= stored_now)]
    if not late:
        return rows
    changes = []
    for row in late:
        reason = "its validity period ended before a gateway took it"
        error = reason + (f"; attempts:\n{row.error}" if row.error else "")
        changes.append(ledger.Change(row.id, reason, values={"error": error[-HISTORY_LIMIT:], "waiting_reason": None}))
    moved = ledger.move_each(run.company_id, status.EXPIRED, changes, sources=(status.QUEUED,))
    db.session.commit()
    result.add("expired", len(moved))
    gone = {r.id for r in late}
    return [r for r in rows if r.id not in gone]


# ----------------------------------------------------------------------------- choosing a gateway

def _route(run: _Run, rows: list[_Row], now: datetime, result: DrainResult) -> list[tuple[str, list[_Row]]]:
    """Each row to the first gateway it has not tried this round that can reach it and whose
    circuit admits traffic. Rows with none wait (open circuit) or start a new round later."""
    plan: dict[str, list[_Row]] = {}
    blocked: dict[datetime, list[_Row]] = {}
    unreachable: list[_Row] = []
    usable = [(s.gateway, s, get_gateway(s.gateway)) for s in run.usable()]
    admitted: dict[str, bool] = {}  # asked once per step: a past cool-down takes the probe once

    def first_admitting(row: _Row) -> tuple[object | None, list]:
        """The first untried gateway that reaches the row and admits traffic, else None and
        every untried gateway that reaches it."""
        reaching = []
        for key, setting, gateway in usable:
            if key in row.tried or not gateway.can_reach(_outbound(run, row, key)):
                continue
            reaching.append(setting)
            if key not in admitted:
                admitted[key] = circuit.admits(setting, now)
            if admitted[key]:
                return setting, reaching
        return None, reaching

    for row in rows:
        chosen, candidates = first_admitting(row)
        if not candidates and row.tried:
            # Every gateway of this round was tried (settings changed meanwhile): a new round.
            row.tried = []
            chosen, candidates = first_admitting(row)
        if not candidates:
            unreachable.append(row)
            continue
        if chosen is None:
            reopen = min(circuit.reopens_at(s) or now for s in candidates)
            blocked.setdefault(max(reopen, now + timedelta(seconds=1)), []).append(row)
            continue
        plan.setdefault(chosen.gateway, []).append(row)
    for at, waiting in blocked.items():
        _postpone(run, waiting, min(at, *(_valid_until(r) for r in waiting)),
                  f"gateway down, retrying at {run.local(at)}")
        result.add("waiting", len(waiting))
    if unreachable:
        reasons = "; ".join(f"{_label(k)}: {v}" for k, v in run.unreadable.items())
        reason = reasons or "no active gateway can carry this message"
        _end_round(run, unreachable, reason, now)
        result.add("waiting", len(unreachable))
    db.session.commit()
    order = [s.gateway for s in run.settings]
    return sorted(plan.items(), key=lambda item: order.index(item[0]))


def _send_group(run: _Run, key: str, rows: list[_Row], result: DrainResult, *, deadline: float,
                renew) -> datetime | None:
    """Request by request through one gateway, until the run's deadline (then result.more).
    Returns the time to continue when the send rate has no slot within MAX_RATE_WAIT_SECONDS.

    While a request is with the provider, the previous one's outcome is committed (the run keeps
    the last one in flight across groups): at most two requests are `sending` at any moment, one of
    them answered, and a crash leaves them to the sweep. A gateway that just failed, or is being
    probed, waits for each answer to be committed before the next request
    (mpm.messaging.circuit.healthy)."""
    setting = next(s for s in run.settings if s.gateway == key)
    gateway = get_gateway(key)
    config = run.configs[key]
    by_id = {r.id: r for r in rows}
    outbound = [_outbound(run, r, key) for r in rows]
    requests = gateway.requests_for(outbound, config)
    limits = gateway.quotas(config)
    rate = (setting.options or {}).get("send_rate") or gateway.default_send_rate
    rate = float(rate) if rate else None
    for index, request in enumerate(requests):
        if not circuit.healthy(setting):
            run.settle_in_flight(result)  # its answer decides whether the next request goes
        if setting.circuit_state == circuit.OPEN:
            return None  # opened meanwhile: the rest is routed again by the next step
        if limits:
            granted = ratelimit.take_quota(run.company_id, key, len(request), limits)
            if granted < len(request):
                ratelimit.give_back_quota(run.company_id, key, granted, limits)
                rest = [by_id[m.sms_id] for r in requests[index:] for m in r]
                _quota_spent(run, key, rest, limits, result)
                return None
        wait = ratelimit.reserve_send_slot(run.company_id, key, len(request), rate, max_wait=MAX_RATE_WAIT_SECONDS)
        if wait > MAX_RATE_WAIT_SECONDS:
            if limits:
                ratelimit.give_back_quota(run.company_id, key, len(request), limits)
            rest = [by_id[m.sms_id] for r in requests[index:] for m in r]
            _paced(run, rest, rate)
            return utcnow() + timedelta(seconds=wait)
        if wait > 0:
            time.sleep(wait)
        if run.in_flight is not None:
            # Claimed means about to leave: the provider thread takes this request the moment it is
            # claimed, never after a previous call (a crash in between would leave messages never
            # sent looking as if they might have been).
            run.in_flight.answered()
        claimed = _claim(run, key, request)
        if limits and len(claimed) < len(request):
            ratelimit.give_back_quota(run.company_id, key, len(request) - len(claimed), limits)
        calling = _InFlight.start(run, setting, gateway, claimed, by_id, limits) if claimed else None
        previous, run.in_flight = run.in_flight, calling
        if previous is not None:
            previous.settle(run, result)  # the previous request's outcome, while this one is with the provider
        renew()
        if time.monotonic() >= deadline and index + 1 < len(requests):
            result.more = True
            return None
    return None


def _wake_parked_reports(run: _Run) -> None:
    """Provider ids were stored: reports that came before them wait parked, the writer applies them
    now (once per group of requests; a crash before it leaves them to the minute's sweep)."""
    for key in sorted(run.ids_stored):
        delivery.apply_parked_reports(run.company_id, key)
    run.ids_stored.clear()


class _ProviderThread:
    """The run's provider calls, one at a time, on one thread that holds an app context for the
    whole run: a gateway may keep its own state in Redis (TextBee's devices), and pushing and
    popping a context for every call cost a seventh of the call's Python."""

    def __init__(self, app):
        self._app = app
        self._context = None
        self._used = False
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="provider-call", initializer=self._enter)

    def _enter(self) -> None:
        self._context = self._app.app_context()
        self._context.push()

    def _leave(self) -> None:
        if self._context is not None:
            self._context.pop()

    def submit(self, call, *args) -> Future:
        self._used = True
        return self._pool.submit(call, *args)

    def __enter__(self) -> "_ProviderThread":
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._used:  # popped on the thread that pushed it, after its last call (its teardown runs there)
                self._pool.submit(self._leave).result()
        finally:
            self._pool.shutdown(wait=True)


class _InFlight:
    """One provider request on its way, called on the run's provider thread."""

    def __init__(self, setting, request: list[OutboundMessage], by_id: dict[int, _Row], limits: dict,
                 future: Future):
        self.setting = setting
        self.request = request
        self.by_id = by_id
        self.limits = limits
        self.future = future

    @classmethod
    def start(cls, run: _Run, setting, gateway, request: list[OutboundMessage], by_id: dict[int, _Row],
              limits: dict) -> "_InFlight":
        config = run.configs[setting.gateway]
        return cls(setting, request, by_id, limits, run.provider_thread.submit(gateway.send_batch, request, config))

    def settle(self, run: _Run, result: "DrainResult") -> None:
        key = self.setting.gateway
        taken = _settle(run, self.setting, self.request, self._answers(), self.by_id, result)
        if self.limits and taken < len(self.request):
            ratelimit.give_back_quota(run.company_id, key, len(self.request) - taken, self.limits)

    def _answers(self) -> dict[int, SendResult]:
        try:
            return {r.sms_id: r for r in self.future.result()}
        except Exception as exc:  # a bug in a gateway module: the request may have gone out
            label = _label(self.setting.gateway)
            log.error("gateway %s raised while sending", label, exc_info=exc)
            return {m.sms_id: SendResult(m.sms_id, MAYBE_SENT, detail=f"{label} failed: {type(exc).__name__}")
                    for m in self.request}

    def answered(self) -> None:
        """Wait until the provider answered (or the call failed)."""
        wait([self.future])

    def abandon(self) -> None:
        self.future.cancel()
        wait([self.future])


def _claim(run: _Run, key: str, request: list[OutboundMessage]) -> list[OutboundMessage]:
    """queued → sending for one provider request, committed before the call: the messages this run
    may send (another claimer of the same rows gets none of them)."""
    claimed = set(ledger.claim(run.company_id, [m.sms_id for m in request], key, where=_claimable,
                               due_by=_due_by(utcnow())))
    db.session.commit()
    return [m for m in request if m.sms_id in claimed]


def _settle(run: _Run, setting, request: list[OutboundMessage], answers: dict[int, SendResult],
            by_id: dict[int, _Row], result: DrainResult) -> int:
    """Commit one request's outcome, message by message, and feed the circuit breaker."""
    key = setting.gateway
    label = _label(key)
    config = run.configs[key]
    now = utcnow()
    window = timedelta(seconds=current_app.config["SMS_UNCONFIRMED_WINDOW_SECONDS"])
    sent, failed, unconfirmed, not_sent = [], [], [], []
    gateway_answered = False
    first_failure = ""
    scrubbed: dict[str, str] = {}
    for message in request:
        row = by_id[message.sms_id]
        answer = answers.get(message.sms_id) or SendResult(message.sms_id, MAYBE_SENT,
                                                           detail=f"{label} gave no answer for it")
        detail = answer.detail or ""
        if detail not in scrubbed:  # a request's answers mostly share their words
            scrubbed[detail] = scrub(detail, config.credentials)
        detail = scrubbed[detail]
        attempt = row.attempts + 1
        tried = row.tried + [key]
        if answer.outcome == ACCEPTED:
            gateway_answered = True
            sent.append(ledger.Change(row.id, detail or f"accepted by {label}", key, {
                "provider_message_id": answer.provider_message_id, "cost": answer.cost[:32] if answer.cost else None,
                "error": None}))
        elif answer.outcome == REJECTED:
            gateway_answered = True
            failed.append(ledger.Change(row.id, detail, key, {
                "error": _history(row, attempt, label, detail), "tried_gateways": tried}))
        elif answer.outcome == NOT_SENT:
            if answer.recipient_unreachable:
                gateway_answered = True  # about this person, not the gateway
                if row.person_id:
                    _forget_viber_id(run, row, detail)
            else:
                first_failure = first_failure or detail
            row.error = _history(row, attempt, label, detail)
            row.attempts, row.tried, row.last = attempt, tried, detail
            not_sent.append(row)
        else:
            first_failure = first_failure or detail
            unconfirmed.append(ledger.Change(
                row.id, f"{detail}; waiting for {label}'s report", key,
                {"report_due_at": now + window, "error": _history(row, attempt, label, detail),
                 "tried_gateways": tried}))
    moved_sent = ledger.move_each(run.company_id, status.SENT, sent, kind="attempt",
                                  sources=(status.SENDING, status.UNCONFIRMED))
    ledger.move_each(run.company_id, status.FAILED, failed, kind="attempt", sources=(status.SENDING,))
    ledger.move_each(run.company_id, status.UNCONFIRMED, unconfirmed, kind="attempt", sources=(status.SENDING,))
    _not_sent(run, key, not_sent, now, result)
    if gateway_answered:
        circuit.record_success(setting, now)
    else:
        circuit.record_failure(setting, first_failure, now)
    db.session.commit()
    if moved_sent:
        run.ids_stored.add(key)
    result.add("sent", len(moved_sent))
    result.add("failed", len(failed))
    result.add("unconfirmed", len(unconfirmed))
    return len(sent)


def _not_sent(run: _Run, key: str, rows: list[_Row], now: datetime, result: DrainResult) -> None:
    """Back to queued: at once for the next gateway of this round, or after a backoff when every
    gateway of the round said no."""
    if not rows:
        return
    label = _label(key)
    onward, round_over = [], []
    for row in rows:
        more = [s for s in run.usable() if s.gateway not in row.tried
                and get_gateway(s.gateway).can_reach(_outbound(run, row, s.gateway))]
        (onward if more else round_over).append(row)
    ledger.requeue(run.company_id, [
        ledger.Change(r.id, f"not sent by {label}: {r.last}; trying the next gateway", key,
                      {"tried_gateways": r.tried, "error": r.error, "next_attempt_at": now, "waiting_reason": None})
        for r in onward], kind="attempt")
    changes = []
    for row in round_over:
        at = min(now + timedelta(seconds=retry_delay_seconds(row.attempts)), _valid_until(row))
        reason = f"gateway down, retrying at {run.local(at)}"
        changes.append(ledger.Change(row.id, f"not sent by {label}: {row.last}; no gateway took it, {reason}", key, {
            "tried_gateways": [], "error": row.error, "next_attempt_at": at, "waiting_reason": reason}))
    ledger.requeue(run.company_id, changes)
    result.add("retry", len(rows))


def retry_delay_seconds(attempts: int) -> int:
    """Exponential backoff after this many attempts: base, 2×base, 4×base… capped."""
    base = current_app.config["SMS_RETRY_BASE_SECONDS"]
    return int(min(base * 2 ** min(max(attempts - 1, 0), 30), current_app.config["SMS_RETRY_MAX_SECONDS"]))


# ----------------------------------------------------------------------------- waiting (no status change)

def _postpone(run: _Run, rows: list[_Row], at: datetime, reason: str, *, tried: list | None = None,
              error: str | None = None) -> None:
    """Queued rows stay queued, due later, with their reason on view."""
    values = {"next_attempt_at": at, "waiting_reason": reason[:160]}
    if tried is not None:
        values["tried_gateways"] = tried
    if error is not None:
        values["error"] = error
    db.session.execute(update(Sms).where(Sms.id.in_([r.id for r in rows]), Sms.status == status.QUEUED)
                       .values(values).execution_options(synchronize_session=False))
    ledger.write_events([ledger.event_row(run.company_id, r.id, "note", f"waiting: {reason}") for r in rows])


def _end_round(run: _Run, rows: list[_Row], reason: str, now: datetime) -> None:
    for row in rows:
        at = min(now + timedelta(seconds=retry_delay_seconds(max(row.attempts, 1))), _valid_until(row))
        _postpone(run, [row], at, f"{reason[:100]}; retrying at {run.local(at)}", tried=[],
                  error=_history(row, row.attempts, "", reason))


def _quota_spent(run: _Run, key: str, rows: list[_Row], limits: dict, result: DrainResult) -> None:
    """The plan's quota is spent: the next gateway takes them, or they wait for the reset."""
    label = _label(key)
    now = utcnow()
    used = ratelimit.quota_used(run.company_id, key, limits, now)
    month_spent = used.get("month", 0) >= limits.get("month", float("inf"))
    if month_spent:
        reset = (now.replace(day=28) + timedelta(days=4)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    else:
        reset = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    waiting = []
    for row in rows:
        more = [s for s in run.usable() if s.gateway not in row.tried + [key]
                and get_gateway(s.gateway).can_reach(_outbound(run, row, s.gateway))]
        if more:
            db.session.execute(update(Sms).where(Sms.id == row.id, Sms.status == status.QUEUED)
                               .values(tried_gateways=row.tried + [key]).execution_options(synchronize_session=False))
            ledger.note(run.company_id, row.id, f"{label} skipped: plan quota spent", gateway=key)
        else:
            waiting.append(row)
    if waiting:
        when = run.local(reset) if not month_spent else reset.astimezone(run.tz).strftime("%d %b %H:%M")
        at = min(reset, min(_valid_until(r) for r in waiting))
        _postpone(run, waiting, at, f"waiting for quota (resets {when})")
        result.add("waiting", len(waiting))
    db.session.commit()


def _paced(run: _Run, rows: list[_Row], rate: float) -> None:
    """The send rate has no slot now: say how long the lane's backlog takes at this pace."""
    backlog = db.session.scalar(select(func.count()).select_from(_sms).where(
        _sms.c.company_id == run.company_id, _sms.c.lane == run.lane, IS_QUEUED))
    seconds = backlog / rate
    eta = f"about {max(1, round(seconds / 60))} min" if seconds >= 90 else f"about {max(1, round(seconds))} s"
    reason = f"paced at {rate:g}/s: {eta}"
    db.session.execute(update(Sms).where(Sms.id.in_([r.id for r in rows]), Sms.status == status.QUEUED)
                       .values(waiting_reason=reason).execution_options(synchronize_session=False))
    db.session.commit()


# ----------------------------------------------------------------------------- small helpers

def _history(row: _Row, attempt: int, label: str, detail: str) -> str:
    line = f"attempt {attempt}" + (f" ({label})" if label else "") + f": {detail}"
    return (((row.error + "\n") if row.error else "") + line)[-HISTORY_LIMIT:]


def _outbound(run: _Run, row: _Row, key: str) -> OutboundMessage:
    # Made once per row and gateway in a run (routing and sending both need it); a row that was not
    # sent is read again, with its new attempt count, by the next step.
    message = row.outbound.get(key)
    if message is None:
        message = row.outbound[key] = OutboundMessage(
            sms_id=row.id, number=row.number, body=row.body,
            viber_id=run.viber_ids.get(row.person_id) if row.person_id else None,
            idempotency_key=f"mpm-{run.company_id}-{row.id}-{row.attempts + 1}-{key}")
    return message


def _viber_ids(company_id: int, person_ids: set[int]) -> dict[int, str]:
    if not person_ids:
        return {}
    rows = db.session.execute(select(Person.id, Person.viber_id).where(
        Person.company_id == company_id, Person.id.in_(person_ids), Person.viber_id.is_not(None)))
    return {pid: vid for pid, vid in rows}


def _forget_viber_id(run: _Run, row: _Row, detail: str) -> None:
    """Viber says this person cannot be reached through it: their Viber id is dropped."""
    person_id = row.person_id
    ledger.note(run.company_id, row.id, f"Viber id removed from the person: {detail}", gateway="viber")
    db.session.execute(update(Person).where(Person.company_id == run.company_id, Person.id == person_id)
                       .values(viber_id=None).execution_options(synchronize_session=False))
    run.viber_ids.pop(person_id, None)


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def _label(key: str) -> str:
    try:
        return get_gateway(key).label
    except KeyError:  # a gateway no longer registered
        return key
