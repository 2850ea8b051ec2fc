"""Settings → Plugins: toggles, credentials validated with the providers (mocked with `responses`
in their real formats), secrets encrypted and masked, roles, audit log, sidebar, the priority rule."""
import json
import logging
import re
from datetime import timedelta

import responses
from sqlalchemy import select, text

from conftest import csrf_token, enable_gateway, login, make_company, make_user, run_jobs
from mpm.extensions import db
from mpm.insight.rollups import refresh_rollups
from mpm.models import AuditEntry, GatewaySetting, Sms
from mpm.models.base import utcnow
from mpm.plugins.credentials import decrypt

AT_USER = "https://api.africastalking.com/version1/user"
AT_SANDBOX_USER = "https://api.sandbox.africastalking.com/version1/user"
TEXTBEE_DEVICES = "https://api.textbee.dev/api/v1/gateway/devices"
VIBER_ACCOUNT = "https://chatapi.viber.com/pa/get_account_info"
FCM_SEND = "https://fcm.googleapis.com/fcm/send"

AT_KEY = "atsk_8f2c1d9e7b6a5f4e3d2c1b0a9f8e7d6c"
TEXTBEE_KEY = "tb_live_5c7d9e1f3a5b7c9d"
VIBER_TOKEN = "4453b6ac12345678-e02c5f12174805f9-daec9cbb5448c51f"
FCM_KEY = "AAAAx1yZ:APA91bHPRgkF3JUikC4ENAHEeMrd41Zxv3hVZjC9KtT8Oq"


def setting(company_id: int, key: str) -> GatewaySetting | None:
    db.session.expire_all()
    return db.session.scalar(select(GatewaySetting).where(
        GatewaySetting.company_id == company_id, GatewaySetting.gateway == key))


def audit_entries(company_id: int) -> list[AuditEntry]:
    db.session.expire_all()
    return list(db.session.scalars(
        select(AuditEntry).where(AuditEntry.company_id == company_id).order_by(AuditEntry.id)))


def plugin_order(page: str) -> list[str]:
    return re.findall(r'<tr id="plugin-([a-z]+)">', page)


def sidebar_plugins(page: str) -> list[str]:
    nav = page.split('<p class="nav-heading">Plugins</p>', 1)
    if len(nav) == 1:
        return []
    return re.findall(r'<a href="/plugins/([a-z]+)/"', nav[1].split("</ul>", 1)[0])


def save(client, key: str, htmx: bool = True, **fields):
    headers = {"HX-Request": "true"} if htmx else {}
    return client.post(f"/plugins/{key}/settings", data={"csrf_token": csrf_token(client), **fields}, headers=headers)


def at_balance(body=None, status=200):
    responses.add(responses.GET, AT_USER, json=body or {"UserData": {"balance": "KES 1785.50"}}, status=status)


# ---------------------------------------------------------------- the list and the priority rule

def test_with_nothing_active_the_page_says_no_active_sms_provider_and_the_order(logged_in):
    page = logged_in.get("/plugins/").get_data(as_text=True)
    assert "No active SMS provider" in page
    assert "AfricasTalking → TextBee → Viber (only for Viber users) → Android" in page
    assert plugin_order(page) == ["africastalking", "textbee", "viber", "android"]
    assert "deprecated" in page.split('id="plugin-android"')[1].split("</tr>")[0]


def test_the_page_names_the_gateway_used_now_and_why(logged_in, company):
    enable_gateway(company, "africastalking", valid=False)
    setting(company.id, "africastalking").validation_message = "AfricasTalking refused the API key"
    db.session.commit()
    enable_gateway(company, "textbee")
    page = logged_in.get("/plugins/").get_data(as_text=True)
    assert "No active SMS provider" not in page
    summary = re.search(r'id="provider-summary"[^>]*>([^<]+)</p>', page).group(1)
    assert summary.startswith("AfricasTalking is enabled but its credentials failed validation: "
                              "AfricasTalking refused the API key, so TextBee is used now")
    row = page.split('id="plugin-textbee"')[1].split("</tr>")[0]
    assert "used now" in row
    overview = logged_in.get("/plugins/africastalking/").get_data(as_text=True)
    assert "Not used: AfricasTalking is enabled but its credentials failed validation" in overview
    assert "TextBee is used instead" in overview
    assert "Used now" in logged_in.get("/plugins/textbee/").get_data(as_text=True)


def test_only_viber_active_reaches_only_viber_users(logged_in, company):
    enable_gateway(company, "viber")
    page = logged_in.get("/plugins/").get_data(as_text=True)
    assert "No active SMS provider for SMS: only Viber is active" in page
    enable_gateway(company, "android")
    overview = logged_in.get("/plugins/viber/").get_data(as_text=True)
    assert "Used now for people subscribed to the Viber bot; everyone else gets SMS through Android" in overview


# ---------------------------------------------------------------- toggling and the sidebar

def test_plain_toggle_enables_and_the_sidebar_gets_an_entry(logged_in, company, admin):
    assert sidebar_plugins(logged_in.get("/plugins/").get_data(as_text=True)) == []
    response = logged_in.post("/plugins/textbee/enabled", data={"enabled": "on", "csrf_token": csrf_token(logged_in)})
    assert response.status_code == 302
    assert setting(company.id, "textbee").enabled is True
    page = logged_in.get(response.headers["Location"]).get_data(as_text=True)
    assert "TextBee is now enabled." in page
    assert sidebar_plugins(page) == ["textbee"]
    # Enabled without credentials: still no provider, and the page says why.
    assert "No active SMS provider" in page
    assert 'data-plugin="textbee"\n                   checked' in page
    [entry] = audit_entries(company.id)
    assert (entry.action, entry.subject, entry.user_id) == ("plugin.enabled", "TextBee SMS Gateway", admin.id)


def test_htmx_toggle_answers_the_list_and_the_sidebar_out_of_band(logged_in, company):
    enable_gateway(company, "africastalking")
    token = csrf_token(logged_in)
    response = logged_in.post("/plugins/viber/enabled", data={"enabled": "on", "csrf_token": token},
                              headers={"HX-Request": "true"})
    body = response.get_data(as_text=True)
    assert response.status_code == 200
    assert body.lstrip().startswith('<section id="plugin-list">') and "<html" not in body
    oob = body.split('hx-swap-oob="outerHTML:.sidebar nav"', 1)[1]
    assert sidebar_plugins(oob) == ["africastalking", "viber"]
    # Off again: gone from the list state, the sidebar and the database.
    response = logged_in.post("/plugins/africastalking/enabled", data={"csrf_token": token},
                              headers={"HX-Request": "true"})
    assert sidebar_plugins(response.get_data(as_text=True).split("hx-swap-oob", 1)[1]) == ["viber"]
    assert setting(company.id, "africastalking").enabled is False
    assert sidebar_plugins(logged_in.get("/customers/").get_data(as_text=True)) == ["viber"]
    assert [e.action for e in audit_entries(company.id)] == ["plugin.enabled", "plugin.disabled"]


def test_toggling_to_the_same_state_changes_and_logs_nothing(logged_in, company):
    enable_gateway(company, "textbee")
    logged_in.post("/plugins/textbee/enabled", data={"enabled": "on", "csrf_token": csrf_token(logged_in)})
    assert audit_entries(company.id) == []


def test_unknown_plugin_is_404(logged_in):
    assert logged_in.get("/plugins/twilio/").status_code == 404
    assert logged_in.post("/plugins/twilio/enabled", data={"csrf_token": csrf_token(logged_in)}).status_code == 404


def test_toggle_needs_the_csrf_token(logged_in, company):
    assert logged_in.post("/plugins/textbee/enabled", data={"enabled": "on"}).status_code == 400
    assert setting(company.id, "textbee") is None


# ---------------------------------------------------------------- roles

@responses.activate
def test_a_manager_can_neither_open_nor_change_the_plugins(client, company):
    enable_gateway(company, "africastalking", credentials={"api_key": AT_KEY, "username": "acme"})
    before = setting(company.id, "africastalking").credentials_encrypted
    manager = make_user(company, role="manager")
    login(client, manager.email)
    dashboard = client.get("/").get_data(as_text=True)
    assert "Settings → Plugins" not in dashboard and "/plugins/" not in dashboard
    pages = [client.get(path) for path in ("/plugins/", "/plugins/africastalking/", "/plugins/africastalking/settings")]
    assert [page.status_code for page in pages] == [403] * 3
    assert not any(AT_KEY[-4:] in page.get_data(as_text=True) for page in pages)
    token = csrf_token(client)
    refused = [
        client.post("/plugins/africastalking/enabled", data={"csrf_token": token}),
        client.post("/plugins/textbee/enabled", data={"enabled": "on", "csrf_token": token},
                    headers={"HX-Request": "true"}),
        client.post("/plugins/africastalking/settings", data={"api_key": "stolen-key-1234", "username": "evil",
                                                               "csrf_token": token}),
        client.post("/plugins/africastalking/connection-test", data={"csrf_token": token}),
        client.post("/plugins/africastalking/test-sms", data={"number": "0712345678", "csrf_token": token}),
    ]
    assert [r.status_code for r in refused] == [403] * 5
    assert len(responses.calls) == 0
    row = setting(company.id, "africastalking")
    assert row.enabled is True and row.credentials_encrypted == before
    assert setting(company.id, "textbee") is None or setting(company.id, "textbee").enabled is False
    assert audit_entries(company.id) == []
    assert db.session.scalar(select(Sms.id)) is None


# ---------------------------------------------------------------- credentials per provider

@responses.activate
def test_africastalking_credentials_are_validated_encrypted_and_masked(logged_in, company):
    at_balance()
    response = save(logged_in, "africastalking", username="acme", api_key=AT_KEY, sender_id="ACME",
                    environment="live", send_rate="")
    body = response.get_data(as_text=True)
    assert response.status_code == 200 and body.lstrip().startswith('<article id="plugin-settings">')
    assert 'Saved. Connected to AfricasTalking as "acme". Balance: KES 1785.50.' in body.replace("&#34;", '"')
    # The real check: GET /version1/user?username=… with the key in the apiKey header.
    [call] = responses.calls
    assert call.request.url == AT_USER + "?username=acme"
    assert call.request.headers["apiKey"] == AT_KEY
    row = setting(company.id, "africastalking")
    assert row.valid is True and row.validated_at is not None
    raw = db.session.execute(text("SELECT credentials_encrypted, options FROM gateway_setting WHERE id = :id"),
                             {"id": row.id}).one()
    assert AT_KEY not in raw[0] and AT_KEY[-8:] not in raw[0] and AT_KEY not in str(raw[1])
    assert decrypt(raw[0])["api_key"] == AT_KEY
    assert row.options["sender_id"] == "ACME" and row.options["environment"] == "live"
    page = logged_in.get("/plugins/africastalking/settings").get_data(as_text=True)
    assert "••••••••" + AT_KEY[-4:] in page
    assert AT_KEY not in page and AT_KEY[:-4] not in page
    assert 'value="acme"' in page  # the username is no secret


@responses.activate
def test_africastalking_refusal_shows_the_complaint_and_stores_nothing(logged_in, company):
    responses.add(responses.GET, AT_USER, body="The supplied authentication is invalid", status=401,
                  content_type="text/plain")
    response = save(logged_in, "africastalking", username="acme", api_key=AT_KEY, environment="live")
    body = response.get_data(as_text=True).replace("&#34;", '"')
    assert response.status_code == 422
    assert 'Not saved' in body and 'AfricasTalking refused the API key for username "acme"' in body
    assert AT_KEY not in body
    row = setting(company.id, "africastalking")
    assert row.credentials_encrypted is None and row.valid is False and row.options == {}
    [entry] = audit_entries(company.id)
    assert entry.action == "plugin.credentials_rejected" and entry.details["result"] == "invalid"
    assert AT_KEY not in json.dumps(entry.details)


@responses.activate
def test_a_refused_new_key_leaves_the_working_one_in_place(logged_in, company):
    enable_gateway(company, "africastalking", credentials={"api_key": AT_KEY, "username": "acme"},
                   options={"environment": "live"})
    responses.add(responses.GET, AT_USER, body="The supplied authentication is invalid", status=401)
    save(logged_in, "africastalking", username="acme", api_key="wrong-key-0000", environment="live")
    row = setting(company.id, "africastalking")
    assert decrypt(row.credentials_encrypted)["api_key"] == AT_KEY and row.valid is True


@responses.activate
def test_sandbox_environment_is_checked_against_the_sandbox(logged_in, company):
    responses.add(responses.GET, AT_SANDBOX_USER, json={"userData": {"balance": "KES 0.0000"}})
    response = save(logged_in, "africastalking", username="sandbox", api_key=AT_KEY, environment="sandbox")
    assert response.status_code == 200
    assert responses.calls[0].request.url.startswith(AT_SANDBOX_USER)
    assert setting(company.id, "africastalking").options["environment"] == "sandbox"


@responses.activate
def test_an_empty_secret_keeps_the_stored_one(logged_in, company):
    at_balance()
    save(logged_in, "africastalking", username="acme", api_key=AT_KEY, environment="live")
    at_balance()
    response = save(logged_in, "africastalking", username="acme", api_key="", sender_id="NEWID", environment="live")
    assert response.status_code == 200
    assert responses.calls[-1].request.headers["apiKey"] == AT_KEY
    row = setting(company.id, "africastalking")
    assert decrypt(row.credentials_encrypted)["api_key"] == AT_KEY and row.options["sender_id"] == "NEWID"
    saved = audit_entries(company.id)[-1]
    assert saved.details["fields"] == ["sender_id"] and saved.details["values"] == {"sender_id": "NEWID"}


@responses.activate
def test_missing_and_malformed_fields_are_refused_before_asking_the_provider(logged_in, company):
    response = save(logged_in, "textbee", api_key="", device_id="", daily_quota="lots", monthly_quota="300",
                    send_rate="-2")
    body = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "Enter the API key." in body and "Enter the device ID." in body
    assert "Enter a whole number, 1 or more." in body and "Enter a number above 0" in body
    assert 'value="lots"' in body  # what was typed stays in the form
    assert len(responses.calls) == 0
    assert setting(company.id, "textbee").credentials_encrypted is None
    assert audit_entries(company.id) == []


@responses.activate
def test_textbee_device_lookup_success_and_failures(logged_in, company):
    devices = {"data": [{"_id": "66a1f0c2e4b0a1b2c3d4e5f6", "brand": "samsung", "model": "SM-A135F", "enabled": True}]}
    responses.add(responses.GET, TEXTBEE_DEVICES, json=devices)
    responses.add(responses.GET, TEXTBEE_DEVICES, json={"error": "Unauthorized"}, status=401)
    responses.add(responses.GET, TEXTBEE_DEVICES, json=devices)

    unknown = save(logged_in, "textbee", api_key=TEXTBEE_KEY, device_id="no-such-device", webhook_secret="whsec_9f8e7d",
                   daily_quota="100", monthly_quota="1000")
    assert unknown.status_code == 422
    assert "no device no-such-device is registered" in unknown.get_data(as_text=True)
    assert responses.calls[0].request.headers["x-api-key"] == TEXTBEE_KEY

    bad_key = save(logged_in, "textbee", api_key="tb_wrong_0000", device_id="66a1f0c2e4b0a1b2c3d4e5f6",
                   webhook_secret="whsec_9f8e7d", daily_quota="100", monthly_quota="1000")
    assert bad_key.status_code == 422 and "TextBee refused the API key" in bad_key.get_data(as_text=True)
    assert setting(company.id, "textbee").credentials_encrypted is None

    ok = save(logged_in, "textbee", api_key=TEXTBEE_KEY, device_id="66a1f0c2e4b0a1b2c3d4e5f6",
              webhook_secret="whsec_9f8e7d", daily_quota="100", monthly_quota="1000", send_rate="1.5")
    assert ok.status_code == 200 and "Connected to TextBee device samsung SM-A135F." in ok.get_data(as_text=True)
    row = setting(company.id, "textbee")
    assert row.valid is True
    assert decrypt(row.credentials_encrypted) == {"api_key": TEXTBEE_KEY, "device_id": "66a1f0c2e4b0a1b2c3d4e5f6",
                                                  "webhook_secret": "whsec_9f8e7d"}
    assert row.options == {"daily_quota": 100, "monthly_quota": 1000, "send_rate": 1.5}
    page = logged_in.get("/plugins/textbee/settings").get_data(as_text=True)
    assert 'value="100"' in page and 'value="1.5"' in page and "whsec_9f8e7d" not in page


@responses.activate
def test_textbee_quotas_default_to_the_free_plan(logged_in, company):
    responses.add(responses.GET, TEXTBEE_DEVICES, json={"data": [{"_id": "dev-1", "enabled": True}]})
    save(logged_in, "textbee", api_key=TEXTBEE_KEY, device_id="dev-1", daily_quota="", monthly_quota="")
    assert setting(company.id, "textbee").options == {"daily_quota": 50, "monthly_quota": 300}


@responses.activate
def test_viber_account_info_success_and_refusal(logged_in, company):
    responses.add(responses.POST, VIBER_ACCOUNT, json={"status": 2, "status_message": "invalidAuthToken"})
    responses.add(responses.POST, VIBER_ACCOUNT, json={
        "status": 0, "status_message": "ok", "id": "pa:75346594275468546724", "name": "Acme Power",
        "uri": "acmepower", "subscribers_count": 35, "members": []})
    refused = save(logged_in, "viber", auth_token="bad-token-1234", sender_name="Acme")
    assert refused.status_code == 422 and "Viber refused the authentication token" in refused.get_data(as_text=True)
    assert setting(company.id, "viber").credentials_encrypted is None

    too_long = save(logged_in, "viber", auth_token=VIBER_TOKEN, sender_name="A" * 29)
    assert too_long.status_code == 422 and "at most 28 characters" in too_long.get_data(as_text=True)
    assert len(responses.calls) == 1

    ok = save(logged_in, "viber", auth_token=VIBER_TOKEN, sender_name="Acme Power")
    assert ok.status_code == 200 and "Connected to the Viber bot" in ok.get_data(as_text=True)
    assert responses.calls[-1].request.headers["X-Viber-Auth-Token"] == VIBER_TOKEN
    row = setting(company.id, "viber")
    assert decrypt(row.credentials_encrypted) == {"auth_token": VIBER_TOKEN}
    assert row.options["sender_name"] == "Acme Power" and VIBER_TOKEN not in row.credentials_encrypted


@responses.activate
def test_android_legacy_settings_are_checked_with_fcm_and_carry_the_migration_notice(logged_in, company):
    responses.add(responses.POST, FCM_SEND, json={"multicast_id": 1, "success": 0, "failure": 1, "canonical_ids": 0,
                                                  "results": [{"error": "InvalidRegistration"}]})
    responses.add(responses.POST, FCM_SEND, json={"multicast_id": 2, "success": 1, "failure": 0, "canonical_ids": 0,
                                                  "results": [{"message_id": "fake_message_id"}]})
    page = logged_in.get("/plugins/android/settings").get_data(as_text=True)
    assert "Migration notice" in page and "/plugins/textbee/" in page
    refused = save(logged_in, "android", fcm_server_key=FCM_KEY, device_token="old-token")
    assert refused.status_code == 422 and "InvalidRegistration" in refused.get_data(as_text=True)
    ok = save(logged_in, "android", fcm_server_key=FCM_KEY, device_token="fresh-token")
    assert ok.status_code == 200 and "deprecated" in ok.get_data(as_text=True)
    assert responses.calls[-1].request.headers["Authorization"] == f"key={FCM_KEY}"
    assert decrypt(setting(company.id, "android").credentials_encrypted)["device_token"] == "fresh-token"


@responses.activate
def test_plain_save_redirects_with_the_result_and_a_plain_refusal_shows_the_whole_page(logged_in, company):
    at_balance()
    saved = save(logged_in, "africastalking", htmx=False, username="acme", api_key=AT_KEY, environment="live")
    assert saved.status_code == 302
    assert "Saved. Connected to AfricasTalking" in logged_in.get(saved.headers["Location"]).get_data(as_text=True)
    responses.add(responses.GET, AT_USER, body="The supplied authentication is invalid", status=401)
    refused = save(logged_in, "africastalking", htmx=False, username="acme", api_key="wrong-0000", environment="live")
    body = refused.get_data(as_text=True)
    assert refused.status_code == 422 and "<html" in body and "refused the API key" in body


# ---------------------------------------------------------------- test connection

@responses.activate
def test_test_connection_records_a_broken_key_and_sending_moves_on(logged_in, company):
    enable_gateway(company, "africastalking", credentials={"api_key": AT_KEY, "username": "acme"})
    enable_gateway(company, "textbee")
    responses.add(responses.GET, AT_USER, body="The supplied authentication is invalid", status=401)
    response = logged_in.post("/plugins/africastalking/connection-test", data={"csrf_token": csrf_token(logged_in)},
                              headers={"HX-Request": "true"})
    body = response.get_data(as_text=True)
    assert body.lstrip().startswith('<article id="connection-test">') and "refused the API key" in body
    row = setting(company.id, "africastalking")
    assert row.valid is False and "refused the API key" in row.validation_message
    page = logged_in.get("/plugins/").get_data(as_text=True)
    assert "AfricasTalking is enabled but its credentials failed validation" in page
    assert "so TextBee is used now" in page
    entry = audit_entries(company.id)[-1]
    assert entry.action == "plugin.connection_tested" and entry.details["result"] == "invalid"
    # Fixed at the provider's side: the next test puts it back first in line.
    at_balance()
    logged_in.post("/plugins/africastalking/connection-test", data={"csrf_token": csrf_token(logged_in)})
    assert setting(company.id, "africastalking").valid is True
    assert "AfricasTalking is used now" in logged_in.get("/plugins/").get_data(as_text=True)


def test_test_connection_without_saved_credentials_says_so(logged_in, company):
    body = logged_in.post("/plugins/viber/connection-test", data={"csrf_token": csrf_token(logged_in)},
                          headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "No credentials are saved yet" in body


# ---------------------------------------------------------------- test SMS

def test_test_sms_is_queued_through_the_normal_path(logged_in, company, admin):
    enable_gateway(company, "africastalking")
    response = logged_in.post("/plugins/africastalking/test-sms", data={"number": "0712 345 678",
                                                                       "csrf_token": csrf_token(logged_in)},
                              headers={"HX-Request": "true"})
    body = response.get_data(as_text=True)
    assert response.status_code == 200 and body.lstrip().startswith('<article id="test-sms">')
    sms = db.session.scalar(select(Sms))
    assert (sms.number, sms.trigger, sms.status, sms.sender_user_id) == ("+254712345678", "test", "queued", admin.id)
    assert "Test SMS to +254 712 345678" in body and "status-queued" in body
    assert f'hx-get="/plugins/africastalking/test-sms/{sms.id}"' in body
    # The status line polls itself until the message settles.
    sms.status = "delivered"
    db.session.commit()
    status = logged_in.get(f"/plugins/africastalking/test-sms/{sms.id}", headers={"HX-Request": "true"})
    text_ = status.get_data(as_text=True)
    assert text_.lstrip().startswith('<p id="test-sms-status"') and "status-delivered" in text_
    assert "hx-get" not in text_
    assert audit_entries(company.id)[-1].action == "plugin.test_sms"


def test_test_sms_refusals_say_why_and_store_nothing(logged_in, company):
    token = csrf_token(logged_in)
    none_active = logged_in.post("/plugins/textbee/test-sms", data={"number": "0712345678", "csrf_token": token},
                                 headers={"HX-Request": "true"})
    assert none_active.status_code == 422 and "No active SMS provider" in none_active.get_data(as_text=True)
    enable_gateway(company, "textbee")
    bad_number = logged_in.post("/plugins/textbee/test-sms", data={"number": "12ab", "csrf_token": token},
                                headers={"HX-Request": "true"})
    assert bad_number.status_code == 422 and "is not" in bad_number.get_data(as_text=True)
    assert db.session.scalar(select(Sms.id)) is None


def test_another_companys_test_sms_is_not_visible(logged_in, company):
    other = make_company("Other")
    sms = Sms(company_id=other.id, number="+254712000099", body="x", trigger="test")
    db.session.add(sms)
    db.session.commit()
    assert logged_in.get(f"/plugins/textbee/test-sms/{sms.id}").status_code == 404


# ---------------------------------------------------------------- overview

def test_overview_figures_count_this_gateways_last_seven_days(logged_in, company):
    now = utcnow()
    rows = [("textbee", "sent", now), ("textbee", "delivered", now), ("textbee", "delivered", now),
            ("textbee", "failed", now), ("textbee", "queued", now), ("textbee", "delivered", now - timedelta(days=8)),
            ("africastalking", "delivered", now)]
    db.session.add_all(Sms(company_id=company.id, number="+254712000001", body="hi", gateway=g, status=s, created_at=t)
                       for g, s, t in rows)
    db.session.add(Sms(company_id=make_company("Other").id, number="+254712000002", body="hi", gateway="textbee",
                       status="delivered"))
    db.session.commit()
    refresh_rollups()
    page = logged_in.get("/plugins/textbee/?range=7d").get_data(as_text=True)
    figures = dict(re.findall(r'data-figure="(\w+)">([^<]+)<', page))
    assert figures["messages"] == "5"
    assert figures["rate"] == "66.7 %"  # 2 delivered of 3 with a known outcome


def test_overview_shows_callback_urls_with_copy_buttons_and_setup_steps(logged_in, company):
    page = logged_in.get("/plugins/africastalking/").get_data(as_text=True)
    secret = setting(company.id, "africastalking").callback_secret
    url = f"http://mpm.test/api/africas-talking/callback/{company.id}/delivery-reports?token={secret}"
    match = re.search(r'<code id="(callback-\d)">([^<]+)</code>\s*<button[^>]*data-copy="#([^"]+)"', page)
    assert match.group(2) == url and match.group(1) == match.group(3)
    assert "Settings → API Key" in page
    assert "1 of 4" in page


# ---------------------------------------------------------------- audit log and secrets

@responses.activate
def test_audit_log_names_who_and_what_but_never_the_secret(logged_in, company, admin, caplog):
    caplog.set_level(logging.DEBUG)
    at_balance()
    save(logged_in, "africastalking", username="acme", api_key=AT_KEY, environment="live")
    logged_in.post("/plugins/africastalking/enabled", data={"enabled": "on", "csrf_token": csrf_token(logged_in)})
    entries = audit_entries(company.id)
    assert [e.action for e in entries] == ["plugin.credentials_saved", "plugin.enabled"]
    assert all(e.user_id == admin.id for e in entries)
    assert entries[0].details["fields"] == ["username", "api_key", "environment"]
    assert entries[0].details["values"] == {"username": "acme", "environment": "live"}
    stored = db.session.execute(text("SELECT details FROM audit_entry")).scalars().all()
    assert not any(AT_KEY in str(d) or AT_KEY[-8:] in str(d) for d in stored)
    assert AT_KEY not in caplog.text
    page = logged_in.get("/plugins/").get_data(as_text=True)
    log = page.split("Recent changes", 1)[1]
    assert admin.email in log and "credentials saved and validated" in log and "changed: username, api_key" in log
    assert AT_KEY not in page


@responses.activate
def test_a_provider_echoing_the_key_is_masked_before_it_is_shown_or_stored(logged_in, company):
    responses.add(responses.GET, TEXTBEE_DEVICES, json={"data": [{"_id": TEXTBEE_KEY}]})
    # TextBee lists its device ids in the complaint; here one happens to equal the key typed.
    response = save(logged_in, "textbee", api_key=TEXTBEE_KEY, device_id="dev-x", daily_quota="50",
                    monthly_quota="300")
    assert response.status_code == 422
    assert TEXTBEE_KEY not in response.get_data(as_text=True)
    assert TEXTBEE_KEY not in json.dumps(audit_entries(company.id)[-1].details)


def test_plugins_of_another_company_are_separate(client, app_ctx):
    mine, theirs = make_company("Mine"), make_company("Theirs")
    enable_gateway(theirs, "africastalking", credentials={"api_key": AT_KEY, "username": "theirs"})
    login(client, make_user(mine).email)
    page = client.get("/plugins/").get_data(as_text=True)
    assert "No active SMS provider" in page and sidebar_plugins(page) == []
    assert "••••" + AT_KEY[-4:] not in client.get("/plugins/africastalking/settings").get_data(as_text=True)


@responses.activate
def test_test_sms_goes_out_through_the_gateway_used_now(app, logged_in, company):
    enable_gateway(company, "africastalking", credentials={"api_key": AT_KEY, "username": "acme"})
    responses.add(responses.POST, "https://api.africastalking.com/version1/messaging", json={"SMSMessageData": {
        "Message": "Sent to 1/1 Total Cost: KES 0.8000",
        "Recipients": [{"statusCode": 101, "number": "+254712345678", "status": "Success", "cost": "KES 0.8000",
                        "messageId": "ATXid_5f3c0a1b2c"}]}})
    logged_in.post("/plugins/textbee/test-sms", data={"number": "+254 712 345678", "csrf_token": csrf_token(logged_in)},
                   headers={"HX-Request": "true"})
    sms_id = db.session.scalar(select(Sms.id))
    run_jobs(app)
    [call] = [c for c in responses.calls if c.request.method == "POST"]
    assert "to=%2B254712345678" in call.request.body and call.request.headers["apiKey"] == AT_KEY
    line = logged_in.get(f"/plugins/textbee/test-sms/{sms_id}", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "status-sent" in line and "via AfricasTalking" in line
    assert "hx-get" in line  # still waiting for the delivery report


def test_the_fallback_order_is_spelled_out(logged_in, company):
    enable_gateway(company, "africastalking")
    enable_gateway(company, "textbee")
    page = logged_in.get("/plugins/").get_data(as_text=True)
    assert "AfricasTalking is used now; when it fails, TextBee takes over." in page
    assert ("Standby: AfricasTalking comes first in the priority order; TextBee takes over when AfricasTalking fails."
            in logged_in.get("/plugins/textbee/").get_data(as_text=True))
