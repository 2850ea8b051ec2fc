"""Redis and the RQ queues. Two lanes: `high` for messages a person waits for, `bulk` for broadcasts."""
from flask import current_app
from redis import Redis
from rq import Queue
from rq.job import Job

HIGH = "high"
BULK = "bulk"
LANES = (HIGH, BULK)  # a worker always drains `high` before it takes `bulk`


def redis_connection() -> Redis:
    """One client per app; REDIS_URL is set by the embedded runner or the deployment."""
    ext = current_app.extensions
    if "mpm_redis" not in ext:
        url = current_app.config["REDIS_URL"]
        if not url:
            raise RuntimeError("REDIS_URL is not set: start the app with `make run` or set REDIS_URL.")
        ext["mpm_redis"] = Redis.from_url(url)
    return ext["mpm_redis"]


def queue(lane: str = HIGH) -> Queue:
    if lane not in LANES:
        raise ValueError(f"unknown lane {lane!r}")
    return Queue(lane, connection=redis_connection(), job_class=AppContextJob)


class AppContextJob(Job):
    """Runs each job inside an app context, so jobs are plain functions that use db.session."""

    def perform(self):
        from mpm import create_app

        app = _worker_app.get("app")
        if app is None:
            app = _worker_app["app"] = create_app()
        with app.app_context():
            return super().perform()


# The worker process builds the app once and reuses it for every job.
_worker_app: dict = {}


def use_app_for_jobs(app) -> None:
    _worker_app["app"] = app
