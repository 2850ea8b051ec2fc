"""Small request-side helpers shared by the blueprints."""
import logging
from functools import wraps

from flask import abort, make_response, render_template, request
from flask_login import current_user

from mpm.extensions import db


def too_large(method: str, path: str, length: int | None, address: str | None, limit: int | None) -> str:
    """Log a request refused for its size (413) and say why, for the one who sent it."""
    logging.getLogger("mpm.requests").warning("request refused (413): %s %s of %s bytes from %s", method, path,
                                              length, address)
    return f"The request is too large (the limit is {limit:,} bytes)." if limit else "The request is too large."


def is_htmx() -> bool:
    # A history restore needs the full page, not a fragment.
    return bool(request.headers.get("HX-Request")) and not request.headers.get("HX-History-Restore-Request")


def page_or_fragment(page: str, fragment: str, **context):
    """The full page on a plain request, only the fragment for htmx; the page includes the fragment."""
    response = make_response(render_template(fragment if is_htmx() else page, **context))
    response.headers["Vary"] = "HX-Request"
    return response


def company_id() -> int:
    return current_user.company_id


def get_for_company_or_404(model, object_id):
    """Fetch by id within the logged-in user's company; another company's id is a plain 404."""
    obj = db.session.get(model, object_id)
    if obj is None or obj.company_id != current_user.company_id:
        abort(404)
    return obj


def admin_required(view):
    @wraps(view)
    def wrapped(*args, **kwargs):
        if not current_user.is_authenticated or not current_user.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return wrapped
