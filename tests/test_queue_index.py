"""The send queue's index (ix_sms_queued) holds queued messages only, so a claim updates it once and
a send's outcome not at all. A send job's reads of its queue must use it, on SQLite and on
PostgreSQL: otherwise each read of the next messages to send walks the company's whole history."""
from sqlalchemy import event

from mpm.extensions import db
from mpm.messaging import dispatch
from mpm.models.base import utcnow
from mpm.queue import BULK
from tests.conftest import query_plan


def test_a_send_job_reads_its_queue_through_the_index_of_queued_messages(company):
    ran = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().startswith("SELECT") and "sms.lane" in statement:
            ran.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        dispatch._due_rows(company.id, BULK, utcnow(), 500)  # the next messages to send, in id order
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    [(statement, parameters)] = ran
    plan = query_plan(statement, parameters)
    assert "ix_sms_queued" in plan, plan
    db.session.rollback()
