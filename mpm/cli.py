"""flask CLI commands: seed-demo, create-admin, worker."""
import click
from flask import Flask


def register_commands(app: Flask) -> None:
    @app.cli.command("seed-demo")
    @click.option("--email", envvar="MPM_ADMIN_EMAIL", default=None)
    @click.option("--password", envvar="MPM_ADMIN_PASSWORD", default=None)
    @click.option("--customers", default=2000, show_default=True)
    def seed_demo_command(email, password, customers):
        """Seed the demo company into an empty database and print the admin login."""
        from mpm.demo import seed_demo

        login = seed_demo(admin_email=email, admin_password=password, customers=customers)
        click.echo(f"Seeded {login['people']} people. Admin login: {login['email']} / {login['password']}")

    @app.cli.command("worker")
    @click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
    def worker_command(burst):
        """Run an RQ worker on the high and bulk lanes (high first)."""
        from mpm.worker import run_worker

        run_worker(app, burst=burst)
