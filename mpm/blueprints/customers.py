"""Customers list and detail page."""
from flask import Blueprint, current_app, render_template, request
from flask_login import login_required

from mpm.messaging.history import send_panel
from mpm.models import Person
from mpm.people import customers
from mpm.people.phones import InvalidPhoneNumber
from mpm.web import company_id, get_for_company_or_404, is_htmx, page_or_fragment

bp = Blueprint("customers", __name__, url_prefix="/customers")


@bp.get("/")
@login_required
def index():
    flt = customers.PeopleFilter.from_args(request.args)
    result = customers.people_page(company_id(), flt, current_app.config["CUSTOMERS_PER_PAGE"])
    return page_or_fragment(
        "customers/index.html", "customers/_table.html",
        result=result, flt=flt, choices=customers.filter_choices(company_id()),
    )


@bp.get("/picker")
@login_required
def picker():
    """htmx: customers matching what staff typed, as radio choices inside a form that needs one."""
    q = request.args.get("customer_q", "").strip()
    people = customers.people_page(company_id(), customers.PeopleFilter(q=q), 8).people if q else []
    return render_template("customers/_picker_choices.html", people=people, q=q,
                           selected=request.args.get("customer_id", type=int))


@bp.get("/<int:person_id>")
@login_required
def detail(person_id: int):
    person = get_for_company_or_404(Person, person_id)
    return render_template("customers/detail.html", person=person, panel=send_panel(company_id(), person))


@bp.post("/<int:person_id>/numbers/<int:number_id>/primary")
@login_required
def toggle_primary(person_id: int, number_id: int):
    person = get_for_company_or_404(Person, person_id)
    try:
        customers.set_primary(person, number_id, on=request.form.get("primary") == "on")
    except LookupError:
        return render_template("customers/_numbers.html", person=person), 404
    return _numbers_fragment(person)


@bp.post("/<int:person_id>/numbers")
@login_required
def add_number(person_id: int):
    person = get_for_company_or_404(Person, person_id)
    try:
        customers.add_phone_number(person, request.form.get("number", ""))
    except InvalidPhoneNumber as exc:
        return _numbers_fragment(person, error=str(exc), typed=request.form.get("number", ""), status=422)
    return _numbers_fragment(person)


def _numbers_fragment(person: Person, error: str | None = None, typed: str = "", status: int = 200):
    # The whole page on a plain form post (no JavaScript), the numbers card for htmx.
    # htmx also gets the Send SMS panel's destination line, out of band: it names the new primary number.
    return page_or_fragment(
        "customers/detail.html", "customers/_numbers.html", person=person, number_error=error, typed=typed,
        panel=send_panel(company_id(), person), refresh_destination=is_htmx(),
    ), status
