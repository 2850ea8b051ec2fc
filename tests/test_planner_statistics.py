"""SQLite's planner statistics: kept by a minute job, so that the ledger's updates of a few messages
by id look them up by id instead of walking every message of a status (reports stay fast on a
history of millions)."""
import pytest
from sqlalchemy import insert, text

from mpm import jobs
from mpm.extensions import db
from mpm.models import Sms

# The shape of the ledger's compare-and-set updates (mpm.messaging.ledger): ids, company, statuses left.
REPORT_UPDATE = ("UPDATE sms SET status = 'delivered' WHERE company_id = :company AND id IN (1, 2, 3) "
                 "AND status IN ('sending', 'sent', 'unconfirmed')")


def _plan(company_id: int) -> str:
    rows = db.session.execute(text("EXPLAIN QUERY PLAN " + REPORT_UPDATE), {"company": company_id}).all()
    return " ".join(row[-1] for row in rows)


def test_the_minute_job_makes_sqlite_update_messages_by_id(company):
    if db.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's autovacuum keeps its statistics; the job does nothing there")
    db.session.execute(insert(Sms), [
        {"company_id": company.id, "direction": "outbound", "number": f"+2547{i:08d}", "body": "Hi",
         "status": "sent" if i % 50 else "queued", "gateway": "africastalking", "trigger": "broadcast"}
        for i in range(2000)])
    db.session.commit()
    assert "ix_sms_company_status_created" in _plan(company.id)  # no statistics: every `sent` row walked
    jobs.refresh_planner_statistics()
    db.session.remove()  # a connection reads the statistics when it opens
    db.engine.dispose()
    assert "INTEGER PRIMARY KEY" in _plan(company.id)
