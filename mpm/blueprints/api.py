"""JSON API for payment providers: POST /api/v1/transactions with `Authorization: Bearer <token>`."""
from functools import wraps

from flask import Blueprint, g, jsonify, request

from mpm.accounts import api_tokens
from mpm.extensions import csrf
from mpm.payments import transactions

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)  # machine clients authenticate with a bearer token, not a session


def error(message: str, status: int, **extra):
    response = jsonify({"error": message, **extra})
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="mpm"'
    return response


def token_required(view):
    @wraps(view)
    def wrapped(*args, **kwargs):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return error("Send your API token as `Authorization: Bearer <token>` "
                         "(create one in Settings → API tokens).", 401)
        company_id = api_tokens.company_for_token(token.strip())
        if company_id is None:
            return error("The API token is wrong or was revoked.", 401)
        g.api_company_id = company_id
        return view(*args, **kwargs)

    return wrapped


@bp.post("/transactions")
@token_required
def create_transaction():
    try:
        # The raw body: parse_payment reads the JSON itself, typed and bounded (depth, sizes, ranges).
        payment = transactions.parse_payment(g.api_company_id, request.get_data(), default_provider="api")
        transaction, created = transactions.record_transaction(g.api_company_id, payment)
    except transactions.TransactionInvalid as exc:
        return error(str(exc), 400, field=exc.field)
    except transactions.ReferenceConflict as exc:
        return error(str(exc), 409, field="provider_reference", transaction_id=exc.existing.id)
    except transactions.CustomerNotFound as exc:
        return error(str(exc), 404)
    return jsonify(transactions.as_json(transaction)), 201 if created else 200


@bp.get("/transactions/<int:transaction_id>")
@token_required
def get_transaction(transaction_id: int):
    """The transaction and its confirmation SMS's current status."""
    transaction = transactions.transaction_for_company(g.api_company_id, transaction_id)
    if transaction is None:
        return error(f"No transaction with id {transaction_id}.", 404)
    return jsonify(transactions.as_json(transaction))


@bp.errorhandler(404)
@bp.errorhandler(405)
def api_error(exc):
    return error(exc.description, exc.code)
