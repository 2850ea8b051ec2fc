"""Entry point for gunicorn and the flask CLI: `flask --app wsgi ...`, `gunicorn wsgi:app`."""
from mpm import create_app

app = create_app()
