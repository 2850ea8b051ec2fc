"""Figures of the dashboard and of each gateway's overview, read from the rollups (mpm.insight.rollups), never
from the SMS table; the one live figure is "messages waiting now" (queued rows, ix_sms_company_status_created)."""
import csv
import io
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from sqlalchemy import func, select

from mpm.extensions import db
from mpm.gateways.registry import all_gateways
from mpm.insight.rollups import TTD_COLUMNS, TTD_EDGES, day_start, hour_cutoff, local_day
from mpm.messaging import status as st
from mpm.messaging.history import company_zone
from mpm.models import Company, Person, Sms, SmsRollup
from mpm.models.base import utcnow

# Date-range presets: key → (label, grain, days); "48h" is by the hour.
RANGES = {
    "48h": ("Last 48 hours", "hour", 2),
    "7d": ("7 days", "day", 7),
    "30d": ("30 days", "day", 30),
    "90d": ("90 days", "day", 90),
}
DEFAULT_RANGE = "30d"
SETTLED = (st.DELIVERED, st.FAILED, st.EXPIRED)
TOP_REASONS = 10


def range_key(text: str | None) -> str:
    return text if text in RANGES else DEFAULT_RANGE


@dataclass
class Point:
    """One bar of the charts: a day or an hour."""

    start: datetime
    label: str
    day: date
    messages: int = 0
    delivered: int = 0
    failed: int = 0  # failed and expired
    unconfirmed: int = 0
    cost: float = 0.0
    segments: int = 0

    @property
    def settled(self) -> int:
        return self.delivered + self.failed

    @property
    def pending(self) -> int:
        return self.messages - self.settled - self.unconfirmed

    @property
    def rate(self) -> float | None:
        """Delivered share of the messages whose fate is known (delivered, failed, expired)."""
        return self.delivered / self.settled if self.settled else None


@dataclass
class GatewayLine:
    gateway: str
    messages: int = 0
    delivered: int = 0
    failed: int = 0
    cost: float = 0.0
    segments: int = 0

    @property
    def rate(self) -> float | None:
        settled = self.delivered + self.failed
        return self.delivered / settled if settled else None


@dataclass
class Reason:
    reason: str
    gateway: str
    messages: int


@dataclass
class Insight:
    range_key: str
    grain: str
    currency: str
    first_day: date
    last_day: date
    gateway: str | None
    points: list[Point]
    gateways: list[GatewayLine]
    reasons: list[Reason]
    histogram: list[int]
    totals: Point
    waiting: list[tuple[str, int]] = field(default_factory=list)

    @property
    def range_label(self) -> str:
        return RANGES[self.range_key][0]

    @property
    def median_seconds(self) -> float | None:
        return percentile(self.histogram, 0.5)

    @property
    def p95_seconds(self) -> float | None:
        return percentile(self.histogram, 0.95)

    @property
    def waiting_total(self) -> int:
        return sum(n for _, n in self.waiting)

    @property
    def ranges(self) -> dict:
        return RANGES

    def history_args(self, reason: "Reason") -> dict:
        """The SMS history filtered to the failed messages of this reason in this range."""
        args = {"status": st.FAILED, "reason": reason.reason, "from": self.first_day.isoformat(),
                "to": self.last_day.isoformat()}
        if reason.gateway:
            args["gateway"] = reason.gateway
        return args


def percentile(histogram: list[int], share: float) -> float | None:
    """Read a percentile back from a time-to-delivery histogram (linear inside its bin)."""
    total = sum(histogram)
    if not total:
        return None
    wanted = share * total
    seen = 0
    for index, count in enumerate(histogram):
        if count and seen + count >= wanted:
            low = TTD_EDGES[index - 1] if index else 0
            if index == len(TTD_EDGES):  # slower than the last edge: say at least that
                return float(low)
            high = TTD_EDGES[index]
            return low + (high - low) * (wanted - seen) / count
        seen += count
    return float(TTD_EDGES[-1])


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _points(grain: str, days: int, zone, now: datetime) -> list[Point]:
    today = local_day(now, zone)
    if grain == "hour":
        first = hour_cutoff(now)
        hours = [first + timedelta(hours=i) for i in range(48)]
        return [Point(start=h, label=h.astimezone(zone).strftime("%d %H:00"), day=h.astimezone(zone).date())
                for h in hours]
    first_day = today - timedelta(days=days - 1)
    return [Point(start=day_start(first_day + timedelta(days=i), zone), label=(first_day + timedelta(days=i)).isoformat(),
                  day=first_day + timedelta(days=i)) for i in range(days)]


def _add(target, outcome: str, messages: int, segments: int, cost: float) -> None:
    target.messages += messages
    target.segments += segments
    target.cost += cost
    if outcome == st.DELIVERED:
        target.delivered += messages
    elif outcome in (st.FAILED, st.EXPIRED):
        target.failed += messages
    elif outcome == st.UNCONFIRMED and hasattr(target, "unconfirmed"):
        target.unconfirmed += messages


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def delivery_insight(company_id: int, range_text: str | None = None, gateway: str | None = None,
                     now: datetime | None = None) -> Insight:
    """Charts and figures of one company (or of one of its gateways) over a preset date range."""
    now = now or utcnow()
    gateway = gateway if gateway in {g.key for g in all_gateways()} else None
    key = range_key(range_text)
    _, grain, days = RANGES[key]
    company = db.session.get(Company, company_id)
    zone = company_zone(company)
    points = _points(grain, days, zone, now)
    start = points[0].start
    by_start = {p.start: p for p in points}
    r = SmsRollup
    scope = [r.company_id == company_id, r.grain == grain, r.bucket >= start]
    if gateway:
        scope.append(r.gateway == gateway)
    # Summed by the database from the rollups' figures index (a few rows per day whatever the
    # volume): per period × outcome for the chart; per gateway × outcome × reason for the gateway
    # lines and the failure reasons; the time-to-delivery counts of delivered messages.
    totals = Point(start=start, label="total", day=points[0].day)
    for bucket, outcome, messages, segments, cost in db.session.execute(
            select(r.bucket, r.outcome, func.sum(r.messages), func.sum(r.segments), func.sum(r.cost))
            .where(*scope).group_by(r.bucket, r.outcome)):
        point = by_start.get(_as_utc(bucket))
        if point is None:
            continue
        values = (outcome, int(messages), int(segments or 0), float(cost or 0))
        _add(point, *values)
        _add(totals, *values)
    lines: dict[str, GatewayLine] = {}
    by_reason: dict[tuple[str, str], int] = {}
    for gw, outcome, reason, messages, segments, cost in db.session.execute(
            select(r.gateway, r.outcome, r.reason, func.sum(r.messages), func.sum(r.segments), func.sum(r.cost))
            .where(*scope).group_by(r.gateway, r.outcome, r.reason)):
        _add(lines.setdefault(gw, GatewayLine(gw)), outcome, int(messages), int(segments or 0), float(cost or 0))
        if outcome == st.FAILED:
            by_reason[(reason, gw)] = int(messages)
    sums = db.session.execute(select(*(func.coalesce(func.sum(getattr(r, c)), 0) for c in TTD_COLUMNS))
                              .where(*scope, r.outcome == st.DELIVERED)).one()
    histogram = [int(n) for n in sums]
    reasons = [Reason(reason, gw, n) for (reason, gw), n in
               sorted(by_reason.items(), key=lambda item: (-item[1], item[0][0]))[:TOP_REASONS]]
    return Insight(range_key=key, grain=grain, currency=company.currency, first_day=points[0].day,
                   last_day=points[-1].day, gateway=gateway, points=points,
                   gateways=sorted(lines.values(), key=lambda g: -g.messages), reasons=reasons,
                   histogram=histogram, totals=totals, waiting=waiting_now(company_id, gateway))


def waiting_now(company_id: int, gateway: str | None = None) -> list[tuple[str, int]]:
    """Queued messages by the reason they wait (quota, pacing, gateway down), most first."""
    query = (select(Sms.waiting_reason, func.count())
             .where(Sms.company_id == company_id, Sms.status == st.QUEUED)
             .group_by(Sms.waiting_reason))
    if gateway:
        query = query.where(Sms.gateway == gateway)
    rows = [(reason or "queued, about to be sent", int(n)) for reason, n in db.session.execute(query)]
    return sorted(rows, key=lambda row: -row[1])


def people_counts(company_id: int) -> dict[str, int]:
    return dict(db.session.execute(
        select(Person.kind, func.count()).where(Person.company_id == company_id).group_by(Person.kind)).all())


def insight_csv(view: Insight) -> str:
    """The chart's figures, one line per day (or hour)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["period", "messages", "delivered", "failed or expired", "unconfirmed", "still in flight",
                     "delivery rate %", "segments", f"cost ({view.currency})"])
    for p in view.points:
        writer.writerow([p.label, p.messages, p.delivered, p.failed, p.unconfirmed, p.pending,
                         "" if p.rate is None else f"{100 * p.rate:.1f}", p.segments, f"{p.cost:.4f}"])
    return out.getvalue()
