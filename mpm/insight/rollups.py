"""Delivery rollups: what the dashboard, the plugin overviews and the alerts read instead of the SMS table.

Per company, a bucket is one local day of the company (kept for good) or one UTC hour (kept for the last
48 h); inside it one row per gateway × trigger × outcome (× failure reason): messages, segments, cost and,
for delivered messages, a histogram of the time to delivery (bins of TTD_EDGES) so percentiles can be read
back (one integer column per bin, so the database sums them). Outcome is the messages' status now; a message counts in the bucket of its creation time.

Upkeep: refresh_rollups() runs every minute. It asks the index ix_sms_updated which (company, hour)
buckets have rows updated since its last run, and re-aggregates the whole local days around them from
the raw rows (replace, not add: a job killed half-way, run twice, or racing a late delivery report
leaves nothing counted twice; the next run redoes it). rebuild_rollups() (`flask rollups rebuild`)
recomputes everything with the very same code, so both must agree."""
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone

from sqlalchemy import case, delete, func, insert, select

from mpm import leases
from mpm.extensions import db
from mpm.messaging import status as st
from mpm.models import Company, RollupMark, Sms, SmsRollup
from mpm.models.base import utcnow
from mpm.messaging.history import company_zone

# Upper edges (seconds) of the time-to-delivery bins; the last bin holds everything slower.
TTD_EDGES = (10, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 12 * 3600, 86400)
# The rollup column of each bin, in the same order (plus the last one, slower than a day).
TTD_COLUMNS = ("ttd_10s", "ttd_30s", "ttd_1m", "ttd_2m", "ttd_5m", "ttd_10m", "ttd_30m", "ttd_1h", "ttd_3h", "ttd_12h",
               "ttd_1d", "ttd_more")
HOURS_KEPT = 48
# Changes committed up to this long after their updated_at was stamped are still seen by the next run.
SLACK = timedelta(minutes=5)
MARK = "sms"
LEASE = "rollups"
LEASE_SECONDS = 600
CHUNK_DAYS = 31

_sms = Sms.__table__
_rollup = SmsRollup.__table__


@dataclass
class Totals:
    messages: int = 0
    segments: int = 0
    cost: float = 0.0
    histogram: list[int] = field(default_factory=lambda: [0] * (len(TTD_EDGES) + 1))


def failure_reason(error: str | None) -> str:
    """The reason a failed message is filed under: the first line of its error, without the network
    code. Always a prefix of the error, so the SMS history can find the messages by it."""
    first = (error or "").strip().split("\n", 1)[0].strip()
    first = re.sub(r",? ?network \d+\s*$", "", first)
    return first[:160]


def parse_cost(text: str | None) -> float:
    """"KES 0.8000" → 0.8; anything unreadable counts as nothing."""
    if not text:
        return 0.0
    try:
        return float(text.split()[-1])
    except (ValueError, IndexError):
        return 0.0


# ---------------------------------------------------------------- SQL that differs per database


def _postgres() -> bool:
    return db.session.get_bind().dialect.name == "postgresql"


def _utc_hour(column):
    """'YYYY-MM-DD HH' of a stored UTC time (SQLite stores 'YYYY-MM-DD HH:MM:SS.ffffff')."""
    if _postgres():
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD HH24")
    return func.substr(column, 1, 13)


def _seconds_between(start, end):
    if _postgres():
        return func.extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86400.0


def _ttd_bin():
    # updated_at of a delivered message is when its report arrived: a final status is never written again.
    seconds = _seconds_between(_sms.c.created_at, _sms.c.updated_at)
    bins = case(*[(seconds < edge, index) for index, edge in enumerate(TTD_EDGES)], else_=len(TTD_EDGES))
    return case((_sms.c.status == st.DELIVERED, bins), else_=None)


# ---------------------------------------------------------------- buckets


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def day_start(day: date, zone) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(timezone.utc)


def local_day(moment: datetime, zone) -> date:
    return _as_utc(moment).astimezone(zone).date()


def hour_cutoff(now: datetime) -> datetime:
    """Hourly buckets starting before this are not kept."""
    return _as_utc(now).replace(minute=0, second=0, microsecond=0) - timedelta(hours=HOURS_KEPT - 1)


def _aggregate(company_id: int, zone, start: datetime, end: datetime, now: datetime) -> dict[tuple, Totals]:
    """Totals per (grain, bucket, gateway, trigger, outcome, reason) of the outbound messages created in
    [start, end): one grouped query by UTC hour, folded into local days and recent hours here."""
    hour = _utc_hour(_sms.c.created_at).label("hour")
    ttd = _ttd_bin().label("ttd")
    error = case((_sms.c.status == st.FAILED, _sms.c.error), else_=None).label("error")
    query = (select(_sms.c.gateway, _sms.c.trigger, _sms.c.status, hour, _sms.c.cost, ttd, error,
                    func.count(), func.sum(_sms.c.segments))
             .where(_sms.c.company_id == company_id, _sms.c.direction == "outbound",
                    _sms.c.created_at >= start, _sms.c.created_at < end)
             .group_by(_sms.c.gateway, _sms.c.trigger, _sms.c.status, hour, _sms.c.cost, ttd, error))
    cutoff = hour_cutoff(now)
    totals: dict[tuple, Totals] = defaultdict(Totals)
    days: dict[str, datetime] = {}
    for gateway, trigger, outcome, hour_text, cost, ttd_bin, error_text, count, segments in db.session.execute(query):
        at = datetime.strptime(hour_text, "%Y-%m-%d %H").replace(tzinfo=timezone.utc)
        if hour_text not in days:
            days[hour_text] = day_start(local_day(at, zone), zone)
        tail = (gateway or "", trigger, outcome, failure_reason(error_text) if outcome == st.FAILED else "")
        keys = [("day", days[hour_text], *tail)]
        if at >= cutoff:
            keys.append(("hour", at, *tail))
        for key in keys:
            item = totals[key]
            item.messages += count
            item.segments += int(segments or 0)
            item.cost += parse_cost(cost) * count
            if ttd_bin is not None:
                item.histogram[int(ttd_bin)] += count
    return totals


def _replace(company_id: int, zone, first_day: date, last_day: date, now: datetime) -> int:
    """Recompute the buckets of the local days first_day..last_day (inclusive) from the raw rows."""
    start, end = day_start(first_day, zone), day_start(last_day + timedelta(days=1), zone)
    totals = _aggregate(company_id, zone, start, end, now)
    db.session.execute(delete(_rollup).where(
        _rollup.c.company_id == company_id, _rollup.c.bucket >= start, _rollup.c.bucket < end))
    rows = [{"company_id": company_id, "grain": grain, "bucket": bucket, "gateway": gateway, "trigger": trigger,
             "outcome": outcome, "reason": reason, "messages": t.messages, "segments": t.segments,
             "cost": round(t.cost, 6), **dict(zip(TTD_COLUMNS, t.histogram))}
            for (grain, bucket, gateway, trigger, outcome, reason), t in totals.items()]
    if rows:
        db.session.execute(insert(_rollup), rows)
    return len(rows)


def _prune_hours(now: datetime) -> None:
    db.session.execute(delete(_rollup).where(_rollup.c.grain == "hour", _rollup.c.bucket < hour_cutoff(now)))


def _day_runs(days: set[date]) -> list[tuple[date, date]]:
    """Consecutive days as (first, last) runs, each at most CHUNK_DAYS long."""
    runs: list[tuple[date, date]] = []
    for day in sorted(days):
        if runs and day - runs[-1][1] == timedelta(days=1) and (day - runs[-1][0]).days < CHUNK_DAYS:
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


def _set_mark(moment: datetime) -> None:
    mark = db.session.get(RollupMark, MARK)
    if mark is None:
        db.session.add(RollupMark(name=MARK, changed_since=moment))
    else:
        mark.changed_since = moment


# ---------------------------------------------------------------- the job and the command


def refresh_rollups(now: datetime | None = None) -> dict:
    """The minute job: re-aggregate the local days that have messages changed since the last run.
    Returns what it did (for the log and the benchmark)."""
    if not leases.take(LEASE, LEASE_SECONDS):
        return {"skipped": "another refresh is running"}
    try:
        now = now or utcnow()
        mark = db.session.get(RollupMark, MARK)
        if mark is None:
            return rebuild_rollups(now=now, lease_taken=True)
        hour = _utc_hour(_sms.c.created_at)
        # `company_id + 0`: grouping by the bare column lets SQLite walk ix_sms_company_id through the
        # whole table (to skip a sort) instead of the few index entries ix_sms_updated has for the range.
        company = (_sms.c.company_id + 0).label("company")
        touched = db.session.execute(
            select(company, hour).where(_sms.c.updated_at >= mark.changed_since)
            .group_by(company, hour)).all()
        hours_by_company: dict[int, set[str]] = defaultdict(set)
        for company_id, hour_text in touched:
            hours_by_company[company_id].add(hour_text)
        rows = days = 0
        for company_id, hours in hours_by_company.items():
            zone = company_zone(db.session.get(Company, company_id))
            touched_days = {local_day(datetime.strptime(h, "%Y-%m-%d %H").replace(tzinfo=timezone.utc), zone)
                            for h in hours}
            days += len(touched_days)
            for first, last in _day_runs(touched_days):
                rows += _replace(company_id, zone, first, last, now)
        _prune_hours(now)
        _set_mark(now - SLACK)
        db.session.commit()
        return {"companies": len(hours_by_company), "days": days, "rows": rows}
    finally:
        leases.release(LEASE)


def rebuild_rollups(now: datetime | None = None, lease_taken: bool = False) -> dict:
    """Recompute every rollup from the raw rows (the `flask rollups rebuild` command)."""
    if not lease_taken and not leases.take(LEASE, LEASE_SECONDS):
        raise RuntimeError("a rollup refresh is running; try again in a minute")
    try:
        now = now or utcnow()
        db.session.execute(delete(_rollup))
        rows = days = 0
        spans = db.session.execute(
            select(_sms.c.company_id, func.min(_sms.c.created_at), func.max(_sms.c.created_at))
            .where(_sms.c.direction == "outbound").group_by(_sms.c.company_id)).all()
        for company_id, first, last in spans:
            zone = company_zone(db.session.get(Company, company_id))
            first_day, last_day = local_day(_parse(first), zone), local_day(_parse(last), zone)
            day = first_day
            while day <= last_day:
                chunk_end = min(day + timedelta(days=CHUNK_DAYS - 1), last_day)
                rows += _replace(company_id, zone, day, chunk_end, now)
                days += (chunk_end - day).days + 1
                day = chunk_end + timedelta(days=1)
        _set_mark(now - SLACK)
        db.session.commit()
        return {"companies": len(spans), "days": days, "rows": rows}
    finally:
        if not lease_taken:
            leases.release(LEASE)


def _parse(value) -> datetime:
    # min()/max() over a SQLite DateTime column come back as text.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return _as_utc(value)
