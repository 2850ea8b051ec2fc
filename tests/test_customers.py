import re

import pytest

from conftest import csrf_token, login, make_company, make_person, make_user
from mpm.extensions import db
from mpm.models import CustomerGroup, CustomerType, MiniGrid, Person, PhoneNumber
from mpm.people.phones import InvalidPhoneNumber, to_e164


def names_in(page: str) -> list[str]:
    return re.findall(r'href="/customers/\d+">([^<]+)</a>', page)


@pytest.fixture
def village(company):
    grid_a, grid_b = MiniGrid(company_id=company.id, name="Kisiwa"), MiniGrid(company_id=company.id, name="Mto Mawe")
    group = CustomerGroup(company_id=company.id, name="Shops")
    kind = CustomerType(company_id=company.id, name="Commercial")
    db.session.add_all([grid_a, grid_b, group, kind])
    db.session.commit()
    make_person(company, "Amina", "Otieno", "+254712000001", mini_grid_id=grid_a.id, customer_group_id=group.id)
    make_person(company, "Baraka", "Mwangi", "+254712000002", mini_grid_id=grid_b.id, customer_type_id=kind.id)
    make_person(company, "Chege", "Kamau", "+254712000003", mini_grid_id=grid_a.id, customer_type_id=kind.id)
    make_person(company, "Daudi", "Agent", "+254712000004", kind="agent")
    return {"grid_a": grid_a.id, "grid_b": grid_b.id, "group": group.id, "type": kind.id}


def test_list_shows_customers_only_by_default(logged_in, village):
    page = logged_in.get("/customers/").get_data(as_text=True)
    assert names_in(page) == ["Chege Kamau", "Baraka Mwangi", "Amina Otieno"]
    everyone = logged_in.get("/customers/?kind=all").get_data(as_text=True)
    assert "Daudi Agent" in names_in(everyone)


def test_filters_by_mini_grid_group_and_type(logged_in, village):
    by_grid = names_in(logged_in.get(f"/customers/?mini_grid={village['grid_a']}").get_data(as_text=True))
    assert by_grid == ["Chege Kamau", "Amina Otieno"]
    by_group = names_in(logged_in.get(f"/customers/?group={village['group']}").get_data(as_text=True))
    assert by_group == ["Amina Otieno"]
    by_type_and_grid = names_in(logged_in.get(
        f"/customers/?type={village['type']}&mini_grid={village['grid_b']}").get_data(as_text=True))
    assert by_type_and_grid == ["Baraka Mwangi"]


def test_search_by_name_and_by_local_phone_format(logged_in, village):
    assert names_in(logged_in.get("/customers/?q=amina").get_data(as_text=True)) == ["Amina Otieno"]
    assert names_in(logged_in.get("/customers/?q=chege kamau").get_data(as_text=True)) == ["Chege Kamau"]
    # Staff type numbers the way they are printed locally: 0712 000 002.
    assert names_in(logged_in.get("/customers/?q=0712 000 002").get_data(as_text=True)) == ["Baraka Mwangi"]


def test_htmx_request_gets_only_the_table_and_plain_request_the_page(logged_in, village):
    fragment = logged_in.get("/customers/?q=amina", headers={"HX-Request": "true"})
    assert fragment.get_data(as_text=True).lstrip().startswith('<section id="people-table">')
    assert "HX-Request" in fragment.headers["Vary"]
    full = logged_in.get("/customers/?q=amina").get_data(as_text=True)
    assert "<html" in full and 'id="people-table"' in full
    restore = logged_in.get("/customers/?q=amina", headers={"HX-Request": "true", "HX-History-Restore-Request": "true"})
    assert "<html" in restore.get_data(as_text=True)


def test_pagination_is_server_side_and_keeps_filters(app, logged_in, company):
    app.config["CUSTOMERS_PER_PAGE"] = 10
    for i in range(25):
        make_person(company, f"Person{i:02d}", "Zulu", f"+2547120100{i:02d}")
    first = logged_in.get("/customers/?q=zulu").get_data(as_text=True)
    assert "25 people · page 1 of 3" in first
    assert len(names_in(first)) == 10
    assert 'href="/customers/?q=zulu&amp;page=2"' in first
    last = logged_in.get("/customers/?q=zulu&page=3").get_data(as_text=True)
    assert len(names_in(last)) == 5
    assert names_in(last)[-1] == "Person24 Zulu"
    beyond = logged_in.get("/customers/?q=zulu&page=99").get_data(as_text=True)
    assert "page 3 of 3" in beyond


def test_another_company_is_never_visible(client, app_ctx):
    mine, theirs = make_company("Mine"), make_company("Theirs")
    make_person(mine, "Own", "Customer", "+254712000010")
    stranger = make_person(theirs, "Other", "Customer", "+254712000011")
    login(client, make_user(mine).email)
    page = client.get("/customers/?kind=all").get_data(as_text=True)
    assert "Own Customer" in page and "Other Customer" not in page
    assert client.get(f"/customers/{stranger.id}").status_code == 404
    token = csrf_token(client)
    number_id = stranger.phone_numbers[0].id
    response = client.post(f"/customers/{stranger.id}/numbers/{number_id}/primary",
                           data={"primary": "", "csrf_token": token})
    assert response.status_code == 404
    db.session.expire_all()
    assert db.session.get(PhoneNumber, number_id).is_primary is True


def test_primary_toggle_persists_and_moves_between_numbers(logged_in, company):
    person = make_person(company, number="+254712000020")
    person.phone_numbers.append(PhoneNumber(company_id=company.id, e164="+254712000021", is_primary=False))
    db.session.commit()
    first, second = [n.id for n in person.phone_numbers]
    token = csrf_token(logged_in)
    url = f"/customers/{person.id}/numbers/{second}/primary"
    fragment = logged_in.post(url, data={"primary": "on", "csrf_token": token}, headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    assert fragment.get_data(as_text=True).lstrip().startswith('<article id="phone-numbers">')
    db.session.expire_all()
    assert {n.id: n.is_primary for n in db.session.get(Person, person.id).phone_numbers} == {first: False, second: True}
    # Off: this person now receives no SMS, and a reload shows it.
    logged_in.post(url, data={"csrf_token": token}, headers={"HX-Request": "true"})
    db.session.expire_all()
    assert db.session.get(Person, person.id).primary_number is None
    page = logged_in.get(f"/customers/?q={person.name}").get_data(as_text=True)
    assert "none — receives no SMS" in page


def test_primary_toggle_needs_csrf_token(logged_in, company):
    person = make_person(company, primary=False)
    number_id = person.phone_numbers[0].id
    response = logged_in.post(f"/customers/{person.id}/numbers/{number_id}/primary", data={"primary": "on"})
    assert response.status_code == 400
    db.session.expire_all()
    assert db.session.get(PhoneNumber, number_id).is_primary is False


def test_adding_a_number_normalises_it_and_refuses_bad_ones(logged_in, company):
    person = make_person(company, number=None)
    token = csrf_token(logged_in)
    ok = logged_in.post(f"/customers/{person.id}/numbers", data={"number": "0733 123 456", "csrf_token": token},
                        headers={"HX-Request": "true"})
    assert ok.status_code == 200 and "+254 733 123456" in ok.get_data(as_text=True)
    bad = logged_in.post(f"/customers/{person.id}/numbers", data={"number": "12345", "csrf_token": token},
                         headers={"HX-Request": "true"})
    assert bad.status_code == 422
    assert "is not a valid number" in bad.get_data(as_text=True)
    db.session.expire_all()
    numbers = db.session.get(Person, person.id).phone_numbers
    assert [(n.e164, n.is_primary) for n in numbers] == [("+254733123456", True)]


@pytest.mark.parametrize("raw,region,expected", [
    ("0712 345 678", "KE", "+254712345678"),
    ("+254 712-345-678", "KE", "+254712345678"),
    ("0754 123 456", "TZ", "+255754123456"),
    ("256772123456", "UG", "+256772123456"),
])
def test_phone_numbers_are_stored_in_e164(raw, region, expected):
    assert to_e164(raw, region) == expected


@pytest.mark.parametrize("raw", ["", "hello", "0712", "+999 123 456 789"])
def test_malformed_numbers_are_refused_with_a_reason(raw):
    with pytest.raises(InvalidPhoneNumber) as error:
        to_e164(raw, "KE")
    assert str(error.value)


def test_detail_page_shows_person_and_a_place_for_sms(logged_in, company):
    person = make_person(company, "Neema", "Achieng", "+254712000030")
    page = logged_in.get(f"/customers/{person.id}").get_data(as_text=True)
    assert "Neema Achieng" in page and "+254 712 000030" in page
    assert 'id="sms-section"' in page


def test_customer_page_leads_to_recording_a_payment_and_opening_a_ticket_for_them(logged_in, company):
    person = make_person(company, "Neema", "Achieng", "+254712000031")
    page = logged_in.get(f"/customers/{person.id}").get_data(as_text=True)
    payment = re.search(r'href="([^"]+)">Record a payment', page).group(1)
    ticket = re.search(r'href="([^"]+)">New maintenance ticket', page).group(1)
    for url in (payment, ticket):
        form = logged_in.get(url.replace("&amp;", "&")).get_data(as_text=True)
        assert "Neema Achieng" in form  # the form opens with this customer chosen
