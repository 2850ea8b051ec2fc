"""Numbered pages (customers, transactions, tickets, inbox): one way to cut them."""
from mpm.people.customers import PeopleFilter, people_page
from tests.conftest import make_person


def test_pages_count_the_rows_and_a_page_past_the_end_shows_the_last_one(company):
    empty = people_page(company.id, PeopleFilter(), per_page=2)
    assert (empty.people, empty.total, empty.page, empty.pages) == ([], 0, 1, 1)
    for i, surname in enumerate(["Achieng", "Baraka", "Chege", "Dida", "Eshe"]):
        make_person(company, surname=surname, number=f"+25471200000{i}")

    second = people_page(company.id, PeopleFilter(page=2), per_page=2)
    assert [p.surname for p in second.people] == ["Chege", "Dida"] and (second.total, second.pages) == (5, 3)
    beyond = people_page(company.id, PeopleFilter(page=99), per_page=2)
    assert [p.surname for p in beyond.people] == ["Eshe"] and beyond.page == 3
    before = people_page(company.id, PeopleFilter(page=-4), per_page=2)
    assert [p.surname for p in before.people] == ["Achieng", "Baraka"] and before.page == 1
