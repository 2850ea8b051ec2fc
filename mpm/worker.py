"""The RQ worker process: one app for all jobs, `high` lane before `bulk`."""
from flask import Flask
from rq import Worker

from mpm.queue import LANES, AppContextJob, queue, redis_connection, use_app_for_jobs


def run_worker(app: Flask, burst: bool = False) -> None:
    use_app_for_jobs(app)
    with app.app_context():
        connection = redis_connection()
        queues = [queue(lane) for lane in LANES]
        worker = Worker(queues, connection=connection, job_class=AppContextJob)
    # with_scheduler runs jobs enqueued for later (retry backoff, scheduled broadcasts).
    worker.work(burst=burst, with_scheduler=True)
