"""What a new user tripped over (issue 18), at the HTTP level: one phone rule, unsendable templates
refused, one labelled time zone, the simulator's wrong keys and incoming-SMS form, and the small
things (text search, reversed dates, labels, whole threads read, assignees told apart, favicon)."""
import re
from datetime import datetime, timezone

import pytest
from sqlalchemy import insert, select

from conftest import DEFAULT_CREDENTIALS, csrf_token, enable_gateway, login, make_person, run_jobs
from mpm import create_app
from mpm.broadcasts import audience as audiences
from mpm.broadcasts import fanout, lifecycle
from mpm.broadcasts.lifecycle import BroadcastForm
from mpm.extensions import db
from mpm.gateways.base import GatewayConfig
from mpm.gateways.registry import get_gateway
from mpm.models import MaintenanceTicket, Person, PhoneNumber, Sms, SmsTemplate, Transaction
from mpm.plugins.gateway_settings import gateway_setting

HX = {"HX-Request": "true"}
INVALID_KE = "+254109675498"  # E.164-shaped, but no Kenyan range: phonenumbers says invalid
AT_0040_UTC = datetime(2026, 11, 27, 0, 40, tzinfo=timezone.utc)  # 03:40 in Nairobi (EAT)


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


# --- 3. one phone rule everywhere -------------------------------------------------------------------

def test_invalid_numbers_are_flagged_when_stored_even_by_bulk_insert(company):
    jane = make_person(company)
    agent = make_person(company, "Baraka", "Otieno", INVALID_KE, kind="agent")
    db.session.execute(insert(PhoneNumber), [
        {"company_id": company.id, "person_id": jane.id, "e164": "+254722000111", "is_primary": False},
        {"company_id": company.id, "person_id": jane.id, "e164": "+254109000001", "is_primary": False}])
    db.session.commit()
    valid = dict(db.session.execute(select(PhoneNumber.e164, PhoneNumber.valid)).all())
    assert valid == {"+254712345678": True, INVALID_KE: False, "+254722000111": True, "+254109000001": False}
    assert agent.primary_number.valid is False


def test_list_and_detail_pages_flag_an_invalid_number(logged_in, company):
    agent = make_person(company, "Baraka", "Otieno", INVALID_KE, kind="agent")
    make_person(company, "Jane", "Wanjiru")
    listing = logged_in.get("/customers/?kind=all").get_data(as_text=True)
    row = next(r for r in listing.split("<tr>") if "Baraka Otieno" in r)
    assert "invalid number" in row
    assert "invalid number" not in next(r for r in listing.split("<tr>") if "Jane Wanjiru" in r)
    detail = logged_in.get(f"/customers/{agent.id}").get_data(as_text=True)
    assert "invalid number" in detail and "not a valid phone number" in detail  # the send panel says why


def test_broadcast_to_selected_people_excludes_and_counts_an_invalid_number(logged_in, company):
    enable_gateway(company, "africastalking")
    agent = make_person(company, "Baraka", "Otieno", INVALID_KE, kind="agent")
    jane = make_person(company)
    token = csrf_token(logged_in)
    preview = logged_in.post("/broadcasts/preview", headers=HX, data={
        "csrf_token": token, "person_ids": [agent.id, jane.id], "body": "Hello [name]"}).get_data(as_text=True)
    text = text_of(preview)
    assert "Reached by the filters 2 people" in text and "Will receive it 1 " in text
    assert re.search(r"Invalid number 1 — excluded", text)

    saved = logged_in.post("/broadcasts/new", data={"csrf_token": token, "person_ids": [agent.id, jane.id],
                                                    "body": "Hello [name]", "when": "now", "validity_hours": "24"})
    assert saved.status_code == 302
    confirm = logged_in.get(saved.headers["Location"]).get_data(as_text=True)
    assert "Send to 1 person" in text_of(confirm) and "1 with an invalid number" in confirm
    broadcast_id = int(re.search(r"/broadcasts/(\d+)/confirm", saved.headers["Location"]).group(1))
    lifecycle.confirm(company.id, broadcast_id, None)
    while fanout.run_broadcast(broadcast_id).endswith("created"):
        pass
    rows = db.session.scalars(select(Sms).where(Sms.broadcast_id == broadcast_id)).all()
    assert [(s.person_id, s.number) for s in rows] == [(jane.id, "+254712345678")]  # nothing "delivered" to him


def test_nobody_reachable_names_the_invalid_numbers(company):
    agent = make_person(company, "Baraka", "Otieno", INVALID_KE, kind="agent")
    form = BroadcastForm(audience=audiences.Audience(person_ids=(agent.id,)), body="Hello")
    with pytest.raises(lifecycle.BroadcastRefused, match="1 with a number that is not a valid phone number"):
        lifecycle.save_draft(company.id, None, form)


# --- 4. templates that can never be sent --------------------------------------------------------------

def test_a_template_longer_than_the_segment_limit_is_refused_naming_the_limit(logged_in, company, app):
    long_body = "Dear [name] [surname], your payment of [amount] [currency] is confirmed. " + "Thank you. " * 90
    response = logged_in.post("/settings/sms/templates/transaction_no_token", headers=HX,
                              data={"body": long_body, "csrf_token": csrf_token(logged_in)})
    assert response.status_code == 422
    message = text_of(response.get_data(as_text=True))
    assert f"at most {app.config['SMS_MAX_SEGMENTS']} segments can be sent" in message
    assert db.session.scalar(select(SmsTemplate.id)) is None
    preview = logged_in.post("/settings/sms/templates/transaction_no_token/preview", headers=HX,
                             data={"body": long_body, "csrf_token": csrf_token(logged_in)}).get_data(as_text=True)
    assert "at most 6 segments" in preview  # said while typing, before saving


@pytest.mark.parametrize("body, named", [("Dear [name, your payment is in.", "“[name,” opens a placeholder"),
                                         ("Dear name], your payment is in.", "“name],” has a ] that closes no ["),
                                         ("Dear [name [surname]", "“[name” opens a placeholder")])
def test_unbalanced_placeholder_brackets_are_refused(logged_in, company, body, named):
    response = logged_in.post("/settings/sms/templates/transaction_no_token", headers=HX,
                              data={"body": body, "csrf_token": csrf_token(logged_in)})
    assert response.status_code == 422
    assert named in response.get_data(as_text=True)
    assert db.session.scalar(select(SmsTemplate.id)) is None


def test_a_sendable_template_still_saves(logged_in, company):
    response = logged_in.post("/settings/sms/templates/transaction_no_token", headers=HX, data={
        "body": "Dear [name], we got [amount] [currency] [see notice board].", "csrf_token": csrf_token(logged_in)})
    assert response.status_code == 200
    assert db.session.scalar(select(SmsTemplate.body)).startswith("Dear [name]")


# --- 5. one company time zone, labelled ---------------------------------------------------------------

def test_every_page_shows_the_same_moment_in_the_company_zone_labelled(logged_in, company, admin):
    jane = make_person(company)
    payment = Transaction(company_id=company.id, person_id=jane.id, amount=500, currency="KES",
                          created_at=AT_0040_UTC)
    ticket = MaintenanceTicket(company_id=company.id, customer_id=jane.id, category="Meter fault",
                               description="No power", created_at=AT_0040_UTC)
    incoming = Sms(company_id=company.id, direction="inbound", person_id=jane.id, number=jane.primary_number.e164,
                   body="Hello office", status="received", gateway="africastalking", trigger="reply",
                   created_at=AT_0040_UTC)
    db.session.add_all([payment, ticket, incoming])
    db.session.commit()
    for url in ("/transactions/", f"/transactions/{payment.id}", f"/maintenance/{ticket.id}", "/inbox/",
                f"/inbox/{incoming.id}", f"/sms/{incoming.id}", "/sms/"):
        page = logged_in.get(url).get_data(as_text=True)
        assert "03:40" in page and "EAT" in page, url
        assert "00:40" not in page and " UTC" not in page, url


def test_csv_file_name_is_in_the_company_zone(logged_in, company):
    response = logged_in.get("/sms/export.csv", buffered=True)
    name = re.search(r'filename="([^"]+)"', response.headers["Content-Disposition"]).group(1)
    assert re.fullmatch(r"sms-\d{8}-\d{6}-EAT\.csv", name)
    assert response.get_data(as_text=True).startswith("\ufeffid,created_at")  # Excel reads UTF-8 with the BOM


# --- 8. the same "No active SMS provider" guidance before writing ------------------------------------

def test_compose_pages_warn_before_a_message_is_written(logged_in, company):
    jane = make_person(company)
    pages = ("/sms/new", "/broadcasts/new", f"/customers/{jane.id}")
    for url in pages:
        page = logged_in.get(url).get_data(as_text=True)
        assert "data-no-provider" in page and 'href="/plugins/"' in page, url
    enable_gateway(company, "africastalking")
    for url in pages:
        assert "data-no-provider" not in logged_in.get(url).get_data(as_text=True), url


# --- 9. the demo can show what the guide describes ----------------------------------------------------

def test_the_simulator_refuses_a_wrong_api_key_when_started_with_one(simulator):
    at = get_gateway("africastalking")
    config = lambda key: GatewayConfig(credentials={"api_key": key, "username": "sandbox"},  # noqa: E731
                                       options={"base_url": simulator.url}, timeout=5)
    simulator.state.api_key = "simulator-key"
    try:
        wrong = at.check_credentials(config("typo-key"))
        assert not wrong.ok and "refused the API key" in wrong.message
        assert at.check_credentials(config("simulator-key")).ok
        from mpm.dev.simulator import DEVICE_ID

        textbee = get_gateway("textbee")
        tb_config = lambda key: GatewayConfig(credentials={"api_key": key, "device_id": DEVICE_ID},  # noqa: E731
                                              options={"base_url": simulator.url + "/api/v1"}, timeout=5)
        assert not textbee.check_credentials(tb_config("typo-key")).ok
        assert textbee.check_credentials(tb_config("simulator-key")).ok
    finally:
        simulator.state.api_key = ""


def test_demo_wires_textbee_to_the_simulator_and_it_sends(app, company, simulator):
    from mpm.dev.simulator_setup import enable_simulator_gateway
    from mpm.messaging.send import Recipient, queue_messages

    simulator.state.api_key = "simulator-key"
    try:
        assert enable_simulator_gateway(simulator.url, company.id) is True
        textbee = gateway_setting(company.id, "textbee")
        assert textbee.enabled and textbee.valid and textbee.options["base_url"] == simulator.url + "/api/v1"
        assert simulator.state.callbacks["textbee"]["url"].endswith(f"webhook?token={textbee.callback_secret}")
        gateway_setting(company.id, "africastalking").enabled = False  # TextBee alone carries it
        db.session.commit()
        [sms] = queue_messages(company.id, [Recipient(number="+254712345678")], "Through the phone")
        run_jobs(app)
        db.session.expire_all()
        assert db.session.get(Sms, sms.id).gateway == "textbee"
        assert [m["message"] for m in simulator.received("textbee")] == ["Through the phone"]
    finally:
        simulator.state.api_key = ""


@pytest.fixture
def dev_client(app, company, admin):
    app.config["SIMULATOR_URL"] = "http://127.0.0.1:9"
    dev_app = create_app({**app.config})
    client = dev_app.test_client()
    login(client, admin.email)
    return client


def test_simulate_an_incoming_stop_in_development(dev_client, company):
    jane = make_person(company)
    page = dev_client.get("/dev/incoming-sms")
    assert page.status_code == 200 and "development tool" in page.get_data(as_text=True)
    token = csrf_token(dev_client, "/dev/incoming-sms")
    bad = dev_client.post("/dev/incoming-sms", data={"number": "12", "body": "STOP", "csrf_token": token})
    assert bad.status_code == 422 and db.session.scalar(select(Sms.id)) is None
    sent = dev_client.post("/dev/incoming-sms", data={"number": "0712 345 678", "body": "STOP", "csrf_token": token})
    assert sent.status_code == 302 and "/inbox/" in sent.headers["Location"]
    db.session.expire_all()
    assert db.session.get(Person, jane.id).opted_out_at is not None  # handled like a provider's callback
    [sms] = db.session.scalars(select(Sms).where(Sms.direction == "inbound")).all()
    assert (sms.person_id, sms.body) == (jane.id, "STOP")


def test_the_incoming_sms_form_does_not_exist_without_the_simulator(logged_in):
    assert logged_in.get("/dev/incoming-sms").status_code == 404
    assert "Simulate an incoming SMS" not in logged_in.get("/inbox/").get_data(as_text=True)


# --- 10. smaller things ---------------------------------------------------------------------------------

def test_history_search_finds_message_text(logged_in, company):
    jane = make_person(company)
    hit = Sms(company_id=company.id, person_id=jane.id, number="+254712345678", body="Planned outage on Friday",
              status="delivered", gateway="africastalking")
    miss = Sms(company_id=company.id, person_id=jane.id, number="+254712345678", body="Your token is 1234",
               status="delivered", gateway="africastalking")
    db.session.add_all([hit, miss])
    db.session.commit()
    page = logged_in.get("/sms/?q=outage").get_data(as_text=True)
    assert f'id="sms-row-{hit.id}"' in page and f'id="sms-row-{miss.id}"' not in page
    assert "1 message</strong>" in page
    assert f'id="sms-row-{hit.id}"' not in logged_in.get("/sms/?q=100%25").get_data(as_text=True)


def test_from_date_after_to_date_is_said(logged_in, company):
    page = logged_in.get("/sms/?from=2026-03-05&to=2026-03-01").get_data(as_text=True)
    assert 'id="dates-reversed"' in page and "is after the to-date" in page
    assert 'id="dates-reversed"' not in logged_in.get("/sms/?from=2026-03-01&to=2026-03-05").get_data(as_text=True)


def test_gateways_and_triggers_read_the_same_everywhere(logged_in, company):
    jane = make_person(company)
    sms = Sms(company_id=company.id, person_id=jane.id, number="+254712345678", body="Your details",
              status="delivered", gateway="africastalking", trigger="resend_information")
    db.session.add(sms)
    db.session.commit()
    history = logged_in.get("/sms/").get_data(as_text=True)
    row = history.split(f'id="sms-row-{sms.id}"')[1].split("</tr>")[0]
    assert "AfricasTalking" in row and "payment details sent again" in row and "resend_information" not in row
    thread = logged_in.get(f"/inbox/{sms.id}").get_data(as_text=True)
    assert "payment details sent again" in thread and "resend_information" not in text_of(thread)


def test_opening_one_incoming_sms_reads_the_whole_thread(logged_in, company):
    jane = make_person(company)
    older, newer = (Sms(company_id=company.id, direction="inbound", person_id=jane.id, number="+254712345678",
                        body=body, status="received", trigger="reply") for body in ("Hello", "Anyone there?"))
    db.session.add_all([older, newer])
    db.session.commit()
    logged_in.get(f"/inbox/{newer.id}")
    db.session.expire_all()
    assert db.session.get(Sms, older.id).read_at is not None and db.session.get(Sms, newer.id).read_at is not None
    assert "No unread messages." in logged_in.get("/inbox/?unread=1").get_data(as_text=True)


def test_two_assignees_with_the_same_name_can_be_told_apart(logged_in, company):
    make_person(company)
    make_person(company, "Peter", "Otieno", "+254722000111", kind="agent")
    make_person(company, "Peter", "Otieno", "+254733000222", kind="service_provider")
    page = logged_in.get("/maintenance/new").get_data(as_text=True)
    options = re.findall(r"<option value=\"\d+\"[^>]*>([^<]*Peter Otieno[^<]*)</option>", page)
    assert len(options) == 2 and len(set(options)) == 2
    assert any("+254 722 000111" in o for o in options) and any("+254 733 000222" in o for o in options)


def test_plugin_overview_and_dashboard_count_with_the_same_words(logged_in, company):
    """One set of figures (the delivery insight block) on both pages, so "sent" cannot mean two things."""
    enable_gateway(company, "africastalking", DEFAULT_CREDENTIALS["africastalking"])
    overview = logged_in.get("/plugins/africastalking/").get_data(as_text=True)
    dashboard = logged_in.get("/").get_data(as_text=True)
    for page in (overview, dashboard):
        assert 'data-figure="messages"' in page and 'data-figure="rate"' in page and ">Sent<" not in page


def test_android_setup_names_only_fields_the_form_has(logged_in, company):
    page = logged_in.get("/plugins/android/").get_data(as_text=True)
    assert "FCM URL" not in page and "FCM server key" in page and "device token" in page


def test_favicon_is_served(logged_in, client):
    assert client.get("/favicon.ico").status_code == 301
    icon = client.get("/static/favicon.svg")
    assert icon.status_code == 200 and icon.mimetype == "image/svg+xml"
    assert 'rel="icon"' in logged_in.get("/").get_data(as_text=True)
