"""Payments recorded by staff or posted by payment providers; each one sends its confirmation SMS once."""
from decimal import Decimal

from sqlalchemy import ForeignKey, Index, Integer, Numeric, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mpm.extensions import db
from mpm.models.base import TenantMixin, TimestampMixin
from mpm.models.people import Person


class Transaction(TenantMixin, TimestampMixin, db.Model):
    TOKEN_TYPES = ("meter", "shs")  # None: a payment without a token

    __table_args__ = (
        # A provider posting the same payment again finds the first one (idempotency).
        UniqueConstraint("company_id", "provider_reference"),
        Index("ix_transaction_company_created", "company_id", "created_at", "id"),
        Index("ix_transaction_person_created", "person_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int | None] = mapped_column(ForeignKey("person.id", ondelete="SET NULL"))
    # The number the payment came from; the confirmation goes there when it is set.
    sender_number: Mapped[str | None] = mapped_column(String(20))
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    currency: Mapped[str] = mapped_column(String(3))
    provider: Mapped[str] = mapped_column(String(40), default="staff")
    provider_reference: Mapped[str | None] = mapped_column(String(120))
    token_type: Mapped[str | None] = mapped_column(String(8))
    token: Mapped[str | None] = mapped_column(String(120))
    meter_serial: Mapped[str | None] = mapped_column(String(60))
    energy_kwh: Mapped[Decimal | None] = mapped_column(Numeric(12, 3))
    device_serial: Mapped[str | None] = mapped_column(String(60))
    duration: Mapped[int | None] = mapped_column(Integer)
    unit: Mapped[str | None] = mapped_column(String(20))
    recorded_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    # Why no confirmation went out (setting off, no primary number, no provider…), for the detail page.
    sms_note: Mapped[str | None] = mapped_column(Text)

    person: Mapped[Person | None] = relationship()
