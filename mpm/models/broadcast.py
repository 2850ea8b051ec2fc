"""Broadcasts: one message to a whole audience."""
from datetime import datetime

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, Numeric, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mpm.extensions import db
from mpm.models.base import TenantMixin, TimestampMixin


class Broadcast(TenantMixin, TimestampMixin, db.Model):
    STATES = ("draft", "scheduled", "sending", "paused", "done", "cancelled")

    id: Mapped[int] = mapped_column(primary_key=True)
    author_user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    body: Mapped[str] = mapped_column(Text)
    # {"mini_grid_ids": [...], "group_ids": [...], "type_ids": [...], "person_ids": [...]}
    audience: Mapped[dict] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(12), default="draft")
    scheduled_for: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    quiet_hours: Mapped[dict | None] = mapped_column(JSON)  # {"start": "21:00", "end": "07:00"}
    validity_hours: Mapped[int] = mapped_column(Integer, default=24)
    recipient_count: Mapped[int] = mapped_column(Integer, default=0)
    estimated_cost: Mapped[float | None] = mapped_column(Numeric(12, 4))
    # Resume point of the fan-out: last person id expanded into Sms rows.
    expanded_through_person_id: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
