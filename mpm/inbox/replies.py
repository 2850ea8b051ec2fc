"""What an incoming SMS makes happen (opt-out and back in, the resend key, ticket comments), and the
SMS inbox from which staff read and answer incoming messages."""
import re
from dataclasses import dataclass

from sqlalchemy import func, select, update

from mpm.audit import audit
from mpm.extensions import db
from mpm.paging import numbered_page
from mpm.messaging import ledger
from mpm.messaging.send import Recipient, SmsRefused, queue_messages
from mpm.models import Company, Person, Sms
from mpm.models.base import utcnow
from mpm.queue import HIGH

DEFAULTS = {"opt_out_words": ["STOP"], "opt_in_words": ["START"], "resend_key": "Resend", "ticket_keyword": "ticket"}


def reply_settings(company: Company) -> dict:
    settings = company.settings or {}
    return {key: settings.get(key) or default for key, default in DEFAULTS.items()}


class SettingsInvalid(ValueError):
    pass


def _words(raw: str) -> list[str]:
    return [w for w in re.split(r"[\s,]+", raw or "") if w]


def save_reply_settings(company_id: int, opt_out: str, opt_in: str, resend_key: str, ticket_keyword: str,
                        user_id: int | None = None) -> dict:
    """Keywords customers text in. Refuses empty or clashing words and stores nothing then."""
    values = {"opt_out_words": _words(opt_out), "opt_in_words": _words(opt_in),
              "resend_key": (resend_key or "").strip(), "ticket_keyword": (ticket_keyword or "").strip()}
    if not values["opt_out_words"]:
        raise SettingsInvalid("Give at least one opt-out word, e.g. STOP.")
    if not values["opt_in_words"]:
        raise SettingsInvalid("Give at least one opt-in word, e.g. START.")
    for key, label in (("resend_key", "resend key"), ("ticket_keyword", "ticket keyword")):
        if not values[key] or " " in values[key]:
            raise SettingsInvalid(f"The {label} must be one word.")
    seen: dict[str, str] = {}
    for label, words in (("opt-out", values["opt_out_words"]), ("opt-in", values["opt_in_words"]),
                         ("resend", [values["resend_key"]]), ("ticket", [values["ticket_keyword"]])):
        for word in words:
            folded = word.casefold()
            if folded in seen and seen[folded] != label:
                raise SettingsInvalid(f"“{word}” is both {_article(seen[folded])} word and {_article(label)} word; "
                                      "use it for one only.")
            seen[folded] = label
    company = db.session.get(Company, company_id)
    company.settings = {**(company.settings or {}), **values}
    audit(company_id, user_id, "sms_keywords.saved", "SMS keywords", **values)
    db.session.commit()
    return values


def _article(label: str) -> str:
    return ("an " if label[0] in "aeiou" else "a ") + label


def _bare(text: str) -> str:
    return re.sub(r"[\s.!]+$", "", (text or "").strip()).casefold()


def _starts_with_word(bare: str, word: str) -> bool:
    """'ticket: no power' and 'ticket#4 done' start with 'ticket'; 'tickets' does not."""
    return re.match(rf"{re.escape(word.casefold())}(?!\w)", bare) is not None


def act_on_incoming(sms: Sms) -> None:
    """Apply the reply rules to a stored incoming message. Never raises for a refusal to send: the
    message is stored already, and its event log says what happened."""
    company = db.session.get(Company, sms.company_id)
    rules = reply_settings(company)
    bare = _bare(sms.body)
    if bare in {w.casefold() for w in rules["opt_out_words"]}:
        _set_opt_out(sms, True)
    elif bare in {w.casefold() for w in rules["opt_in_words"]}:
        _set_opt_out(sms, False)
    elif _starts_with_word(bare, rules["resend_key"]):
        _resend(sms)
    elif _starts_with_word(bare, rules["ticket_keyword"]):
        _ticket_comment(sms, rules["ticket_keyword"])


def _note(sms: Sms, detail: str) -> None:
    ledger.note(sms.company_id, sms.id, detail)
    db.session.commit()


def _set_opt_out(sms: Sms, out: bool) -> None:
    word = sms.body.strip()
    person = db.session.get(Person, sms.person_id) if sms.person_id else None
    if person is None:
        _note(sms, f"{word} from a number that belongs to nobody here: nobody to opt {'out' if out else 'in'}.")
        return
    if out and person.opted_out_at is None:
        person.opted_out_at = utcnow()
    elif not out and person.opted_out_at is not None:
        person.opted_out_at = None
    else:
        _note(sms, f"{word}: {person.full_name} was already opted {'out' if out else 'in'}.")
        return
    audit(sms.company_id, None, "person.opted_out" if out else "person.opted_in", person.full_name,
          person_id=person.id, sms_id=sms.id, word=word[:40])
    _note(sms, f"{person.full_name} opted {'out of broadcasts' if out else 'back in to broadcasts'} ({word}).")


def _resend(sms: Sms) -> None:
    from mpm.payments.transactions import resend_last_confirmation

    try:
        answer = resend_last_confirmation(sms.company_id, sms)
    except SmsRefused as exc:
        db.session.rollback()
        _note(sms, f"Resend key: no answer sent: {exc}")
        return
    kind = "the last transaction" if answer.trigger_id else "“no transaction found”"
    _note(sms, f"Resend key: answered with {kind} (SMS #{answer.id}).")


def _ticket_comment(sms: Sms, keyword: str) -> None:
    from mpm.maintenance.tickets import add_comment, open_ticket_for

    if sms.person_id is None:
        _note(sms, "Ticket keyword from a number that belongs to nobody here: no comment added.")
        return
    rest = sms.body.strip()[len(keyword):].lstrip(" :,-")
    named = re.match(r"#?(\d+)\b[\s:,-]*", rest)
    ticket = open_ticket_for(sms.company_id, sms.person_id, int(named.group(1)) if named else None)
    if ticket is None:
        _note(sms, "Ticket keyword, but this person has no open ticket: no comment added.")
        return
    if named and ticket.id == int(named.group(1)):
        rest = rest[named.end():]
    if not rest.strip():
        _note(sms, f"Ticket keyword without text: nothing added to ticket #{ticket.id}.")
        return
    add_comment(ticket, rest, person_id=sms.person_id, sms_id=sms.id)
    _note(sms, f"Added as a comment to ticket #{ticket.id}.")


# The SMS inbox

@dataclass
class InboxPage:
    messages: list[Sms]
    unread: int
    total: int
    page: int
    pages: int
    only_unread: bool


def unread_count(company_id: int) -> int:
    return db.session.scalar(select(func.count()).select_from(Sms).where(
        Sms.company_id == company_id, Sms.direction == "inbound", Sms.read_at.is_(None)))


def inbox_page(company_id: int, only_unread: bool = False, page: int = 1, per_page: int = 30) -> InboxPage:
    stmt = select(Sms).where(Sms.company_id == company_id, Sms.direction == "inbound")
    if only_unread:
        stmt = stmt.where(Sms.read_at.is_(None))
    found = numbered_page(stmt.order_by(Sms.created_at.desc(), Sms.id.desc()), page, per_page)
    return InboxPage(found.rows, unread_count(company_id), found.total, found.page, found.pages, only_unread)


def mark_read(sms: Sms, read: bool = True) -> None:
    """Opening a message reads its whole thread: every earlier incoming message of the conversation too."""
    if sms.direction != "inbound":
        return
    if not read:
        sms.read_at = None
        db.session.commit()
        return
    db.session.execute(update(Sms).where(
        Sms.company_id == sms.company_id, Sms.direction == "inbound", Sms.read_at.is_(None),
        _thread_condition(sms), Sms.created_at <= sms.created_at).values(read_at=utcnow()))
    db.session.commit()
    db.session.refresh(sms)


def mark_all_read(company_id: int) -> None:
    db.session.execute(update(Sms).where(Sms.company_id == company_id, Sms.direction == "inbound",
                                         Sms.read_at.is_(None)).values(read_at=utcnow()))
    db.session.commit()


def _thread_condition(sms: Sms):
    """The messages of one conversation: to and from this number, or this person."""
    condition = Sms.number == sms.number
    if sms.person_id is not None:
        condition = condition | (Sms.person_id == sms.person_id)
    return condition


def conversation(sms: Sms, limit: int = 50) -> list[Sms]:
    """The latest messages to and from this number (or person), oldest first, to read as a thread."""
    rows = list(db.session.scalars(select(Sms).where(Sms.company_id == sms.company_id, _thread_condition(sms))
                                   .order_by(Sms.created_at.desc(), Sms.id.desc()).limit(limit)))
    return rows[::-1]


def reply_to(incoming: Sms, body: str, user_id: int | None) -> Sms:
    """Staff answer a message of a conversation: to its number. Raises SmsRefused, nothing stored."""
    person = db.session.get(Person, incoming.person_id) if incoming.person_id else None
    recipient = Recipient(number=incoming.number, person_id=incoming.person_id,
                          viber_id=person.viber_id if person else None)
    [sms] = queue_messages(incoming.company_id, [recipient], (body or "").strip(), trigger="reply",
                           trigger_id=incoming.id, sender_user_id=user_id, lane=HIGH)
    if incoming.direction == "inbound" and incoming.read_at is None:
        incoming.read_at = utcnow()
        db.session.commit()
    return sms
