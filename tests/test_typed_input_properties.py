"""Property: every entry point that takes input from outside answers typed-wrong JSON or form data with a
4xx (never a 500) and changes no row. One property per entry point; each example carries at least one
value of the wrong type, shape or size for its field, the rest looks like the real thing, and callbacks
come with the right secret (and signature), so the input reaches the parsing it is meant to test."""
import hashlib
import hmac
import json
import re
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import csrf_token, make_person
from mpm.accounts import api_tokens
from mpm.gateways.android import CONFIRMATIONS
from test_security_callbacks_fuzz import _snapshot, _tenant

PROPERTY = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# --- wrong values, by what the field should hold -------------------------------------------------------
nested = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                      max_leaves=6)
containers = st.lists(nested, max_size=3) | st.dictionaries(st.text(max_size=5), nested, max_size=3)
huge_ints = st.integers(min_value=2**31) | st.integers(max_value=-(2**31)) | st.sampled_from([2**63, 10**30, -(2**64)])
no_digits = st.text(min_size=1, max_size=20).filter(lambda s: s.strip() and not re.search(r"\d", s))
long_text = st.builds(lambda c, n: c * n, st.characters(codec="utf-8", exclude_categories=["Z", "C"]), st.integers(min_value=130, max_value=400))

WRONG = {
    # a positive whole number that fits an Integer column
    "whole": st.one_of(st.booleans(), st.floats(), huge_ints, st.integers(max_value=0), no_digits, containers),
    # a positive amount that is still worth something after rounding to cents
    "amount": st.one_of(st.booleans(), containers, no_digits,
                        st.floats(max_value=0.0049) | st.floats(min_value=1e9), st.integers(max_value=0),
                        st.integers(min_value=10**9), st.sampled_from(["1e-400", "0.004", "NaN", "-Infinity", "1e999"])),
    # text of a bounded length
    "text": st.one_of(st.booleans(), st.floats(), containers, long_text),
}
PAYMENT_FIELDS = {"customer_id": "whole", "duration": "whole", "amount": "amount", "energy_kwh": "amount",
                  "provider_reference": "text", "token": "text", "device_serial": "text", "unit": "text",
                  "sender_number": "text", "currency": "text", "meter_serial": "text", "provider": "text"}


# The same, as a form carries them: text only.
WRONG_TEXT = {
    "whole": st.one_of(no_digits, huge_ints.map(str), st.integers(max_value=0).map(str),
                       st.floats(allow_nan=False).filter(lambda f: not f.is_integer()).map(str)),
    "amount": st.one_of(no_digits, st.sampled_from(["1e-400", "0.004", "0", "-5", "NaN", "1e999", "1000000000"])),
    "text": long_text,
}


@st.composite
def wrong_payment(draw, customer_id: int, wrong: dict = WRONG) -> dict:
    """A valid solar-home-system payment with one or more fields replaced by a wrong value."""
    payment = {"customer_id": customer_id, "amount": 500, "provider_reference": "MP-1", "device_serial": "SHS-1",
               "token": "1111-2222", "duration": 30, "unit": "days"}
    for name in draw(st.lists(st.sampled_from(sorted(PAYMENT_FIELDS)), min_size=1, max_size=3, unique=True)):
        payment[name] = draw(wrong[PAYMENT_FIELDS[name]])
    return payment


def _unchanged_after(send, refused: bool = True) -> None:
    """Send; never a 500 and no row changed. `refused`: the answer must also say no (4xx); a provider's
    callback may answer 200 to an event it ignores."""
    before = _snapshot()
    response = send()
    said = (response.status_code, response.get_data(as_text=True)[:300])
    assert response.status_code < 500, said
    assert _snapshot() == before, ("a request with a wrong value changed rows", said)
    if refused:
        assert 400 <= response.status_code < 500, said


# --- the payments API ----------------------------------------------------------------------------------------
@pytest.fixture
def payer(company):
    person = make_person(company, "Amina", "Otieno", "+254712000001")
    _, token = api_tokens.create_token(company.id, "payments")
    return person.id, {"Authorization": f"Bearer {token}"}


@PROPERTY
@given(data=st.data())
def test_payments_api_refuses_typed_wrong_json(client, payer, data):
    customer_id, headers = payer
    body = data.draw(st.one_of(
        wrong_payment(customer_id).map(json.dumps),
        st.integers(min_value=150, max_value=100_000).map(lambda depth: "[" * depth),
        st.integers(min_value=150, max_value=100_000).map(lambda depth: '{"amount": ' + "{\"a\": " * depth),
        containers.map(json.dumps), st.binary(max_size=64)))
    _unchanged_after(lambda: client.post("/api/v1/transactions", data=body, headers=headers,
                                         content_type="application/json"))


# --- staff forms ----------------------------------------------------------------------------------------------
@PROPERTY
@given(data=st.data())
def test_transaction_form_refuses_typed_wrong_fields(logged_in, payer, data):
    customer_id, _ = payer
    form = {k: str(v) for k, v in data.draw(wrong_payment(customer_id, WRONG_TEXT)).items()}
    token = csrf_token(logged_in, "/transactions/new")
    _unchanged_after(lambda: logged_in.post("/transactions/new", data={**form, "csrf_token": token}))


unsendable_bodies = st.one_of(st.just(""), st.text(alphabet=" \t\r\n", max_size=5),
                              st.builds(lambda c, n: c * n, st.characters(codec="utf-8", exclude_categories=["Z", "C"]),
                                        st.integers(min_value=1000, max_value=5000)))


@PROPERTY
@given(data=st.data())
def test_sms_forms_refuse_what_cannot_be_sent(logged_in, payer, data):
    customer_id, _ = payer
    body = data.draw(unsendable_bodies)
    token = csrf_token(logged_in, "/sms/new")
    if data.draw(st.booleans()):
        send = lambda: logged_in.post(f"/sms/people/{customer_id}/send", data={"body": body, "csrf_token": token})  # noqa: E731
    else:
        ids = data.draw(st.lists(st.sampled_from([str(customer_id), "x", "-1", "99999999999999999999", "²", "2147483648", ""]),
                                 max_size=4))
        send = lambda: logged_in.post("/sms/new", data={"body": body, "ids": ids, "person_id": ids,  # noqa: E731
                                                        "csrf_token": token})
    _unchanged_after(send)


@PROPERTY
@given(form=st.dictionaries(st.sampled_from(["email", "password", "remember", "next"]),
                            st.one_of(long_text, st.text(max_size=30), st.lists(st.text(max_size=10), max_size=3),
                                      st.builds(lambda n: "a" * n, st.integers(min_value=1000, max_value=600_000))),
                            max_size=4))
def test_login_form_refuses_typed_wrong_fields(client, admin, form):
    token = csrf_token(client, "/login")
    _unchanged_after(lambda: client.post("/login", data={**form, "csrf_token": token}))


# --- provider callbacks, with the right secret ------------------------------------------------------------
@pytest.fixture
def tenant(app_ctx):
    return _tenant("Alpha", 1)


any_json = st.one_of(nested, huge_ints, st.floats(allow_nan=False), long_text)


@PROPERTY
@given(form=st.fixed_dictionaries(
    {"id": st.text(max_size=40).filter(lambda s: not s.startswith("ATXid_")),
     "status": st.text(max_size=20) | st.sampled_from(["Success", "Failed", "Rejected", "Buffered"])},
    optional={"phoneNumber": st.text(max_size=20), "failureReason": long_text, "networkCode": st.text(max_size=10)}))
def test_africastalking_delivery_report_refuses_wrong_fields(client, tenant, form):
    url = (f"/api/africas-talking/callback/{tenant['id']}/delivery-reports"
           f"?token={tenant['secrets']['africastalking']}")
    _unchanged_after(lambda: client.post(url, data=form), refused=False)


@st.composite
def wrong_incoming_form(draw) -> dict:
    form = {"from": "+254712000001", "to": "12345", "text": "balance", "id": "at-in-1", "date": "2026-01-01"}
    for flaw in draw(st.lists(st.sampled_from(["no from", "no text", "long text", "long id", "long from"]),
                              min_size=1, max_size=2, unique=True)):
        if flaw == "no from":
            form["from"] = draw(st.sampled_from(["", "   ", None]))
        elif flaw == "no text":
            form["text"] = None
        elif flaw == "long text":
            form["text"] = draw(st.builds(lambda c, n: c * n, st.characters(codec="utf-8", exclude_categories=["C"]),
                                          st.integers(min_value=1531, max_value=20_000)))
        elif flaw == "long id":
            form["id"] = "i" * draw(st.integers(min_value=121, max_value=5000))
        else:
            form["from"] = "+" + "1" * draw(st.integers(min_value=65, max_value=5000))
    return {k: v for k, v in form.items() if v is not None}


@PROPERTY
@given(form=wrong_incoming_form())
def test_africastalking_incoming_refuses_wrong_fields(client, tenant, form):
    url = (f"/api/africas-talking/callback/{tenant['id']}/incoming-messages"
           f"?token={tenant['secrets']['africastalking']}")
    _unchanged_after(lambda: client.post(url, data=form))


def _signed(client, tenant, gateway: str, path: str, header: str, payload):
    raw = json.dumps(payload).encode()
    signature = hmac.new(tenant["signing"][gateway].encode(), raw, hashlib.sha256).hexdigest()
    url = path.format(c=tenant["id"]) + "?token=" + tenant["secrets"][gateway]
    return lambda: client.post(url, data=raw, content_type="application/json", headers={header: signature})


@st.composite
def wrong_typed(draw, template: dict, wrong: dict) -> dict:
    """`template` with one or more of its fields given a value of the wrong type (from `wrong`)."""
    payload = dict(template)
    for name in draw(st.lists(st.sampled_from(sorted(wrong)), min_size=1, max_size=2, unique=True)):
        payload[name] = draw(wrong[name])
    return payload


not_text = st.one_of(st.booleans(), huge_ints, st.integers(), st.floats(allow_nan=False), containers)
TEXTBEE_EVENTS = ["MESSAGE_RECEIVED", "MESSAGE_DELIVERED", "MESSAGE_FAILED", "MESSAGE_SENT"]


@PROPERTY
@given(data=st.data())
def test_textbee_signed_webhook_refuses_typed_wrong_json(client, tenant, data):
    template = {"webhookEvent": data.draw(st.sampled_from(TEXTBEE_EVENTS)), "sender": "+254712000001",
                "message": "balance", "smsId": "tb-in-1", "smsBatchId": "tb-batch-1"}
    payload = data.draw(wrong_typed(template, {"webhookEvent": not_text, "sender": not_text, "message": not_text,
                                               "smsId": not_text, "smsBatchId": not_text}))
    _unchanged_after(_signed(client, tenant, "textbee", "/api/textbee-sms-gateway/callback/{c}/webhook",
                             "X-Signature", payload), refused=False)


@PROPERTY
@given(data=st.data())
def test_viber_signed_webhook_refuses_typed_wrong_json(client, tenant, data):
    template = {"event": data.draw(st.sampled_from(["message", "delivered", "seen", "failed", "unsubscribed"])),
                "sender": {"id": "viber-user-1"}, "message": {"type": "text", "text": "balance"},
                "message_token": 51000, "user_id": "viber-user-1"}
    text_or_list = st.one_of(st.text(max_size=10), st.lists(st.text(max_size=5), max_size=3), huge_ints)
    payload = data.draw(wrong_typed(template, {"event": not_text, "sender": text_or_list, "message": text_or_list,
                                               "message_token": containers, "user_id": not_text}))
    _unchanged_after(_signed(client, tenant, "viber", "/api/viber-messaging/callback/{c}/webhook",
                             "X-Viber-Content-Signature", payload), refused=False)


@PROPERTY
@given(kind=st.sampled_from(sorted(CONFIRMATIONS)), method=st.sampled_from(["GET", "POST"]),
       sms_id=st.one_of(st.text(alphabet=string.ascii_letters + " -+.", max_size=12),
                        st.integers(min_value=10**12).map(str), st.lists(st.text(max_size=5), max_size=3)),
       error=st.one_of(st.none(), long_text))
def test_android_confirmation_refuses_wrong_fields(client, tenant, kind, method, sms_id, error):
    form = {"sms_id": sms_id, **({"error": error} if error else {})}
    url = f"/api/sms-android-callback/{tenant['id']}/{tenant['secrets']['android']}/{kind}"
    if method == "GET":
        _unchanged_after(lambda: client.get(url, query_string=form), refused=False)
    else:
        _unchanged_after(lambda: client.post(url, data=form), refused=False)
