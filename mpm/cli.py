"""flask CLI commands: seed-demo, create-company, password-link, worker."""
import click
from flask import Flask


def register_commands(app: Flask) -> None:
    @app.cli.command("seed-demo")
    @click.option("--email", envvar="MPM_ADMIN_EMAIL", default=None)
    @click.option("--password", envvar="MPM_ADMIN_PASSWORD", default=None)
    @click.option("--customers", default=2000, show_default=True)
    def seed_demo_command(email, password, customers):
        """Seed the demo company into an empty database and print the admin login."""
        from mpm.dev.demo import seed_demo

        login = seed_demo(admin_email=email, admin_password=password, customers=customers)
        click.echo(f"Seeded {login['people']} people. Admin login: {login['email']} / {login['password']}")

    @app.cli.command("create-company")
    @click.option("--name", required=True, help="The operator's name, e.g. 'Kisiwa Power Ltd'.")
    @click.option("--region", default="KE", show_default=True, help="Region of phone numbers typed without +country code.")
    @click.option("--time-zone", default="Africa/Nairobi", show_default=True)
    @click.option("--currency", default="KES", show_default=True)
    @click.option("--admin-email", required=True)
    @click.password_option("--admin-password", help="At least 10 characters.")
    def create_company_command(name, region, time_zone, currency, admin_email, admin_password):
        """Create a company and its first admin (production installs seed nothing)."""
        from mpm.accounts.users import create_company_with_admin

        try:
            admin = create_company_with_admin(name, region, time_zone, currency, admin_email, admin_password)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"Created company {name!r} (id {admin.company_id}) with admin {admin.email}.")

    @app.cli.command("password-link")
    @click.argument("email")
    def password_link_command(email):
        """Print a one-time set-password link for a user (e.g. the only admin forgot the password)."""
        from mpm.accounts import staff

        try:
            issued = staff.password_link_for_email(email)
        except (staff.NoSuchUser, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"Link for {issued.user.email} (works once, for 24 hours):\n{issued.url}")

    @app.cli.group("rollups")
    def rollups_group():
        """Delivery rollups behind the dashboard's charts."""

    @rollups_group.command("rebuild")
    def rollups_rebuild_command():
        """Recompute every rollup from the raw SMS rows."""
        from mpm.insight.rollups import rebuild_rollups

        try:
            done = rebuild_rollups()
        except RuntimeError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"Rebuilt {done['rows']} rollup rows over {done['days']} days of {done['companies']} companies.")

    @app.cli.command("worker")
    @click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
    def worker_command(burst):
        """Run an RQ worker on the high and bulk lanes (high first)."""
        from mpm.worker import run_worker

        run_worker(app, burst=burst)
