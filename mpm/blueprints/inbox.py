"""The SMS inbox: incoming messages with unread state, the conversation, and the staff reply."""
from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from mpm.inbox import replies
from mpm.messaging.send import NoActiveSmsProvider, SmsRefused
from mpm.models import Sms
from mpm.web import company_id, get_for_company_or_404, page_or_fragment

bp = Blueprint("sms_inbox", __name__, url_prefix="/inbox")


@bp.get("/")
@login_required
def index():
    result = replies.inbox_page(company_id(), only_unread=request.args.get("unread") == "1",
                                page=request.args.get("page", 1, type=int) or 1)
    return page_or_fragment("inbox/index.html", "inbox/_list.html", result=result)


@bp.post("/read-all")
@login_required
def read_all():
    replies.mark_all_read(company_id())
    flash("Every message is marked as read.")
    return redirect(url_for("sms_inbox.index"))


def _incoming(sms_id: int) -> Sms:
    # Any message opens its conversation (the thread with that number); only inbound ones have unread state.
    return get_for_company_or_404(Sms, sms_id)


def _conversation(sms: Sms, **extra):
    plugins_url = url_for("plugins.index") if "plugins.index" in current_app.view_functions else "/plugins/"
    return dict(sms=sms, thread=replies.conversation(sms), plugins_url=plugins_url, **extra)


@bp.get("/<int:sms_id>")
@login_required
def conversation(sms_id: int):
    sms = _incoming(sms_id)
    if sms.read_at is None:
        replies.mark_read(sms)
    return render_template("inbox/conversation.html", **_conversation(sms))


@bp.post("/<int:sms_id>/unread")
@login_required
def mark_unread(sms_id: int):
    replies.mark_read(_incoming(sms_id), read=False)
    return redirect(url_for("sms_inbox.index"))


@bp.post("/<int:sms_id>/reply")
@login_required
def reply(sms_id: int):
    sms = _incoming(sms_id)
    body = request.form.get("body", "")
    try:
        replies.reply_to(sms, body, current_user.id)
    except SmsRefused as exc:
        context = _conversation(sms, reply_error=str(exc), typed=body,
                                no_provider=isinstance(exc, NoActiveSmsProvider) and current_user.is_admin)
        return page_or_fragment("inbox/conversation.html", "inbox/_thread.html", **context), 422
    if not request.headers.get("HX-Request"):
        flash("Reply queued.")
        return redirect(url_for("sms_inbox.conversation", sms_id=sms.id))
    return render_template("inbox/_thread.html", **_conversation(sms, sent=True))
