"""Who a broadcast reaches. The audience is a set of people: a person matched by several filters
is one row, because every query selects from Person with at most one primary number per person.

Mini-grids, groups, types and "all customers" reach customers only; agents and service
providers are reached only when picked one by one. Opted-out people, people without a primary
number and people whose primary number is not a valid phone number (phonenumbers' verdict, stored
with the number) are counted, never messaged."""
from dataclasses import dataclass, field

from sqlalchemy import and_, case, false, func, or_, select

from mpm.extensions import db
from mpm.models import CustomerGroup, CustomerType, MiniGrid, Person, PhoneNumber

CUSTOMER = "customer"


@dataclass(frozen=True)
class Audience:
    all_customers: bool = False
    mini_grid_ids: tuple[int, ...] = ()
    group_ids: tuple[int, ...] = ()
    type_ids: tuple[int, ...] = ()
    person_ids: tuple[int, ...] = ()

    @classmethod
    def from_form(cls, form) -> "Audience":
        def ids(name: str) -> tuple[int, ...]:
            return tuple(sorted({i for i in form.getlist(name, type=int) if i and i > 0}))

        return cls(all_customers=form.get("all_customers") == "on", mini_grid_ids=ids("mini_grid_ids"),
                   group_ids=ids("group_ids"), type_ids=ids("type_ids"), person_ids=ids("person_ids"))

    @classmethod
    def from_json(cls, data: dict | None) -> "Audience":
        data = data or {}
        return cls(all_customers=bool(data.get("all_customers")),
                   **{k: tuple(data.get(k) or ()) for k in ("mini_grid_ids", "group_ids", "type_ids", "person_ids")})

    def to_json(self) -> dict:
        return {"all_customers": self.all_customers, "mini_grid_ids": list(self.mini_grid_ids),
                "group_ids": list(self.group_ids), "type_ids": list(self.type_ids),
                "person_ids": list(self.person_ids)}

    @property
    def is_empty(self) -> bool:
        return not (self.all_customers or self.mini_grid_ids or self.group_ids or self.type_ids or self.person_ids)


def own_ids_only(company_id: int, audience: Audience) -> Audience:
    """Drop ids of another company's mini-grids, groups, types or people (a forged form)."""
    def keep(model, ids):
        if not ids:
            return ()
        rows = db.session.scalars(select(model.id).where(model.company_id == company_id, model.id.in_(ids)))
        return tuple(sorted(rows))

    return Audience(audience.all_customers, keep(MiniGrid, audience.mini_grid_ids),
                    keep(CustomerGroup, audience.group_ids), keep(CustomerType, audience.type_ids),
                    keep(Person, audience.person_ids))


def matches(company_id: int, audience: Audience):
    """SQL condition on Person: in this company and reached by at least one filter."""
    customer = Person.kind == CUSTOMER
    reached = []
    if audience.all_customers:
        reached.append(customer)
    if audience.mini_grid_ids:
        reached.append(and_(customer, Person.mini_grid_id.in_(audience.mini_grid_ids)))
    if audience.group_ids:
        reached.append(and_(customer, Person.customer_group_id.in_(audience.group_ids)))
    if audience.type_ids:
        reached.append(and_(customer, Person.customer_type_id.in_(audience.type_ids)))
    if audience.person_ids:
        reached.append(Person.id.in_(audience.person_ids))
    return and_(Person.company_id == company_id, or_(*reached) if reached else false())


def _primary_join():
    return and_(PhoneNumber.person_id == Person.id, PhoneNumber.is_primary.is_(True))


def _reachable():
    """Has a valid primary number and did not opt out (with the primary number joined)."""
    return and_(Person.opted_out_at.is_(None), PhoneNumber.valid.is_(True))


@dataclass
class AudienceCounts:
    matched: int = 0  # everyone the filters reach
    opted_out: int = 0  # of those, sent STOP: excluded
    without_primary: int = 0  # not opted out but no primary number: excluded
    recipients: int = 0  # receive the message
    invalid_number: int = 0  # not opted out, but the primary number is not a valid phone number: excluded

    @property
    def excluded(self) -> int:
        return self.matched - self.recipients


def count(company_id: int, audience: Audience) -> AudienceCounts:
    if audience.is_empty:
        return AudienceCounts()
    opted_out = Person.opted_out_at.is_not(None)
    row = db.session.execute(
        select(
            func.count(Person.id),
            func.count(case((opted_out, 1))),
            func.count(case((and_(~opted_out, PhoneNumber.id.is_(None)), 1))),
            func.count(case((and_(~opted_out, PhoneNumber.valid.is_(True)), 1))),
            func.count(case((and_(~opted_out, PhoneNumber.valid.is_(False)), 1))),
        )
        .select_from(Person)
        .outerjoin(PhoneNumber, _primary_join())
        .where(matches(company_id, audience))
    ).one()
    return AudienceCounts(*row)


@dataclass(frozen=True)
class RecipientRow:
    person_id: int
    number: str
    values: dict = field(default_factory=dict)  # placeholder values


def recipients_after(company_id: int, audience: Audience, after_person_id: int, limit: int) -> list[RecipientRow]:
    """The next `limit` recipients by person id: the fan-out's chunk. Memory stays one chunk."""
    rows = db.session.execute(
        select(Person.id, Person.name, Person.surname, PhoneNumber.e164,
               MiniGrid.name, CustomerGroup.name, CustomerType.name)
        .join(PhoneNumber, _primary_join())
        .outerjoin(MiniGrid, MiniGrid.id == Person.mini_grid_id)
        .outerjoin(CustomerGroup, CustomerGroup.id == Person.customer_group_id)
        .outerjoin(CustomerType, CustomerType.id == Person.customer_type_id)
        .where(matches(company_id, audience), _reachable(), Person.id > after_person_id)
        .order_by(Person.id)
        .limit(limit)
    ).all()
    return [
        RecipientRow(pid, e164, {"name": name or "", "surname": surname or "", "mini_grid": grid or "",
                                 "group": group or "", "type": kind or "", "phone": e164})
        for pid, name, surname, e164, grid, group, kind in rows
    ]


def first_recipient(company_id: int, audience: Audience) -> RecipientRow | None:
    if audience.is_empty:
        return None
    found = recipients_after(company_id, audience, 0, 1)
    return found[0] if found else None


def anyone_without_viber(company_id: int, audience: Audience) -> bool:
    return db.session.scalar(
        select(Person.id).join(PhoneNumber, _primary_join())
        .where(matches(company_id, audience), _reachable(), Person.viber_id.is_(None)).limit(1)
    ) is not None


def summary(company_id: int, audience: Audience, names: dict | None = None) -> str:
    """'All customers · Mini-grids: Kisiwa · 3 selected people', for lists and the confirm page."""
    names = names if names is not None else name_lookup(company_id)
    parts = []
    if audience.all_customers:
        parts.append("All customers")
    for label, key, ids in (("Mini-grids", "mini_grids", audience.mini_grid_ids),
                            ("Groups", "groups", audience.group_ids), ("Types", "types", audience.type_ids)):
        if ids:
            parts.append(f"{label}: " + ", ".join(names[key].get(i, f"#{i}") for i in ids))
    if audience.person_ids:
        n = len(audience.person_ids)
        parts.append(f"{n} selected {'person' if n == 1 else 'people'}")
    return " · ".join(parts) or "nobody"


def name_lookup(company_id: int) -> dict:
    def names(model):
        return dict(db.session.execute(select(model.id, model.name).where(model.company_id == company_id)).all())

    return {"mini_grids": names(MiniGrid), "groups": names(CustomerGroup), "types": names(CustomerType)}


def selected_people(company_id: int, person_ids) -> list[Person]:
    if not person_ids:
        return []
    return list(db.session.scalars(
        select(Person).where(Person.company_id == company_id, Person.id.in_(person_ids))
        .order_by(Person.surname, Person.name)))


def search_people(company_id: int, q: str, limit: int = 10) -> list[Person]:
    """For the "selected customers" picker: customers, agents and service providers by name or number."""
    from mpm.people.customers import PeopleFilter, people_page

    q = q.strip()
    if not q:
        return []
    return people_page(company_id, PeopleFilter(q=q, kind="all"), limit).people
