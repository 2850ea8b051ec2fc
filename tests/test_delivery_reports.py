"""Delivery reports through the durable queue: the endpoint takes them, the writer applies them in
batches; reports that beat their provider id are parked and applied later; AfricasTalking reports
for unknown ids find their `unconfirmed` message; nothing is lost when the database or the writer
is down."""
import json
import logging
import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DataError

from mpm import create_app, leases
from mpm.extensions import db
from mpm.messaging import delivery
from mpm.messaging import status as st
from mpm.models import AppliedReports, ParkedReport, Sms, SmsEvent
from mpm.models.base import utcnow
from mpm.plugins.gateway_settings import gateway_setting
from mpm.queue import redis_connection
from tests.conftest import drain_reports, enable_gateway

pytestmark = pytest.mark.queue


def _message(company, provider_id=None, number="+254712345678", status=st.SENT, gateway="africastalking",
             report_due_at=None, created_at=None) -> Sms:
    sms = Sms(company_id=company.id, direction="outbound", number=number, body="Hi", status=status, gateway=gateway,
              provider_message_id=provider_id, report_due_at=report_due_at, created_at=created_at or utcnow())
    db.session.add(sms)
    db.session.commit()
    return sms


def _report(client, company, provider_id, status="Success", number="+254712345678", **extra):
    token = gateway_setting(company.id, "africastalking").callback_secret
    response = client.post(f"/api/africas-talking/callback/{company.id}/delivery-reports?token={token}",
                           data={"id": provider_id, "status": status, "phoneNumber": number, **extra})
    assert response.status_code == 200
    return response


def _row(sms_id) -> Sms:
    db.session.expire_all()
    return db.session.get(Sms, sms_id)


def _callback_events(sms_id) -> list[tuple[str, str]]:
    return [(e.status, e.detail) for e in db.session.scalars(
        select(SmsEvent).where(SmsEvent.sms_id == sms_id, SmsEvent.kind == "callback").order_by(SmsEvent.id))]


@pytest.fixture
def at(company):
    enable_gateway(company, "africastalking")
    return company


def test_the_endpoint_only_queues_and_the_writer_applies(app, client, at):
    sms = _message(at, "ATXid_1")
    _report(client, at, "ATXid_1")
    assert _row(sms.id).status == "sent"  # answered before any database write
    assert redis_connection().xlen(delivery.STREAM) == 1
    drain_reports(app)
    assert _row(sms.id).status == "delivered"
    assert redis_connection().xlen(delivery.STREAM) == 0  # removed once committed


def test_a_burst_in_one_batch_with_replays_moves_each_message_once(app, client, at):
    messages = [_message(at, f"ATXid_{i}", number=f"+2547120000{i:02d}") for i in range(30)]
    for i in range(30):
        _report(client, at, f"ATXid_{i}", "Failed" if i % 3 == 0 else "Success", f"+2547120000{i:02d}",
                failureReason="UserInBlackList")
    for i in range(30):  # late and duplicate reports: nothing moves back
        _report(client, at, f"ATXid_{i}", "Buffered", f"+2547120000{i:02d}")
        _report(client, at, f"ATXid_{i}", "Success", f"+2547120000{i:02d}")
    drain_reports(app)
    for i, sms in enumerate(messages):
        row = _row(sms.id)
        assert row.status == ("failed" if i % 3 == 0 else "delivered")
        if i % 3 == 0:
            assert "UserInBlackList" in row.error
        events = _callback_events(sms.id)
        assert len(events) == 3 and sum(d.startswith("ignored") for _, d in events) == 2
    moved_before = db.session.scalar(select(func.count()).select_from(SmsEvent).where(
        SmsEvent.kind == "callback", SmsEvent.detail.not_like("ignored%")))
    for i in range(30):
        _report(client, at, f"ATXid_{i}", "Sent", f"+2547120000{i:02d}")
    drain_reports(app)
    assert {_row(s.id).status for s in messages} == {"failed", "delivered"}
    assert db.session.scalar(select(func.count()).select_from(SmsEvent).where(
        SmsEvent.kind == "callback", SmsEvent.detail.not_like("ignored%"))) == moved_before


def test_reports_within_one_batch_apply_in_order(app, client, at):
    sms = _message(at, "ATXid_1", status=st.SENDING)
    for report in ("Sent", "Buffered", "Success", "Failed"):
        _report(client, at, "ATXid_1", report)
    drain_reports(app)
    assert _row(sms.id).status == "delivered"
    statuses = [(s, d.startswith("ignored")) for s, d in _callback_events(sms.id)]
    assert statuses == [("sent", False), ("sent", True), ("delivered", False), ("failed", True)]


def test_a_report_that_beats_its_provider_id_is_parked_then_applied(app, client, at):
    _report(client, at, "ATXid_early", "Success")
    drain_reports(app)
    assert db.session.scalar(select(func.count()).select_from(ParkedReport)) == 1
    sms = _message(at, None, status=st.SENDING)
    # The send's answer comes: the id is stored, then dispatch kicks the writer.
    sms.provider_message_id = "ATXid_early"
    db.session.commit()
    delivery.apply_parked_reports(at.id, "africastalking")
    drain_reports(app)
    assert _row(sms.id).status == "delivered"
    assert db.session.scalar(select(func.count()).select_from(ParkedReport)) == 0


def test_parked_reports_are_also_retried_by_any_later_writer_cycle(app, client, at):
    _report(client, at, "ATXid_early", "Failed", failureReason="DeliveryFailure")
    drain_reports(app)
    sms = _message(at, "ATXid_early", status=st.SENDING)
    other = _message(at, "ATXid_other", number="+254700000001")
    _report(client, at, "ATXid_other", "Success", "+254700000001")  # any report wakes the writer
    drain_reports(app)
    assert _row(sms.id).status == "failed" and "DeliveryFailure" in _row(sms.id).error
    assert _row(other.id).status == "delivered"


def test_parking_is_bounded_per_company(app, client, at, caplog):
    app.config["REPORT_PARK_LIMIT"] = 3
    for i in range(5):
        _report(client, at, f"ATXid_forged_{i}")
    with caplog.at_level(logging.WARNING, logger="mpm.messaging.delivery"):
        drain_reports(app)
    assert db.session.scalar(select(func.count()).select_from(ParkedReport)) == 3
    assert "dropped 2 reports for unknown ids" in caplog.text


def test_parked_reports_older_than_the_message_validity_are_dropped_with_a_log_line(app, client, at, caplog):
    db.session.add(ParkedReport(company_id=at.id, gateway="africastalking", provider_message_id="ATXid_old",
                                status="delivered", received_at=utcnow() - timedelta(days=8)))
    db.session.commit()
    with caplog.at_level(logging.WARNING, logger="mpm.messaging.delivery"):
        delivery.ensure_report_writer()
        drain_reports(app)
    assert db.session.scalar(select(func.count()).select_from(ParkedReport)) == 0
    assert "dropped 1 parked delivery reports" in caplog.text


def test_an_unknown_africastalking_id_finds_its_unconfirmed_message_by_number(app, client, at):
    due = utcnow() + timedelta(minutes=30)
    older = _message(at, None, status=st.UNCONFIRMED, report_due_at=due, created_at=utcnow() - timedelta(minutes=2))
    newer = _message(at, None, status=st.UNCONFIRMED, report_due_at=due)
    stranger = _message(at, None, number="+254700000009", status=st.UNCONFIRMED, report_due_at=due)
    _report(client, at, "ATXid_a", "Sent")
    _report(client, at, "ATXid_a", "Success")  # the same id again: same message
    _report(client, at, "ATXid_b", "Failed", failureReason="UserInBlackList")
    drain_reports(app)
    first, second = _row(older.id), _row(newer.id)
    assert (first.provider_message_id, first.status) == ("ATXid_a", "delivered")
    assert (second.provider_message_id, second.status) == ("ATXid_b", "failed")
    assert first.report_due_at is None and second.report_due_at is None  # the wait is over
    assert _row(stranger.id).status == st.UNCONFIRMED  # another number: untouched


def test_an_unconfirmed_message_past_its_wait_is_not_matched(app, client, at):
    late = _message(at, None, status=st.UNCONFIRMED, report_due_at=utcnow() - timedelta(minutes=1))
    _report(client, at, "ATXid_a", "Success")
    drain_reports(app)
    assert _row(late.id).status == st.UNCONFIRMED and _row(late.id).provider_message_id is None
    assert db.session.scalar(select(func.count()).select_from(ParkedReport)) == 1


def test_a_report_before_the_timeout_waits_for_the_message_to_become_unconfirmed(app, client, at):
    """Late accept: the provider's report comes while we still wait for its answer (the message is
    `sending`, no id); then our read timeout makes it `unconfirmed`."""
    sms = _message(at, None, status=st.SENDING)
    _report(client, at, "ATXid_a", "Success")
    drain_reports(app)
    assert _row(sms.id).status == st.SENDING
    sms = _row(sms.id)
    sms.status, sms.report_due_at = st.UNCONFIRMED, utcnow() + timedelta(minutes=30)
    db.session.commit()
    delivery.apply_parked_reports(at.id, "africastalking")
    drain_reports(app)
    assert (_row(sms.id).status, _row(sms.id).provider_message_id) == ("delivered", "ATXid_a")


def test_reports_wait_in_redis_while_the_database_is_unreachable(app, client, at, tmp_path, redis_url):
    sms = _message(at, "ATXid_1")
    _report(client, at, "ATXid_1")
    # A writer whose database cannot be opened: the batch stays in Redis, nothing is lost.
    down = create_app({"TESTING": True, "SECRET_KEY": "x", "REDIS_URL": redis_url,
                       "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'missing-dir' / 'db.sqlite3'}"})
    with down.app_context():
        delivery.write_reports()
    assert redis_connection().xlen(delivery.STREAM) == 1
    assert _row(sms.id).status == "sent"
    drain_reports(app)  # the database is back
    assert _row(sms.id).status == "delivered"
    assert redis_connection().xlen(delivery.STREAM) == 0


class _Killed(BaseException):
    """The writer's process dies here (a BaseException: nothing in the writer catches it)."""


def _writer_dies(app, monkeypatch, target, name, replacement=None) -> None:
    """Run the writer as a job that dies when it reaches `target.name` (or inside `replacement`,
    put there instead); its lease then expires."""
    def die(*args, **kwargs):
        raise _Killed()

    with monkeypatch.context() as patch:
        patch.setattr(target, name, replacement or die)
        with app.app_context(), pytest.raises(_Killed):
            delivery.write_reports()
    redis_connection().delete("mpm:lease:" + delivery.WRITER_LEASE)


def test_a_batch_a_writer_died_on_before_its_commit_is_applied_by_the_next(app, client, at, monkeypatch):
    sms = _message(at, "ATXid_1")
    _report(client, at, "ATXid_1")
    _writer_dies(app, monkeypatch, delivery, "apply_reports")
    assert _row(sms.id).status == "sent"
    assert redis_connection().xlen(delivery.STREAM) == 1  # still waiting
    delivery.ensure_report_writer()
    drain_reports(app)
    assert _row(sms.id).status == "delivered"
    assert len(_callback_events(sms.id)) == 1
    assert redis_connection().xlen(delivery.STREAM) == 0


def test_a_batch_a_writer_died_on_after_its_commit_is_not_applied_again(app, client, at, monkeypatch):
    sms = _message(at, "ATXid_1")
    _report(client, at, "ATXid_1")
    # Committed, then killed before the batch was acknowledged: the next writer reads it again and
    # only acknowledges it (the database knows that batch), without a second "ignored" event.
    _writer_dies(app, monkeypatch, type(redis_connection().pipeline()), "execute")
    assert _row(sms.id).status == "delivered"
    assert redis_connection().xlen(delivery.STREAM) == 1
    later = _message(at, "ATXid_2", number="+254712345679")
    _report(client, at, "ATXid_2", number="+254712345679")  # came meanwhile: applied by the same writer
    delivery.ensure_report_writer()
    drain_reports(app)
    assert _callback_events(sms.id) == [("delivered", "AfricasTalking: Success")]
    assert _row(later.id).status == "delivered" and len(_callback_events(later.id)) == 1
    assert redis_connection().xlen(delivery.STREAM) == 0


def test_of_a_batch_a_writer_applied_report_by_report_only_the_rest_is_applied_again(app, client, at, monkeypatch):
    messages = [_message(at, f"ATXid_{i}", number=f"+25471234567{i}") for i in range(3)]
    for i in range(3):
        _report(client, at, f"ATXid_{i}", number=f"+25471234567{i}")
    # The batch as a whole was refused (a report the database will not take): one transaction per
    # report. The writer dies on the third, after the first two were committed.
    single = []

    def refuse_batches_die_on_the_third(reports):
        if len(reports) > 1:
            raise DataError("INSERT …", {}, Exception("value too long"))
        single.append(reports)
        if len(single) == 3:
            raise _Killed()
        return apply_reports(reports)

    apply_reports = delivery.apply_reports
    _writer_dies(app, monkeypatch, delivery, "apply_reports", refuse_batches_die_on_the_third)
    assert [_row(m.id).status for m in messages] == ["delivered", "delivered", "sent"]
    delivery.ensure_report_writer()
    drain_reports(app)
    for sms in messages:
        assert _row(sms.id).status == "delivered"
        assert len(_callback_events(sms.id)) == 1
    assert redis_connection().xlen(delivery.STREAM) == 0


def test_a_second_writer_holding_the_same_batch_waits_for_the_first_and_applies_nothing_twice(
        app, client, at, monkeypatch):
    earlier = _message(at, "ATXid_earlier", number="+254712345600")
    _report(client, at, "ATXid_earlier", number="+254712345600")
    drain_reports(app)  # an earlier batch: the writers' record of the last batch exists
    messages = [_message(at, f"ATXid_{i}", number=f"+25471234567{i}") for i in range(3)]
    for i in range(3):
        _report(client, at, f"ATXid_{i}", number=f"+25471234567{i}")
    # The first writer has applied the batch and not committed yet when a second writer (its lease
    # lapsed meanwhile) reads the same entries, still unacknowledged.
    applied, go_on = threading.Event(), threading.Event()
    mark_applied = delivery._mark_applied

    def mark_then_wait(*args):
        mark_applied(*args)
        if threading.current_thread().name == "first-writer":
            applied.set()
            assert go_on.wait(30)

    monkeypatch.setattr(delivery, "_mark_applied", mark_then_wait)
    handled = {}

    def writer(name):
        with app.app_context():
            handled[name] = delivery.write_reports()
            db.session.remove()

    first = threading.Thread(target=writer, args=("first",), name="first-writer")
    first.start()
    assert applied.wait(30)
    second = threading.Thread(target=writer, args=("second",), name="second-writer")
    second.start()
    second.join(0.5)  # it waits for the first one's transaction
    go_on.set()
    first.join(30)
    second.join(30)
    assert handled == {"first": 3, "second": 0}
    for sms in [earlier, *messages]:
        assert _row(sms.id).status == "delivered"
        assert len(_callback_events(sms.id)) == 1
    assert redis_connection().xlen(delivery.STREAM) == 0


def test_a_writer_going_report_by_report_skips_what_another_writer_applied_meanwhile(app, client, at, monkeypatch):
    messages = [_message(at, f"ATXid_{i}", number=f"+25471234567{i}") for i in range(3)]
    for i in range(3):
        _report(client, at, f"ATXid_{i}", number=f"+25471234567{i}")
    # The second writer's batch is refused as a whole; before it goes report by report, the first
    # writer (whose lease lapsed meanwhile) applies the same entries as one batch.
    apply_reports, one_by_one = delivery.apply_reports, delivery._apply_one_by_one
    refused, first_done = threading.Event(), threading.Event()

    def refuse_in_the_second(reports):
        if len(reports) > 1 and threading.current_thread().name == "second-writer":
            raise DataError("INSERT …", {}, Exception("value too long"))
        return apply_reports(reports)

    def wait_for_the_first(*args):
        refused.set()
        assert first_done.wait(30)
        return one_by_one(*args)

    monkeypatch.setattr(delivery, "apply_reports", refuse_in_the_second)
    monkeypatch.setattr(delivery, "_apply_one_by_one", wait_for_the_first)

    def writer():
        with app.app_context():
            delivery.write_reports()
            db.session.remove()

    second = threading.Thread(target=writer, name="second-writer")
    second.start()
    assert refused.wait(30)
    first = threading.Thread(target=writer, name="first-writer")
    first.start()
    first.join(30)
    first_done.set()
    second.join(30)
    for sms in messages:
        assert _row(sms.id).status == "delivered"
        assert len(_callback_events(sms.id)) == 1
    assert redis_connection().xlen(delivery.STREAM) == 0


def test_a_new_stream_whose_ids_repeat_the_last_applied_batch_is_applied_in_full(app, client, at):
    first = _message(at, "ATXid_1")
    _report(client, at, "ATXid_1")
    drain_reports(app)
    with app.app_context():
        [applied_id] = [row.last_id for row in db.session.scalars(select(AppliedReports))]
    # Redis flushed (or replaced by one whose clock is behind): the new stream gives the same ids.
    later = _message(at, "ATXid_2", number="+254712345679")
    r = redis_connection()
    r.flushdb()
    r.xadd(delivery.STREAM, {"r": json.dumps([at.id, "africastalking", "ATXid_2", "delivered", "AfricasTalking: Success",
                                              "Success", "+254712345679"])}, id=applied_id)
    delivery.ensure_report_writer()
    drain_reports(app)
    assert _row(first.id).status == "delivered"
    assert _row(later.id).status == "delivered"
    assert r.xlen(delivery.STREAM) == 0


def test_a_writer_whose_lease_another_writer_took_stops_after_its_batch(app, client, at, monkeypatch):
    messages = [_message(at, f"ATXid_{i}") for i in range(3)]
    for i in range(3):
        _report(client, at, f"ATXid_{i}")
    monkeypatch.setattr(delivery, "BATCH", 1)
    cycle = delivery._cycle

    def cycle_then_lapse(r):
        handled = cycle(r)
        leases.hold(delivery.WRITER_LEASE, 15, "another-writer")  # stuck past its lease; another took it
        return handled

    monkeypatch.setattr(delivery, "_cycle", cycle_then_lapse)
    with app.app_context():
        assert delivery.write_reports() == 1
    monkeypatch.setattr(delivery, "_cycle", cycle)
    assert redis_connection().xlen(delivery.STREAM) == 2  # left to the writer that holds the lease
    assert leases.holder(delivery.WRITER_LEASE) == "another-writer"  # not released by the one that stopped
    redis_connection().delete("mpm:lease:" + delivery.WRITER_LEASE)
    delivery.ensure_report_writer()
    drain_reports(app)
    for sms in messages:
        assert _row(sms.id).status == "delivered"
        assert len(_callback_events(sms.id)) == 1


def test_the_endpoint_keeps_taking_reports_while_the_database_is_down(app, client, at, tmp_path, redis_url):
    sms = _message(at, "ATXid_1")
    _report(client, at, "ATXid_1", "Sent")  # a token checked once: Redis keeps its digest
    drain_reports(app)
    down = create_app({"TESTING": True, "SECRET_KEY": "x", "REDIS_URL": redis_url, "RATELIMIT_ENABLED": False,
                       "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'missing-dir' / 'db.sqlite3'}"})
    token = gateway_setting(at.id, "africastalking").callback_secret
    url = f"/api/africas-talking/callback/{at.id}/delivery-reports?token="
    answer = down.test_client().post(url + token, data={"id": "ATXid_1", "status": "Success"})
    assert answer.status_code == 200
    assert down.test_client().post(url + "wrong", data={"id": "ATXid_1", "status": "Failed"}).status_code == 403
    drain_reports(app)  # the database is back
    assert _row(sms.id).status == "delivered"
