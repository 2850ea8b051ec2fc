"""Tenant isolation as a property of the whole URL map: for every route that takes an id, a user
of company A gets a 404 for company B's object, and company B's rows never change.

New routes are covered by themselves; a route with an id parameter this test does not know yet
fails loudly, so whoever adds it also says which model the id names (ID_PARAMETERS below)."""
from decimal import Decimal

import pytest
from werkzeug.routing import IntegerConverter
from sqlalchemy import select

from conftest import csrf_token, login, make_company, make_person, make_user
from mpm.extensions import db
from mpm import models


def _world(company) -> dict:
    """One of each object a route can name, all belonging to `company`."""
    person = make_person(company, name="Owner", surname=f"Of{company.id}", number=f"+25471{company.id:07d}")
    agent = make_person(company, name="Agent", surname=f"Of{company.id}", number=f"+25472{company.id:07d}",
                        kind="agent")
    user = make_user(company, email=f"staff-{company.id}@example.test", role="manager")
    grid = models.MiniGrid(company_id=company.id, name=f"Grid {company.id}")
    group = models.CustomerGroup(company_id=company.id, name=f"Group {company.id}")
    ctype = models.CustomerType(company_id=company.id, name=f"Type {company.id}")
    broadcast = models.Broadcast(company_id=company.id, body="Maintenance tonight", audience={"person_ids": [person.id]})
    db.session.add_all([grid, group, ctype, broadcast])
    db.session.flush()
    sms = models.Sms(company_id=company.id, person_id=person.id, number=person.phone_numbers[0].e164,
                     body="Your token is 1234", status="failed", gateway="africastalking",
                     error="InvalidPhoneNumber", broadcast_id=broadcast.id)
    db.session.add(sms)
    db.session.flush()
    inbound = models.Sms(company_id=company.id, direction="inbound", person_id=person.id,
                         number=person.phone_numbers[0].e164, body="My meter is off", status="received")
    test_sms = models.Sms(company_id=company.id, person_id=None, number=person.phone_numbers[0].e164,
                          body="Test from MPM", status="sent", gateway="africastalking", trigger="test")
    db.session.add_all([inbound, test_sms])
    db.session.flush()
    event = models.SmsEvent(company_id=company.id, sms_id=sms.id, kind="status", status="failed", detail="x")
    setting = models.GatewaySetting(company_id=company.id, gateway="africastalking", enabled=False,
                                    callback_secret=f"secret-{company.id}")
    token = models.ApiToken(company_id=company.id, name="Payments", token_hash=f"{company.id:064d}", last_four="abcd")
    audit = models.AuditEntry(company_id=company.id, user_id=user.id, action="test")
    db.session.add_all([event, setting, token, audit])
    world = {"person": person, "agent": agent, "number": person.phone_numbers[0], "user": user, "grid": grid,
             "group": group, "type": ctype, "broadcast": broadcast, "sms": sms, "inbound_sms": inbound, "test_sms": test_sms, "event": event,
             "setting": setting, "token": token, "audit": audit}
    if hasattr(models, "Transaction"):
        world["transaction"] = models.Transaction(company_id=company.id, person_id=person.id,
                                                  amount=Decimal("100.00"), currency="KES")
        db.session.add(world["transaction"])
    if hasattr(models, "MaintenanceTicket"):
        ticket = models.MaintenanceTicket(company_id=company.id, customer_id=person.id, assignee_id=agent.id,
                                          category="Meter fault", description="No power")
        db.session.add(ticket)
        db.session.flush()
        world["ticket"] = ticket
        world["comment"] = models.TicketComment(company_id=company.id, ticket_id=ticket.id, body="On my way")
        db.session.add(world["comment"])
    if hasattr(models, "SmsTemplate"):
        world["template"] = models.SmsTemplate(company_id=company.id, trigger="transaction", body="Thanks {name}")
        db.session.add(world["template"])
    db.session.commit()
    return world


# URL parameter name → key of the object in _world it names.
ID_PARAMETERS = {
    "person_id": "person", "customer_id": "person", "agent_id": "agent", "number_id": "number",
    "phone_number_id": "number", "user_id": "user", "mini_grid_id": "grid", "group_id": "group",
    "type_id": "type", "broadcast_id": "broadcast", "sms_id": "sms", "message_id": "sms",
    "event_id": "event", "setting_id": "setting", "token_id": "token", "audit_id": "audit",
    "transaction_id": "transaction", "ticket_id": "ticket", "comment_id": "comment", "template_id": "template",
}
# Where one parameter name means different objects: the inbox shows incoming SMS, a plugin its test SMS.
ID_PARAMETERS_BY_PREFIX = {"/inbox/": {"sms_id": "inbound_sms"}, "/plugins/": {"sms_id": "test_sms"}}
# Non-id parameters: a value that exists for every company.
OTHER_PARAMETERS = {"gateway": "africastalking", "page": "Dashboard", "filename": "app.css", "key": "transaction_meter",
                    "action": "cancel"}


def _is_machine_endpoint(rule) -> bool:
    return rule.rule.startswith("/api/") or rule.endpoint.startswith(("callbacks.", "api.", "static"))


def _routes_with_ids(app):
    for rule in app.url_map.iter_rules():
        int_args = [name for name in rule.arguments
                    if isinstance(rule._converters[name], IntegerConverter)]
        if int_args and not _is_machine_endpoint(rule):
            yield rule, int_args


def _url(rule, world) -> str:
    values = {}
    for name in rule.arguments:
        if isinstance(rule._converters[name], IntegerConverter):
            names = dict(ID_PARAMETERS)
            for prefix, overrides in ID_PARAMETERS_BY_PREFIX.items():
                if rule.rule.startswith(prefix):
                    names.update(overrides)
            if name not in names or names[name] not in world:
                pytest.fail(f"{rule.rule}: add the model that <{name}> names to ID_PARAMETERS and _world")
            values[name] = world[names[name]].id
        else:
            if name not in OTHER_PARAMETERS:
                pytest.fail(f"{rule.rule}: add a value for <{name}> to OTHER_PARAMETERS")
            values[name] = OTHER_PARAMETERS[name]
    return rule.build(values, append_unknown=False)[1]


def _rows_of(company_id: int) -> dict:
    """Every row of the company in every table, to prove nothing changed."""
    db.session.expire_all()
    snapshot = {}
    for table in db.metadata.sorted_tables:
        if "company_id" in table.c:
            rows = db.session.execute(select(table).where(table.c.company_id == company_id)).all()
            snapshot[table.name] = sorted(tuple(map(repr, row)) for row in rows)
    company = db.session.execute(select(models.Company.__table__).where(models.Company.id == company_id)).one()
    snapshot["company"] = tuple(map(repr, company))
    return snapshot


@pytest.fixture
def two_companies(app_ctx):
    a, b = make_company("Company A"), make_company("Company B")
    admin_a = make_user(a, email="admin-a@example.test", role="admin")
    return _world(a), _world(b), admin_a


def test_every_route_with_an_id_is_404_for_another_companys_object(app, client, two_companies):
    world_a, world_b, admin_a = two_companies
    routes = list(_routes_with_ids(app))
    assert {rule.endpoint for rule, _ in routes} >= {"customers.detail", "customers.toggle_primary"}
    login(client, admin_a.email)
    token = csrf_token(client)
    before = _rows_of(world_b["person"].company_id)
    checked = []
    for rule, _ in routes:
        for method in sorted(rule.methods & {"GET", "POST", "PUT", "PATCH", "DELETE"}):
            url = _url(rule, world_b)
            response = client.open(url, method=method, headers={"X-CSRFToken": token, "HX-Request": "true"},
                                   data={"primary": "on", "body": "hi", "number": "0711 222 333", "confirm": "1"})
            assert response.status_code == 404, f"{method} {rule.rule} gave {response.status_code} for B's object"
            body = response.get_data(as_text=True)
            assert world_b["person"].surname not in body and "Your token is 1234" not in body
            checked.append((method, rule.rule))
    assert _rows_of(world_b["person"].company_id) == before, "company A changed company B's rows"
    print(f"checked {len(checked)} route/method pairs: {checked}")


def test_the_same_routes_answer_for_the_companys_own_objects(app, client, two_companies):
    """The 404s above come from tenant scoping, not from routes that 404 for everyone."""
    world_a, _, admin_a = two_companies
    login(client, admin_a.email)
    for rule, _ in _routes_with_ids(app):
        if "GET" in rule.methods:
            response = client.get(_url(rule, world_a))
            assert response.status_code != 404, f"GET {rule.rule} is 404 for the company's own object"
            assert response.status_code < 500, f"GET {rule.rule} gave {response.status_code}"


def _is_admin_only(view) -> bool:
    """True when mpm.web.admin_required sits anywhere in the view's decorator chain."""
    from mpm.web import admin_required

    marker = admin_required(lambda: None).__code__
    while view is not None:
        if getattr(view, "__code__", None) is marker:
            return True
        view = getattr(view, "__wrapped__", None)
    return False


def test_managers_are_refused_on_admin_only_pages(app, client, company):
    """Plugins, SMS templates, API tokens and staff are for admins: a manager gets 403, nothing changes."""
    manager = make_user(company, email="manager@example.test", role="manager")
    admin_rules = [rule for rule in app.url_map.iter_rules() if _is_admin_only(app.view_functions[rule.endpoint])]
    required = {"plugins.index", "plugins.toggle", "plugins.save_settings", "settings.save_template",
                "settings.api_token_list", "settings.create_api_token", "settings.revoke_api_token", "staff.index",
                "staff.add", "staff.change_role", "staff.deactivate", "staff.reactivate", "staff.password_link"}
    missing = required - {rule.endpoint for rule in admin_rules}
    assert not missing, f"not admin-only (or not registered yet): {sorted(missing)}"
    world = _world(company)
    login(client, manager.email)
    token = csrf_token(client)
    before = _rows_of(company.id)
    for rule in admin_rules:
        url = _url(rule, world)
        for method in sorted(rule.methods & {"GET", "POST"}):
            response = client.open(url, method=method, headers={"X-CSRFToken": token},
                                   data={"enabled": "on", "api_key": "x", "username": "x"})
            assert response.status_code == 403, f"{method} {rule.rule} gave {response.status_code} to a manager"
    after = _rows_of(company.id)
    after.pop("audit_entry", None), before.pop("audit_entry", None)  # a refused attempt may be audited
    assert after == before, "a manager changed something on an admin-only page"
