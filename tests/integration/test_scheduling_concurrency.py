"""Many front desks at once: Postgres lets exactly one booking win a slot, the rest get 409 with alternatives, never a 5xx."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import text

from clinic.app import create_app
from tests.conftest import app_client
from tests.factories import Factory, bearer, staff_on_shift

NY = ZoneInfo("America/New_York")


def day_ahead(weeks: int = 3) -> date:
    today = datetime.now(NY).date()
    return today + timedelta(days=(7 - today.weekday()) % 7 + 7 * weeks + 1)  # a Tuesday


async def fresh_clinic(engine_db, *, chairs: int, nurses: int = 4, patients: int = 1):
    """A clinic of its own in the committed database, so concurrent runs never see each other's rows."""
    factory = Factory(engine_db)
    clinic = await factory.clinic(chairs=chairs)
    token = await factory.token(await factory.user(clinic, "front_desk"))
    day = day_ahead()
    await staff_on_shift(factory, clinic, [day], nurses=nurses)
    people = [await factory.patient(clinic, rems_enrolled_on=date(2025, 1, 1), rems_patient_id=f"RP-{i:06d}") for i in range(patients)]
    return clinic, bearer(token), people, day


async def live_rows(engine_db, clinic_id: int) -> list[tuple[int, int]]:
    async with engine_db.engine.connect() as conn:
        rows = await conn.execute(text("SELECT chair_id, patient_id FROM appointments WHERE clinic_id = :c AND status = 'booked'"), {"c": clinic_id})
        return [tuple(r) for r in rows]


async def chair_ids(c, h) -> list[int]:
    return [x["id"] for x in (await c.get("/api/v1/chairs", headers=h)).json() if x["kind"] == "chair"]


async def test_fifty_bookings_of_one_chair_and_start_one_wins(settings, engine_db, queue):
    clinic, h, people, day = await fresh_clinic(engine_db, chairs=3, patients=50)
    start = datetime(day.year, day.month, day.day, 10, 0, tzinfo=NY).isoformat()
    app = create_app(settings, db=engine_db, queue=queue)
    async with app_client(app) as c:
        chair = (await chair_ids(c, h))[0]

        async def one(p):
            return await c.post("/api/v1/appointments", headers=h, json={
                "patient_id": p.id, "session_type": "ketamine_iv", "chair_id": chair, "starts_at": start})

        answers = await asyncio.gather(*(one(p) for p in people))
    codes = sorted(r.status_code for r in answers)
    assert codes.count(201) == 1 and codes.count(409) == 49, codes
    for r in answers:
        if r.status_code == 409:
            body = r.json()
            assert body["conflict"] == "chair" and "chair" in body["detail"].lower()
            assert body["alternatives"] and all({"start", "end", "chair_id"} <= set(a) for a in body["alternatives"])
            assert not any(a["chair_id"] == chair and a["start"]["utc"] == datetime.fromisoformat(start).astimezone(ZoneInfo("UTC")).isoformat()
                           for a in body["alternatives"])
    assert len(await live_rows(engine_db, clinic.id)) == 1


async def test_fifty_bookings_of_one_patient_in_two_chairs_one_wins(settings, engine_db, queue):
    clinic, h, people, day = await fresh_clinic(engine_db, chairs=2, patients=1)
    patient = people[0]
    app = create_app(settings, db=engine_db, queue=queue)
    async with app_client(app) as c:
        chairs = await chair_ids(c, h)

        async def one(i):
            # the same patient, two chairs, overlapping starts
            hhmm = (10, 0) if i % 2 == 0 else (10, 30)
            start = datetime(day.year, day.month, day.day, *hhmm, tzinfo=NY).isoformat()
            return await c.post("/api/v1/appointments", headers=h, json={
                "patient_id": patient.id, "session_type": "ketamine_iv", "chair_id": chairs[i % 2], "starts_at": start})

        answers = await asyncio.gather(*(one(i) for i in range(50)))
    codes = [r.status_code for r in answers]
    assert codes.count(201) == 1 and codes.count(409) == 49, sorted(codes)
    winner = next(i for i, r in enumerate(answers) if r.status_code == 201)
    # every loser in the other chair can only have lost to the patient's own booking
    for i, r in enumerate(answers):
        if r.status_code == 409 and i % 2 != winner % 2:
            assert r.json()["conflict"] == "patient" and "patient" in r.json()["detail"].lower()
        if r.status_code == 409:
            assert "alternatives" in r.json()
    assert await live_rows(engine_db, clinic.id) == [(chairs[winner % 2], patient.id)]


async def test_concurrent_bookings_in_free_chairs_never_exceed_nurse_capacity(settings, engine_db, queue):
    """Ten chairs, one nurse (3 patients each): the day lock lets exactly three monitored sessions through."""
    clinic, h, people, day = await fresh_clinic(engine_db, chairs=10, nurses=1, patients=10)
    start = datetime(day.year, day.month, day.day, 9, 0, tzinfo=NY).isoformat()
    app = create_app(settings, db=engine_db, queue=queue)
    async with app_client(app) as c:
        chairs = await chair_ids(c, h)
        answers = await asyncio.gather(*(
            c.post("/api/v1/appointments", headers=h, json={"patient_id": p.id, "session_type": "ketamine_iv", "chair_id": ch, "starts_at": start})
            for p, ch in zip(people, chairs)
        ))
    codes = [r.status_code for r in answers]
    assert codes.count(201) == 3 and codes.count(409) == 7, codes
    assert all(r.json()["code"] == "nurse_capacity" for r in answers if r.status_code == 409)
    assert len(await live_rows(engine_db, clinic.id)) == 3
