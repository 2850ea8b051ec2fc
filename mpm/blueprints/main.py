"""Dashboard, health check and the placeholder for pages still to come."""
from flask import Blueprint, jsonify, render_template
from flask_login import login_required

from mpm.dashboard import dashboard_figures
from mpm.health import health_report
from mpm.web import company_id

bp = Blueprint("main", __name__)


@bp.get("/")
@login_required
def dashboard():
    return render_template("dashboard.html", figures=dashboard_figures(company_id()))


@bp.get("/coming-soon/<page>")
@login_required
def coming_soon(page: str):
    return render_template("coming_soon.html", page=page)


@bp.get("/healthz")
def healthz():
    report, healthy = health_report()
    return jsonify(report), 200 if healthy else 503
