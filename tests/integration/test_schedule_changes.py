"""A booking, move or cancellation does only that in the request; the worker's follow-up drafts the estimate and the notices."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from arq.connections import create_pool
from sqlalchemy import text

from clinic.app import create_app
from clinic.queue import Queue, redis_settings
from clinic.scheduling import changes
from clinic.scheduling.models import ChangeKind
from clinic.timeutil import utcnow
from tests.conftest import app_client
from tests.factories import Factory, appointment
from tests.integration.test_scheduling_booking import chair_ids, local, setup
from workers import jobs


async def state(db, patient_id: int) -> dict[str, list]:
    """What the patient's bookings have left: appointments, audit events, changes, notices, cost links, estimates."""
    queries = {
        "appointments": "SELECT status FROM appointments WHERE patient_id = :p ORDER BY id",
        "audit": "SELECT action FROM audit_events WHERE patient_id = :p AND action LIKE 'appointment.%' ORDER BY id",
        "changes": "SELECT kind, done_at IS NOT NULL FROM schedule_changes WHERE patient_id = :p ORDER BY id",
        "notices": "SELECT kind, status FROM notices WHERE patient_id = :p ORDER BY id",
        "links": "SELECT kind FROM cost_links WHERE patient_id = :p ORDER BY id",
        "estimates": "SELECT kind, reason, issued_at IS NOT NULL FROM estimates WHERE patient_id = :p ORDER BY id",
    }
    async with db.sessionmaker() as s:
        return {k: [tuple(r) for r in (await s.execute(text(q), {"p": patient_id})).all()] for k, q in queries.items()}


async def book(client, h, patient, day, hhmm: str = "09:00") -> dict:
    chair = (await chair_ids(client, h))[0]
    r = await client.post("/api/v1/appointments", headers=h, json={
        "patient_id": patient.id, "session_type": "ketamine_iv", "chair_id": chair, "starts_at": local(day, hhmm)})
    assert r.status_code == 201, r.text
    return r.json()


async def test_a_booking_writes_the_appointment_its_audit_event_and_one_change_and_the_worker_does_the_rest(client, db, factory, follow_up):
    clinic, h, patient, day = await setup(factory)
    await book(client, h, patient, day)
    assert await state(db, patient.id) == {
        "appointments": [("booked",)], "audit": [("appointment.book",)], "changes": [("booked", False)],
        "notices": [], "links": [], "estimates": [],
    }
    assert await follow_up() == 1
    done = await state(db, patient.id)
    assert done["changes"] == [("booked", True)]
    # what the booking's own transaction used to do: a confirmation, a reminder, the link they carry, a GFE owed
    assert done["notices"] == [("booking_confirmation", "pending"), ("reminder", "pending")]
    assert done["links"] == [("visit",)]
    assert done["estimates"] == [("gfe", "scheduled", False)]


async def test_following_up_twice_writes_nothing_twice(client, db, factory, redis_url):
    clinic, h, patient, day = await setup(factory)
    await book(client, h, patient, day)
    async with db.sessionmaker() as s:
        (change_id,) = await changes.pending(s)
    pool = await create_pool(redis_settings(redis_url))
    try:
        ctx = {"db": db, "redis": pool}
        # a worker killed after its commit runs the job again; so does a second sweep
        assert [await jobs.follow_schedule_change(ctx, change_id) for _ in range(3)] == [1, 0, 0]
    finally:
        await pool.aclose()
    after = await state(db, patient.id)
    assert len(after["notices"]) == 2 and len(after["links"]) == 1 and len(after["estimates"]) == 1


async def test_a_patients_changes_are_followed_up_in_the_order_they_were_made(client, db, factory, redis_url):
    clinic, h, patient, day = await setup(factory)
    booked = await book(client, h, patient, day)
    r = await client.post(f"/api/v1/appointments/{booked['id']}/move", headers=h, json={"starts_at": local(day, "11:00")})
    assert r.status_code == 200, r.text
    r = await client.post(f"/api/v1/appointments/{booked['id']}/cancel", headers=h, json={"reason": "patient request"})
    assert r.status_code == 200, r.text
    before = await state(db, patient.id)
    assert before["changes"] == [("booked", False), ("moved", False), ("cancelled", False)]
    assert before["notices"] == before["estimates"] == []
    async with db.sessionmaker() as s:
        first, second, last = await changes.pending(s)
    pool = await create_pool(redis_settings(redis_url))
    try:
        ctx = {"db": db, "redis": pool}
        # the newest change's job follows up the earlier ones first; theirs then find nothing left
        assert await jobs.follow_schedule_change(ctx, last) == 3
        assert await jobs.follow_schedule_change(ctx, first) == await jobs.follow_schedule_change(ctx, second) == 0
    finally:
        await pool.aclose()
    after = await state(db, patient.id)
    assert after["changes"] == [("booked", True), ("moved", True), ("cancelled", True)]
    # both the booking's and the move's follow-up see the visit at its new time (one reminder row, revived by the
    # move); after the cancellation nothing is left to send, and nothing upcoming is owed an estimate
    assert after["notices"] == [("booking_confirmation", "cancelled"), ("reminder", "cancelled"), ("booking_confirmation", "cancelled")]
    assert after["estimates"] == []


async def test_a_booking_while_redis_is_down_is_followed_up_once_the_sweep_queues_it(settings, db, factory, redis, redis_url, follow_up):
    clinic, h, patient, day = await setup(factory)
    dead = Queue("redis://127.0.0.1:1/0")
    async with app_client(create_app(settings, db=db, queue=dead)) as c:
        await book(c, h, patient, day)
    await dead.close()
    assert (await state(db, patient.id))["changes"] == [("booked", False)]
    assert await redis.zcard("arq:queue") == 0
    pool = await create_pool(redis_settings(redis_url))
    try:
        assert await jobs.sweep_outbox({"db": db, "redis": pool}) >= 1
    finally:
        await pool.aclose()
    await follow_up()
    after = await state(db, patient.id)
    assert after["changes"] == [("booked", True)]
    assert [k for k, _ in after["notices"]] == ["booking_confirmation", "reminder"]


async def test_two_workers_following_up_one_change_at_once_do_it_once(engine_db, redis_url, redis):
    f = Factory(engine_db)
    clinic = await f.clinic()
    patient = await f.patient(clinic)
    appt = await appointment(f, clinic, patient, utcnow().replace(microsecond=0) + timedelta(days=20))
    async with engine_db.transaction() as s:
        changes.add(s, queue=None, kind=ChangeKind.BOOKED, appointment=appt)
    async with engine_db.sessionmaker() as s:
        change_id = max(await changes.pending(s))
    pool = await create_pool(redis_settings(redis_url))
    try:
        ctx = {"db": engine_db, "redis": pool}
        done = await asyncio.gather(*(jobs.follow_schedule_change(ctx, change_id) for _ in range(2)))
    finally:
        await pool.aclose()
    assert sorted(done) == [0, 1]
    after = await state(engine_db, patient.id)
    assert [k for k, _ in after["notices"]] == ["booking_confirmation", "reminder"] and len(after["estimates"]) == 1
