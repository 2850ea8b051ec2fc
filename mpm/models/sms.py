"""Messages and their append-only event log."""
from datetime import datetime

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint, literal_column, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mpm.extensions import db
from mpm.models.base import TenantMixin, utcnow
from mpm.models.people import Person


QUEUED_ONLY = "status = 'queued'"


class Sms(TenantMixin, db.Model):
    """One SMS to or from one number. Status rules live in mpm.messaging.status."""

    __table_args__ = (
        # History pages: newest first per company, keyset on (created_at, id).
        Index("ix_sms_company_created", "company_id", "created_at", "id"),
        # One status newest first: the history filtered to a status or a failure reason (and its
        # capped count), queued messages waiting now.
        Index("ix_sms_company_status_created", "company_id", "status", "created_at", "id"),
        Index("ix_sms_person_created", "person_id", "created_at"),
        # Search by number: every message to or from it, whoever the number belongs to now.
        Index("ix_sms_company_number", "company_id", "number", "created_at"),
        Index("ix_sms_broadcast_status", "broadcast_id", "status"),
        # Delivery reports: (gateway, provider id) within the company; all three columns, so SQLite
        # picks this index over ix_sms_company_id.
        Index("ix_sms_gateway_message", "gateway", "provider_message_id", "company_id"),
        # Messages of one status across companies: the sweep's (sending, unconfirmed, queued and due).
        Index("ix_sms_due", "status", "next_attempt_at"),
        # The send queue: a send job takes the due queued rows of one company and lane in id order.
        # Queued rows only: a message leaves it when it is claimed, so a claim updates it once and an
        # outcome not at all. Queries name the status as a literal (IS_QUEUED) to use it.
        Index("ix_sms_queued", "company_id", "lane", "id", sqlite_where=text(QUEUED_ONLY),
              postgresql_where=text(QUEUED_ONLY)),
        # Rollups: "which buckets changed since the last run" reads only this index.
        Index("ix_sms_updated", "updated_at", "company_id", "created_at"),
        # Same trigger object never produces two messages (e.g. a transaction posted twice).
        UniqueConstraint("company_id", "dedupe_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    direction: Mapped[str] = mapped_column(String(8), default="outbound")  # outbound / inbound
    person_id: Mapped[int | None] = mapped_column(ForeignKey("person.id", ondelete="SET NULL"))
    number: Mapped[str] = mapped_column(String(20))  # E.164 of the other party
    body: Mapped[str] = mapped_column(Text)
    encoding: Mapped[str] = mapped_column(String(8), default="GSM-7")  # GSM-7 / UCS-2
    segments: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(12), default="queued")
    gateway: Mapped[str | None] = mapped_column(String(32))
    provider_message_id: Mapped[str | None] = mapped_column(String(120))
    cost: Mapped[str | None] = mapped_column(String(32))  # as the provider states it, e.g. "KES 0.8000"
    trigger: Mapped[str] = mapped_column(String(20), default="manual")
    trigger_id: Mapped[int | None] = mapped_column(Integer)
    dedupe_key: Mapped[str | None] = mapped_column(String(120))
    broadcast_id: Mapped[int | None] = mapped_column(ForeignKey("broadcast.id", ondelete="SET NULL"))
    sender_user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    lane: Mapped[str] = mapped_column(String(8), default="high")  # high / bulk RQ queue
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Gateways already tried for the current round, so fallback never loops back.
    tried_gateways: Mapped[list] = mapped_column(JSON, default=list)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # `unconfirmed`: until when its delivery report may still come (cleared when the wait is over).
    report_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    # Queued: why it waits ("waiting for quota (resets 00:00)", "gateway down, retrying at 10:42"…).
    waiting_reason: Mapped[str | None] = mapped_column(String(160))
    read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # inbound: staff saw it
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    person: Mapped[Person | None] = relationship()
    events: Mapped[list["SmsEvent"]] = relationship(
        back_populates="sms", order_by="SmsEvent.id", cascade="all, delete-orphan"
    )


# "Queued" as the send queue's index (ix_sms_queued) is defined: the status as a literal, not a bound
# parameter, or PostgreSQL's generic plan of the statement (psycopg prepares it after five runs)
# cannot use the index (tests/test_queue_index.py).
IS_QUEUED = Sms.__table__.c.status == literal_column("'queued'")


class SmsEvent(TenantMixin, db.Model):
    """Append-only: every status change, gateway attempt and callback of one SMS."""

    id: Mapped[int] = mapped_column(primary_key=True)
    sms_id: Mapped[int] = mapped_column(ForeignKey("sms.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # status / attempt / callback / note
    status: Mapped[str | None] = mapped_column(String(12))
    gateway: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    sms: Mapped[Sms] = relationship(back_populates="events")


class ParkedReport(TenantMixin, db.Model):
    """A delivery report that came before its message's provider id was stored: kept with its raw
    fields and applied by the report writer once the id exists (mpm.messaging.delivery)."""

    __table_args__ = (Index("ix_parked_report_lookup", "company_id", "gateway", "provider_message_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    gateway: Mapped[str] = mapped_column(String(32))
    provider_message_id: Mapped[str] = mapped_column(String(120))
    status: Mapped[str] = mapped_column(String(12))
    detail: Mapped[str] = mapped_column(Text, default="")
    raw_status: Mapped[str] = mapped_column(String(40), default="")
    number: Mapped[str] = mapped_column(String(20), default="")
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class AppliedReports(db.Model):
    """The stream entries of the report writer's last committed batch, written in that batch's
    transaction: a writer that died after its commit but before removing the batch from Redis
    leaves them unacknowledged, and the next writer acknowledges them without applying them again."""

    __tablename__ = "applied_reports"

    stream: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Which stream: a stream created again (a flushed or replaced Redis) has a new epoch and may
    # give the same ids again.
    epoch: Mapped[str | None] = mapped_column(String(32))
    # Redis stream ids ("<ms>-<seq>"), inclusive; none before the first batch. The row itself exists
    # from the first batch on: a second writer locks it to wait for the first one's batch.
    first_id: Mapped[str | None] = mapped_column(String(40))
    last_id: Mapped[str | None] = mapped_column(String(40))
