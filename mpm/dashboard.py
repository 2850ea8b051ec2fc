"""Figures on the dashboard."""
from datetime import timedelta

from sqlalchemy import func, select

from mpm.extensions import db
from mpm.models import Person, Sms
from mpm.models.base import utcnow


def dashboard_figures(company_id: int) -> dict:
    since = utcnow() - timedelta(days=7)
    people = dict(
        db.session.execute(
            select(Person.kind, func.count()).where(Person.company_id == company_id).group_by(Person.kind)
        ).all()
    )
    sms_by_status = dict(
        db.session.execute(
            select(Sms.status, func.count())
            .where(Sms.company_id == company_id, Sms.direction == "outbound", Sms.created_at >= since)
            .group_by(Sms.status)
        ).all()
    )
    return {"people": people, "sms_last_7_days": sms_by_status}
