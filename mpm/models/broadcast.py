"""Broadcasts: one message to a whole audience."""
from datetime import datetime

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, Numeric, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mpm.extensions import db
from mpm.models.base import TenantMixin, TimestampMixin
from mpm.models.company import User


class Broadcast(TenantMixin, TimestampMixin, db.Model):
    STATES = ("draft", "scheduled", "sending", "paused", "done", "cancelled")

    id: Mapped[int] = mapped_column(primary_key=True)
    author_user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    body: Mapped[str] = mapped_column(Text)
    # {"all_customers": bool, "mini_grid_ids": [...], "group_ids": [...], "type_ids": [...], "person_ids": [...]}
    audience: Mapped[dict] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(12), default="draft")
    scheduled_for: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    quiet_hours: Mapped[dict | None] = mapped_column(JSON)  # {"start": "21:00", "end": "07:00"}
    validity_hours: Mapped[int] = mapped_column(Integer, default=24)
    recipient_count: Mapped[int] = mapped_column(Integer, default=0)
    estimated_segments: Mapped[int] = mapped_column(Integer, default=1)
    estimated_cost: Mapped[float | None] = mapped_column(Numeric(12, 4))
    # Resume point of the fan-out: last person id expanded into Sms rows, committed with those rows.
    expanded_through_person_id: Mapped[int] = mapped_column(Integer, default=0)
    # Last Sms id handed to RQ: rows committed after it but never enqueued (a worker died) are enqueued on resume.
    enqueued_through_sms_id: Mapped[int] = mapped_column(Integer, default=0)
    fanout_finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When set, the fan-out waits for the end of the quiet hours.
    waiting_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Messages not sent by then expire instead of arriving late (start + validity_hours).
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    author: Mapped[User | None] = relationship()
