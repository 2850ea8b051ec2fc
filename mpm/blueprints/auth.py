"""Log in and out, and choose a password with a one-time link."""
from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired

from mpm.accounts import users
from mpm.accounts.users import AccountDeactivated, AccountRefused, LinkNotUsable, authenticate

bp = Blueprint("auth", __name__)

WRONG_LOGIN = "Email or password is wrong."


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired()])
    password = PasswordField("Password", validators=[DataRequired()])


def _safe_next(target: str | None) -> str:
    # Only same-site paths: never redirect to another host after login.
    if target and not urlsplit(target).netloc and target.startswith("/") and not target.startswith("//"):
        return target
    return url_for("main.dashboard")


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("main.dashboard"))
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        try:
            user = authenticate(form.email.data, form.password.data)
        except AccountDeactivated as exc:
            user, error = None, str(exc)
        else:
            error = None if user else WRONG_LOGIN
        if user is not None:
            login_user(user)
            return redirect(_safe_next(request.args.get("next")))
    elif request.method == "POST":
        error = WRONG_LOGIN if not form.csrf_token.errors else "The form expired; please try again."
    status = 401 if error else 200
    return render_template("auth/login.html", form=form, error=error), status


@bp.post("/logout")
@login_required
def logout():
    logout_user()
    flash("You are logged out.")
    return redirect(url_for("auth.login"))


# The token travels as ?token=… so access logs redact it (mpm.security.redact_url).
@bp.route("/set-password", methods=["GET", "POST"])
def set_password():
    token = request.values.get("token", "")
    headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    if request.method == "GET":
        try:
            user = users.user_for_link(token)
        except LinkNotUsable as exc:
            return render_template("auth/set_password.html", link_error=str(exc)), 404, headers
        return render_template("auth/set_password.html", user=user, token=token), 200, headers
    try:
        user = users.set_password_from_link(token, request.form.get("password", ""), request.form.get("repeat", ""))
    except LinkNotUsable as exc:
        return render_template("auth/set_password.html", link_error=str(exc)), 404, headers
    except AccountRefused as exc:
        page = render_template("auth/set_password.html", user=users.user_for_link(token), token=token,
                               error=str(exc))
        return page, 422, headers
    if current_user.is_authenticated:
        logout_user()  # someone else's session in this browser must not carry on as before
    flash(f"Your password is set. Log in with {user.email} and your new password.")
    return redirect(url_for("auth.login"))
