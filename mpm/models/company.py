"""Tenants, their staff, and the audit log of what staff changed."""
from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import JSON, DateTime, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from mpm.extensions import db
from mpm.models.base import TenantMixin, TimestampMixin, utcnow


class Company(TimestampMixin, db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    # ISO 3166 region used to read numbers typed without a country code.
    default_region: Mapped[str] = mapped_column(String(2), default="KE")
    time_zone: Mapped[str] = mapped_column(String(64), default="Africa/Nairobi")
    currency: Mapped[str] = mapped_column(String(3), default="KES")
    # Free-form per-company settings (transaction SMS on/off, opt-out words…).
    settings: Mapped[dict] = mapped_column(JSON, default=dict)


class User(UserMixin, TimestampMixin, TenantMixin, db.Model):
    ROLES = ("admin", "manager")

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(120), default="")
    role: Mapped[str] = mapped_column(String(16), default="manager")
    password_hash: Mapped[str] = mapped_column(String(256))

    company: Mapped[Company] = relationship()

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class AuditEntry(TenantMixin, db.Model):
    """Who changed what and when. Never holds a secret value."""

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(200), default="")
    details: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)

    user: Mapped[User | None] = relationship()


class ApiToken(TenantMixin, TimestampMixin, db.Model):
    """Per-company token that payment providers use on the JSON API (stored hashed)."""

    __table_args__ = (UniqueConstraint("token_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    token_hash: Mapped[str] = mapped_column(String(64))
    last_four: Mapped[str] = mapped_column(String(4))
