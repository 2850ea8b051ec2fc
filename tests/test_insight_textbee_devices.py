"""Several TextBee phones: the first usable one sends, a missing, quiet or failing one is passed over."""
from datetime import timedelta

from conftest import enable_simulated_gateway, run_jobs
from mpm.dev.simulator import DEVICE_ID
from mpm.extensions import db
from mpm.gateways import textbee_devices
from mpm.messaging.send import Recipient, queue_messages
from mpm.models import Sms
from mpm.models.base import utcnow
from mpm.plugins.gateway_health import gateway_health, poll_textbee_devices


def test_device_ids_are_read_in_order_without_repeats():
    assert textbee_devices.device_ids({"device_id": " a1, b2;a1  c3 "}) == ["a1", "b2", "c3"]
    assert textbee_devices.device_ids({}) == []


def test_a_quiet_disabled_or_resting_phone_goes_to_the_back(app_ctx):
    now = utcnow()
    textbee_devices.record_seen("quiet", True, now - timedelta(minutes=30))
    textbee_devices.record_seen("off", False, now)
    textbee_devices.record_seen("fine", True, now - timedelta(minutes=2))
    assert textbee_devices.sending_order(["quiet", "off", "fine", "new"], now) == ["fine", "new", "quiet", "off"]
    textbee_devices.mark_failing("fine", "TextBee answered HTTP 500")
    assert textbee_devices.sending_order(["quiet", "fine", "new"], now)[0] == "new"
    textbee_devices.mark_working("fine")
    assert textbee_devices.sending_order(["quiet", "fine", "new"], now)[0] == "fine"


def test_a_phone_textbee_does_not_know_hands_the_message_to_the_backup(app, logged_in, company, simulator):
    setting = enable_simulated_gateway(company, simulator, "textbee")
    from mpm.plugins.credentials import encrypt
    from mpm.plugins.gateway_settings import config_for

    credentials = config_for(setting).credentials
    setting.credentials_encrypted = encrypt({**credentials, "device_id": f"retired-phone, {DEVICE_ID}"})
    db.session.commit()
    [sms] = queue_messages(company.id, [Recipient(number="+254712345678")], "Meter reading due")
    db.session.commit()
    run_jobs(app)

    db.session.expire_all()
    sent = db.session.get(Sms, sms.id)
    assert sent.status in ("sent", "delivered") and sent.gateway == "textbee"
    assert [m["number"] for m in simulator.received("textbee")] == ["+254712345678"]
    poll_textbee_devices(company.id)
    health = gateway_health(company.id, "textbee")
    assert health.registered == ["retired-phone", DEVICE_ID]
    assert health.sending_device == DEVICE_ID
    assert "Device does not exist or is not enabled" in health.resting["retired-phone"]
    page = logged_in.get("/plugins/textbee/").get_data(as_text=True)
    assert "not listed" in page and "sends now" in page and "backup 1" in page
