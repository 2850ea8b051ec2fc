"""Transactions: list, record a payment (staff), detail with the SMS it caused."""
from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from mpm.messaging.send import SmsRefused
from mpm.messaging.status import IN_FLIGHT
from mpm.models import Transaction
from mpm.payments import transactions
from mpm.people import customers
from mpm.web import company_id, get_for_company_or_404, page_or_fragment

bp = Blueprint("transactions", __name__, url_prefix="/transactions")


@bp.get("/")
@login_required
def index():
    q = request.args.get("q", "").strip()
    result = transactions.transactions_page(company_id(), request.args.get("page", 1, type=int) or 1, q=q)
    return page_or_fragment("transactions/index.html", "transactions/_table.html", result=result, q=q)


def _form_page(form: dict, error: str | None = None, field: str | None = None, status: int = 200):
    customer = customers.company_person(company_id(), form.get("customer_id"))
    return render_template("transactions/new.html", form=form, error=error, field=field, customer=customer,
                           currency=current_user.company.currency), status


@bp.get("/new")
@login_required
def new():
    return _form_page({"customer_id": request.args.get("customer_id", "")})


@bp.post("/new")
@login_required
def create():
    form = request.form.to_dict()
    try:
        payment = transactions.parse_payment(company_id(), form)
        transaction, created = transactions.record_transaction(company_id(), payment, user_id=current_user.id)
    except transactions.TransactionInvalid as exc:
        return _form_page(form, str(exc), exc.field, 422)
    except transactions.CustomerNotFound as exc:
        return _form_page(form, str(exc), "customer_id", 422)
    except transactions.ReferenceConflict as exc:
        return _form_page(form, str(exc), "provider_reference", 409)
    if not created:
        flash(f"A transaction with reference {transaction.provider_reference} exists already: here it is.")
    elif transaction.sms_note:
        flash(f"Transaction recorded. {transaction.sms_note}", "error")
    else:
        flash("Transaction recorded; its confirmation SMS is on its way.")
    return redirect(url_for("transactions.detail", transaction_id=transaction.id))


@bp.get("/<int:transaction_id>")
@login_required
def detail(transaction_id: int):
    transaction = get_for_company_or_404(Transaction, transaction_id)
    messages = transactions.messages_for(transaction)
    return render_template("transactions/detail.html", transaction=transaction, messages=messages,
                           polling=any(m.status in IN_FLIGHT for m in messages))


@bp.get("/<int:transaction_id>/sms")
@login_required
def sms(transaction_id: int):
    """htmx polling: the SMS of this transaction with their current status."""
    transaction = get_for_company_or_404(Transaction, transaction_id)
    messages = transactions.messages_for(transaction)
    return page_or_fragment("transactions/detail.html", "transactions/_sms.html", transaction=transaction,
                            messages=messages, polling=any(m.status in IN_FLIGHT for m in messages))


@bp.post("/<int:transaction_id>/resend")
@login_required
def resend(transaction_id: int):
    transaction = get_for_company_or_404(Transaction, transaction_id)
    try:
        transactions.resend_confirmation(transaction, current_user.id)
    except SmsRefused as exc:
        flash(f"Not sent: {exc}", "error")
    else:
        flash("The confirmation is on its way again.")
    return redirect(url_for("transactions.detail", transaction_id=transaction.id))
