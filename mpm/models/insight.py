"""Delivery rollups: per company × gateway × trigger × outcome summaries of outbound SMS, kept by
mpm.insight.rollups. Every chart and figure reads these, never the SMS table."""
from datetime import datetime

from sqlalchemy import DateTime, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mpm.extensions import db


class SmsRollup(db.Model):
    """One bucket (a local day of the company, or a UTC hour for the last 48 h) of one
    gateway × trigger × outcome (× failure reason for failed messages)."""

    __table_args__ = (
        UniqueConstraint("company_id", "grain", "bucket", "gateway", "trigger", "outcome", "reason"),
        # The dashboard's sums come from this index alone (no table reads)...
        Index("ix_sms_rollup_figures", "company_id", "grain", "bucket", "outcome", "gateway", "reason", "messages",
              "segments", "cost"),
        # ...and the time-to-delivery counts from the delivered rows only, found through this one.
        Index("ix_sms_rollup_outcome", "company_id", "grain", "outcome", "bucket"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("company.id", ondelete="CASCADE"))
    grain: Mapped[str] = mapped_column(String(4))  # day / hour
    bucket: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # start of the bucket (UTC instant)
    gateway: Mapped[str] = mapped_column(String(32), default="")  # "" when no gateway took it
    trigger: Mapped[str] = mapped_column(String(20))
    outcome: Mapped[str] = mapped_column(String(12))  # the messages' status now
    reason: Mapped[str] = mapped_column(String(160), default="")  # failed only: the first line of the error
    messages: Mapped[int] = mapped_column(Integer, default=0)
    segments: Mapped[int] = mapped_column(Integer, default=0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)  # in the provider's stated currency
    # Delivered messages by time to delivery (mpm.insight.rollups.TTD_BINS): under 10 s, 30 s, … 1 day, more.
    ttd_10s: Mapped[int] = mapped_column(Integer, default=0)
    ttd_30s: Mapped[int] = mapped_column(Integer, default=0)
    ttd_1m: Mapped[int] = mapped_column(Integer, default=0)
    ttd_2m: Mapped[int] = mapped_column(Integer, default=0)
    ttd_5m: Mapped[int] = mapped_column(Integer, default=0)
    ttd_10m: Mapped[int] = mapped_column(Integer, default=0)
    ttd_30m: Mapped[int] = mapped_column(Integer, default=0)
    ttd_1h: Mapped[int] = mapped_column(Integer, default=0)
    ttd_3h: Mapped[int] = mapped_column(Integer, default=0)
    ttd_12h: Mapped[int] = mapped_column(Integer, default=0)
    ttd_1d: Mapped[int] = mapped_column(Integer, default=0)
    ttd_more: Mapped[int] = mapped_column(Integer, default=0)


class RollupMark(db.Model):
    """How far the rollups have read changes: rows updated since `changed_since` are re-aggregated."""

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    changed_since: Mapped[datetime] = mapped_column(DateTime(timezone=True))
