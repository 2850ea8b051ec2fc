"""Settings → Staff (admins only): the company's users, adding one, roles, (de)activation, links."""
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from mpm.accounts import staff
from mpm.accounts.users import AccountRefused
from mpm.web import admin_required, company_id

bp = Blueprint("staff", __name__, url_prefix="/settings/staff")

# A page that shows a set-password link must not be kept by the browser or a proxy.
NO_STORE = {"Cache-Control": "no-store"}


def _page(status: int = 200, **extra):
    context = dict(users=staff.staff_list(company_id()), changes=staff.recent_changes(company_id()),
                   audit_text=staff.AUDIT_TEXT, role_labels=staff.ROLE_LABELS, form={}, error=None, issued=None)
    context.update(extra)
    return render_template("settings/staff.html", **context), status, NO_STORE


@bp.get("/")
@login_required
@admin_required
def index():
    return _page()


@bp.post("/")
@login_required
@admin_required
def add():
    form = {key: request.form.get(key, "")[:300] for key in ("name", "email", "role")}
    try:
        issued = staff.add_user(company_id(), form["name"], form["email"], form["role"], current_user.id)
    except AccountRefused as exc:
        return _page(422, form=form, error=str(exc))
    return _page(201, issued=issued)


@bp.post("/<int:user_id>/password-link")
@login_required
@admin_required
def password_link(user_id: int):
    try:
        issued = staff.new_password_link(company_id(), user_id, current_user.id)
    except staff.NoSuchUser:
        abort(404)
    except AccountRefused as exc:
        return _page(422, error=str(exc))
    return _page(issued=issued)


def _change(user_id: int, change, done: str):
    """Run one change to a user; back to the list with what happened, or the refusal (422)."""
    try:
        user = change()
    except staff.NoSuchUser:
        abort(404)
    except AccountRefused as exc:
        return _page(422, error=str(exc))
    flash(done.format(name=user.name or user.email, role=user.role))
    # An admin who just made themselves a manager can no longer open this page.
    return redirect(url_for("staff.index") if current_user.is_admin else url_for("main.dashboard"))


@bp.post("/<int:user_id>/role")
@login_required
@admin_required
def change_role(user_id: int):
    role = request.form.get("role", "")
    return _change(user_id, lambda: staff.change_role(company_id(), user_id, role, current_user.id),
                   "{name} is now {role}.")


@bp.post("/<int:user_id>/deactivate")
@login_required
@admin_required
def deactivate(user_id: int):
    return _change(user_id, lambda: staff.set_active(company_id(), user_id, False, current_user.id),
                   "{name} is deactivated and logged out everywhere.")


@bp.post("/<int:user_id>/reactivate")
@login_required
@admin_required
def reactivate(user_id: int):
    return _change(user_id, lambda: staff.set_active(company_id(), user_id, True, current_user.id),
                   "{name} is active again and can log in.")
