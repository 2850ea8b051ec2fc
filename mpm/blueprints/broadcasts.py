"""Broadcasts: compose with a live audience count, confirm, follow progress, pause/resume/cancel."""
from flask import Blueprint, abort, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from mpm.broadcasts import audience as audiences
from mpm.broadcasts import lifecycle, placeholders, progress, schedule
from mpm.broadcasts.lifecycle import BroadcastForm
from mpm.extensions import db
from mpm.messaging.send import SmsRefused
from mpm.models import Broadcast, Company, Person
from mpm.models.base import utcnow
from mpm.web import company_id, get_for_company_or_404, is_htmx, page_or_fragment

bp = Blueprint("broadcasts", __name__, url_prefix="/broadcasts")

LIST_LIMIT = 100


def _company() -> Company:
    return db.session.get(Company, company_id())


@bp.get("/")
@login_required
def index():
    broadcasts, counts = progress.recent_broadcasts(company_id(), LIST_LIMIT)
    return render_template(
        "broadcasts/index.html", broadcasts=broadcasts, company=_company(),
        counts=counts, names=audiences.name_lookup(company_id()),
        summary=audiences.summary, Audience=audiences.Audience)


def _compose_page(form: BroadcastForm, draft_id: int | None = None, error: str | None = None, status: int = 200):
    from mpm.people.customers import filter_choices

    return render_template(
        "broadcasts/new.html", form=form, draft_id=draft_id, error=error, company=_company(),
        choices=filter_choices(company_id()), preview=lifecycle.preview(company_id(), form),
        selected=audiences.selected_people(company_id(), form.audience.person_ids),
        placeholder_names=placeholders.PLACEHOLDERS,
    ), status


@bp.get("/new")
@login_required
def new():
    draft_id = request.args.get("draft", type=int)
    if draft_id:
        draft = get_for_company_or_404(Broadcast, draft_id)
        if draft.state == "draft":
            return _compose_page(BroadcastForm.from_broadcast(draft, _company().time_zone), draft_id)
    return _compose_page(BroadcastForm())


@bp.post("/new")
@login_required
def save():
    form = BroadcastForm.from_form(request.form)
    draft_id = request.form.get("draft_id", type=int)
    try:
        broadcast = lifecycle.save_draft(company_id(), current_user.id, form, draft_id)
    except SmsRefused as exc:
        return _compose_page(form, draft_id, error=str(exc), status=422)
    return redirect(url_for("broadcasts.confirm", broadcast_id=broadcast.id))


@bp.post("/preview")
@login_required
def preview():
    form = BroadcastForm.from_form(request.form)
    return render_template("broadcasts/_summary.html", preview=lifecycle.preview(company_id(), form))


@bp.get("/people")
@login_required
def people():
    found = audiences.search_people(company_id(), request.args.get("q", ""))
    return render_template("broadcasts/_people_results.html", people=found, q=request.args.get("q", ""))


@bp.get("/people/<int:person_id>/chip")
@login_required
def person_chip(person_id: int):
    person = get_for_company_or_404(Person, person_id)
    response = page_or_fragment("broadcasts/_chip.html", "broadcasts/_chip.html", person=person)
    # After the swap, so the count is taken with the new person already in the form.
    response.headers["HX-Trigger-After-Swap"] = "audience-changed"
    return response


def _confirm_page(broadcast: Broadcast, error: str | None = None, status: int = 200):
    company = _company()
    # Sending "now" inside the quiet hours waits for their end: say so before the user confirms.
    quiet_end = schedule.quiet_until(broadcast.scheduled_for or utcnow(), broadcast.quiet_hours, company.time_zone)
    return render_template(
        "broadcasts/confirm.html", broadcast=broadcast, company=company, error=error,
        summary=audiences.summary(company.id, audiences.Audience.from_json(broadcast.audience)),
        counts=audiences.count(company.id, audiences.Audience.from_json(broadcast.audience)),
        quiet_end=quiet_end,
    ), status


@bp.get("/<int:broadcast_id>/confirm")
@login_required
def confirm(broadcast_id: int):
    broadcast = get_for_company_or_404(Broadcast, broadcast_id)
    if broadcast.state != "draft":
        return redirect(url_for("broadcasts.detail", broadcast_id=broadcast.id))
    return _confirm_page(broadcast)


@bp.post("/<int:broadcast_id>/confirm")
@login_required
def send(broadcast_id: int):
    broadcast = get_for_company_or_404(Broadcast, broadcast_id)
    try:
        lifecycle.confirm(company_id(), broadcast.id, current_user.id)
    except SmsRefused as exc:
        db.session.rollback()
        return _confirm_page(broadcast, error=str(exc), status=422)
    return redirect(url_for("broadcasts.detail", broadcast_id=broadcast.id))


def _progress_context(broadcast: Broadcast) -> dict:
    company = _company()
    current = progress.settle(broadcast)
    return {
        "broadcast": broadcast, "company": company, "progress": current,
        "failures": progress.failures(broadcast), "polling": progress.still_changing(broadcast, current),
        "summary": audiences.summary(company.id, audiences.Audience.from_json(broadcast.audience)),
    }


@bp.get("/<int:broadcast_id>")
@login_required
def detail(broadcast_id: int):
    broadcast = get_for_company_or_404(Broadcast, broadcast_id)
    if broadcast.state == "draft":
        return redirect(url_for("broadcasts.confirm", broadcast_id=broadcast.id))
    return page_or_fragment("broadcasts/detail.html", "broadcasts/_progress.html", **_progress_context(broadcast))


@bp.get("/<int:broadcast_id>/progress")
@login_required
def progress_fragment(broadcast_id: int):
    broadcast = get_for_company_or_404(Broadcast, broadcast_id)
    return render_template("broadcasts/_progress.html", **_progress_context(broadcast))


ACTIONS = {"pause": lifecycle.pause, "resume": lifecycle.resume, "cancel": lifecycle.cancel}


@bp.post("/<int:broadcast_id>/<action>")
@login_required
def control(broadcast_id: int, action: str):
    if action not in ACTIONS:
        abort(404)
    broadcast = get_for_company_or_404(Broadcast, broadcast_id)
    error, status = None, 200
    try:
        ACTIONS[action](company_id(), broadcast.id, current_user.id)
    except SmsRefused as exc:
        db.session.rollback()
        error, status = str(exc), 422
    db.session.refresh(broadcast)
    if not is_htmx() and error is None:
        return redirect(url_for("broadcasts.detail", broadcast_id=broadcast.id))
    return page_or_fragment("broadcasts/detail.html", "broadcasts/_progress.html",
                            action_error=error, **_progress_context(broadcast)), status
