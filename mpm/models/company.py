"""Tenants, their staff, and the audit log of what staff changed."""
from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, String, UniqueConstraint, true
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
    # A deactivated user cannot log in, and the sessions they had end at their next request.
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # Part of the session's user id: raising it ends every session made before (see get_id).
    session_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # None until the user chose a password (an invited user has only an unusable random one).
    password_set_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    company: Mapped[Company] = relationship()

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password)
        self.password_set_at = utcnow()

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    def get_id(self) -> str:
        # Flask-Login stores this in the session; the user loader accepts it only while it matches.
        return f"{self.id}.{self.session_version or 0}"

    @property
    def is_active(self) -> bool:
        return bool(self.active)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def state(self) -> str:
        """What the staff list shows: deactivated, invited (no password chosen yet) or active."""
        if not self.active:
            return "deactivated"
        return "invited" if self.password_set_at is None else "active"


class PasswordLink(TenantMixin, db.Model):
    """A one-time link that lets a user choose a password: for a new user, or after a forgotten one.
    Only the SHA-256 of the token is stored; the plain token exists in the link alone."""

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    user: Mapped[User] = relationship(foreign_keys=[user_id])


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
