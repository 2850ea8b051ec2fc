"""The RQ worker process: one app for all jobs, `high` lane before `bulk`, plus the periodic sweep."""
import logging
import threading

from flask import Flask
from rq import SimpleWorker

from mpm.jobs import enqueue_sweep
from mpm.queue import LANES, AppContextJob, queue, redis_connection, use_app_for_jobs

log = logging.getLogger(__name__)

SWEEP_LOCK = "mpm:sweep:enqueued"


def enqueue_sweep_once_per_interval(app: Flask) -> bool:
    """However many workers run, the sweep is enqueued once per interval (a Redis lock decides)."""
    with app.app_context():
        every = app.config["SMS_SWEEP_SECONDS"]
        if redis_connection().set(SWEEP_LOCK, "1", nx=True, ex=max(every - 1, 1)):
            enqueue_sweep()
            return True
    return False


def _sweep_timer(app: Flask, stop: threading.Event) -> None:
    while not stop.wait(app.config["SMS_SWEEP_SECONDS"] / 4):
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
