"""gunicorn settings shared by the Procfile and the systemd unit: `gunicorn -c deploy/gunicorn.conf.py`.
Address, port and process count stay on the command line (from the environment)."""
from gunicorn.glogging import Logger

from mpm.security import redact_url


class RedactingAccessLogger(Logger):
    """The standard access log, minus the callback secrets providers send in URLs."""

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        for key in ("r", "U", "q", "f"):
            if isinstance(atoms.get(key), str):
                atoms[key] = redact_url(atoms[key])
        return atoms


logger_class = RedactingAccessLogger
accesslog = "-"
# Finish requests in flight on SIGTERM before stopping; a worker stuck longer than this is restarted.
graceful_timeout = 30
timeout = 60
# The load balancer / nginx keeps connections open to us; reuse them.
keepalive = 5
