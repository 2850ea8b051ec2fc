"""The company's SMS history: filters, search, keyset pages, CSV export, tenant isolation."""
import csv
import io
import re
from datetime import datetime, timedelta, timezone

import pytest

from conftest import login, make_company, make_person, make_user
from mpm.extensions import db
from mpm.messaging.history import HistoryFilter, decode_cursor, encode_cursor, export_csv, history_page
from mpm.models import Sms

HX = {"HX-Request": "true"}
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)


def add_sms(company, minutes=0, **fields) -> Sms:
    values = dict(company_id=company.id, number="+254712000001", body="Hello", status="delivered",
                  gateway="africastalking", created_at=T0 + timedelta(minutes=minutes))
    values.update(fields)
    sms = Sms(**values)
    db.session.add(sms)
    db.session.commit()
    return sms


def ids_in(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr id="sms-row-(\d+)">', page)]


@pytest.fixture
def mixed(company):
    """A small history with one message of each kind that the filters tell apart."""
    amina = make_person(company, "Amina", "Otieno", "+254712000011")
    baraka = make_person(company, "Baraka", "Mwangi", "+254733000022")
    rows = {
        "delivered": add_sms(company, 0, person_id=amina.id, number="+254712000011", body="Token 111"),
        "failed": add_sms(company, 1, person_id=baraka.id, number="+254733000022", status="failed",
                          gateway="textbee", error="Invalid phone number", body="Token 222"),
        "inbound": add_sms(company, 2, person_id=amina.id, number="+254712000011", direction="inbound",
                           status="received", trigger="reply", body="Asante"),
        "broadcast": add_sms(company, 3, person_id=baraka.id, number="+254733000022", trigger="broadcast",
                             status="sent", body="Maintenance on Friday"),
        "stranger": add_sms(company, 60 * 24 * 3, number="+254799000033", direction="inbound",
                            status="received", trigger="reply", body="Who is this?"),
    }
    return {k: v.id for k, v in rows.items()}


def test_history_lists_all_messages_newest_first(logged_in, mixed):
    page = logged_in.get("/sms/").get_data(as_text=True)
    assert "<html" in page and "SMS history" in page
    assert ids_in(page) == [mixed[k] for k in ("stranger", "broadcast", "inbound", "failed", "delivered")]
    assert "Amina Otieno" in page and "Invalid phone number" in page


@pytest.mark.parametrize("query,expected", [
    ("status=failed", ["failed"]),
    ("gateway=textbee", ["failed"]),
    ("direction=inbound", ["stranger", "inbound"]),
    ("direction=outbound&status=delivered", ["delivered"]),
    ("trigger=broadcast", ["broadcast"]),
    ("trigger=reply", ["stranger", "inbound"]),
    ("q=baraka", ["broadcast", "failed"]),
    ("q=amina otieno", ["inbound", "delivered"]),
    ("q=0799 000 033", ["stranger"]),  # a local number reaches a message with no person too
    ("q=0733000022", ["broadcast", "failed"]),
    ("q=000011", ["inbound", "delivered"]),  # part of a number
    ("q=0733 00", ["broadcast", "failed"]),  # part of a number typed the local way
    ("q=0799 00", ["stranger"]),
    ("from=2026-03-04", ["stranger"]),
    ("to=2026-03-01", ["broadcast", "inbound", "failed", "delivered"]),
    ("from=2026-03-02&to=2026-03-03", []),
])
def test_filters(logged_in, mixed, query, expected):
    page = logged_in.get(f"/sms/?{query}").get_data(as_text=True)
    assert ids_in(page) == [mixed[k] for k in expected]
    if not expected:
        assert "No message matches these filters." in page


def test_date_range_is_in_the_company_time_zone(logged_in, company):
    # 22:30 UTC on 1 March is 01:30 on 2 March in Nairobi (UTC+3).
    late = add_sms(company, created_at=datetime(2026, 3, 1, 22, 30, tzinfo=timezone.utc))
    page = logged_in.get("/sms/?from=2026-03-02&to=2026-03-02").get_data(as_text=True)
    assert ids_in(page) == [late.id]
    assert "2026-03-02 01:30 EAT" in page
    assert ids_in(logged_in.get("/sms/?to=2026-03-01").get_data(as_text=True)) == []


def test_unknown_filter_values_are_ignored_not_errors(logged_in, mixed):
    response = logged_in.get("/sms/?status=bogus&gateway=nope&from=yesterday&after=garbage&person=x")
    assert response.status_code == 200
    assert len(ids_in(response.get_data(as_text=True))) == 5


def test_htmx_gets_the_table_and_a_plain_request_the_same_rows_in_a_page(logged_in, mixed):
    fragment = logged_in.get("/sms/?status=failed", headers=HX)
    text = fragment.get_data(as_text=True)
    assert text.lstrip().startswith('<section id="sms-table"') and "<html" not in text
    assert "HX-Request" in fragment.headers["Vary"]
    full = logged_in.get("/sms/?status=failed").get_data(as_text=True)
    assert "<html" in full and ids_in(full) == ids_in(text) == [mixed["failed"]]
    assert '<option value="failed" selected>' in full


def test_table_polls_while_a_row_is_in_flight_and_stops_after(logged_in, company, mixed):
    in_flight = logged_in.get("/sms/", headers=HX).get_data(as_text=True)
    assert 'hx-trigger="every 5s"' in in_flight  # the broadcast row is `sent`
    final = logged_in.get("/sms/?trigger=reply", headers=HX).get_data(as_text=True)
    assert "hx-trigger" not in final.split(">", 1)[0]


def walk(client, query: str, per_page_rows: int) -> tuple[list[int], list[int]]:
    """Follow 'Older →' to the end, then '← Newer' back to the top; returns the ids seen each way."""
    down, pages = [], []
    url = f"/sms/?{query}"
    while url:
        page = client.get(url, headers=HX).get_data(as_text=True)
        ids = ids_in(page)
        assert len(ids) <= per_page_rows
        pages.append(ids)
        down.extend(ids)
        older = re.search(r'<a href="([^"]+)"[^>]*rel="next"', page)
        url = older.group(1).replace("&amp;", "&") if older else None
    up = list(pages[-1])
    url = re.search(r'<a href="([^"]+)"[^>]*rel="prev"', page)
    url = url.group(1).replace("&amp;", "&") if url else None
    while url:
        page = client.get(url, headers=HX).get_data(as_text=True)
        up = ids_in(page) + up
        newer = re.search(r'<a href="([^"]+)"[^>]*rel="prev"', page)
        url = newer.group(1).replace("&amp;", "&") if newer else None
    return down, up


def test_keyset_pages_skip_and_repeat_nothing_even_with_equal_times(app, logged_in, company):
    app.config["SMS_HISTORY_PER_PAGE"] = 7
    # Many messages share a created_at (a broadcast stores a batch at once): the id breaks ties.
    for i in range(40):
        add_sms(company, minutes=i // 6, body=f"m{i}", status="failed" if i % 3 == 0 else "delivered")
    expected = [s.id for s in db.session.query(Sms).order_by(Sms.created_at.desc(), Sms.id.desc())]
    down, up = walk(logged_in, "", 7)
    assert down == expected
    # Going back up with '← Newer' rebuilds the list; the top page is always full.
    assert sorted(up, reverse=True) == sorted(expected, reverse=True) and len(set(up)) == len(expected)
    failed = [s.id for s in db.session.query(Sms).filter(Sms.status == "failed")
              .order_by(Sms.created_at.desc(), Sms.id.desc())]
    assert walk(logged_in, "status=failed", 7)[0] == failed


def test_oldest_page_and_links_keep_the_filters(app, logged_in, company):
    app.config["SMS_HISTORY_PER_PAGE"] = 3
    made = [add_sms(company, minutes=i, status="failed").id for i in range(8)]
    add_sms(company, minutes=100, status="delivered")
    first = logged_in.get("/sms/?status=failed").get_data(as_text=True)
    assert ids_in(first) == made[::-1][:3]
    assert "rel=\"prev\"" not in first
    oldest_link = re.search(r'<a href="([^"]+)"[^>]*rel="last"', first).group(1).replace("&amp;", "&")
    assert "status=failed" in oldest_link and "oldest=1" in oldest_link
    oldest = logged_in.get(oldest_link).get_data(as_text=True)
    assert ids_in(oldest) == made[:3][::-1]
    assert 'rel="next"' not in oldest and 'rel="prev"' in oldest


def test_cursor_round_trips_to_the_microsecond():
    moment = datetime(2026, 11, 26, 1, 2, 3, 456789, tzinfo=timezone.utc)
    assert decode_cursor(encode_cursor(moment, 42)) == (moment, 42)
    assert decode_cursor("12-x") is None and decode_cursor("") is None


def test_domain_page_of_one_company_never_contains_another(app_ctx):
    mine, theirs = make_company("Mine"), make_company("Theirs")
    own = add_sms(mine, 0)
    add_sms(theirs, 1)
    page = history_page(mine.id, HistoryFilter(), 50)
    assert [s.id for s in page.rows] == [own.id]


def test_another_companys_messages_are_invisible(client, app_ctx):
    mine, theirs = make_company("Mine"), make_company("Theirs")
    add_sms(mine, 0, body="Mine only")
    stranger = add_sms(theirs, 1, body="Their secret", status="failed")
    login(client, make_user(mine).email)
    page = client.get("/sms/").get_data(as_text=True)
    assert "Mine only" in page and "Their secret" not in page
    assert client.get(f"/sms/{stranger.id}").status_code == 404
    assert "Their secret" not in get_csv(client, "/sms/export.csv").get_data(as_text=True)


def get_csv(client, url):
    # buffered: the streamed body is read inside the request's own context (see IsolatedClient).
    return client.get(url, buffered=True)


def read_csv(response) -> list[dict]:
    text = response.get_data(as_text=True)
    assert text.startswith("\ufeff")  # Excel reads UTF-8 only with the byte-order mark
    return list(csv.DictReader(io.StringIO(text.removeprefix("\ufeff"))))


def test_csv_export_of_the_filtered_list(logged_in, mixed):
    response = get_csv(logged_in, "/sms/export.csv?direction=outbound")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = read_csv(response)
    assert [int(r["id"]) for r in rows] == [mixed[k] for k in ("broadcast", "failed", "delivered")]
    failed = rows[1]
    assert failed["name"] == "Baraka Mwangi" and failed["number"] == "+254733000022"
    assert failed["status"] == "failed" and failed["gateway"] == "textbee"
    assert failed["error"] == "Invalid phone number" and failed["body"] == "Token 222"
    assert failed["created_at"] == "2026-03-01 12:01:00"  # Nairobi time
    assert (failed["encoding"], failed["segments"]) == ("GSM-7", "1")


def test_csv_export_is_built_batch_by_batch_and_complete(app_ctx, company):
    made = [add_sms(company, minutes=i % 5, body=f"row {i}, with \"quotes\"\nand a newline").id for i in range(23)]
    chunks = list(export_csv(company.id, HistoryFilter(), batch=5))
    assert len(chunks) == 1 + 5  # header, then 23 rows in batches of 5
    rows = list(csv.DictReader(io.StringIO("".join(chunks).removeprefix("\ufeff"))))
    assert sorted(int(r["id"]) for r in rows) == sorted(made)
    assert len({r["id"] for r in rows}) == 23
    assert rows[0]["body"].startswith("row ") and "\n" in rows[0]["body"]


def test_csv_cells_never_become_spreadsheet_formulas(logged_in, company):
    add_sms(company, body="=HYPERLINK(\"http://evil\")")
    rows = read_csv(get_csv(logged_in, "/sms/export.csv"))
    assert rows[0]["body"] == "'=HYPERLINK(\"http://evil\")"


def test_export_link_carries_the_filters(logged_in, mixed):
    page = logged_in.get("/sms/?status=failed&q=baraka").get_data(as_text=True)
    link = re.search(r'href="(/sms/export\.csv[^"]*)"', page).group(1).replace("&amp;", "&")
    assert "status=failed" in link and "q=baraka" in link
    assert [int(r["id"]) for r in read_csv(get_csv(logged_in, link))] == [mixed["failed"]]


def test_person_link_from_the_customer_page_filters_to_that_person(app, logged_in, company):
    person = make_person(company, "Neema", "Achieng", "+254712000044")
    for i in range(25):  # more than the panel shows
        add_sms(company, i, person_id=person.id, number="+254712000044", body=f"n{i}")
    add_sms(company, 99, body="someone else")
    panel = logged_in.get(f"/customers/{person.id}").get_data(as_text=True)
    assert len(ids_in(panel[panel.index('id="person-sms-history"'):])) == 20
    link = re.search(r'href="(/sms/\?person=\d+)">All messages of Neema Achieng', panel).group(1)
    app.config["SMS_HISTORY_PER_PAGE"] = 50
    page = logged_in.get(link).get_data(as_text=True)
    assert len(ids_in(page)) == 25 and "someone else" not in page


def test_csv_keeps_phone_numbers_but_defuses_signed_formulas(logged_in, company):
    add_sms(company, body="+SUM(1,2)", number="+254712000001")
    rows = read_csv(get_csv(logged_in, "/sms/export.csv"))
    assert rows[0]["number"] == "+254712000001"
    assert rows[0]["body"] == "'+SUM(1,2)"


def test_broad_search_finds_the_same_messages_as_a_narrow_one(logged_in, company, monkeypatch):
    from mpm.messaging import history

    made = []
    for i in range(4):
        person = make_person(company, f"Wanjiku{i}", "Kamau", f"+2547120001{i:02d}")
        made += [add_sms(company, i * 10 + j, person_id=person.id, number=f"+2547120001{i:02d}").id for j in range(3)]
    text_only = add_sms(company, 99, body="nobody's").id
    narrow = ids_in(logged_in.get("/sms/?q=kamau").get_data(as_text=True))
    monkeypatch.setattr(history, "FEW_PEOPLE", 2)  # four people match: the broad way
    broad = ids_in(logged_in.get("/sms/?q=kamau").get_data(as_text=True))
    assert narrow == broad == made[::-1]
    # Words nobody is named by still find the messages whose text holds them.
    assert ids_in(logged_in.get("/sms/?q=nobody").get_data(as_text=True)) == [text_only]
    assert ids_in(logged_in.get("/sms/?q=zebra").get_data(as_text=True)) == []


def test_number_search_finds_messages_from_a_number_that_later_became_a_customers(logged_in, company):
    """An inbound SMS from an unknown number stays findable by that number after staff add the
    number to a customer."""
    from mpm.models import PhoneNumber, Sms

    db.session.add(Sms(company_id=company.id, direction="inbound", number="+254722000999", body="Who is this?",
                       status="received", trigger="reply"))
    db.session.commit()
    person = make_person(company, "Later", "Customer", number=None)
    db.session.add(PhoneNumber(company_id=company.id, person_id=person.id, e164="+254722000999", is_primary=True))
    db.session.commit()
    assert "Who is this?" in logged_in.get("/sms/?q=0722 000 999").get_data(as_text=True)
    assert "Who is this?" not in logged_in.get("/sms/?q=0722 000 998").get_data(as_text=True)


def test_the_count_above_the_list_stops_at_a_thousand_and_says_so(logged_in, company):
    from sqlalchemy import insert

    rows = [dict(company_id=company.id, direction="outbound", number="+254712000001", body="Hello", status="failed",
                 gateway="africastalking", error="AfricasTalking: Failed, reason DeliveryFailure",
                 created_at=T0 + timedelta(seconds=i), updated_at=T0) for i in range(1001)]
    db.session.execute(insert(Sms), rows)
    db.session.commit()
    reason = "AfricasTalking: Failed, reason DeliveryFailure"
    page = logged_in.get("/sms/", query_string={"status": "failed", "reason": reason}).get_data(as_text=True)
    assert re.search(r'id="sms-total">1,000\+ messages<', page)
    add_sms(company, 0, status="failed", error="TextBee: Generic failure")
    page = logged_in.get("/sms/", query_string={"status": "failed", "reason": "TextBee"}).get_data(as_text=True)
    assert re.search(r'id="sms-total">1 message<', page)
