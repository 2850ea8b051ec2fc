"""Maintenance tickets for a customer, assigned to an agent or service provider, and their comments."""
from datetime import date, datetime

from sqlalchemy import Date, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mpm.extensions import db
from mpm.models.base import TenantMixin, TimestampMixin, utcnow
from mpm.models.people import Person


class MaintenanceTicket(TenantMixin, TimestampMixin, db.Model):
    STATES = ("open", "closed")

    __table_args__ = (
        Index("ix_maintenance_ticket_company_status", "company_id", "status", "created_at"),
        Index("ix_maintenance_ticket_customer", "customer_id", "status"),
        Index("ix_maintenance_ticket_assignee", "assignee_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("person.id", ondelete="CASCADE"))
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("person.id", ondelete="SET NULL"))
    category: Mapped[str] = mapped_column(String(80))
    description: Mapped[str] = mapped_column(Text, default="")
    due_date: Mapped[date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(8), default="open")
    # Counts (re-)assignments, so each assignment's SMS has its own dedupe key.
    assignment_count: Mapped[int] = mapped_column(Integer, default=0)
    created_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    customer: Mapped[Person] = relationship(foreign_keys=[customer_id])
    assignee: Mapped[Person | None] = relationship(foreign_keys=[assignee_id])
    comments: Mapped[list["TicketComment"]] = relationship(
        back_populates="ticket", order_by="TicketComment.id", cascade="all, delete-orphan"
    )


class TicketComment(TenantMixin, db.Model):
    """A note on a ticket: typed by staff, texted in by the customer or assignee, or written by the app."""

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("maintenance_ticket.id", ondelete="CASCADE"), index=True)
    author_person_id: Mapped[int | None] = mapped_column(ForeignKey("person.id", ondelete="SET NULL"))
    author_user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    sms_id: Mapped[int | None] = mapped_column(ForeignKey("sms.id", ondelete="SET NULL"))  # the SMS it came from
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    ticket: Mapped[MaintenanceTicket] = relationship(back_populates="comments")
    author_person: Mapped[Person | None] = relationship()

    @property
    def author_label(self) -> str:
        if self.author_person is not None:
            return f"{self.author_person.full_name} (SMS)" if self.sms_id else self.author_person.full_name
        return "staff" if self.author_user_id else "MPM"
