"""What /healthz reports: database, Redis and RQ workers."""
from flask import current_app
from rq import Worker
from sqlalchemy import text

from mpm.extensions import db
from mpm.queue import LANES, queue, redis_connection


def health_report() -> tuple[dict, bool]:
    report: dict = {}
    try:
        db.session.execute(text("SELECT 1"))
        report["database"] = {"ok": True, "dialect": db.engine.dialect.name}
    except Exception as exc:  # report, don't raise: this is the page that says what is down
        report["database"] = {"ok": False, "error": type(exc).__name__}
    try:
        conn = redis_connection()
        conn.ping()
        report["redis"] = {"ok": True}
        workers = Worker.all(connection=conn)
        report["workers"] = {"ok": bool(workers), "count": len(workers)}
        report["queues"] = {lane: queue(lane).count for lane in LANES}
    except Exception as exc:
        current_app.logger.warning("healthz: redis unavailable: %s", type(exc).__name__)
        report["redis"] = {"ok": False, "error": type(exc).__name__}
        report["workers"] = {"ok": False, "count": 0}
    healthy = report["database"]["ok"] and report["redis"]["ok"]
    report["status"] = "ok" if healthy and report["workers"]["ok"] else ("degraded" if healthy else "down")
    return report, healthy
