"""The send queue's index (ix_sms_queued) holds queued messages only, so a claim updates it once and
a send's outcome not at all. A send job's reads of its queue must use it, on SQLite and on
PostgreSQL: otherwise each read of the next messages to send walks the company's whole history."""
import re
from datetime import datetime

from sqlalchemy import event

from mpm.extensions import db
from mpm.messaging import dispatch
from mpm.models.base import utcnow
from mpm.queue import BULK


SQL_TYPES = {int: "bigint", str: "text", datetime: "timestamptz"}


def _plan(statement: str, parameters) -> str:
    connection = db.session.connection()
    if db.engine.dialect.name == "sqlite":
        return " ".join(row[-1] for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters))
    # psycopg prepares a statement after five runs, and PostgreSQL may then plan it once for any
    # parameters (a generic plan): the plan that counts. An empty table is read whole whichever
    # indexes exist: forbid that, to see what the planner can use.
    names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", statement)))
    types = ", ".join(SQL_TYPES[type(parameters[name])] for name in names)
    connection.exec_driver_sql(f"PREPARE due_rows ({types}) AS " + re.sub(
        r"%\((\w+)\)s", lambda match: f"${names.index(match.group(1)) + 1}", statement))
    connection.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
    connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
    # EXECUTE takes no bound parameters: this test's own values, written out.
    arguments = ", ".join(str(value) if isinstance(value, int) else f"'{value}'"
                          for value in (parameters[name] for name in names))
    plan = " ".join(row[0] for row in connection.exec_driver_sql(f"EXPLAIN EXECUTE due_rows({arguments})"))
    connection.exec_driver_sql("DEALLOCATE due_rows")
    return plan


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
    plan = _plan(statement, parameters)
    assert "ix_sms_queued" in plan, plan
    db.session.rollback()
