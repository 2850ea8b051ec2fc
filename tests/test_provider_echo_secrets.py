"""A provider that echoes the credentials it was sent (in an error body) never gets them stored or shown:
after the send job ran, the API key and the username appear 0 times in the database, the SMS pages and the
CSV export; the masked form (last four characters) shows what the provider said."""
import re

import pytest
import responses
from sqlalchemy import select

from conftest import enable_gateway, make_person, run_jobs
from mpm.extensions import db
from mpm.messaging.send import queue_messages, recipient_for_person
from mpm.models import Sms, SmsEvent

API_KEY = "atsk_live_7f3a9c2e5b1d4f6a8c0e2b4d6f8a0c2e"
USERNAME = "kisiwa-power-ops"
SEND_URL = re.compile(r"https://api\.(sandbox\.)?africastalking\.com/version1/messaging")

ECHOES = {
    "401 in plain text": (401, f"Invalid apiKey {API_KEY} for username {USERNAME}"),
    "an HTML error page that dumps the request": (
        500, f"<html><body>Internal error. Request: username={USERNAME}&apiKey={API_KEY}&to=%2B254712000001</body></html>"),
    "a JSON error that quotes the headers": (
        400, '{"error": "bad request", "headers": {"apiKey": "%s"}, "form": {"username": "%s"}}' % (API_KEY, USERNAME)),
}


@pytest.mark.parametrize("status, body", ECHOES.values(), ids=ECHOES.keys())
@responses.activate
def test_an_echoed_api_key_and_username_are_found_nowhere(app, logged_in, company, status, body):
    enable_gateway(company, "africastalking", {"api_key": API_KEY, "username": USERNAME})
    person = make_person(company, "Amina", "Otieno", "+254712000001")
    responses.post(SEND_URL, status=status, body=body)
    [sms] = queue_messages(company.id, [recipient_for_person(person)], "Your token is 1234")
    run_jobs(app)
    assert len(responses.calls) == 1  # the provider did answer with the echo

    db.session.expire_all()
    stored = db.session.get(Sms, sms.id)
    details = list(db.session.scalars(select(SmsEvent.detail).where(SmsEvent.sms_id == sms.id)))
    assert stored.error and API_KEY[-4:] in stored.error  # what the provider said is kept, masked
    database_text = "\n".join([stored.error, stored.body, *details])
    pages = [logged_in.get(url, buffered=True).get_data(as_text=True) for url in (
        f"/sms/{sms.id}", "/sms/", f"/customers/{person.id}", "/sms/export.csv")]
    for secret in (API_KEY, USERNAME):
        assert database_text.count(secret) == 0
        assert [page.count(secret) for page in pages] == [0, 0, 0, 0]
    assert "••••••••" in pages[0] and "••••••••" in pages[3]
