"""Delivery rollups: kept current by the minute job, equal to a rebuild from the raw rows."""
from datetime import timedelta

from sqlalchemy import select, update

from conftest import make_company
from mpm.extensions import db
from mpm.insight.rollups import TTD_COLUMNS, failure_reason, rebuild_rollups, refresh_rollups
from mpm.messaging import ledger
from mpm.models import Sms, SmsRollup
from mpm.models.base import utcnow


def add_sms(company, *, status="sent", gateway="africastalking", trigger="manual", created=None, delivered_after=None,
            cost="KES 0.8000", error=None, segments=1):
    created = created or utcnow()
    sms = Sms(company_id=company.id, number="+254712345678", body="hello", status=status, gateway=gateway,
              trigger=trigger, cost=cost, error=error, segments=segments, created_at=created,
              updated_at=created + (delivered_after or timedelta(0)))
    db.session.add(sms)
    db.session.commit()
    return sms


def snapshot(company_id=None):
    rows = db.session.scalars(select(SmsRollup)).all()
    return sorted((r.company_id, r.grain, r.bucket.replace(tzinfo=None), r.gateway, r.trigger, r.outcome, r.reason,
                   r.messages, r.segments, round(r.cost, 4), tuple(getattr(r, c) for c in TTD_COLUMNS)) for r in rows)


def day_rows(outcome=None, gateway=None):
    query = select(SmsRollup).where(SmsRollup.grain == "day")
    if outcome:
        query = query.where(SmsRollup.outcome == outcome)
    if gateway:
        query = query.where(SmsRollup.gateway == gateway)
    return db.session.scalars(query).all()


def test_failure_reason_is_a_prefix_of_the_error_without_the_network_code():
    error = "AfricasTalking: Failed, reason DeliveryFailure, network 63902"
    assert failure_reason(error) == "AfricasTalking: Failed, reason DeliveryFailure"
    assert error.startswith(failure_reason(error))
    assert failure_reason("gave up after 5 attempts:\nattempt 1: HTTP 500") == "gave up after 5 attempts:"
    assert failure_reason(None) == ""


def test_minute_job_counts_outcomes_costs_and_time_to_delivery(app_ctx):
    company = make_company()
    for _ in range(3):
        add_sms(company, status="delivered", delivered_after=timedelta(seconds=45), segments=2)
    add_sms(company, status="delivered", delivered_after=timedelta(minutes=20))
    add_sms(company, status="failed", error="AfricasTalking: Failed, reason DeliveryFailure, network 99999", cost=None)
    add_sms(company, status="sent", gateway="textbee", cost=None)
    refresh_rollups()

    [delivered] = day_rows("delivered")
    assert (delivered.messages, delivered.segments) == (4, 7)
    assert abs(delivered.cost - 3.2) < 1e-9
    assert delivered.ttd_1m == 3  # 30–60 s
    assert delivered.ttd_30m == 1  # 10–30 min
    assert sum(getattr(delivered, c) for c in TTD_COLUMNS) == 4
    [failed] = day_rows("failed")
    assert failed.reason == "AfricasTalking: Failed, reason DeliveryFailure"
    assert [r.outcome for r in day_rows(gateway="textbee")] == ["sent"]
    # The last 48 hours are kept by the hour too.
    assert sum(r.messages for r in db.session.scalars(select(SmsRollup).where(SmsRollup.grain == "hour"))) == 6


def test_rollups_follow_status_changes_and_equal_a_rebuild_from_raw_rows(app_ctx):
    company = make_company()
    other = make_company("Other Power")
    now = utcnow()
    old = add_sms(company, status="sent", created=now - timedelta(days=3))
    waiting = [add_sms(company, status="sent", created=now - timedelta(hours=h)) for h in (1, 30, 60)]
    add_sms(other, status="delivered", delivered_after=timedelta(seconds=5))
    refresh_rollups()

    # Reports arrive later (through the ledger, which stamps updated_at): old buckets change.
    ledger.move(company.id, [old.id], "delivered", "report")
    ledger.move(company.id, [waiting[0].id], "failed", "AfricasTalking: Failed, reason UserInBlackList, network 1")
    ledger.move(company.id, [waiting[2].id], "expired", "no report")
    db.session.commit()
    add_sms(company, status="queued", gateway=None, trigger="broadcast")
    refresh_rollups()
    kept = snapshot()

    rebuild_rollups()
    assert snapshot() == kept
    outcomes = {(r.outcome, r.messages) for r in day_rows() if r.company_id == company.id}
    assert ("delivered", 1) in outcomes and ("failed", 1) in outcomes and ("expired", 1) in outcomes


def test_a_change_missed_by_nothing_is_not_counted_twice(app_ctx):
    """Running the job again (or a job killed before its commit being redone) changes nothing."""
    company = make_company()
    add_sms(company, status="delivered", delivered_after=timedelta(seconds=5))
    refresh_rollups()
    first = snapshot()
    db.session.execute(update(Sms).values(updated_at=utcnow()))  # touched again, nothing really changed
    db.session.commit()
    refresh_rollups()
    refresh_rollups()
    assert snapshot() == first


def test_rebuild_command(app):
    with app.app_context():
        company = make_company()
        add_sms(company, status="delivered")
    result = app.test_cli_runner().invoke(args=["rollups", "rebuild"])
    assert result.exit_code == 0, result.output
    assert "Rebuilt 2 rollup rows" in result.output  # its day and its hour
    with app.app_context():
        assert sum(r.messages for r in day_rows()) == 1


def test_a_refresh_killed_before_its_commit_is_redone_by_the_next(app_ctx, monkeypatch):
    import mpm.insight.rollups as rollups

    company = make_company()
    add_sms(company, status="sent")
    refresh_rollups()
    sms = add_sms(company, status="sent")
    ledger.move(company.id, [sms.id], "delivered", "report")
    db.session.commit()

    def killed(moment):
        raise SystemExit("killed")

    monkeypatch.setattr(rollups, "_set_mark", killed)
    try:
        refresh_rollups()
    except SystemExit:
        db.session.rollback()  # what the database does with the transaction of a killed process
    monkeypatch.undo()
    assert [r.outcome for r in day_rows()] == ["sent"]  # nothing half-written
    refresh_rollups()
    assert sorted((r.outcome, r.messages) for r in day_rows()) == [("delivered", 1), ("sent", 1)]


def test_a_report_committed_late_with_an_older_timestamp_is_still_counted(app_ctx):
    """updated_at is stamped before the commit: a transaction that commits after a refresh started
    is still within the next refresh's look-back (SLACK)."""
    company = make_company()
    sms = add_sms(company, status="sent")
    refresh_rollups()
    # A report stamped two minutes ago, committed only now.
    db.session.execute(update(Sms).where(Sms.id == sms.id).values(status="delivered",
                                                                  updated_at=utcnow() - timedelta(minutes=2)))
    db.session.commit()
    refresh_rollups()
    assert [(r.outcome, r.messages) for r in day_rows()] == [("delivered", 1)]
