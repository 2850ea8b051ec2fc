"""The RQ worker process: one app for all jobs, `high` lane before `bulk`, plus the minute sweep."""
import logging
import threading

from flask import Flask
from rq import SimpleWorker

from mpm.queue import HIGH, LANES, AppContextJob, queue, redis_connection, use_app_for_jobs

log = logging.getLogger(__name__)

SWEEP_JOB = "mpm.messaging.sweep.sweep_lost_messages"
SWEEP_EVERY_SECONDS = 60
SWEEP_LOCK = "mpm:sweep:enqueued"


def sweep_interval(app: Flask) -> int:
    return int(app.config.get("SMS_SWEEP_SECONDS") or SWEEP_EVERY_SECONDS)


def enqueue_sweep_once_per_interval(app: Flask) -> bool:
    """However many workers run, the sweep is enqueued once per interval (a Redis lock decides)."""
    with app.app_context():
        if redis_connection().set(SWEEP_LOCK, "1", nx=True, ex=max(1, sweep_interval(app) - 1)):
            queue(HIGH).enqueue(SWEEP_JOB, job_timeout=300)
            return True
    return False


def _sweep_timer(app: Flask, stop: threading.Event) -> None:
    while not stop.wait(sweep_interval(app) / 4):
        try:
            enqueue_sweep_once_per_interval(app)
        except Exception:  # Redis away for a moment: try again next tick
            log.exception("could not enqueue the sweep")


def run_worker(app: Flask, burst: bool = False) -> None:
    use_app_for_jobs(app)
    with app.app_context():
        connection = redis_connection()
        queues = [queue(lane) for lane in LANES]
        # Jobs run in this process, not in a fork per job: a send batch takes a few statements, and a
        # fresh fork would redo imports, connections and SQL compilation every time (10× slower in
        # bench/send_throughput.py). A job killed with its process is found again by the sweep.
        worker = SimpleWorker(queues, connection=connection, job_class=AppContextJob)
    stop = threading.Event()
    if not burst:
        threading.Thread(target=_sweep_timer, args=(app, stop), daemon=True, name="mpm-sweep-timer").start()
    try:
        # with_scheduler runs jobs enqueued for later (retry backoff, scheduled broadcasts).
        worker.work(burst=burst, with_scheduler=True)
    finally:
        stop.set()
