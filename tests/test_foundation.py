"""Health check, demo data, and migrations that match the models."""
import time

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import upgrade
from sqlalchemy import func, select

from mpm import create_app
from mpm.dev.demo import seed_demo
from mpm.extensions import db
from mpm.models import Person, PhoneNumber, User


def test_healthz_reports_database_redis_and_workers(client):
    response = client.get("/healthz")
    report = response.get_json()
    assert response.status_code == 200
    assert report["database"]["ok"] and report["redis"]["ok"]
    assert report["workers"] == {"ok": False, "count": 0}  # no worker runs in this test
    assert report["status"] == "degraded"


def test_healthz_says_redis_is_down(tmp_path):
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/h.sqlite3",
                      "REDIS_URL": "redis://127.0.0.1:1/0"})
    with app.app_context():
        db.create_all()
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["redis"]["ok"] is False


def test_demo_data_seeds_quickly_with_mostly_primary_customers(app_ctx):
    started = time.perf_counter()
    login = seed_demo(admin_password="Demo-pass-1")
    elapsed = time.perf_counter() - started
    customers = db.session.scalar(select(func.count()).where(Person.kind == "customer"))
    agents = db.session.scalar(select(func.count()).where(Person.kind == "agent"))
    providers = db.session.scalar(select(func.count()).where(Person.kind == "service_provider"))
    assert (customers, agents, providers) == (2000, 20, 10)
    primary = db.session.scalar(
        select(func.count(func.distinct(PhoneNumber.person_id))).where(PhoneNumber.is_primary.is_(True)))
    assert 0.8 * 2030 < primary < 2030
    numbers = db.session.scalars(select(PhoneNumber.e164)).all()
    assert len(set(numbers)) == len(numbers) and all(n.startswith("+254") and len(n) == 13 for n in numbers)
    admin = db.session.scalar(select(User).where(User.email == login["email"]))
    assert admin.role == "admin" and admin.check_password("Demo-pass-1")
    print(f"seeded 2,030 people in {elapsed:.2f} s")


def test_migrations_build_the_schema_the_models_describe(tmp_path, postgres_url):
    """`flask db upgrade` on an empty database gives exactly the tables and columns of the models."""
    url = postgres_url or f"sqlite:///{tmp_path / 'migrated.sqlite3'}"
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": url, "REDIS_URL": ""})
    with app.app_context():
        if postgres_url:
            db.drop_all()
        upgrade()
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), db.metadata)
        db.drop_all()
        with db.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    assert diff == []


def test_create_company_command_makes_a_tenant_whose_admin_can_log_in(app, client):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["create-company", "--name", "Kisiwa Power Ltd", "--region", "TZ",
                                 "--time-zone", "Africa/Dar_es_Salaam", "--currency", "TZS",
                                 "--admin-email", "boss@kisiwa.example", "--admin-password", "Long-enough-1"])
    assert result.exit_code == 0, result.output
    assert "Created company 'Kisiwa Power Ltd'" in result.output
    from conftest import login

    assert login(client, "boss@kisiwa.example", "Long-enough-1").status_code == 302
    again = runner.invoke(args=["create-company", "--name", "Other", "--admin-email", "boss@kisiwa.example",
                                "--admin-password", "Long-enough-1"])
    assert again.exit_code != 0 and "already has an account" in again.output
    bad_zone = runner.invoke(args=["create-company", "--name", "Other", "--time-zone", "Mars/Olympus",
                                   "--admin-email", "x@kisiwa.example", "--admin-password", "Long-enough-1"])
    assert bad_zone.exit_code != 0 and "not a time zone" in bad_zone.output
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(User)) == 1
