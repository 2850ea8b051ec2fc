"""SQLite's planner statistics: kept by a minute job, so that the ledger's updates of a few messages
by id look them up by id instead of walking every message of a status (reports stay fast on a
history of millions)."""
import pytest
from sqlalchemy import event, insert

from mpm import jobs
from mpm.extensions import db
from mpm.messaging import delivery, ledger
from mpm.models import ParkedReport, Sms
from tests.conftest import query_plan

# The shape of the ledger's compare-and-set updates (mpm.messaging.ledger): ids, company, statuses left.
REPORT_UPDATE = ("UPDATE sms SET status = 'delivered' WHERE company_id = ? AND id IN (1, 2, 3) "
                 "AND status IN ('sending', 'sent', 'unconfirmed')")


def _store_messages(company_id: int) -> None:
    """2,000 messages of the company, most `sent`, every 50th `queued`."""
    db.session.execute(insert(Sms), [
        {"company_id": company_id, "direction": "outbound", "number": f"+2547{i:08d}", "body": "Hi",
         "status": "sent" if i % 50 else "queued", "gateway": "africastalking", "trigger": "broadcast"}
        for i in range(2000)])


def test_the_minute_job_makes_sqlite_update_messages_by_id(company):
    if db.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's autovacuum keeps its statistics; the job does nothing there")
    _store_messages(company.id)
    db.session.commit()
    assert "ix_sms_company_status_created" in query_plan(REPORT_UPDATE, (company.id,))  # no statistics: every `sent` row walked
    jobs.refresh_planner_statistics()
    db.session.remove()  # a connection reads the statistics when it opens
    db.engine.dispose()
    assert "INTEGER PRIMARY KEY" in query_plan(REPORT_UPDATE, (company.id,))


def test_the_ledger_and_the_report_writer_find_their_rows_by_id_before_any_statistics(company):
    """A new installation's first big broadcast comes before the minute job ever ran: the ledger's
    statements and the writer's look at parked reports must not walk the message table."""
    if db.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL plans from its own statistics")
    _store_messages(company.id)
    db.session.add(ParkedReport(company_id=company.id, gateway="africastalking", provider_message_id="ATXid_unknown",
                                status="delivered", detail="", raw_status="Success", number="+254700000001"))
    db.session.commit()
    ran = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if not executemany and statement.lstrip().startswith(("UPDATE sms", "SELECT parked_report.id, ")):
            ran.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        ledger.claim(company.id, [1, 2, 3], "africastalking")
        ledger.move(company.id, [4, 5, 6], "delivered", "report")
        ledger.move_by_reports(company.id, [ledger.ReportMove(7, "delivered"), ledger.ReportMove(8, "failed", "x")])
        delivery._parked_now_matching()
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
        db.session.rollback()
    assert len(ran) == 5  # claim, move, two report moves (one per status), the parked look
    for statement, parameters in ran:
        plan = query_plan(statement, parameters)
        assert "SCAN sms" not in plan and "ix_sms_company_status_created" not in plan, plan
        assert ("INTEGER PRIMARY KEY" if statement.startswith("UPDATE") else "SCAN parked_report") in plan, plan
