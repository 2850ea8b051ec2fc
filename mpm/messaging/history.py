"""SMS history: filtered lists with keyset pagination, the CSV export, a person's latest messages,
and one message with its timeline. Read-only: sending (resend included) is mpm.messaging.send.

Pages are cut on (created_at, id), newest first, so every page is one index range scan on
ix_sms_company_created however deep it is (no OFFSET, no COUNT over a million rows)."""
import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import and_, false, func, or_, select
from sqlalchemy.orm import defer, joinedload

from mpm import company_time
from mpm.extensions import db
from mpm.gateways.registry import priority_order
from mpm.messaging import status
from mpm.messaging.encoding import analyse
from mpm.messaging.send import SmsRefused, can_resend, recipient_for_person, unconfirmed_is_final
from mpm.models import Company, Person, PhoneNumber, Sms, User
from mpm.models.base import as_utc
from mpm.people.customers import name_matches
from mpm.people.phones import InvalidPhoneNumber, to_e164

STATUSES = (*status.ALL, status.RECEIVED)
DIRECTIONS = ("outbound", "inbound")
TRIGGERS = ("manual", "broadcast", "transaction", "maintenance", "reply", "resend", "resend_information", "test")
# What each trigger means to staff, for tables, filters and threads.
TRIGGER_LABELS = {"manual": "sent by staff", "broadcast": "broadcast", "transaction": "payment confirmation",
                  "maintenance": "maintenance ticket", "reply": "reply", "resend": "sent again",
                  "resend_information": "payment details sent again", "test": "test SMS"}
TOTAL_COUNT_CAP = 1_000  # beyond this the history says "1,000+": counting further costs more than it tells
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
PERSON_HISTORY_SIZE = 20
EXPORT_BATCH = 1000
# The most of one body a page or the CSV shows: far above any message this server stores now; rows
# stored before the incoming limit existed can be megabytes and are cut, with a note.
SHOWN_BODY_LIMIT = 5000


# ---------------------------------------------------------------- time zone


def company_zone(company: Company | None) -> ZoneInfo:
    return company_time.zone(company.time_zone if company else None)


def local_time(moment: datetime | None, zone: ZoneInfo) -> str:
    # CSV cells: the zone is named once, in the file name and the column header.
    return company_time.local_text(moment, zone, "seconds", label=False)


# ---------------------------------------------------------------- cursors


def encode_cursor(created_at: datetime, sms_id: int) -> str:
    """(created_at, id) as '<microseconds since epoch>-<id>': exact, URL-safe, no float rounding."""
    micros = (as_utc(created_at) - EPOCH) // timedelta(microseconds=1)
    return f"{micros}-{sms_id}"


def decode_cursor(text: str | None) -> tuple[datetime, int] | None:
    match = re.fullmatch(r"(\d{1,17})-(\d{1,18})", text or "")
    if not match:
        return None
    return EPOCH + timedelta(microseconds=int(match.group(1))), int(match.group(2))


# ---------------------------------------------------------------- filters


def _parse_date(text: str | None) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


@dataclass
class HistoryFilter:
    status: str = ""
    gateway: str = ""
    direction: str = ""
    trigger: str = ""
    date_from: date | None = None
    date_to: date | None = None
    q: str = ""
    person_id: int | None = None
    reason: str = ""  # failure reason from the dashboard: messages whose error starts with it
    # Position: older than `after`, newer than `before`, or the oldest page; none of them = newest page.
    after: str = ""
    before: str = ""
    oldest: bool = False

    @classmethod
    def from_args(cls, args) -> "HistoryFilter":
        def choice(name, allowed):
            value = (args.get(name) or "").strip()
            return value if value in allowed else ""

        return cls(
            status=choice("status", STATUSES),
            gateway=choice("gateway", priority_order()),
            direction=choice("direction", DIRECTIONS),
            trigger=choice("trigger", TRIGGERS),
            date_from=_parse_date(args.get("from")),
            date_to=_parse_date(args.get("to")),
            q=(args.get("q") or "").strip()[:100],
            person_id=args.get("person", type=int),
            reason=(args.get("reason") or "").strip()[:160],
            after=args.get("after", "") if decode_cursor(args.get("after")) else "",
            before=args.get("before", "") if decode_cursor(args.get("before")) else "",
            oldest=args.get("oldest") == "1",
        )

    def query_args(self, **overrides) -> dict:
        """URL parameters of the filter (without the position unless given), for links and the export."""
        values = {
            "status": self.status or None,
            "gateway": self.gateway or None,
            "direction": self.direction or None,
            "trigger": self.trigger or None,
            "from": self.date_from.isoformat() if self.date_from else None,
            "to": self.date_to.isoformat() if self.date_to else None,
            "q": self.q or None,
            "person": self.person_id,
            "reason": self.reason or None,
        }
        values.update(overrides)
        return {k: v for k, v in values.items() if v is not None}

    def position_args(self) -> dict:
        """The filter plus the current position: the URL a poll of this very page uses."""
        position = {"after": self.after or None, "before": self.before or None, "oldest": "1" if self.oldest else None}
        return self.query_args(**position)

    @property
    def is_filtered(self) -> bool:
        return bool(self.query_args())

    @property
    def dates_reversed(self) -> bool:
        """A from-date after the to-date matches nothing: the page says so instead of a silent empty list."""
        return bool(self.date_from and self.date_to and self.date_from > self.date_to)


FEW_PEOPLE = 50


def _messages_of(people):
    """Messages of the people this select returns. For a few, seek each one's messages
    (ix_sms_person_created); for many (a broad search like "a"), walk the time index and test
    membership instead: `person_id + 0` keeps both SQLite and PostgreSQL off the per-person index,
    which would gather and sort every message of all of them. None when nobody matches."""
    few = list(db.session.scalars(people.distinct().limit(FEW_PEOPLE + 1)))
    if not few:
        return None
    if len(few) <= FEW_PEOPLE:
        return Sms.person_id.in_(few)
    return (Sms.person_id + 0).in_(people)


def _search_condition(company_id: int, q: str, default_region: str):
    """A whole number (any local format) → the messages to or from that number (ix_sms_company_number);
    part of a number → the people with such a number, and only when nobody has it, the messages
    whose number contains it; name words → the people they name."""
    digits = re.sub(r"\D", "", q)
    words = q.split()
    if len(digits) >= 3:
        try:
            return Sms.number == to_e164(q, default_region)
        except InvalidPhoneNumber:
            pass
        # Part of a number typed the local way ("0712 34") is found without its trunk zero too.
        parts = {digits, digits.lstrip("0")} - {""}
        people = select(PhoneNumber.person_id).where(
            PhoneNumber.company_id == company_id, or_(*(PhoneNumber.e164.like(f"%{p}%") for p in parts)))
    elif words:
        people = select(Person.id).where(Person.company_id == company_id, name_matches(words))
        # Words find the messages of the people they name and the messages whose text contains them.
        escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        in_body = Sms.body.ilike(f"%{escaped}%", escape="\\")
        of_people = _messages_of(people)
        return in_body if of_people is None else or_(of_people, in_body)
    else:
        return None
    condition = _messages_of(people)
    if condition is not None:
        return condition
    if len(digits) >= 3:
        return or_(*(Sms.number.like(f"%{p}%") for p in parts))
    return false()


def _filtered(company_id: int, flt: HistoryFilter):
    company = db.session.get(Company, company_id)
    zone = company_zone(company)
    stmt = select(Sms).where(Sms.company_id == company_id)
    if flt.status:
        stmt = stmt.where(Sms.status == flt.status)
    if flt.gateway:
        stmt = stmt.where(Sms.gateway == flt.gateway)
    if flt.direction:
        stmt = stmt.where(Sms.direction == flt.direction)
    if flt.trigger:
        stmt = stmt.where(Sms.trigger == flt.trigger)
    if flt.person_id:
        stmt = stmt.where(Sms.person_id == flt.person_id)
    if flt.reason:
        stmt = stmt.where(Sms.error.startswith(flt.reason, autoescape=True))
    # Dates are days in the company's time zone: from its first to the end of its last moment.
    if flt.date_from:
        stmt = stmt.where(Sms.created_at >= datetime.combine(flt.date_from, time(), zone).astimezone(timezone.utc))
    if flt.date_to:
        end = datetime.combine(flt.date_to + timedelta(days=1), time(), zone).astimezone(timezone.utc)
        stmt = stmt.where(Sms.created_at < end)
    if flt.q:
        condition = _search_condition(company_id, flt.q, company.default_region if company else "KE")
        if condition is not None:
            stmt = stmt.where(condition)
    return stmt


def _older_than(cursor: tuple[datetime, int]):
    # Written with a plain range on created_at first so both SQLite and PostgreSQL seek the index.
    moment, sms_id = cursor
    return and_(Sms.created_at <= moment, or_(Sms.created_at < moment, Sms.id < sms_id))


def _newer_than(cursor: tuple[datetime, int]):
    moment, sms_id = cursor
    return and_(Sms.created_at >= moment, or_(Sms.created_at > moment, Sms.id > sms_id))


NEWEST_FIRST = (Sms.created_at.desc(), Sms.id.desc())
OLDEST_FIRST = (Sms.created_at.asc(), Sms.id.asc())


@dataclass
class HistoryPage:
    rows: list[Sms]
    flt: HistoryFilter
    has_newer: bool = False
    has_older: bool = False
    newer_cursor: str = ""
    older_cursor: str = ""
    in_flight: bool = field(init=False)

    def __post_init__(self):
        self.in_flight = any(row.status in status.IN_FLIGHT for row in self.rows)


def _fetch(stmt, order, limit: int) -> list[Sms]:
    return list(db.session.scalars(stmt.options(joinedload(Sms.person)).order_by(*order).limit(limit)).unique())


def total_count(company_id: int, flt: HistoryFilter, cap: int = TOTAL_COUNT_CAP) -> tuple[int, bool]:
    """How many messages the filter matches, counted up to `cap`: (count, more_than_cap)."""
    base = _filtered(company_id, replace(flt, after="", before="", oldest=False)).with_only_columns(Sms.id)
    if flt.status:
        # Newest first: the database walks (company, status, created_at) and stops at the cap, where it
        # would otherwise gather every message of the status (600,000 failed ones) before counting.
        base = base.order_by(*NEWEST_FIRST)
    n = db.session.scalar(select(func.count()).select_from(base.limit(cap + 1).subquery()))
    return min(n, cap), n > cap


def history_page(company_id: int, flt: HistoryFilter, per_page: int) -> HistoryPage:
    """One page of the filtered history, newest first, positioned by flt.after / before / oldest."""
    base = _filtered(company_id, flt)
    newest = replace(flt, after="", before="", oldest=False)
    if flt.before:
        rows = _fetch(base.where(_newer_than(decode_cursor(flt.before))), OLDEST_FIRST, per_page + 1)
        if len(rows) <= per_page:
            # Reached the top: show the newest page, full, rather than a short one.
            return history_page(company_id, newest, per_page)
        rows = rows[:per_page][::-1]
        page = HistoryPage(rows, flt, has_newer=True, has_older=True)
    elif flt.oldest:
        rows = _fetch(base, OLDEST_FIRST, per_page + 1)
        page = HistoryPage(rows[:per_page][::-1], flt, has_newer=len(rows) > per_page, has_older=False)
    elif flt.after:
        rows = _fetch(base.where(_older_than(decode_cursor(flt.after))), NEWEST_FIRST, per_page + 1)
        page = HistoryPage(rows[:per_page], flt, has_newer=True, has_older=len(rows) > per_page)
    else:
        rows = _fetch(base, NEWEST_FIRST, per_page + 1)
        page = HistoryPage(rows[:per_page], newest, has_newer=False, has_older=len(rows) > per_page)
    if page.rows:
        page.newer_cursor = encode_cursor(page.rows[0].created_at, page.rows[0].id)
        page.older_cursor = encode_cursor(page.rows[-1].created_at, page.rows[-1].id)
    return page


def person_history(company_id: int, person_id: int, limit: int = PERSON_HISTORY_SIZE) -> HistoryPage:
    """The person's latest messages, both directions, newest first (the customer page)."""
    return history_page(company_id, HistoryFilter(person_id=person_id), limit)


# ---------------------------------------------------------------- CSV export

CSV_COLUMNS = ("id", "created_at", "direction", "name", "number", "status", "gateway", "trigger",
               "encoding", "segments", "cost", "error", "body")


def shown_body(body: str | None, length: int | None = None) -> str:
    """A body as pages and the CSV show it: whole, or cut at SHOWN_BODY_LIMIT with a note saying so.
    `length`: the whole body's length when only its start was read from the database."""
    body = body or ""
    length = len(body) if length is None else length
    if length <= SHOWN_BODY_LIMIT:
        return body
    return body[:SHOWN_BODY_LIMIT] + f" … [cut: {length - SHOWN_BODY_LIMIT:,} more characters not shown]"


def _body_head_and_length():
    """Columns for the start of the body (enough to show) and its length: a huge old row is never read whole."""
    return func.substr(Sms.body, 1, SHOWN_BODY_LIMIT + 1), func.length(Sms.body)


def _csv_cell(value) -> str:
    text = "" if value is None else str(value)
    # A cell starting with = + - @ is a formula in a spreadsheet: make it plain text. A plain signed
    # number such as an E.164 phone number computes nothing and stays as it is.
    if text[:1] in ("=", "@", "\t", "\r") or (text[:1] in ("+", "-") and not re.fullmatch(r"[+-][\d .]*", text)):
        text = "'" + text
    return text


def export_filename(company_id: int, now: datetime) -> str:
    """'sms-20261127-034000-EAT.csv': the export's moment in the company zone, the zone named."""
    zone = company_zone(db.session.get(Company, company_id))
    return f"sms-{company_time.local_text(now, zone, 'filename')}-{company_time.zone_label(now, zone)}.csv"


def export_csv(company_id: int, flt: HistoryFilter, batch: int = EXPORT_BATCH) -> Iterator[str]:
    """The whole filtered list as CSV text, newest first, yielded batch by batch (keyset, so memory
    stays flat however many rows there are)."""
    zone = company_zone(db.session.get(Company, company_id))
    base = _filtered(company_id, replace(flt, after="", before="", oldest=False))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    # The byte-order mark makes Excel read the file as UTF-8 (names in any script stay readable).
    yield "\ufeff" + buffer.getvalue()
    cursor = None
    while True:
        stmt = base if cursor is None else base.where(_older_than(cursor))
        rows = db.session.execute(stmt.add_columns(*_body_head_and_length())
                                  .options(defer(Sms.body), joinedload(Sms.person))
                                  .order_by(*NEWEST_FIRST).limit(batch)).unique().all()
        if not rows:
            return
        buffer.seek(0)
        buffer.truncate()
        for sms, head, length in rows:
            name = sms.person.full_name if sms.person else ""
            writer.writerow([_csv_cell(v) for v in (
                sms.id, local_time(sms.created_at, zone), sms.direction, name, sms.number, sms.status, sms.gateway,
                sms.trigger, sms.encoding, sms.segments, sms.cost, sms.error, shown_body(head, length))])
        yield buffer.getvalue()
        cursor = (rows[-1][0].created_at, rows[-1][0].id)
        # Rows already written are not needed again: keep the session small on long exports.
        db.session.expunge_all()
        if len(rows) < batch:
            return


# ---------------------------------------------------------------- a person's send panel


@dataclass
class SendPanel:
    person: Person
    number: str | None  # where the SMS will go
    refusal: str | None  # why this person receives no SMS, and how to fix it
    history: HistoryPage


def send_panel(company_id: int, person: Person) -> SendPanel:
    try:
        number, refusal = recipient_for_person(person).number, None
    except SmsRefused as exc:
        number, refusal = None, str(exc)
    return SendPanel(person=person, number=number, refusal=refusal, history=person_history(company_id, person.id))


# ---------------------------------------------------------------- one message


@dataclass
class MessageDetail:
    sms: Sms
    body: str  # as shown: cut with a note when it is huge
    characters: int
    units: int | None  # None for a body too long to count (shown cut)
    resent_as: list[Sms]
    resend_of: Sms | None
    sender: User | None
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))  # the company's, for times in sentences

    @property
    def can_resend(self) -> bool:
        return can_resend(self.sms)

    @property
    def waits_for_report(self) -> bool:
        return self.sms.status == status.UNCONFIRMED and not unconfirmed_is_final(self.sms)

    @property
    def unconfirmed_explanation(self) -> str:
        """What `unconfirmed` means for this message, in words for the operator."""
        if self.sms.status != status.UNCONFIRMED:
            return ""
        if self.waits_for_report:
            until = as_utc(self.sms.report_due_at).astimezone(self.zone).strftime("%H:%M")
            return ("The gateway may have taken this message; we could not see its answer. "
                    f"Waiting for its delivery report until {until}.")
        return "The gateway may have sent it; no report came. Check with the recipient before resending."


def message_for_detail(company_id: int, sms_id: int) -> Sms | None:
    """The message of the detail page, its body left unread (message_detail reads what it shows)."""
    return db.session.scalar(select(Sms).where(Sms.company_id == company_id, Sms.id == sms_id)
                             .options(defer(Sms.body)))


def message_detail(sms: Sms) -> MessageDetail:
    head, characters = db.session.execute(select(*_body_head_and_length()).where(Sms.id == sms.id)).one()
    head = head or ""
    units = analyse(head).units if characters <= SHOWN_BODY_LIMIT else None
    resent_as = list(db.session.scalars(
        select(Sms).where(Sms.company_id == sms.company_id, Sms.trigger == "resend", Sms.trigger_id == sms.id)
        .order_by(Sms.id)
    ))
    resend_of = None
    if sms.trigger == "resend" and sms.trigger_id:
        resend_of = db.session.scalar(select(Sms).where(Sms.company_id == sms.company_id, Sms.id == sms.trigger_id))
    sender = None
    if sms.sender_user_id:
        sender = db.session.scalar(select(User).where(User.company_id == sms.company_id, User.id == sms.sender_user_id))
    return MessageDetail(sms=sms, body=shown_body(head, characters), characters=characters, units=units,
                         resent_as=resent_as, resend_of=resend_of, sender=sender,
                         zone=company_zone(db.session.get(Company, sms.company_id)))
