"""Settings → SMS (templates, keywords, transaction SMS on/off) and Settings → API tokens."""
from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from mpm import sms_templates
from mpm.accounts import api_tokens
from mpm.extensions import db
from mpm.inbox import replies
from mpm.models import Company
from mpm.payments import transactions
from mpm.web import admin_required, company_id, page_or_fragment

bp = Blueprint("settings", __name__, url_prefix="/settings")


def _sms_page(**extra):
    company = db.session.get(Company, company_id())
    return dict(templates=sms_templates.all_templates(company_id()), rules=replies.reply_settings(company),
                transaction_sms_enabled=transactions.sms_enabled(company), **extra)


@bp.get("/sms")
@login_required
def sms():
    return render_template("settings/sms.html", **_sms_page())


@bp.post("/sms/templates/<key>")
@login_required
@admin_required
def save_template(key: str):
    if key not in sms_templates.KINDS:
        return render_template("error.html", code=404, description="There is no such template."), 404
    body = request.form.get("body", "")
    if request.form.get("reset"):
        body = sms_templates.KINDS[key].default
    try:
        sms_templates.save_template(company_id(), key, body, current_user.id)
    except sms_templates.TemplateInvalid as exc:
        item = {"kind": sms_templates.KINDS[key], "body": body, "customised": True}
        return page_or_fragment("settings/sms.html", "settings/_template.html", item=item, error=str(exc),
                                **_sms_page(failed_key=key, failed_item=item, failed_error=str(exc))), 422
    item = next(t for t in sms_templates.all_templates(company_id()) if t["kind"].key == key)
    if not request.headers.get("HX-Request"):
        flash(f"Saved “{item['kind'].label}”.")
        return redirect(url_for("settings.sms") + f"#template-{key}")
    return render_template("settings/_template.html", item=item, saved=True)


@bp.post("/sms/templates/<key>/preview")
@login_required
def preview_template(key: str):
    """htmx: the template as a customer reads it with sample values, with encoding and segments."""
    result = sms_templates.preview(company_id(), key, request.form.get("body", ""))
    return render_template("settings/_preview.html", preview=result, key=key)


@bp.post("/sms/keywords")
@login_required
@admin_required
def save_keywords():
    form = request.form
    try:
        replies.save_reply_settings(company_id(), form.get("opt_out_words", ""), form.get("opt_in_words", ""),
                                    form.get("resend_key", ""), form.get("ticket_keyword", ""), current_user.id)
    except replies.SettingsInvalid as exc:
        return render_template("settings/sms.html", **_sms_page(keywords_error=str(exc))), 422
    flash("Keywords saved.")
    return redirect(url_for("settings.sms") + "#keywords")


@bp.post("/sms/transaction-sms")
@login_required
@admin_required
def toggle_transaction_sms():
    transactions.set_sms_enabled(company_id(), request.form.get("enabled") == "on")
    if request.headers.get("HX-Request"):
        company = db.session.get(Company, company_id())
        return render_template("settings/_transaction_toggle.html",
                               transaction_sms_enabled=transactions.sms_enabled(company))
    flash("Saved.")
    return redirect(url_for("settings.sms"))


@bp.get("/api-tokens")
@login_required
@admin_required
def api_token_list():
    return render_template("settings/api_tokens.html", tokens=api_tokens.tokens(company_id()), new_token=None)


@bp.post("/api-tokens")
@login_required
@admin_required
def create_api_token():
    try:
        row, plain = api_tokens.create_token(company_id(), request.form.get("name", ""), current_user.id)
    except api_tokens.TokenInvalid as exc:
        return render_template("settings/api_tokens.html", tokens=api_tokens.tokens(company_id()), new_token=None,
                               error=str(exc)), 422
    # Shown in this response only; a reload no longer has it.
    response = render_template("settings/api_tokens.html", tokens=api_tokens.tokens(company_id()),
                               new_token=plain, new_token_name=row.name)
    return response, 201, {"Cache-Control": "no-store"}


@bp.post("/api-tokens/<int:token_id>/revoke")
@login_required
@admin_required
def revoke_api_token(token_id: int):
    if not api_tokens.revoke_token(company_id(), token_id, current_user.id):
        return render_template("error.html", code=404, description="No such token."), 404
    flash("Token revoked: requests with it are now refused.")
    return redirect(url_for("settings.api_token_list"))
