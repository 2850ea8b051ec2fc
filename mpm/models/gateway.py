"""Per-company settings of each gateway plugin."""
from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mpm.extensions import db
from mpm.models.base import TenantMixin, TimestampMixin


class GatewaySetting(TenantMixin, TimestampMixin, db.Model):
    """One row per company and gateway: on/off, encrypted credentials, last check."""

    __table_args__ = (UniqueConstraint("company_id", "gateway"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    gateway: Mapped[str] = mapped_column(String(32))
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # Fernet token of a JSON object; never the plain credentials.
    credentials_encrypted: Mapped[str | None] = mapped_column(Text)
    # Random per-company secret that callback URLs carry.
    callback_secret: Mapped[str] = mapped_column(String(64))
    valid: Mapped[bool] = mapped_column(Boolean, default=False)
    validation_message: Mapped[str] = mapped_column(Text, default="")
    validated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Non-secret options (sandbox/live, quotas, send rate…).
    options: Mapped[dict] = mapped_column(JSON, default=dict)
    # Circuit breaker (mpm.messaging.circuit): closed = in use; open = skipped since circuit_since
    # after repeated failures; probing = one request is testing it.
    circuit_state: Mapped[str] = mapped_column(String(8), default="closed", server_default="closed")
    circuit_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_success_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
