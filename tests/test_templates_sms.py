"""Settings → SMS templates: validation, rendering, preview, defaults."""
import pytest

from conftest import csrf_token, login, make_user
from mpm import sms_templates
from mpm.extensions import db
from mpm.models import AuditEntry, SmsTemplate
from sqlalchemy import select


def test_defaults_follow_mpm_and_render_with_values(company):
    text = sms_templates.render(company.id, "transaction_meter", {
        "name": "Jane", "surname": "Wanjiru", "meter_serial": "47000123456", "token": "1111-2222", "energy": "12.5"})
    assert text == ("Dear Jane Wanjiru, your transaction is confirmed. Meter Serial: 47000123456. "
                    "Token: 1111-2222, Energy: 12.5 kWh\nAcme Mini-Grids")


def test_header_and_footer_go_around_every_automatic_message(company):
    sms_templates.save_template(company.id, "header", "[company]:", None)
    sms_templates.save_template(company.id, "footer", "Reply STOP to opt out.", None)
    text = sms_templates.render(company.id, "transaction_no_token",
                                {"name": "Jane", "surname": "W", "amount": "500", "currency": "KES"})
    assert text == ("Acme Mini-Grids:\nDear Jane W, we received your payment of 500 KES. Thank you.\n"
                    "Reply STOP to opt out.")


def test_unknown_placeholders_are_refused_by_name_and_nothing_is_saved(company):
    with pytest.raises(sms_templates.TemplateInvalid) as refused:
        sms_templates.save_template(company.id, "transaction_no_token", "Hi [nmae], [amount] [token] [nmae]", None)
    message = str(refused.value)
    # [token] exists, but a no-token confirmation cannot fill it.
    assert "[nmae], [token]" in message and "Unknown placeholders" in message
    assert db.session.scalar(select(SmsTemplate)) is None
    with pytest.raises(sms_templates.TemplateInvalid, match="empty"):
        sms_templates.save_template(company.id, "ticket_closed", "   ", None)


def test_saved_template_is_used_and_audited(company, admin):
    sms_templates.save_template(company.id, "ticket_closed", "Ticket [ticket_id] done, [name].", admin.id)
    assert sms_templates.render(company.id, "ticket_closed", {"ticket_id": 7, "name": "Ann"}).startswith(
        "Ticket 7 done, Ann.")
    entry = db.session.scalar(select(AuditEntry))
    assert entry.action == "sms_template.saved" and entry.user_id == admin.id


def test_settings_page_saves_refuses_and_resets(logged_in, company):
    page = logged_in.get("/settings/sms").get_data(as_text=True)
    for label in ("Transaction confirmation — meter token", "Ticket assigned — to the customer",
                  "Resend information — no transaction found", "Header", "Footer"):
        assert label in page
    # Each preview loads into its own box (not over its template's form, which targets the article).
    assert 'id="preview-footer" hx-post="/settings/sms/templates/footer/preview" hx-trigger="load"' in page
    assert page.count('hx-target="this"') == len(sms_templates.KINDS)
    token = csrf_token(logged_in)
    bad = logged_in.post("/settings/sms/templates/transaction_shs", headers={"HX-Request": "true"},
                         data={"body": "Token [tokne]", "csrf_token": token})
    assert bad.status_code == 422
    fragment = bad.get_data(as_text=True)
    assert fragment.lstrip().startswith('<article id="template-transaction_shs">')
    assert "Unknown placeholder [tokne]" in fragment and "Token [tokne]" in fragment
    ok = logged_in.post("/settings/sms/templates/transaction_shs", headers={"HX-Request": "true"},
                        data={"body": "Token [token] for [duration] [unit]", "csrf_token": token})
    assert ok.status_code == 200 and "saved" in ok.get_data(as_text=True)
    assert "Token [token] for [duration] [unit]" in logged_in.get("/settings/sms").get_data(as_text=True)
    logged_in.post("/settings/sms/templates/transaction_shs", data={"body": "x", "reset": "1", "csrf_token": token})
    db.session.expire_all()
    assert sms_templates.template_body(company.id, "transaction_shs") == \
        sms_templates.KINDS["transaction_shs"].default


def test_preview_renders_sample_values_with_encoding_and_segments(logged_in):
    token = csrf_token(logged_in)
    plain = logged_in.post("/settings/sms/templates/transaction_meter/preview",
                           data={"body": "Hi [name], token [token]", "csrf_token": token}).get_data(as_text=True)
    assert "Hi Jane, token 1234-5678-9012-3456-7890" in plain
    assert "GSM-7" in plain and "1 segment" in plain
    emoji = logged_in.post("/settings/sms/templates/transaction_meter/preview",
                           data={"body": "Hi [name] ☀️ " + "x" * 60, "csrf_token": token}).get_data(as_text=True)
    assert "UCS-2" in emoji and "2 segments" in emoji
    unknown = logged_in.post("/settings/sms/templates/transaction_meter/preview",
                             data={"body": "Hi [nme]", "csrf_token": token}).get_data(as_text=True)
    assert "Unknown placeholder [nme]" in unknown


def test_a_manager_sees_templates_but_cannot_save(client, company):
    manager = make_user(company, role="manager")
    login(client, manager.email)
    assert client.get("/settings/sms").status_code == 200
    refused = client.post("/settings/sms/templates/footer", data={"body": "x", "csrf_token": csrf_token(client)})
    assert refused.status_code == 403
    assert db.session.scalar(select(SmsTemplate)) is None


def test_transaction_sms_toggle_persists(logged_in, company):
    token = csrf_token(logged_in)
    off = logged_in.post("/settings/sms/transaction-sms", data={"csrf_token": token}, headers={"HX-Request": "true"})
    assert "Off: payments are recorded without an SMS" in off.get_data(as_text=True)
    db.session.expire_all()
    assert company.settings["transaction_sms_enabled"] is False
    logged_in.post("/settings/sms/transaction-sms", data={"enabled": "on", "csrf_token": token})
    db.session.expire_all()
    assert company.settings["transaction_sms_enabled"] is True


def test_keywords_are_saved_and_clashes_refused(logged_in, company):
    token = csrf_token(logged_in)
    clash = logged_in.post("/settings/sms/keywords", data={
        "opt_out_words": "STOP END", "opt_in_words": "START stop", "resend_key": "Resend",
        "ticket_keyword": "ticket", "csrf_token": token})
    assert clash.status_code == 422 and "both an opt-out word and an opt-in word" in clash.get_data(as_text=True)
    logged_in.post("/settings/sms/keywords", data={
        "opt_out_words": "STOP, ACHA", "opt_in_words": "START", "resend_key": "Tuma",
        "ticket_keyword": "tiketi", "csrf_token": token})
    db.session.expire_all()
    assert company.settings["opt_out_words"] == ["STOP", "ACHA"] and company.settings["resend_key"] == "Tuma"
