"""SIGKILLs while the report writer applies a stream of delivery reports in real `flask worker`
processes: no report is lost, no message changes status twice, and a replacement worker applies
what the killed one left in Redis."""
import random
import time

import pytest
from sqlalchemy import func, insert, select

from conftest import enable_gateway
from killing import WorkerPool, wait_until, worker_running
from mpm.extensions import db
from mpm.messaging import delivery
from mpm.models import ParkedReport, Sms, SmsEvent
from mpm.models.base import utcnow
from mpm.plugins.gateway_settings import gateway_setting
from mpm.queue import redis_connection

pytestmark = pytest.mark.queue

MESSAGES = 3000
KILLS = 5
WRITER = ("mpm.jobs.write_reports",)
SETTINGS = {
    "MPM_SMS_SWEEP_SECONDS": "2",  # the sweep starts a writer for reports a dead one left
    "MPM_REPORT_WRITER_LEASE_SECONDS": "2",  # how long a killed writer's lease keeps others off
}


def _sent_messages(company_id: int) -> None:
    now = utcnow()
    db.session.execute(insert(Sms), [
        {"company_id": company_id, "direction": "outbound", "number": f"+2547{i:08d}", "body": "Power is back.",
         "status": "sent", "gateway": "africastalking", "provider_message_id": f"ATXid_kill_{i}", "trigger": "manual",
         "lane": "high", "attempts": 1, "created_at": now, "updated_at": now} for i in range(MESSAGES)])
    db.session.commit()


def _post(app, url: str, order: list[int], answers: list) -> None:
    client = app.test_client()
    for i in order:
        answers.append(client.post(url, data={"id": f"ATXid_kill_{i}", "status": "Success",
                                              "phoneNumber": f"+2547{i:08d}"}).status_code)


def test_killing_the_report_writer_loses_no_report_and_moves_no_status_twice(app, company, tmp_path):
    enable_gateway(company, "africastalking")
    _sent_messages(company.id)
    pool = WorkerPool(app.config["SQLALCHEMY_DATABASE_URI"], app.config["REDIS_URL"], app.config["SECRET_KEY"],
                      tmp_path, SETTINGS)
    rng = random.Random()
    token = gateway_setting(company.id, "africastalking").callback_secret
    url = f"/api/africas-talking/callback/{company.id}/delivery-reports?token={token}"
    order = list(range(MESSAGES))
    rng.shuffle(order)
    retried = rng.sample(order, MESSAGES // 2)  # a provider sending these reports a second time
    answers: list[int] = []
    connection = redis_connection()
    try:
        for k in range(KILLS):
            # A burst waits in Redis (the writer drains it in full batches, back to back); the worker
            # that runs the writer is killed somewhere inside it.
            _post(app, url, order[k::KILLS] + retried[k::KILLS], answers)
            pool.start()
            writer = wait_until(lambda: worker_running(connection, pool, WRITER), 60, "a worker running the writer",
                                poll=0.005)
            time.sleep(rng.uniform(0.0, 0.2))
            pool.kill(writer)
        pool.start()  # what the killed writers left is applied by the next one

        def all_applied():
            db.session.rollback()
            delivered = db.session.scalar(select(func.count()).select_from(Sms).where(
                Sms.company_id == company.id, Sms.status == "delivered"))
            return delivered == MESSAGES and connection.xlen(delivery.STREAM) == 0
        wait_until(all_applied, 90, "every report applied")
        pool.check_alive()
    finally:
        pool.stop()

    assert len(pool.kills) == KILLS
    assert answers == [200] * (MESSAGES + MESSAGES // 2)  # the provider was never turned away
    moves = dict(db.session.execute(
        select(SmsEvent.sms_id, func.count()).where(SmsEvent.company_id == company.id, SmsEvent.kind == "callback",
                                                    ~SmsEvent.detail.startswith("ignored"))
        .group_by(SmsEvent.sms_id)).all())
    assert len(moves) == MESSAGES and set(moves.values()) == {1}  # each message moved once, by one report
    logged = db.session.scalar(select(func.count()).select_from(SmsEvent).where(
        SmsEvent.company_id == company.id, SmsEvent.kind == "callback"))
    assert logged == MESSAGES + MESSAGES // 2  # every report in the log once, however the kills fell
    assert db.session.scalar(select(func.count()).select_from(ParkedReport)) == 0
