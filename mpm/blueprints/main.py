"""Dashboard, health check and the placeholder for pages still to come."""
from flask import Blueprint, Response, jsonify, render_template, request
from flask_login import login_required

from mpm.health import health_report
from mpm.insight import dashboard as figures
from mpm.web import company_id, page_or_fragment

bp = Blueprint("main", __name__)


@bp.get("/")
@login_required
def dashboard():
    view = figures.delivery_insight(company_id(), request.args.get("range"))
    return page_or_fragment("dashboard.html", "insight/_insight.html", view=view,
                            people=figures.people_counts(company_id()), endpoint="main.dashboard", url_values={})


@bp.get("/dashboard.csv")
@login_required
def dashboard_csv():
    view = figures.delivery_insight(company_id(), request.args.get("range"), gateway=request.args.get("gateway") or None)
    name = f"sms-delivery-{view.gateway or 'all'}-{view.first_day}-{view.last_day}.csv"
    return Response(figures.insight_csv(view), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.get("/coming-soon/<page>")
@login_required
def coming_soon(page: str):
    return render_template("coming_soon.html", page=page)


@bp.get("/healthz")
def healthz():
    report, healthy = health_report()
    return jsonify(report), 200 if healthy else 503
