"""Booking, moving, cancelling and no-shows through the JSON API, as an integrator sees them."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import text

from clinic.scheduling.models import Appointment
from tests.factories import bearer, staff_on_shift

NY = ZoneInfo("America/New_York")


def monday(weeks_ahead: int = 2) -> date:
    today = datetime.now(NY).date()
    return today + timedelta(days=(7 - today.weekday()) % 7 + 7 * weeks_ahead)


def local(day: date, hhmm: str) -> str:
    h, m = map(int, hhmm.split(":"))
    return datetime(day.year, day.month, day.day, h, m, tzinfo=NY).isoformat()


async def setup(factory, *, days=None, rems=True, **patient):
    clinic = await factory.clinic(chairs=3)
    desk = await factory.user(clinic, "front_desk")
    token = await factory.token(desk)
    day = monday()
    await staff_on_shift(factory, clinic, days or [day, day + timedelta(days=1)])
    if rems:
        patient.setdefault("rems_enrolled_on", date(2025, 1, 2))
        patient.setdefault("rems_patient_id", "RP-100234")
    p = await factory.patient(clinic, **patient)
    return clinic, bearer(token), p, day


async def chair_ids(client, h) -> list[int]:
    return [c["id"] for c in (await client.get("/api/v1/chairs", headers=h)).json() if c["kind"] == "chair"]


async def count_rows(factory, clinic) -> int:
    async with factory.db.sessionmaker() as s:
        return (await s.execute(text("SELECT count(*) FROM appointments WHERE clinic_id = :c"), {"c": clinic.id})).scalar_one()


async def test_book_returns_201_with_both_zones_escort_and_dose(client, factory):
    clinic, h, patient, day = await setup(factory, escort_name="Sam Rivera", escort_phone="555-222-3333")
    chair = (await chair_ids(client, h))[0]
    r = await client.post("/api/v1/appointments", headers=h, json={
        "patient_id": patient.id, "session_type": "esketamine", "chair_id": chair,
        "starts_at": local(day, "10:00"), "planned_dose_mg": 56,
    })
    assert r.status_code == 201, r.text
    a = r.json()
    assert a["status"] == "booked" and a["planned_dose_mg"] == 56
    assert a["starts_at"]["local"].startswith(f"{day.isoformat()}T10:00:00")
    assert a["starts_at"]["utc"].endswith("+00:00")
    # prep 15 + one extra device 5 + monitoring 120 + turnover 10
    assert datetime.fromisoformat(a["ends_at"]["utc"]) - datetime.fromisoformat(a["starts_at"]["utc"]) == timedelta(minutes=150)
    assert a["escort"] == {"name": "Sam Rivera", "phone": "555-222-3333", "status": "named"}
    audit = (await client.get(f"/api/v1/appointments/{a['id']}", headers=h)).json()
    assert audit["id"] == a["id"]


async def test_booking_is_audited_with_who_and_when(client, factory):
    clinic, h, patient, day = await setup(factory)
    admin = await factory.user(clinic, "admin")
    chair = (await chair_ids(client, h))[0]
    r = await client.post("/api/v1/appointments", headers=h, json={
        "patient_id": patient.id, "session_type": "ketamine_iv", "chair_id": chair, "starts_at": local(day, "09:00")})
    assert r.status_code == 201
    events = (await client.get("/api/v1/audit-events?action=appointment.", headers=bearer(await factory.token(admin)))).json()
    assert [e["action"] for e in events] == ["appointment.book"]
    assert events[0]["entity_id"] == str(r.json()["id"]) and events[0]["user_id"] is not None and events[0]["at"]


async def test_escort_is_to_confirm_when_nobody_is_named(client, factory):
    clinic, h, patient, day = await setup(factory)
    chair = (await chair_ids(client, h))[0]
    r = await client.post("/api/v1/appointments", headers=h, json={
        "patient_id": patient.id, "session_type": "esketamine", "chair_id": chair, "starts_at": local(day, "10:00"), "planned_dose_mg": 84})
    assert r.status_code == 201
    assert r.json()["escort"]["status"] == "to_confirm"


async def test_esketamine_is_refused_without_rems_enrollment_and_nothing_is_written(client, factory):
    clinic, h, patient, day = await setup(factory, rems=False)
    chair = (await chair_ids(client, h))[0]
    r = await client.post("/api/v1/appointments", headers=h, json={
        "patient_id": patient.id, "session_type": "esketamine", "chair_id": chair, "starts_at": local(day, "10:00"), "planned_dose_mg": 56})
    assert r.status_code == 422
    body = r.json()
    assert "REMS" in body["detail"] and "not enrolled" in body["detail"]
    assert body["field"] == "patient_id" and body["code"] == "rems_not_enrolled"
    assert await count_rows(factory, clinic) == 0
    # the same patient may still have an IV infusion
    r = await client.post("/api/v1/appointments", headers=h, json={
        "patient_id": patient.id, "session_type": "ketamine_iv", "chair_id": chair, "starts_at": local(day, "10:00")})
    assert r.status_code == 201


async def test_bad_input_is_422_naming_field_and_rule_and_writes_nothing(client, factory):
    clinic, h, patient, day = await setup(factory)
    chairs = await chair_ids(client, h)
    rooms = [c["id"] for c in (await client.get("/api/v1/chairs", headers=h)).json() if c["kind"] == "room"]
    other = await factory.clinic()
    stranger = await factory.patient(other)
    base = {"patient_id": patient.id, "session_type": "ketamine_iv", "chair_id": chairs[0], "starts_at": local(day, "10:00")}
    sunday = day - timedelta(days=1)
    await client.post("/api/v1/closed-dates", headers=bearer(await factory.token(await factory.user(clinic, "admin"))),
                      json={"day": (day + timedelta(days=1)).isoformat(), "reason": "Staff training"})
    cases = [
        ({"starts_at": local(day, "07:00")}, "starts_at", "outside_opening_hours"),
        ({"starts_at": local(day, "17:00")}, "starts_at", "outside_opening_hours"),  # would end after 18:00
        ({"starts_at": local(sunday, "10:00")}, "starts_at", "closed_day"),
        ({"starts_at": local(day + timedelta(days=1), "10:00")}, "starts_at", "closed_date"),
        ({"starts_at": (datetime.now(NY) - timedelta(days=1)).replace(minute=0, second=0, microsecond=0).isoformat()}, "starts_at", "in_past"),
        ({"starts_at": local(day, "10:05")}, "starts_at", "off_grid"),
        ({"session_type": "reiki"}, "session_type", "unknown_protocol"),
        ({"chair_id": 999999}, "chair_id", "unknown_chair"),
        ({"chair_id": rooms[0]}, "chair_id", "wrong_place_kind"),
        ({"patient_id": stranger.id}, "patient_id", "unknown_patient"),
        ({"planned_dose_mg": 56}, "planned_dose_mg", "dose_not_applicable"),
        ({"session_type": "esketamine"}, "planned_dose_mg", "dose_required"),
        ({"session_type": "esketamine", "planned_dose_mg": 60}, "planned_dose_mg", "dose_not_allowed"),
        ({"escort_phone": "call me"}, "escort_phone", "phone_format"),
    ]
    for change, field, code in cases:
        r = await client.post("/api/v1/appointments", headers=h, json={**base, **change})
        assert r.status_code == 422, (change, r.text)
        assert (r.json()["field"], r.json()["code"]) == (field, code), change
        assert r.json()["detail"]
    assert await count_rows(factory, clinic) == 0



async def test_a_day_at_the_edge_of_the_calendar_is_422_naming_the_query_field(client, factory):
    """Year 1 or 9999 in the clinic's zone runs past what a timestamp holds: the caller's input, named."""
    clinic = await factory.clinic()
    token = await factory.token(await factory.user(clinic, "admin"))
    kind = (await client.get("/api/v1/session-types", headers=bearer(token))).json()[0]["id"]
    for query in ("shifts?from=0001-01-01", "shifts?from=9999-12-31", f"availability?from=0001-01-01&session_type={kind}"):
        r = await client.get(f"/api/v1/{query}", headers=bearer(token))
        assert r.status_code == 422 and r.json()["field"] == "from", (query, r.text)

async def test_availability_comes_in_pages_that_together_hold_every_candidate(client, factory):
    first_day = monday()
    days = [first_day + timedelta(days=d) for d in range(5)]
    clinic, h, patient, day = await setup(factory, days=days)
    query = f"/api/v1/availability?session_type=ketamine_iv&from={days[0]}&to={days[-1]}"
    everything = (await client.get(f"{query}&limit=20000", headers=h)).json()
    assert everything["truncated"] is False and everything["next"] is None
    assert len(everything["candidates"]) == 5 * 35 * 3  # 08:00 to 16:30 on the grid, three chairs, five days
    pages, link = [], query
    while link:
        r = await client.get(link, headers=h)
        assert r.status_code == 200, r.text
        pages.append(r.json())
        link = r.json()["next"]
    assert [len(p["candidates"]) for p in pages] == [198, 198, 129]  # 200 by default, in whole start times
    assert [p["truncated"] for p in pages] == [True, True, False]
    assert [c for p in pages for c in p["candidates"]] == everything["candidates"]
    r = await client.get(f"{query}&after=2026-01-01T10:00:00", headers=h)
    assert r.status_code == 422 and r.json()["field"] == "after"


async def test_patient_without_any_contact_cannot_be_booked(client, factory):
    clinic, h, patient, day = await setup(factory, email=None, phone=None)
    r = await client.post("/api/v1/appointments", headers=h, json={
        "patient_id": patient.id, "session_type": "ketamine_iv", "chair_id": (await chair_ids(client, h))[0], "starts_at": local(day, "10:00")})
    assert r.status_code == 422 and r.json()["code"] == "patient_contact_missing"


async def test_malformed_body_is_422_naming_the_field(client, factory):
    clinic, h, patient, day = await setup(factory)
    r = await client.post("/api/v1/appointments", headers=h, json={"patient_id": patient.id, "session_type": "ketamine_iv", "chair_id": 1, "starts_at": "tomorrow"})
    assert r.status_code == 422 and r.json()["field"] == "starts_at"
    chair = (await chair_ids(client, h))[0]
    for missing in ("patient_id", "chair_id", "starts_at", "session_type"):
        body = {"patient_id": patient.id, "session_type": "ketamine_iv", "chair_id": chair, "starts_at": local(day, "10:00")}
        del body[missing]
        r = await client.post("/api/v1/appointments", headers=h, json=body)
        assert r.status_code == 422 and r.json()["field"] == missing, (missing, r.json())


async def test_a_taken_chair_is_409_naming_the_chair_with_alternatives(client, factory):
    clinic, h, patient, day = await setup(factory)
    other = await factory.patient(clinic)
    chair = (await chair_ids(client, h))[0]
    body = {"session_type": "ketamine_iv", "chair_id": chair, "starts_at": local(day, "10:00")}
    assert (await client.post("/api/v1/appointments", headers=h, json={**body, "patient_id": patient.id})).status_code == 201
    r = await client.post("/api/v1/appointments", headers=h, json={**body, "patient_id": other.id})
    assert r.status_code == 409
    err = r.json()
    assert err["conflict"] == "chair" and err["code"] == "chair_taken" and "chair" in err["detail"].lower()
    alts = err["alternatives"]
    assert alts and all({"start", "end", "chair_id"} <= set(a) for a in alts)
    # nearest first: another chair at 10:00 is free
    assert alts[0]["start"]["local"].startswith(f"{day.isoformat()}T10:00") and alts[0]["chair_id"] != chair
    # and taking the first alternative works
    r = await client.post("/api/v1/appointments", headers=h, json={**body, "patient_id": other.id, "chair_id": alts[0]["chair_id"],
                                                                    "starts_at": alts[0]["start"]["utc"]})
    assert r.status_code == 201


async def test_a_busy_patient_is_409_naming_the_patient(client, factory):
    clinic, h, patient, day = await setup(factory)
    a, b = (await chair_ids(client, h))[:2]
    body = {"session_type": "ketamine_iv", "patient_id": patient.id}
    assert (await client.post("/api/v1/appointments", headers=h, json={**body, "chair_id": a, "starts_at": local(day, "10:00")})).status_code == 201
    r = await client.post("/api/v1/appointments", headers=h, json={**body, "chair_id": b, "starts_at": local(day, "10:30")})
    assert r.status_code == 409 and r.json()["conflict"] == "patient"
    # alternatives never overlap the patient's own session
    booked_end = datetime.fromisoformat(local(day, "10:00")) + timedelta(minutes=95)
    for alt in r.json()["alternatives"]:
        s, e = datetime.fromisoformat(alt["start"]["utc"]), datetime.fromisoformat(alt["end"]["utc"])
        assert e <= datetime.fromisoformat(local(day, "10:00")) or s >= booked_end


async def test_nurse_capacity_and_prescriber_coverage_are_409(client, factory):
    clinic = await factory.clinic(chairs=5)
    h = bearer(await factory.token(await factory.user(clinic, "front_desk")))
    day = monday()
    nurse = await factory.user(clinic, "nurse")
    from clinic.scheduling.models import Shift
    from clinic.scheduling.rules import parse_hhmm, wall_to_utc

    await factory.add(Shift(clinic_id=clinic.id, user_id=nurse.id, role="nurse", starts_at=wall_to_utc(day, parse_hhmm("08:00"), clinic.timezone),
                            ends_at=wall_to_utc(day, parse_hhmm("18:00"), clinic.timezone)))
    chairs = await chair_ids(client, h)
    patients = [await factory.patient(clinic, rems_enrolled_on=date(2025, 1, 1), rems_patient_id=f"RP-{i:05d}") for i in range(4)]
    for i in range(3):
        r = await client.post("/api/v1/appointments", headers=h, json={
            "patient_id": patients[i].id, "session_type": "ketamine_iv", "chair_id": chairs[i], "starts_at": local(day, "10:00")})
        assert r.status_code == 201
    r = await client.post("/api/v1/appointments", headers=h, json={
        "patient_id": patients[3].id, "session_type": "ketamine_iv", "chair_id": chairs[3], "starts_at": local(day, "10:00")})
    assert r.status_code == 409 and r.json()["code"] == "nurse_capacity"
    starts = [datetime.fromisoformat(a["start"]["utc"]) for a in r.json()["alternatives"]]
    # the three stay until 11:25: a fourth fits only before (ending by 10:00) or after
    assert starts and all(s >= datetime.fromisoformat(local(day, "11:25")) or s <= datetime.fromisoformat(local(day, "08:35")) for s in starts)
    # no prescriber on shift at all: esketamine is refused for coverage
    r = await client.post("/api/v1/appointments", headers=h, json={
        "patient_id": patients[3].id, "session_type": "esketamine", "chair_id": chairs[4], "starts_at": local(day, "14:00"), "planned_dose_mg": 56})
    assert r.status_code == 409 and r.json()["code"] == "no_prescriber"
    assert "prescriber" in r.json()["detail"]


async def test_move_keeps_rules_and_tells_where_from(client, factory):
    clinic, h, patient, day = await setup(factory)
    chairs = await chair_ids(client, h)
    a = (await client.post("/api/v1/appointments", headers=h, json={
        "patient_id": patient.id, "session_type": "ketamine_iv", "chair_id": chairs[0], "starts_at": local(day, "10:00")})).json()
    r = await client.post(f"/api/v1/appointments/{a['id']}/move", headers=h, json={"starts_at": local(day + timedelta(days=1), "13:15"), "chair_id": chairs[1]})
    assert r.status_code == 200, r.text
    moved = r.json()
    assert moved["starts_at"]["local"].startswith(f"{(day + timedelta(days=1)).isoformat()}T13:15") and moved["chair_id"] == chairs[1]
    # moving onto itself overlapping its own old time is fine (it leaves itself out)
    r = await client.post(f"/api/v1/appointments/{a['id']}/move", headers=h, json={"starts_at": local(day + timedelta(days=1), "13:30")})
    assert r.status_code == 200
    r = await client.post(f"/api/v1/appointments/{a['id']}/move", headers=h, json={"starts_at": local(day, "06:00")})
    assert r.status_code == 422 and r.json()["field"] == "starts_at"


async def test_cancel_needs_a_reason_and_is_late_under_24_hours(client, factory):
    clinic, h, patient, day = await setup(factory)
    chair = (await chair_ids(client, h))[0]
    a = (await client.post("/api/v1/appointments", headers=h, json={
        "patient_id": patient.id, "session_type": "ketamine_iv", "chair_id": chair, "starts_at": local(day, "10:00")})).json()
    r = await client.post(f"/api/v1/appointments/{a['id']}/cancel", headers=h, json={"reason": "  "})
    assert r.status_code == 422 and r.json()["field"] == "reason"
    r = await client.post(f"/api/v1/appointments/{a['id']}/cancel", headers=h, json={"reason": "Feeling unwell"})
    assert r.status_code == 200
    c = r.json()
    assert c["status"] == "cancelled" and c["cancel_reason"] == "Feeling unwell" and c["late_cancel"] is False and c["cancelled_at"]
    # the slot is free again
    other = await factory.patient(clinic)
    r = await client.post("/api/v1/appointments", headers=h, json={
        "patient_id": other.id, "session_type": "ketamine_iv", "chair_id": chair, "starts_at": local(day, "10:00")})
    assert r.status_code == 201
    assert (await client.post(f"/api/v1/appointments/{a['id']}/cancel", headers=h, json={"reason": "again"})).status_code == 409


async def test_late_cancel_and_no_show(client, factory, db):
    from clinic.audit.service import Actor
    from clinic.scheduling import service

    clinic, h, patient, day = await setup(factory)
    chair = (await chair_ids(client, h))[0]
    a = (await client.post("/api/v1/appointments", headers=h, json={
        "patient_id": patient.id, "session_type": "ketamine_iv", "chair_id": chair, "starts_at": local(day, "10:00")})).json()
    b = (await client.post("/api/v1/appointments", headers=h, json={
        "patient_id": patient.id, "session_type": "ketamine_iv", "chair_id": chair, "starts_at": local(day, "13:00")})).json()
    actor = Actor(user_id=None, clinic_id=clinic.id, roles=("front_desk",))
    start_a = datetime.fromisoformat(a["starts_at"]["utc"])
    async with db.transaction() as s:
        late = await service.cancel(s, actor=actor, queue=None, appointment_id=a["id"], reason="Car trouble", now=start_a - timedelta(hours=3))
        assert late.late_cancel is True
    r = await client.post(f"/api/v1/appointments/{b['id']}/no-show", headers=h)
    assert r.status_code == 409 and r.json()["code"] == "not_started"
    async with db.transaction() as s:
        ns = await service.no_show(s, actor=actor, queue=None, appointment_id=b["id"], now=datetime.fromisoformat(b["starts_at"]["utc"]) + timedelta(minutes=20))
        assert ns.status == "noshow"
    listed = (await client.get(f"/api/v1/appointments?date={day.isoformat()}", headers=h)).json()
    assert {x["id"]: x["status"] for x in listed} == {a["id"]: "cancelled", b["id"]: "noshow"}


async def test_list_filters_by_clinic_day_status_patient_and_chair(client, factory):
    clinic, h, patient, day = await setup(factory)
    other = await factory.patient(clinic)
    chairs = await chair_ids(client, h)
    ids = []
    for p, c, d, t in ((patient, chairs[0], day, "09:00"), (other, chairs[1], day, "09:00"), (patient, chairs[0], day + timedelta(days=1), "09:00")):
        r = await client.post("/api/v1/appointments", headers=h, json={"patient_id": p.id, "session_type": "ketamine_iv", "chair_id": c, "starts_at": local(d, t)})
        ids.append(r.json()["id"])
    await client.post(f"/api/v1/appointments/{ids[1]}/cancel", headers=h, json={"reason": "Rescheduling"})
    get = lambda q: client.get(f"/api/v1/appointments?{q}", headers=h)  # noqa: E731
    assert [a["id"] for a in (await get(f"date={day}")).json()] == ids[:2]
    assert [a["id"] for a in (await get(f"date={day}&status=booked")).json()] == ids[:1]
    assert [a["id"] for a in (await get(f"patient_id={patient.id}")).json()] == [ids[0], ids[2]]
    assert [a["id"] for a in (await get(f"chair_id={chairs[1]}")).json()] == [ids[1]]
    assert (await get("status=sleeping")).status_code == 422
    # another clinic sees none of it
    stranger = bearer(await factory.token(await factory.user(await factory.clinic(), "front_desk")))
    assert (await client.get(f"/api/v1/appointments?date={day}", headers=stranger)).json() == []
    assert (await client.get(f"/api/v1/appointments/{ids[0]}", headers=stranger)).status_code == 404


async def test_roles_without_schedule_write_cannot_book(client, factory):
    clinic, h, patient, day = await setup(factory)
    nurse = bearer(await factory.token(await factory.user(clinic, "nurse")))
    r = await client.post("/api/v1/appointments", headers=nurse, json={
        "patient_id": patient.id, "session_type": "ketamine_iv", "chair_id": (await chair_ids(client, h))[0], "starts_at": local(day, "10:00")})
    assert r.status_code == 403
    assert (await client.get(f"/api/v1/appointments?date={day}", headers=nurse)).status_code == 200


async def test_row_written_matches_the_protocol_hold(client, factory, db):
    clinic, h, patient, day = await setup(factory)
    r = await client.post("/api/v1/appointments", headers=h, json={
        "patient_id": patient.id, "session_type": "esketamine", "chair_id": (await chair_ids(client, h))[0],
        "starts_at": local(day, "15:30"), "planned_dose_mg": 28})
    assert r.status_code == 201  # 15:30 + 135 min stay = 17:45, inside hours
    async with db.sessionmaker() as s:
        row = await s.get(Appointment, r.json()["id"])
    assert (row.ends_at - row.starts_at) == timedelta(minutes=145)
