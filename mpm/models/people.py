"""Mini-grids, customer groups and types, and the people SMS go to."""
from datetime import datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, String, select
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates

from mpm.extensions import db
from mpm.models.base import TenantMixin, TimestampMixin


class MiniGrid(TenantMixin, db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))


class CustomerGroup(TenantMixin, db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))


class CustomerType(TenantMixin, db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))


class Person(TenantMixin, TimestampMixin, db.Model):
    KINDS = ("customer", "agent", "service_provider")

    __table_args__ = (Index("ix_person_company_kind_name", "company_id", "kind", "surname", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), default="customer")
    name: Mapped[str] = mapped_column(String(80))
    surname: Mapped[str] = mapped_column(String(80), default="")
    mini_grid_id: Mapped[int | None] = mapped_column(ForeignKey("mini_grid.id"), index=True)
    customer_group_id: Mapped[int | None] = mapped_column(ForeignKey("customer_group.id"), index=True)
    customer_type_id: Mapped[int | None] = mapped_column(ForeignKey("customer_type.id"), index=True)
    # Set when the person subscribed to the operator's Viber bot; only then can Viber reach them.
    viber_id: Mapped[str | None] = mapped_column(String(64))
    # STOP from the person: no broadcasts or marketing (transaction confirmations still go).
    opted_out_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    mini_grid: Mapped[MiniGrid | None] = relationship()
    customer_group: Mapped[CustomerGroup | None] = relationship()
    customer_type: Mapped[CustomerType | None] = relationship()
    phone_numbers: Mapped[list["PhoneNumber"]] = relationship(
        back_populates="person", order_by="PhoneNumber.id", cascade="all, delete-orphan"
    )

    @property
    def full_name(self) -> str:
        return f"{self.name} {self.surname}".strip()

    @property
    def primary_number(self) -> "PhoneNumber | None":
        """The number SMS go to: only a number with the Primary toggle on receives SMS."""
        return next((p for p in self.phone_numbers if p.is_primary), None)

    @property
    def kind_label(self) -> str:
        return self.kind.replace("_", " ")


def _valid_on_insert(context) -> bool:
    from mpm.people.phones import is_valid_e164

    return is_valid_e164(context.get_current_parameters()["e164"])


class PhoneNumber(TenantMixin, db.Model):
    __table_args__ = (
        Index("ix_phone_number_company_e164", "company_id", "e164"),
        # At most one primary number per person.
        Index(
            "uq_phone_number_primary_per_person",
            "person_id",
            unique=True,
            sqlite_where=db.text("is_primary"),
            postgresql_where=db.text("is_primary"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id", ondelete="CASCADE"), index=True)
    e164: Mapped[str] = mapped_column(String(20))
    is_primary: Mapped[bool] = mapped_column(Boolean, default=False)
    # phonenumbers' verdict, taken once when the number is stored (bulk inserts included), so the
    # broadcast fan-out and audience counts filter on a column instead of parsing every number.
    valid: Mapped[bool] = mapped_column(Boolean, default=_valid_on_insert, server_default=db.true())

    person: Mapped[Person] = relationship(back_populates="phone_numbers")

    @validates("e164")
    def _judge(self, key: str, value: str) -> str:
        # A number changed through the ORM is judged again; bulk inserts get the column default.
        from mpm.people.phones import is_valid_e164

        self.valid = is_valid_e164(value)
        return value


def primary_number_subquery():
    """person_id → e164 of the primary number, for list and audience queries."""
    return (
        select(PhoneNumber.person_id, PhoneNumber.e164)
        .where(PhoneNumber.is_primary.is_(True))
        .subquery("primary_number")
    )
