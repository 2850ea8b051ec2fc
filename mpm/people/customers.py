"""Finding people and editing their phone numbers. Plain functions: ids and values in, rows out."""
import re
from dataclasses import dataclass

from sqlalchemy import and_, or_, select, update

from mpm.extensions import db
from mpm.models import Company, CustomerGroup, CustomerType, MiniGrid, Person, PhoneNumber
from mpm.models.base import DB_INT_MAX
from mpm.paging import numbered_page
from mpm.people.phones import InvalidPhoneNumber, to_e164


@dataclass
class PeopleFilter:
    q: str = ""
    kind: str = "customer"
    mini_grid_id: int | None = None
    group_id: int | None = None
    type_id: int | None = None
    page: int = 1

    @classmethod
    def from_args(cls, args) -> "PeopleFilter":
        kind = args.get("kind", "customer")
        return cls(
            q=args.get("q", "").strip(),
            kind=kind if kind in (*Person.KINDS, "all") else "customer",
            mini_grid_id=args.get("mini_grid", type=int),
            group_id=args.get("group", type=int),
            type_id=args.get("type", type=int),
            page=max(args.get("page", 1, type=int) or 1, 1),
        )

    def query_args(self, **overrides) -> dict:
        """URL parameters of this filter, for links that keep it (pagination, htmx pushes)."""
        values = {
            "q": self.q or None,
            "kind": self.kind if self.kind != "customer" else None,
            "mini_grid": self.mini_grid_id,
            "group": self.group_id,
            "type": self.type_id,
            "page": self.page if self.page > 1 else None,
        }
        values.update(overrides)
        return {k: v for k, v in values.items() if v is not None}


@dataclass
class PeoplePage:
    people: list[Person]
    total: int
    page: int
    pages: int


def name_matches(words: list[str]):
    """Every word matches the first name or the surname ("jane wanjiru" finds Jane Wanjiru)."""
    return and_(*(or_(Person.name.ilike(f"%{w}%"), Person.surname.ilike(f"%{w}%")) for w in words))


def _search_condition(q: str, default_region: str):
    digits = re.sub(r"\D", "", q)
    conditions = []
    words = q.split()
    if words:
        conditions.append(name_matches(words))
    if len(digits) >= 3:
        candidates = {digits}
        try:
            candidates.add(to_e164(q, default_region).lstrip("+"))
        except InvalidPhoneNumber:
            pass
        numbers = select(PhoneNumber.person_id).where(
            or_(*(PhoneNumber.e164.like(f"%{c}%") for c in candidates))
        )
        conditions.append(Person.id.in_(numbers))
    return or_(*conditions) if conditions else None


def people_page(company_id: int, flt: PeopleFilter, per_page: int) -> PeoplePage:
    company = db.session.get(Company, company_id)
    stmt = select(Person).where(Person.company_id == company_id)
    if flt.kind != "all":
        stmt = stmt.where(Person.kind == flt.kind)
    if flt.mini_grid_id:
        stmt = stmt.where(Person.mini_grid_id == flt.mini_grid_id)
    if flt.group_id:
        stmt = stmt.where(Person.customer_group_id == flt.group_id)
    if flt.type_id:
        stmt = stmt.where(Person.customer_type_id == flt.type_id)
    if flt.q:
        condition = _search_condition(flt.q, company.default_region)
        if condition is not None:
            stmt = stmt.where(condition)
    found = numbered_page(stmt.order_by(Person.surname, Person.name, Person.id), flt.page, per_page)
    return PeoplePage(people=found.rows, total=found.total, page=found.page, pages=found.pages)


def company_person(company_id: int, raw_id) -> Person | None:
    """The person picked on a form (an id as typed), if it is one of this company's."""
    try:
        person_id = int(raw_id)
    except (TypeError, ValueError):
        return None
    if not 0 < person_id <= DB_INT_MAX:  # no row has it; the database would refuse the number
        return None
    person = db.session.get(Person, person_id)
    return person if person is not None and person.company_id == company_id else None


def filter_choices(company_id: int) -> dict:
    def names(model):
        return list(db.session.execute(
            select(model.id, model.name).where(model.company_id == company_id).order_by(model.name)
        ))

    return {"mini_grids": names(MiniGrid), "groups": names(CustomerGroup), "types": names(CustomerType)}


def set_primary(person: Person, phone_number_id: int, on: bool) -> None:
    """Turn the Primary toggle of one of the person's numbers on (the others off) or off."""
    number = next((p for p in person.phone_numbers if p.id == phone_number_id), None)
    if number is None:
        raise LookupError("no such number for this person")
    if on:
        # Off first, flushed, so the one-primary-per-person index is never violated in between.
        db.session.execute(
            update(PhoneNumber).where(PhoneNumber.person_id == person.id).values(is_primary=False)
        )
        db.session.flush()
        db.session.expire(person, ["phone_numbers"])
    db.session.execute(update(PhoneNumber).where(PhoneNumber.id == number.id).values(is_primary=on))
    db.session.commit()
    db.session.expire(person, ["phone_numbers"])


def add_phone_number(person: Person, raw: str) -> PhoneNumber:
    """Store a new number in E.164; the person's first number becomes primary."""
    company = db.session.get(Company, person.company_id)
    e164 = to_e164(raw, company.default_region)
    if any(p.e164 == e164 for p in person.phone_numbers):
        raise InvalidPhoneNumber(f"{e164} is already one of this person's numbers.")
    number = PhoneNumber(company_id=person.company_id, person=person, e164=e164,
                         is_primary=not person.phone_numbers)
    db.session.add(number)
    db.session.commit()
    return number
