"""The account page of every logged-in user: their name, their password, their other sessions."""
from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user

from mpm.accounts import users
from mpm.accounts.users import AccountRefused

bp = Blueprint("account", __name__, url_prefix="/account")


def _page(status: int = 200, **extra):
    context = {"name_error": None, "password_error": None, **extra}
    return render_template("account/index.html", **context), status


@bp.get("/")
@login_required
def index():
    return _page()


@bp.post("/name")
@login_required
def change_name():
    try:
        users.change_name(current_user.id, request.form.get("name", "")[:1000])
    except AccountRefused as exc:
        return _page(422, name_error=str(exc))
    flash("Your name is saved.")
    return redirect(url_for("account.index"))


@bp.post("/password")
@login_required
def change_password():
    form = request.form
    try:
        user = users.change_password(current_user.id, form.get("current", ""), form.get("password", ""),
                                        form.get("repeat", ""))
    except AccountRefused as exc:
        return _page(422, password_error=str(exc))
    login_user(user)  # this session carries on under the new session id; the others have ended
    flash("Your password is changed. Your other sessions are logged out.")
    return redirect(url_for("account.index"))


@bp.post("/sessions")
@login_required
def end_other_sessions():
    login_user(users.end_other_sessions(current_user.id))
    flash("Your other sessions are logged out.")
    return redirect(url_for("account.index"))
