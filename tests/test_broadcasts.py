"""Broadcasts: audience, placeholders, confirm, scheduling, quiet hours, the chunked fan-out,
pause/resume/cancel, progress and tenant isolation."""
import re
from datetime import datetime, timedelta, timezone

import pytest
from rq.registry import ScheduledJobRegistry
from sqlalchemy import func, select
from sqlalchemy.orm.attributes import set_committed_value

from conftest import (csrf_token, enable_gateway, enable_simulated_gateway, login, make_company, make_person, make_user,
                      run_jobs)
from mpm import jobs
from mpm.broadcasts import audience as audiences
from mpm.broadcasts import fanout, lifecycle, placeholders, progress, schedule
from mpm.broadcasts.audience import Audience
from mpm.broadcasts.lifecycle import BroadcastForm, BroadcastRefused
from mpm.extensions import db
from mpm.messaging.send import NoActiveSmsProvider
from mpm.models import Broadcast, CustomerGroup, CustomerType, MiniGrid, Sms, SmsEvent
from mpm.models.base import utcnow
from mpm.queue import BULK, queue

UTC = timezone.utc


@pytest.fixture
def town(company):
    """Two mini-grids, a group, a type, and people who overlap across them."""
    grid_a, grid_b = MiniGrid(company_id=company.id, name="Kisiwa"), MiniGrid(company_id=company.id, name="Mto Mawe")
    shops = CustomerGroup(company_id=company.id, name="Shops")
    business = CustomerType(company_id=company.id, name="Commercial")
    db.session.add_all([grid_a, grid_b, shops, business])
    db.session.commit()
    people = {
        "amina": make_person(company, "Amina", "Otieno", "+254712000001", mini_grid_id=grid_a.id,
                             customer_group_id=shops.id),
        "baraka": make_person(company, "Baraka", "Mwangi", "+254712000002", mini_grid_id=grid_b.id,
                              customer_type_id=business.id),
        "chege": make_person(company, "Chege", "Kamau", "+254712000003", mini_grid_id=grid_a.id,
                             customer_type_id=business.id, customer_group_id=shops.id),
        "daudi": make_person(company, "Daudi", "Agent", "+254712000004", kind="agent", mini_grid_id=grid_a.id),
        "esther": make_person(company, "Esther", "Opted", "+254712000005", mini_grid_id=grid_a.id,
                              opted_out_at=utcnow()),
        "faraji": make_person(company, "Faraji", "Noprimary", "+254712000006", primary=False,
                              mini_grid_id=grid_a.id),
    }
    return {"grid_a": grid_a.id, "grid_b": grid_b.id, "shops": shops.id, "business": business.id,
            **{k: p.id for k, p in people.items()}}


def recipient_ids(company, audience: Audience) -> list[int]:
    return [r.person_id for r in audiences.recipients_after(company.id, audience, 0, 1000)]


def draft(company, admin, body="Dear [name], power is off on Saturday.", **form_fields) -> Broadcast:
    audience = form_fields.pop("audience")
    return lifecycle.save_draft(company.id, admin.id, BroadcastForm(audience=audience, body=body, **form_fields))


FANOUT_JOB = f"{jobs.fanout.__module__}.{jobs.fanout.__name__}"
SEND_JOB = f"{jobs.send.__module__}.{jobs.send.__name__}"


def bulk_job_args(func_name: str) -> list[tuple]:
    return [tuple(job.args) for job in queue(BULK).get_jobs() if job.func_name == func_name]


def send_lanes() -> list[tuple]:
    """(company, lane) of every send job waiting in the bulk queue."""
    return [args[:2] for args in bulk_job_args(SEND_JOB)]


def run_fanout_until_idle(broadcast_id: int, now=None, limit: int = 100) -> None:
    """Run the fan-out job as the worker would, chunk after chunk, until it stops re-enqueueing itself."""
    for _ in range(limit):
        result = fanout.run_broadcast(broadcast_id, now=now)
        if not result.endswith("created"):
            return
    raise AssertionError("fan-out never finished")


# --- audience -----------------------------------------------------------------------------------

def test_each_filter_reaches_its_customers(company, town):
    assert recipient_ids(company, Audience(mini_grid_ids=(town["grid_a"],))) == [town["amina"], town["chege"]]
    assert recipient_ids(company, Audience(group_ids=(town["shops"],))) == [town["amina"], town["chege"]]
    assert recipient_ids(company, Audience(type_ids=(town["business"],))) == [town["baraka"], town["chege"]]
    assert recipient_ids(company, Audience(person_ids=(town["baraka"],))) == [town["baraka"]]
    assert recipient_ids(company, Audience(all_customers=True)) == [town["amina"], town["baraka"], town["chege"]]


def test_a_mix_of_filters_is_their_union_with_each_person_once(company, town):
    mix = Audience(mini_grid_ids=(town["grid_a"],), group_ids=(town["shops"],), type_ids=(town["business"],),
                   person_ids=(town["chege"], town["daudi"]))
    # Chege matches all four filters and is still one recipient.
    assert recipient_ids(company, mix) == [town["amina"], town["baraka"], town["chege"], town["daudi"]]
    counts = audiences.count(company.id, mix)
    assert (counts.matched, counts.recipients, counts.opted_out, counts.without_primary) == (6, 4, 1, 1)


def test_agents_only_when_picked_and_opted_out_or_non_primary_never(company, town):
    by_grid = recipient_ids(company, Audience(mini_grid_ids=(town["grid_a"],)))
    assert town["daudi"] not in by_grid  # an agent on the mini-grid is not a customer
    assert town["esther"] not in by_grid and town["faraji"] not in by_grid
    picked = Audience(person_ids=(town["daudi"], town["esther"], town["faraji"]))
    assert recipient_ids(company, picked) == [town["daudi"]]
    counts = audiences.count(company.id, Audience(mini_grid_ids=(town["grid_a"],)))
    assert (counts.matched, counts.recipients, counts.opted_out, counts.without_primary) == (4, 2, 1, 1)


def test_another_companys_people_and_filters_never_count(company, town):
    other = make_company("Other Grid Co")
    foreign_grid = MiniGrid(company_id=other.id, name="Far")
    db.session.add(foreign_grid)
    db.session.commit()
    stranger = make_person(other, "Stranger", "Elsewhere", "+254712009999", mini_grid_id=foreign_grid.id)
    forged = Audience(mini_grid_ids=(foreign_grid.id,), person_ids=(stranger.id,))
    assert recipient_ids(company, forged) == []
    assert audiences.own_ids_only(company.id, forged).is_empty
    assert recipient_ids(company, Audience(all_customers=True)) == [town["amina"], town["baraka"], town["chege"]]


# --- placeholders -------------------------------------------------------------------------------

def test_placeholders_render_per_recipient(company, town):
    enable_gateway(company, "africastalking")
    admin = make_user(company)
    broadcast = draft(company, admin, "Dear [name] [surname] of [mini_grid] ([group]/[type]): power off Sat.",
                      audience=Audience(person_ids=(town["amina"], town["baraka"])))
    lifecycle.confirm(company.id, broadcast.id, admin.id)
    run_fanout_until_idle(broadcast.id)
    bodies = dict(db.session.execute(select(Sms.person_id, Sms.body).where(Sms.broadcast_id == broadcast.id)).all())
    assert bodies == {
        town["amina"]: "Dear Amina Otieno of Kisiwa (Shops/): power off Sat.",
        town["baraka"]: "Dear Baraka Mwangi of Mto Mawe (/Commercial): power off Sat.",
    }


def test_unknown_placeholder_is_refused_by_name_and_nothing_is_stored(logged_in, company, town):
    enable_gateway(company, "africastalking")
    token = csrf_token(logged_in)
    response = logged_in.post("/broadcasts/new", data={
        "csrf_token": token, "mini_grid_ids": town["grid_a"], "body": "Hi [name], your [meter_serial] is due"})
    assert response.status_code == 422
    assert "Unknown placeholder [meter_serial]" in response.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.scalar(select(func.count(Broadcast.id))) == 0
    assert db.session.scalar(select(func.count(Sms.id))) == 0
    with pytest.raises(placeholders.UnknownPlaceholder, match=r"\[amount\], \[token\]"):
        placeholders.check("[token] and [amount]")


def test_bracketed_text_that_is_no_placeholder_word_stays_as_written():
    placeholders.check("Power off [see notice board] on Sat.")
    assert placeholders.render("Hi [name] [see notice]", {"name": "Amina"}) == "Hi Amina [see notice]"


# --- compose page -------------------------------------------------------------------------------

def test_compose_preview_shows_counts_segments_and_estimated_cost(logged_in, company, town):
    company.settings = {"sms_price_per_segment": 1.5}
    db.session.commit()
    token = csrf_token(logged_in)
    fragment = logged_in.post("/broadcasts/preview", headers={"HX-Request": "true"}, data={
        "csrf_token": token, "mini_grid_ids": town["grid_a"], "person_ids": town["daudi"],
        "body": "Dear [name], " + "x" * 200})
    html = fragment.get_data(as_text=True)
    assert html.lstrip().startswith('<section id="broadcast-summary"')
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))
    assert "Reached by the filters 5 people" in text
    assert "Will receive it 3 with a primary number" in text
    assert "Opted out (STOP) 1" in text and "No primary number 1" in text
    assert "2 segments" in text
    assert "about KES 9.00" in text and "estimate" in text  # 3 people × 2 segments × 1.50
    page = logged_in.get("/broadcasts/new").get_data(as_text=True)
    assert 'id="broadcast-summary"' in page and "Kisiwa" in page


def test_picking_a_person_adds_a_checked_chip_and_refreshes_the_count(logged_in, company, town):
    found = logged_in.get("/broadcasts/people?q=daudi", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "Daudi Agent" in found and f"/broadcasts/people/{town['daudi']}/chip" in found
    chip = logged_in.get(f"/broadcasts/people/{town['daudi']}/chip", headers={"HX-Request": "true"})
    assert f'name="person_ids" value="{town["daudi"]}" checked' in chip.get_data(as_text=True)
    assert chip.headers["HX-Trigger-After-Swap"] == "audience-changed"


# --- confirm ------------------------------------------------------------------------------------

def test_confirm_without_an_active_provider_refuses_and_queues_nothing(logged_in, company, town):
    token = csrf_token(logged_in)
    saved = logged_in.post("/broadcasts/new", data={"csrf_token": token, "all_customers": "on", "body": "Hello [name]"})
    assert saved.status_code == 302
    broadcast_id = int(re.search(r"/broadcasts/(\d+)/confirm", saved.headers["Location"]).group(1))
    confirm_page = logged_in.get(f"/broadcasts/{broadcast_id}/confirm").get_data(as_text=True)
    assert "3 people" in confirm_page and "KES 2.40" in confirm_page
    response = logged_in.post(f"/broadcasts/{broadcast_id}/confirm", data={"csrf_token": token})
    assert response.status_code == 422
    assert "No active SMS provider" in response.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Broadcast, broadcast_id).state == "draft"
    assert db.session.scalar(select(func.count(Sms.id))) == 0
    assert queue(BULK).count == 0


def test_confirm_stores_the_broadcast_and_the_job_creates_the_messages(logged_in, company, town, admin):
    enable_gateway(company, "africastalking")
    token = csrf_token(logged_in)
    saved = logged_in.post("/broadcasts/new", data={
        "csrf_token": token, "mini_grid_ids": town["grid_a"], "type_ids": town["business"],
        "body": "Power off Saturday", "validity_hours": "6"})
    broadcast_id = int(re.search(r"/broadcasts/(\d+)/confirm", saved.headers["Location"]).group(1))
    sent = logged_in.post(f"/broadcasts/{broadcast_id}/confirm", data={"csrf_token": token})
    assert sent.status_code == 302 and sent.headers["Location"].endswith(f"/broadcasts/{broadcast_id}")
    db.session.expire_all()
    broadcast = db.session.get(Broadcast, broadcast_id)
    assert broadcast.state == "sending" and broadcast.recipient_count == 3
    # The request only stored the broadcast: the messages come from the job.
    assert db.session.scalar(select(func.count(Sms.id))) == 0
    assert bulk_job_args(FANOUT_JOB) == [(broadcast_id,)]
    run_fanout_until_idle(broadcast_id)
    rows = db.session.scalars(select(Sms).where(Sms.broadcast_id == broadcast_id).order_by(Sms.person_id)).all()
    assert [r.person_id for r in rows] == [town["amina"], town["baraka"], town["chege"]]
    assert {(r.trigger, r.lane, r.status, r.sender_user_id) for r in rows} == {("broadcast", "bulk", "queued", admin.id)}
    expires = schedule.as_utc(rows[0].expires_at)
    assert expires == schedule.as_utc(broadcast.started_at) + timedelta(hours=6)
    assert send_lanes() == [(company.id, BULK)]  # one send job drains the company's bulk lane
    assert db.session.scalar(select(func.count(SmsEvent.id)).where(SmsEvent.status == "queued")) == 3


# --- scheduling and quiet hours -----------------------------------------------------------------

def test_schedule_is_read_in_the_company_time_zone_and_waits_for_its_time(company, town, app):
    enable_gateway(company, "africastalking")
    admin = make_user(company)
    now = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    broadcast = lifecycle.save_draft(company.id, admin.id, BroadcastForm(
        audience=Audience(all_customers=True), body="Tariff change", when="later", send_at="2026-12-01T08:30"),
        now=now)
    # 08:30 in Nairobi (UTC+3) is 05:30 UTC.
    assert schedule.as_utc(broadcast.scheduled_for) == datetime(2026, 12, 1, 5, 30, tzinfo=UTC)
    lifecycle.confirm(company.id, broadcast.id, admin.id, now=now)
    assert broadcast.state == "scheduled"
    registry = ScheduledJobRegistry(queue=queue(BULK))
    assert [registry.get_scheduled_time(j) for j in registry.get_job_ids()] == [datetime(2026, 12, 1, 5, 30, tzinfo=UTC)]
    # Too early: nothing is created.
    assert fanout.run_broadcast(broadcast.id, now=now) == "scheduled"
    assert db.session.scalar(select(func.count(Sms.id))) == 0
    run_fanout_until_idle(broadcast.id, now=datetime(2026, 12, 1, 5, 30, tzinfo=UTC))
    db.session.refresh(broadcast)
    assert broadcast.state == "sending" and db.session.scalar(select(func.count(Sms.id))) == 3
    # The validity period counts from the scheduled start.
    assert schedule.as_utc(broadcast.expires_at) == datetime(2026, 12, 2, 5, 30, tzinfo=UTC)


def test_a_schedule_in_the_past_is_refused(company, town):
    admin = make_user(company)
    with pytest.raises(BroadcastRefused, match="is in the past"):
        lifecycle.save_draft(company.id, admin.id, BroadcastForm(
            audience=Audience(all_customers=True), body="Hi", when="later", send_at="2026-01-01T08:00"),
            now=datetime(2026, 11, 30, 9, 0, tzinfo=UTC))


@pytest.mark.parametrize("local_time,expected_end", [
    ("2026-12-01 22:15", "2026-12-02 07:00"),  # evening, window runs past midnight
    ("2026-12-02 06:59", "2026-12-02 07:00"),  # early morning, same window
    ("2026-12-02 07:00", None),
    ("2026-12-01 20:59", None),
])
def test_quiet_hours_across_midnight(local_time, expected_end):
    nairobi = schedule.zone("Africa/Nairobi")
    moment = datetime.fromisoformat(local_time).replace(tzinfo=nairobi)
    end = schedule.quiet_until(moment, {"start": "21:00", "end": "07:00"}, "Africa/Nairobi")
    assert (schedule.local_text(end, "Africa/Nairobi") or None) == expected_end


def test_quiet_hours_within_one_day():
    quiet = {"start": "13:00", "end": "14:00"}
    noon_utc = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)  # 13:30 in Nairobi
    assert schedule.quiet_until(noon_utc, quiet, "Africa/Nairobi") == datetime(2026, 12, 1, 11, 0, tzinfo=UTC)
    assert schedule.quiet_until(noon_utc + timedelta(hours=1), quiet, "Africa/Nairobi") is None


def test_nothing_is_created_inside_quiet_hours_and_the_rest_waits_for_their_end(company, town):
    enable_gateway(company, "africastalking")
    admin = make_user(company)
    broadcast = draft(company, admin, audience=Audience(all_customers=True), quiet_on=True,
                      quiet_start="21:00", quiet_end="07:00")
    late_evening = datetime(2026, 12, 1, 19, 30, tzinfo=UTC)  # 22:30 in Nairobi
    lifecycle.confirm(company.id, broadcast.id, admin.id, now=late_evening)
    assert fanout.run_broadcast(broadcast.id, now=late_evening) == "quiet hours"
    assert db.session.scalar(select(func.count(Sms.id))) == 0
    db.session.refresh(broadcast)
    morning = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)  # 07:00 in Nairobi
    assert schedule.as_utc(broadcast.waiting_until) == morning
    registry = ScheduledJobRegistry(queue=queue(BULK))
    assert morning in [registry.get_scheduled_time(j) for j in registry.get_job_ids()]
    run_fanout_until_idle(broadcast.id, now=morning)
    assert db.session.scalar(select(func.count(Sms.id)).where(Sms.status == "queued")) == 3


def test_a_broadcast_past_its_validity_expires_the_rest_instead_of_sending_late(app, company, town):
    app.config["BROADCAST_CHUNK_SIZE"] = 2
    enable_gateway(company, "africastalking")
    admin = make_user(company)
    broadcast = draft(company, admin, audience=Audience(all_customers=True), validity_hours="1")
    lifecycle.confirm(company.id, broadcast.id, admin.id)
    fanout.run_broadcast(broadcast.id)  # first chunk of 2 in time
    run_fanout_until_idle(broadcast.id, now=utcnow() + timedelta(hours=2))
    statuses = dict(db.session.execute(select(Sms.person_id, Sms.status).where(Sms.broadcast_id == broadcast.id)).all())
    assert statuses == {town["amina"]: "queued", town["baraka"]: "queued", town["chege"]: "expired"}
    assert "expired" in progress.progress(broadcast).counts and progress.progress(broadcast).counts["expired"] == 1


# --- the fan-out: chunks, crash, duplicates, pause, resume, cancel ------------------------------

@pytest.fixture
def crowd(app, company, simulator):
    """25 customers on one mini-grid, chunks of 10, AfricasTalking simulated."""
    app.config["BROADCAST_CHUNK_SIZE"] = 10
    grid = MiniGrid(company_id=company.id, name="Big")
    db.session.add(grid)
    db.session.commit()
    for i in range(25):
        make_person(company, f"P{i:02d}", "Crowd", f"+2547120200{i:02d}", mini_grid_id=grid.id)
    enable_simulated_gateway(company, simulator)
    admin = make_user(company, email="crowd-author@example.test")
    broadcast = draft(company, admin, audience=Audience(mini_grid_ids=(grid.id,)))
    lifecycle.confirm(company.id, broadcast.id, admin.id)
    return broadcast


def received_numbers(simulator) -> list[str]:
    return sorted(m["number"] for m in simulator.received("africastalking"))


def crowd_numbers() -> list[str]:
    return sorted(f"+2547120200{i:02d}" for i in range(25))


def test_fanout_works_in_chunks_ordered_by_person(app, crowd, simulator):
    assert fanout.run_broadcast(crowd.id) == "10 created"
    db.session.refresh(crowd)
    first_ten = db.session.scalars(select(Sms.person_id).where(Sms.broadcast_id == crowd.id).order_by(Sms.person_id)).all()
    assert crowd.expanded_through_person_id == first_ten[-1] and len(first_ten) == 10
    # The next chunk waits behind the send job of the company's bulk lane.
    names = [job.func_name for job in queue(BULK).get_jobs()]
    assert names[-2:] == [SEND_JOB, FANOUT_JOB]
    run_fanout_until_idle(crowd.id)
    assert db.session.scalar(select(func.count(Sms.id)).where(Sms.broadcast_id == crowd.id)) == 25
    run_jobs(app)
    assert received_numbers(simulator) == crowd_numbers()


def test_a_worker_dying_mid_broadcast_loses_nothing_and_sends_nothing_twice(app, crowd, simulator, monkeypatch):
    fanout.run_broadcast(crowd.id)
    with app.app_context():
        queue(BULK).empty()  # the worker's queue went with it
        jobs.leases.release(jobs.drain_lease(crowd.company_id, BULK))
    real_enqueue = fanout.enqueue_send
    handed = {"n": 0}

    def die_after_commit(*args, **kwargs):
        handed["n"] += 1
        if handed["n"] == 2:  # chunk 2 committed, never handed to RQ
            raise SystemExit("worker killed")
        return real_enqueue(*args, **kwargs)

    monkeypatch.setattr(fanout, "enqueue_send", die_after_commit)
    with pytest.raises(SystemExit):
        fanout.run_broadcast(crowd.id)
    db.session.rollback()
    monkeypatch.setattr(fanout, "enqueue_send", real_enqueue)

    real_row = fanout._row
    calls = {"n": 0}

    def die_mid_insert(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("worker killed while building chunk 3")
        return real_row(*args, **kwargs)

    monkeypatch.setattr(fanout, "_row", die_mid_insert)
    with pytest.raises(RuntimeError):
        fanout.run_broadcast(crowd.id)
    db.session.rollback()
    monkeypatch.setattr(fanout, "_row", real_row)
    assert db.session.scalar(select(func.count(Sms.id))) == 20  # chunk 3 left no half rows

    run_fanout_until_idle(crowd.id)  # the retry
    person_ids = db.session.scalars(select(Sms.person_id).where(Sms.broadcast_id == crowd.id)).all()
    assert len(person_ids) == 25 and len(set(person_ids)) == 25
    run_jobs(app)
    assert received_numbers(simulator) == crowd_numbers()  # each once


def test_two_runs_from_the_same_resume_point_insert_the_chunk_once(crowd):
    stale = db.session.get(Broadcast, crowd.id)
    assert fanout.expand_chunk(stale) == 10
    set_committed_value(stale, "expanded_through_person_id", 0)  # a second job that read the resume point before the first committed
    assert fanout.expand_chunk(stale) is None
    assert db.session.scalar(select(func.count(Sms.id))) == 10


def test_pause_stops_the_fanout_and_resume_goes_on(crowd, company):
    fanout.run_broadcast(crowd.id)
    lifecycle.pause(company.id, crowd.id, None)
    assert fanout.run_broadcast(crowd.id) == "stopped"
    assert db.session.scalar(select(func.count(Sms.id))) == 10
    lifecycle.resume(company.id, crowd.id, None)
    assert bulk_job_args(FANOUT_JOB)[-1] == (crowd.id,)
    run_fanout_until_idle(crowd.id)
    assert db.session.scalar(select(func.count(Sms.id))) == 25


def test_a_chunk_created_while_pausing_is_not_sent_until_resumed(app, crowd, company, simulator, monkeypatch):
    real_expand = fanout.expand_chunk

    def pause_right_after_insert(broadcast, **kwargs):
        inserted = real_expand(broadcast, **kwargs)
        lifecycle.pause(company.id, crowd.id, None)
        return inserted

    monkeypatch.setattr(fanout, "expand_chunk", pause_right_after_insert)
    fanout.run_broadcast(crowd.id)
    monkeypatch.setattr(fanout, "expand_chunk", real_expand)
    run_jobs(app)
    assert simulator.received() == []
    lifecycle.resume(company.id, crowd.id, None)
    run_jobs(app)
    assert received_numbers(simulator) == crowd_numbers()


def test_cancel_stops_what_has_not_been_sent(crowd, company):
    fanout.run_broadcast(crowd.id)
    ids = db.session.scalars(select(Sms.id).where(Sms.broadcast_id == crowd.id).order_by(Sms.id)).all()
    already_sent = db.session.get(Sms, ids[0])
    already_sent.status = "sent"
    db.session.commit()
    lifecycle.cancel(company.id, crowd.id, None)
    db.session.expire_all()
    statuses = db.session.execute(select(Sms.status, func.count()).group_by(Sms.status)).all()
    assert dict(statuses) == {"sent": 1, "cancelled": 9}
    assert db.session.scalar(select(func.count(SmsEvent.id)).where(SmsEvent.status == "cancelled")) == 9
    assert fanout.run_broadcast(crowd.id) == "stopped"
    assert db.session.scalar(select(func.count(Sms.id))) == 10
    with pytest.raises(BroadcastRefused, match="already cancelled"):
        lifecycle.cancel(company.id, crowd.id, None)


def test_pause_and_resume_refuse_in_the_wrong_state_and_resume_needs_a_provider(crowd, company):
    with pytest.raises(BroadcastRefused, match="Only a paused broadcast"):
        lifecycle.resume(company.id, crowd.id, None)
    lifecycle.pause(company.id, crowd.id, None)
    with pytest.raises(BroadcastRefused, match="can be paused"):
        lifecycle.pause(company.id, crowd.id, None)
    from mpm.models import GatewaySetting
    db.session.execute(GatewaySetting.__table__.update().values(enabled=False))
    db.session.commit()
    with pytest.raises(NoActiveSmsProvider):
        lifecycle.resume(company.id, crowd.id, None)
    db.session.refresh(crowd)
    assert crowd.state == "paused"


# --- progress page ------------------------------------------------------------------------------

def test_progress_page_polls_while_sending_shows_failures_and_stops_when_done(client, company, crowd):
    login(client, make_user(company, email="watcher@example.test").email)
    run_fanout_until_idle(crowd.id)
    page = client.get(f"/broadcasts/{crowd.id}").get_data(as_text=True)
    assert 'hx-trigger="load delay:2s"' in page and "0 of 25 done" in page
    rows = db.session.scalars(select(Sms).where(Sms.broadcast_id == crowd.id).order_by(Sms.id)).all()
    for sms in rows[:20]:
        sms.status = "delivered"
    for sms in rows[20:]:
        sms.status, sms.error = "failed", "AfricasTalking: InvalidPhoneNumber"
    db.session.commit()
    fragment = client.get(f"/broadcasts/{crowd.id}/progress", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert fragment.lstrip().startswith('<section id="broadcast-progress"')
    assert '<td data-status="delivered">20</td>' in fragment and '<td data-status="failed">5</td>' in fragment
    assert "AfricasTalking: InvalidPhoneNumber" in fragment and "P20 Crowd" in fragment
    assert "hx-trigger" not in fragment.split("<h2>")[0]  # done: polling stops
    assert "status-done" in fragment
    db.session.expire_all()
    assert db.session.get(Broadcast, crowd.id).finished_at is not None


def test_pause_resume_and_cancel_through_the_page(logged_in, company, crowd):
    token = csrf_token(logged_in)
    paused = logged_in.post(f"/broadcasts/{crowd.id}/pause", data={"csrf_token": token}, headers={"HX-Request": "true"})
    assert paused.status_code == 200 and "status-paused" in paused.get_data(as_text=True)
    again = logged_in.post(f"/broadcasts/{crowd.id}/pause", data={"csrf_token": token}, headers={"HX-Request": "true"})
    assert again.status_code == 422 and "can be paused" in again.get_data(as_text=True)
    resumed = logged_in.post(f"/broadcasts/{crowd.id}/resume", data={"csrf_token": token})
    assert resumed.status_code == 302
    cancelled = logged_in.post(f"/broadcasts/{crowd.id}/cancel", data={"csrf_token": token}, headers={"HX-Request": "true"})
    assert "status-cancelled" in cancelled.get_data(as_text=True)
    assert logged_in.post(f"/broadcasts/{crowd.id}/pause", data={}).status_code == 400  # no CSRF token


def test_list_shows_state_author_audience_and_counts(logged_in, company, town):
    enable_gateway(company, "africastalking")
    admin = make_user(company, email="author@example.test")
    broadcast = draft(company, admin, audience=Audience(mini_grid_ids=(town["grid_a"],), person_ids=(town["daudi"],)))
    lifecycle.confirm(company.id, broadcast.id, admin.id)
    run_fanout_until_idle(broadcast.id)
    page = logged_in.get("/broadcasts/").get_data(as_text=True)
    assert "status-sending" in page and "Mini-grids: Kisiwa · 1 selected person" in page
    assert "Admin" in page and "0 sent · 0 delivered · 0 failed" in page and "of 3" in page


def test_another_companys_broadcast_is_a_plain_404(client, company, town):
    enable_gateway(company, "africastalking")
    owner = make_user(company)
    broadcast = draft(company, owner, audience=Audience(all_customers=True))
    other = make_company("Nosy Co")
    login(client, make_user(other, email="nosy@example.test").email)
    token = csrf_token(client)
    assert client.get(f"/broadcasts/{broadcast.id}/confirm").status_code == 404
    assert client.get(f"/broadcasts/{broadcast.id}").status_code == 404
    assert client.post(f"/broadcasts/{broadcast.id}/confirm", data={"csrf_token": token}).status_code == 404
    assert client.post(f"/broadcasts/{broadcast.id}/cancel", data={"csrf_token": token}).status_code == 404
    assert f"#{broadcast.id}" not in client.get("/broadcasts/").get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Broadcast, broadcast.id).state == "draft"


# --- end to end through the real worker, dispatch and the gateway simulator ----------------------

def test_broadcast_goes_out_once_per_person_through_the_worker_and_the_simulator(app, company, town, simulator):
    app.config["BROADCAST_CHUNK_SIZE"] = 2
    enable_simulated_gateway(company, simulator)
    admin = make_user(company)
    broadcast = draft(company, admin, "Dear [name], power is off in [mini_grid] on Saturday.",
                      audience=Audience(mini_grid_ids=(town["grid_a"], town["grid_b"]), group_ids=(town["shops"],),
                                        person_ids=(town["daudi"], town["esther"])))
    lifecycle.confirm(company.id, broadcast.id, admin.id)
    run_jobs(app)
    received = sorted((m["number"], m["message"]) for m in simulator.received("africastalking"))
    assert received == [
        ("+254712000001", "Dear Amina, power is off in Kisiwa on Saturday."),
        ("+254712000002", "Dear Baraka, power is off in Mto Mawe on Saturday."),
        ("+254712000003", "Dear Chege, power is off in Kisiwa on Saturday."),
        ("+254712000004", "Dear Daudi, power is off in Kisiwa on Saturday."),
    ]
    db.session.expire_all()
    done = db.session.get(Broadcast, broadcast.id)
    assert done.state == "done" and done.finished_at is not None and done.recipient_count == 4
    assert progress.progress(done).counts["sent"] + progress.progress(done).counts["delivered"] == 4
    run_jobs(app)
    assert len(simulator.received("africastalking")) == 4  # nothing goes out twice


def test_a_draft_whose_scheduled_time_passed_is_not_sent_on_confirm(company, town):
    enable_gateway(company, "africastalking")
    admin = make_user(company)
    drafted_at = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    broadcast = lifecycle.save_draft(company.id, admin.id, BroadcastForm(
        audience=Audience(all_customers=True), body="Hi", when="later", send_at="2026-11-30T13:00"), now=drafted_at)
    with pytest.raises(BroadcastRefused, match="scheduled time has passed"):
        lifecycle.confirm(company.id, broadcast.id, admin.id, now=drafted_at + timedelta(days=1))
    db.session.refresh(broadcast)
    assert broadcast.state == "draft" and queue(BULK).count == 0


def test_confirm_page_warns_when_the_start_falls_in_quiet_hours(logged_in, company, town):
    token = csrf_token(logged_in)
    saved = logged_in.post("/broadcasts/new", data={
        "csrf_token": token, "all_customers": "on", "body": "Meter audit tomorrow", "when": "later",
        "send_at": "2099-12-01T22:30", "quiet_on": "on", "quiet_start": "21:00", "quiet_end": "07:00"})
    page = logged_in.get(saved.headers["Location"]).get_data(as_text=True)
    assert "inside the quiet hours: sending starts at 2099-12-02 07:00" in page
    assert "Schedule for 2099-12-01 22:30" in page


def test_a_stored_number_that_is_not_e164_fails_with_its_reason_instead_of_going_out(app, company, town, simulator):
    from mpm.models import PhoneNumber

    enable_simulated_gateway(company, simulator)
    admin = make_user(company)
    broken = db.session.scalar(select(PhoneNumber).where(PhoneNumber.person_id == town["baraka"]))
    broken.e164 = "0712000002"  # imported before numbers were normalised
    db.session.commit()
    broadcast = draft(company, admin, audience=Audience(all_customers=True))
    lifecycle.confirm(company.id, broadcast.id, admin.id)
    run_fanout_until_idle(broadcast.id)
    failed = progress.failures(broadcast)
    assert [(sms.person_id, sms.error, name) for sms, name in failed] == [
        (town["baraka"], "0712000002 is not a valid phone number", "Baraka Mwangi")]
    run_jobs(app)
    assert len(simulator.received()) == 2


def test_pause_holds_messages_already_queued_and_resume_sends_each_once(app, company, town, simulator):
    app.config["BROADCAST_CHUNK_SIZE"] = 10
    enable_simulated_gateway(company, simulator)
    admin = make_user(company)
    broadcast = draft(company, admin, "Dear [name], the grid is off tonight.",
                      audience=Audience(mini_grid_ids=(town["grid_a"], town["grid_b"])))
    lifecycle.confirm(company.id, broadcast.id, admin.id)
    fanout.run_broadcast(broadcast.id)  # the chunk is inserted and handed to the send queue…
    lifecycle.pause(company.id, broadcast.id, admin.id)  # …and then the operator pauses
    run_jobs(app)
    assert simulator.received("africastalking") == []
    db.session.expire_all()
    assert {s for (s,) in db.session.execute(select(Sms.status).where(Sms.broadcast_id == broadcast.id))} == {"queued"}

    lifecycle.resume(company.id, broadcast.id, admin.id)
    run_jobs(app)
    numbers = sorted(m["number"] for m in simulator.received("africastalking"))
    assert numbers == ["+254712000001", "+254712000002", "+254712000003"]
    run_jobs(app)
    assert len(simulator.received("africastalking")) == 3
