"""The company's edited SMS templates; a trigger without a row uses the default in mpm.sms_templates."""
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mpm.extensions import db
from mpm.models.base import TenantMixin, utcnow


class SmsTemplate(TenantMixin, db.Model):
    __table_args__ = (UniqueConstraint("company_id", "trigger"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    trigger: Mapped[str] = mapped_column(String(40))
    body: Mapped[str] = mapped_column(Text, default="")
    updated_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
