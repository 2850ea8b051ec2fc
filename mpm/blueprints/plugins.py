"""Settings → Plugins, and each gateway plugin's Overview and Settings pages: admins only
(a manager gets a 403 on every route, to look or to change)."""
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from mpm.insight import dashboard as figures
from mpm.messaging.send import SmsRefused
from mpm.people.phones import InvalidPhoneNumber
from mpm.plugins import gateway_health, setup
from mpm.web import admin_required, company_id, is_htmx, page_or_fragment

bp = Blueprint("plugins", __name__, url_prefix="/plugins")


def _known(key: str) -> str:
    try:
        return setup.check_key(key)
    except setup.UnknownPlugin:
        abort(404)


def _index_context() -> dict:
    return {"chosen": setup.selection(company_id()), "audit": setup.recent_audit(company_id()),
            "audit_text": setup.AUDIT_TEXT, "priority_text": setup.priority_text()}


@bp.get("/")
@login_required
@admin_required
def index():
    return page_or_fragment("plugins/index.html", "plugins/_list.html", **_index_context())


@bp.post("/<gateway>/enabled")
@login_required
@admin_required
def toggle(gateway: str):
    key = _known(gateway)
    on = request.form.get("enabled") == "on"
    setup.set_enabled(company_id(), key, on, current_user.id)
    if not is_htmx():
        flash(f"{setup.short_label(key)} is now {'enabled' if on else 'disabled'}.")
        return redirect(url_for("plugins.index"))
    # The list and, out of band, the sidebar (an enabled plugin gets its entry there).
    return render_template("plugins/_toggled.html", **_index_context())


@bp.get("/<gateway>/")
@login_required
@admin_required
def overview(gateway: str):
    key = _known(gateway)
    insight = figures.delivery_insight(company_id(), request.args.get("range"), gateway=key)
    context = {"view": insight, "endpoint": "plugins.overview", "url_values": {"gateway": key}}
    if is_htmx():  # a date-range preset: only the charts
        return page_or_fragment("plugins/overview.html", "insight/_insight.html", **context)
    return render_template("plugins/overview.html", overview=setup.overview(company_id(), key),
                           health=gateway_health.gateway_health(company_id(), key),
                           audit=setup.recent_audit(company_id(), key=key, limit=10), audit_text=setup.AUDIT_TEXT,
                           **context)


def _settings_page(key: str, form, connection=None, test_sms=None, sms_error: str = "", typed_number: str = "",
                   fragment: str = "plugins/_settings_form.html", status: int = 200):
    chosen = setup.selection(company_id())
    context = {
        "plugin": chosen.state_of(key), "form": form, "connection": connection, "sms_error": sms_error,
        "typed_number": typed_number, "chosen_gateway": chosen.sms_gateway,
        "chosen_label": setup.short_label(chosen.sms_gateway) if chosen.sms_gateway else None, "test_sms": test_sms,
        "poll": test_sms is not None and setup.worth_polling(test_sms),
    }
    return page_or_fragment("plugins/settings.html", fragment, **context), status


@bp.get("/<gateway>/settings")
@login_required
@admin_required
def settings(gateway: str):
    key = _known(gateway)
    return _settings_page(key, setup.settings_form(company_id(), key))


@bp.post("/<gateway>/settings")
@login_required
@admin_required
def save_settings(gateway: str):
    key = _known(gateway)
    form = setup.save_settings(company_id(), key, request.form.to_dict(), current_user.id)
    if form.saved and not is_htmx():
        flash(f"Saved. {form.check.message}")
        return redirect(url_for("plugins.settings", gateway=key))
    return _settings_page(key, form, status=200 if form.saved else 422)


@bp.post("/<gateway>/connection-test")
@login_required
@admin_required
def connection_test(gateway: str):
    key = _known(gateway)
    result = setup.check_connection(company_id(), key, current_user.id)
    return _settings_page(key, setup.settings_form(company_id(), key), connection=result,
                          fragment="plugins/_connection.html")


@bp.post("/<gateway>/test-sms")
@login_required
@admin_required
def send_test_sms(gateway: str):
    key = _known(gateway)
    typed = request.form.get("number", "")
    form = setup.settings_form(company_id(), key)
    try:
        sms = setup.send_test_sms(company_id(), key, typed, current_user.id)
    except (InvalidPhoneNumber, SmsRefused) as exc:
        return _settings_page(key, form, sms_error=str(exc), typed_number=typed,
                              fragment="plugins/_test_sms.html", status=422)
    return _settings_page(key, form, test_sms=sms, typed_number=typed, fragment="plugins/_test_sms.html")


@bp.get("/<gateway>/test-sms/<int:sms_id>")
@login_required
@admin_required
def test_sms_status(gateway: str, sms_id: int):
    key = _known(gateway)
    sms = setup.find_test_sms(company_id(), sms_id)
    if sms is None:
        abort(404)
    return _settings_page(key, setup.settings_form(company_id(), key), test_sms=sms, typed_number=sms.number,
                          fragment="plugins/_test_sms_status.html")
