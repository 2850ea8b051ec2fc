"""Development tools beside the gateway simulator: registered only when the simulator runs
(SIMULATOR_URL, set by the embedded run alone), never by the production configuration."""
from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import login_required

from mpm.dev import simulator_setup
from mpm.people.phones import InvalidPhoneNumber
from mpm.web import company_id

bp = Blueprint("simulator_tools", __name__, url_prefix="/dev")


@bp.route("/incoming-sms", methods=["GET", "POST"])
@login_required
def incoming_sms():
    if request.method == "GET":
        return render_template("dev/incoming_sms.html", number="", body="")
    number, body = request.form.get("number", ""), request.form.get("body", "")
    try:
        sms = simulator_setup.simulate_incoming_sms(company_id(), number, body)
    except (InvalidPhoneNumber, ValueError) as exc:
        return render_template("dev/incoming_sms.html", number=number, body=body, error=str(exc)), 422
    flash(f"Incoming SMS from {sms.number} stored and handled as if the provider had posted it.")
    return redirect(url_for("sms_inbox.conversation", sms_id=sms.id))
