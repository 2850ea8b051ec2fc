"""The alerts page: what needs attention now, and the admin's alert settings."""
from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import login_required

from mpm.extensions import db
from mpm.insight import alerts
from mpm.models import Company
from mpm.web import admin_required, company_id

bp = Blueprint("alerts", __name__, url_prefix="/alerts")


def _page(settings=None, error: str = "", status: int = 200):
    company = db.session.get(Company, company_id())
    return render_template("alerts/index.html", alerts=alerts.compute_alerts(company_id()),
                           settings=settings or alerts.alert_settings(company), error=error,
                           smtp_configured=alerts.smtp_configured()), status


@bp.get("/")
@login_required
def index():
    return _page()


@bp.post("/settings")
@login_required
@admin_required
def save_settings():
    settings, error = alerts.save_alert_settings(company_id(), request.form)
    if error:
        return _page(settings, error, 422)
    flash("Alert settings saved.")
    return redirect(url_for("alerts.index"))
