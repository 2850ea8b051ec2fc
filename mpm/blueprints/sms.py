"""SMS pages: the customer's Send SMS panel, the company's history (filters, keyset pages, CSV),
one message with its timeline and resend, and the New message page."""
from functools import lru_cache

from flask import (Blueprint, Response, abort, current_app, flash, redirect, render_template, request,
                   stream_with_context, url_for)
from flask_login import current_user, login_required

from mpm.messaging import history, send
from mpm.messaging.encoding import analyse
from mpm.messaging.send import NoActiveSmsProvider, SmsRefused
from mpm.models import Person, Sms
from mpm.models.base import DB_INT_MAX, utcnow
from mpm.people import customers, phones
from mpm.plugins.setup import gateway_labels
from mpm.web import company_id, get_for_company_or_404, is_htmx, page_or_fragment

bp = Blueprint("sms", __name__, url_prefix="/sms")

SEARCH_RESULTS = 10


# ---------------------------------------------------------------- template helpers


# A history page shows the same few numbers many times; parsing each with phonenumbers is the slow part.
bp.app_template_filter("sms_phone")(lru_cache(maxsize=4096)(phones.display))


@bp.app_template_global()
def body_info(body: str | None):
    return analyse(body or "")


@bp.app_template_global()
def plugins_url() -> str:
    return url_for("plugins.index") if "plugins.index" in current_app.view_functions else "/plugins/"


def _refusal(exc: SmsRefused) -> dict:
    # "No active SMS provider" is fixed in Settings → Plugins: the message links there (for admins, who can open it).
    return {"error": str(exc), "error_needs_plugins": isinstance(exc, NoActiveSmsProvider) and current_user.is_admin}


# ---------------------------------------------------------------- customer page: Send SMS panel


@bp.post("/people/<int:person_id>/send")
@login_required
def send_to_person(person_id: int):
    person = get_for_company_or_404(Person, person_id)
    body = request.form.get("body", "")
    try:
        sms = send.send_to_person(company_id(), person.id, body, current_user.id)
    except SmsRefused as exc:
        return page_or_fragment("customers/detail.html", "customers/_sms_section.html", person=person,
                                panel=history.send_panel(company_id(), person), sms_body=body, **_refusal(exc)), 422
    if not is_htmx():
        flash(f"Message #{sms.id} is queued for {person.full_name}.")
        return redirect(url_for("customers.detail", person_id=person.id, _anchor="sms-section"))
    return render_template("customers/_sms_section.html", person=person, sms_sent=sms,
                           panel=history.send_panel(company_id(), person))


@bp.get("/people/<int:person_id>/history")
@login_required
def person_history(person_id: int):
    """The panel's history list; it polls itself here while any shown row is in flight."""
    person = get_for_company_or_404(Person, person_id)
    return page_or_fragment("customers/detail.html", "sms/_person_history.html", person=person,
                            panel=history.send_panel(company_id(), person))


# ---------------------------------------------------------------- history of the company


def _per_page() -> int:
    return int(current_app.config.get("SMS_HISTORY_PER_PAGE", 50))


@bp.get("/", endpoint="history")
@login_required
def history_list():
    flt = history.HistoryFilter.from_args(request.args)
    result = history.history_page(company_id(), flt, _per_page())
    return page_or_fragment("sms/history.html", "sms/_table.html", result=result, flt=result.flt,
                            total=history.total_count(company_id(), result.flt), choices=_filter_choices())


def _filter_choices() -> dict:
    return {"statuses": history.STATUSES, "gateways": gateway_labels(),
            "directions": history.DIRECTIONS, "triggers": history.TRIGGERS}


@bp.get("/export.csv")
@login_required
def export():
    flt = history.HistoryFilter.from_args(request.args)
    rows = history.export_csv(company_id(), flt)
    filename = history.export_filename(company_id(), utcnow())
    return Response(stream_with_context(rows), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


# ---------------------------------------------------------------- one message


@bp.get("/<int:sms_id>")
@login_required
def detail(sms_id: int):
    sms = history.message_for_detail(company_id(), sms_id) or abort(404)
    return page_or_fragment("sms/detail.html", "sms/_detail.html", detail=history.message_detail(sms))


@bp.post("/<int:sms_id>/resend")
@login_required
def resend(sms_id: int):
    sms = get_for_company_or_404(Sms, sms_id)
    try:
        new = send.resend(company_id(), sms.id, current_user.id)
    except SmsRefused as exc:
        return render_template("sms/detail.html", detail=history.message_detail(sms), **_refusal(exc)), 422
    flash(f"Message #{sms.id} is queued again as message #{new.id}.")
    return redirect(url_for("sms.detail", sms_id=new.id))


# ---------------------------------------------------------------- New message


def _ids(values) -> list[int]:
    """The person ids of a form or URL; anything that cannot be one (text, ², 10**20) is left out."""
    return [int(v) for v in values if v.isascii() and v.isdigit() and len(v) <= 10 and 0 < int(v) <= DB_INT_MAX]


@bp.route("/new", methods=["GET", "POST"])
@login_required
def new_message():
    if request.method == "GET":
        # A plain GET (no JavaScript) carries the picked people and the search in the URL.
        ids = _ids(request.args.getlist("person_id")) + _ids(request.args.getlist("add"))
        q = request.args.get("q", "").strip()
        return render_template("sms/new.html", chosen=send.chosen_people(company_id(), ids), q=q,
                               found=_search(q), body=request.args.get("body", ""))
    ids = _ids(request.form.getlist("person_id"))
    body = request.form.get("body", "")
    try:
        result = send.send_to_people(company_id(), ids, body, current_user.id)
    except SmsRefused as exc:
        return page_or_fragment("sms/new.html", "sms/_compose.html", chosen=send.chosen_people(company_id(), ids),
                                body=body, q="", found=None, **_refusal(exc)), 422
    return page_or_fragment("sms/new.html", "sms/_compose.html", chosen=[], body="", q="", found=None,
                            result=result)


def _search(q: str):
    if not q:
        return None
    flt = customers.PeopleFilter(q=q, kind="all")
    return customers.people_page(company_id(), flt, SEARCH_RESULTS).people


@bp.get("/new/search")
@login_required
def search_people():
    q = request.args.get("q", "").strip()
    chosen_ids = _ids(request.args.getlist("person_id"))
    if not is_htmx():  # opened directly: the whole page with these results
        return redirect(url_for("sms.new_message", q=q or None, person_id=chosen_ids))
    return render_template("sms/_search_results.html", found=_search(q), q=q, chosen_ids=chosen_ids)


@bp.get("/new/recipients")
@login_required
def recipients():
    """The picked list with one more person (htmx 'Add'); each shows its number or why it gets none."""
    ids = _ids(request.args.getlist("person_id")) + _ids(request.args.getlist("add"))
    if not is_htmx():
        return redirect(url_for("sms.new_message", person_id=ids))
    return render_template("sms/_recipients.html", chosen=send.chosen_people(company_id(), ids))
