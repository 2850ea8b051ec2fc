"""Demo data for the embedded run: one East African company, its mini-grids and customers."""
import random
import secrets

from sqlalchemy import insert, select

from mpm.extensions import db
from mpm.models import Company, CustomerGroup, CustomerType, MiniGrid, Person, PhoneNumber, User

FIRST_NAMES = (
    "Amina Baraka Chege Daudi Esther Faith Grace Hassan Imani Jabari Joseph Kamau Lilian Mercy Mwangi "
    "Neema Njeri Otieno Peter Rehema Salim Tabitha Wanjiru Zawadi Akinyi Brian Caroline Dennis Eunice "
    "Fatuma Halima Irene Juma Kevin Lucy Mary Moses Nafula Omondi Pendo Rose Stephen Wambui Yusuf"
).split()
SURNAMES = (
    "Achieng Barasa Chebet Kariuki Kiprono Kibet Macharia Mutua Mwangi Njoroge Nyambura Ochieng Odhiambo "
    "Onyango Otieno Owino Wafula Wairimu Wanyama Mohamed Ali Hamisi Mushi Massawe Mollel Lyimo Nyirenda"
).split()
MINI_GRIDS = ("Kisiwa Mini-Grid", "Mto Mawe Mini-Grid", "Ziwa Solar Village")
GROUPS = ("Households", "Small businesses", "Productive use", "Institutions")
TYPES = ("Residential", "Commercial", "Public")
# Safaricom and Airtel Kenya prefixes that phonenumbers knows as valid mobile ranges.
MOBILE_PREFIXES = ("70", "71", "72", "74", "79", "11", "10", "73", "75")

DEFAULT_ADMIN_EMAIL = "admin@demo.mpm.local"


def _number(rng: random.Random, used: set[str]) -> str:
    while True:
        number = f"+254{rng.choice(MOBILE_PREFIXES)}{rng.randrange(10**7):07d}"
        if number not in used:
            used.add(number)
            return number


def seed_demo(admin_email: str | None = None, admin_password: str | None = None,
              customers: int = 2000, agents: int = 20, service_providers: int = 10, seed: int = 7) -> dict:
    """Seed one demo company; returns the admin login. Refuses to seed a database that has companies."""
    if db.session.scalar(select(Company.id).limit(1)) is not None:
        raise RuntimeError("The database already has data; demo data is only seeded into an empty one.")
    rng = random.Random(seed)
    company = Company(name="Demo Power Ltd", default_region="KE", time_zone="Africa/Nairobi", currency="KES")
    db.session.add(company)
    db.session.flush()
    password = admin_password or secrets.token_urlsafe(12)
    admin = User(company_id=company.id, email=admin_email or DEFAULT_ADMIN_EMAIL, name="Demo Admin", role="admin")
    admin.set_password(password)
    manager = User(company_id=company.id, email="manager@demo.mpm.local", name="Demo Manager", role="manager")
    manager.set_password(password)
    db.session.add_all([admin, manager])

    def named(model, names):
        rows = [model(company_id=company.id, name=n) for n in names]
        db.session.add_all(rows)
        db.session.flush()
        return [r.id for r in rows]

    grid_ids, group_ids, type_ids = named(MiniGrid, MINI_GRIDS), named(CustomerGroup, GROUPS), named(CustomerType, TYPES)

    kinds = ["customer"] * customers + ["agent"] * agents + ["service_provider"] * service_providers
    people = [
        {
            "company_id": company.id, "kind": kind,
            "name": rng.choice(FIRST_NAMES), "surname": rng.choice(SURNAMES),
            "mini_grid_id": rng.choice(grid_ids),
            "customer_group_id": rng.choice(group_ids) if kind == "customer" else None,
            "customer_type_id": rng.choice(type_ids) if kind == "customer" else None,
            "viber_id": secrets.token_urlsafe(16) if rng.random() < 0.1 else None,
        }
        for kind in kinds
    ]
    person_ids = db.session.scalars(
        insert(Person).returning(Person.id, sort_by_parameter_order=True), people
    ).all()
    used: set[str] = set()
    numbers = []
    for person_id, kind in zip(person_ids, kinds):
        # Most customers have their Primary toggle on; some have a second number.
        primary = kind != "customer" or rng.random() < 0.9
        numbers.append({"company_id": company.id, "person_id": person_id, "e164": _number(rng, used), "is_primary": primary})
        if rng.random() < 0.15:
            numbers.append({"company_id": company.id, "person_id": person_id, "e164": _number(rng, used), "is_primary": False})
    db.session.execute(insert(PhoneNumber), numbers)
    db.session.commit()
    return {"company_id": company.id, "email": admin.email, "password": password, "people": len(person_ids)}
