"""Courses from protocol templates, their conflict report, and changing one occurrence or all remaining; DST-safe times."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from tests.factories import bearer, staff_on_shift

NY = ZoneInfo("America/New_York")
UTC = ZoneInfo("UTC")


def next_monday(weeks_ahead: int = 2) -> date:
    today = datetime.now(NY).date()
    return today + timedelta(days=(7 - today.weekday()) % 7 + 7 * weeks_ahead)


def at(day: date, h: int, m: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, h, m, tzinfo=NY)


def next_dst_change(after: date) -> date:
    """The first local day after `after` whose UTC offset differs from the day before."""
    d = after
    while at(d + timedelta(days=1), 12).utcoffset() == at(d, 12).utcoffset():
        d += timedelta(days=1)
    return d + timedelta(days=1)


async def setup(factory, first: date, days: int = 35, chairs: int = 2):
    clinic = await factory.clinic(chairs=chairs)
    h = bearer(await factory.token(await factory.user(clinic, "front_desk")))
    await staff_on_shift(factory, clinic, [first + timedelta(days=i) for i in range(days)])
    patient = await factory.patient(clinic, rems_enrolled_on=date(2025, 3, 1), rems_patient_id="RP-778899")
    chairs_ = [c["id"] for c in (await factory_client_chairs(factory, clinic))]
    return clinic, h, patient, chairs_


async def factory_client_chairs(factory, clinic):
    from sqlmodel import select

    from clinic.scheduling.models import Chair

    async with factory.db.sessionmaker() as s:
        rows = (await s.exec(select(Chair).where(Chair.clinic_id == clinic.id, Chair.kind == "chair").order_by(Chair.sort_order))).all()
    return [{"id": c.id} for c in rows]


def local_of(t: dict) -> datetime:
    return datetime.fromisoformat(t["local"])


async def test_esketamine_course_books_eight_sessions_twice_weekly_at_the_same_time(client, factory):
    first = next_monday()
    clinic, h, patient, chairs = await setup(factory, first)
    r = await client.post("/api/v1/courses", headers=h, json={
        "patient_id": patient.id, "session_type": "esketamine", "template": "induction",
        "starts_at": at(first, 10).isoformat(), "chair_id": chairs[0], "planned_dose_mg": 56, "escort_name": "Ana Lopez",
    })
    assert r.status_code == 201, r.text
    plan = r.json()
    assert plan["conflicts"] == 0 and len(plan["occurrences"]) == 8
    course = (await client.get(f"/api/v1/courses/{plan['course_id']}", headers=h)).json()
    appts = course["appointments"]
    assert len(appts) == 8 and all(a["status"] == "booked" and a["course_id"] == plan["course_id"] for a in appts)
    starts = [local_of(a["starts_at"]) for a in appts]
    assert all(s.strftime("%H:%M") == "10:00" for s in starts)
    weeks: dict = {}
    for s in starts:
        weeks.setdefault(s.isocalendar()[:2], []).append(s)
    assert len(weeks) == 4 and all(len(v) == 2 for v in weeks.values())
    assert all((b.date() - a.date()).days >= 2 for a, b in zip(starts, starts[1:]))
    assert all(a["planned_dose_mg"] == 56 and a["escort"]["name"] == "Ana Lopez" for a in appts)


async def test_iv_course_is_six_infusions_over_two_weeks(client, factory):
    first = next_monday()
    clinic, h, patient, chairs = await setup(factory, first, days=21)
    r = await client.post("/api/v1/courses", headers=h, json={
        "patient_id": patient.id, "session_type": "ketamine_iv", "template": "induction", "starts_at": at(first, 9).isoformat()})
    assert r.status_code == 201, r.text
    days = [local_of(o["start"]).date() for o in r.json()["occurrences"]]
    assert len(days) == 6 and all((b - a).days >= 1 for a, b in zip(days, days[1:]))
    assert 2 <= len({d.isocalendar()[:2] for d in days}) <= 3


async def test_a_conflicting_occurrence_books_nothing_and_reports_alternatives(client, factory):
    first = next_monday()
    clinic, h, patient, chairs = await setup(factory, first)
    # the patient already has an IV infusion at the third occurrence's time (Monday of week 2)
    busy = await client.post("/api/v1/appointments", headers=h, json={
        "patient_id": patient.id, "session_type": "ketamine_iv", "chair_id": chairs[1], "starts_at": at(first + timedelta(days=7), 10, 30).isoformat()})
    assert busy.status_code == 201
    body = {"patient_id": patient.id, "session_type": "esketamine", "template": "induction",
            "starts_at": at(first, 10).isoformat(), "chair_id": chairs[0], "planned_dose_mg": 56}
    r = await client.post("/api/v1/courses", headers=h, json=body)
    assert r.status_code == 409
    report = r.json()
    assert report["code"] == "course_conflicts" and "nothing was booked" in report["detail"]
    bad = [o for o in report["occurrences"] if not o["ok"]]
    assert [o["index"] for o in bad] == [3]
    assert bad[0]["conflict"]["code"] == "patient_busy"
    assert bad[0]["alternatives"], "each conflict comes with alternatives"
    listed = (await client.get(f"/api/v1/appointments?patient_id={patient.id}", headers=h)).json()
    assert len(listed) == 1  # only the IV infusion: all-or-nothing
    # the front desk takes the first alternative for occurrence 3 and books the chosen dates
    chosen = [(o["start"]["utc"] if o["ok"] else o["alternatives"][0]["start"]["utc"],
               o["chair_id"] if o["ok"] else o["alternatives"][0]["chair_id"]) for o in report["occurrences"]]
    r = await client.post("/api/v1/courses", headers=h, json={**body, "occurrences": [{"starts_at": s, "chair_id": c} for s, c in chosen]})
    assert r.status_code == 201, r.text
    assert r.json()["conflicts"] == 0 and len([o for o in r.json()["occurrences"] if o["appointment_id"]]) == 8


async def test_partial_course_when_all_or_nothing_is_off(client, factory):
    first = next_monday()
    clinic, h, patient, chairs = await setup(factory, first)
    await client.post("/api/v1/appointments", headers=h, json={
        "patient_id": patient.id, "session_type": "ketamine_iv", "chair_id": chairs[1], "starts_at": at(first + timedelta(days=7), 10, 30).isoformat()})
    r = await client.post("/api/v1/courses", headers=h, json={
        "patient_id": patient.id, "session_type": "esketamine", "template": "induction", "starts_at": at(first, 10).isoformat(),
        "planned_dose_mg": 84, "all_or_nothing": False})
    assert r.status_code == 201
    assert r.json()["conflicts"] == 1 and sum(1 for o in r.json()["occurrences"] if o["appointment_id"]) == 7


async def test_preview_books_nothing(client, factory):
    first = next_monday()
    clinic, h, patient, chairs = await setup(factory, first)
    r = await client.post("/api/v1/courses/preview", headers=h, json={
        "patient_id": patient.id, "session_type": "esketamine", "template": "induction", "starts_at": at(first, 10).isoformat(), "planned_dose_mg": 56})
    assert r.status_code == 200 and len(r.json()["occurrences"]) == 8 and r.json()["course_id"] is None
    assert (await client.get(f"/api/v1/appointments?patient_id={patient.id}", headers=h)).json() == []


async def test_unknown_template_and_rems_are_422(client, factory):
    first = next_monday()
    clinic, h, patient, chairs = await setup(factory, first, days=1)
    r = await client.post("/api/v1/courses", headers=h, json={
        "patient_id": patient.id, "session_type": "esketamine", "template": "forever", "starts_at": at(first, 10).isoformat(), "planned_dose_mg": 56})
    assert r.status_code == 422 and r.json()["field"] == "template"
    unenrolled = await factory.patient(clinic)
    r = await client.post("/api/v1/courses", headers=h, json={
        "patient_id": unenrolled.id, "session_type": "esketamine", "template": "induction", "starts_at": at(first, 10).isoformat(), "planned_dose_mg": 56})
    assert r.status_code == 422 and r.json()["code"] == "rems_not_enrolled"


async def book_course(client, h, patient, first, chair):
    r = await client.post("/api/v1/courses", headers=h, json={
        "patient_id": patient.id, "session_type": "esketamine", "template": "induction", "starts_at": at(first, 10).isoformat(),
        "chair_id": chair, "planned_dose_mg": 56})
    assert r.status_code == 201, r.text
    return (await client.get(f"/api/v1/courses/{r.json()['course_id']}", headers=h)).json()


async def test_cancelling_one_occurrence_frees_its_slot_and_leaves_the_others(client, factory):
    first = next_monday()
    clinic, h, patient, chairs = await setup(factory, first)
    course = await book_course(client, h, patient, first, chairs[0])
    second = course["appointments"][1]
    r = await client.post(f"/api/v1/appointments/{second['id']}/cancel", headers=h, json={"reason": "Travelling"})
    assert r.status_code == 200
    after = (await client.get(f"/api/v1/courses/{course['id']}", headers=h)).json()["appointments"]
    assert [a["status"] for a in after] == ["booked", "cancelled"] + ["booked"] * 6
    assert [a["starts_at"] for a in after] == [a["starts_at"] for a in course["appointments"]]
    # the freed chair and time can be booked by someone else
    other = await factory.patient(clinic, rems_enrolled_on=date(2025, 1, 1), rems_patient_id="RP-123456")
    r = await client.post("/api/v1/appointments", headers=h, json={
        "patient_id": other.id, "session_type": "esketamine", "chair_id": second["chair_id"], "starts_at": second["starts_at"]["utc"], "planned_dose_mg": 56})
    assert r.status_code == 201
    avail = (await client.get(f"/api/v1/availability?session_type=esketamine&from={local_of(second['starts_at']).date()}&chair_id={chairs[0]}", headers=h)).json()
    assert second["starts_at"]["utc"] not in [c["start"]["utc"] for c in avail["candidates"]]


async def test_cancel_and_move_all_remaining(client, factory):
    first = next_monday()
    clinic, h, patient, chairs = await setup(factory, first, days=40)
    course = await book_course(client, h, patient, first, chairs[0])
    ids = [a["id"] for a in course["appointments"]]
    # move all from occurrence 5 on by one day, to 11:00
    r = await client.post(f"/api/v1/courses/{course['id']}/move", headers=h, json={"shift_days": 1, "at_time": "11:00", "from_appointment_id": ids[4]})
    assert r.status_code == 200, r.text
    after = r.json()["appointments"]
    before = course["appointments"]
    for old, new in zip(before[:4], after[:4]):
        assert old["starts_at"] == new["starts_at"]
    for old, new in zip(before[4:], after[4:]):
        assert local_of(new["starts_at"]).date() == local_of(old["starts_at"]).date() + timedelta(days=1)
        assert local_of(new["starts_at"]).strftime("%H:%M") == "11:00"
    # cancel all remaining from occurrence 7: earlier ones untouched
    r = await client.post(f"/api/v1/courses/{course['id']}/cancel", headers=h, json={"reason": "Course stopped", "from_appointment_id": ids[6]})
    assert r.status_code == 200
    assert [a["status"] for a in r.json()["appointments"]] == ["booked"] * 6 + ["cancelled"] * 2
    r = await client.post(f"/api/v1/courses/{course['id']}/cancel", headers=h, json={"reason": ""})
    assert r.status_code == 422 and r.json()["field"] == "reason"


async def test_moving_all_remaining_onto_a_taken_time_moves_none(client, factory):
    first = next_monday()
    clinic, h, patient, chairs = await setup(factory, first, chairs=1)
    course = await book_course(client, h, patient, first, chairs[0])
    other = await factory.patient(clinic)
    # someone else takes the only chair at 14:00 on the 4th occurrence's day
    d4 = local_of(course["appointments"][3]["starts_at"]).date()
    r = await client.post("/api/v1/appointments", headers=h, json={
        "patient_id": other.id, "session_type": "ketamine_iv", "chair_id": chairs[0], "starts_at": at(d4, 14).isoformat()})
    assert r.status_code == 201
    r = await client.post(f"/api/v1/courses/{course['id']}/move", headers=h, json={"at_time": "14:00"})
    assert r.status_code == 409 and r.json()["code"] == "course_conflicts"
    unchanged = (await client.get(f"/api/v1/courses/{course['id']}", headers=h)).json()["appointments"]
    assert [a["starts_at"] for a in unchanged] == [a["starts_at"] for a in course["appointments"]]


async def test_ten_oclock_local_the_week_after_a_dst_change_is_ten_oclock_local(client, factory):
    change = next_dst_change(datetime.now(NY).date() + timedelta(days=1))
    before = change - timedelta(days=change.weekday()) - timedelta(days=7)  # a Monday the week before
    after = before + timedelta(days=14)  # the Monday the week after
    clinic, h, patient, chairs = await setup(factory, before, days=22)
    ids = []
    for day in (before, after):
        r = await client.post("/api/v1/appointments", headers=h, json={
            "patient_id": patient.id, "session_type": "ketamine_iv", "chair_id": chairs[0], "starts_at": f"{day.isoformat()}T10:00:00"})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    one, two = [(await client.get(f"/api/v1/appointments/{i}", headers=h)).json() for i in ids]
    assert local_of(one["starts_at"]).strftime("%H:%M") == local_of(two["starts_at"]).strftime("%H:%M") == "10:00"
    u1, u2 = datetime.fromisoformat(one["starts_at"]["utc"]), datetime.fromisoformat(two["starts_at"]["utc"])
    assert u1.utcoffset() == u2.utcoffset() == timedelta(0)
    assert abs(u1.hour - u2.hour) == 1  # the same wall time is a different UTC hour across the change
    # availability after the change offers 10:00 local too, and a course across it keeps 10:00
    avail = (await client.get(f"/api/v1/availability?session_type=ketamine_iv&from={after}&to={after}", headers=h)).json()
    assert "10:15" in {local_of(c["start"]).strftime("%H:%M") for c in avail["candidates"]}
    r = await client.post("/api/v1/courses", headers=h, json={
        "patient_id": patient.id, "session_type": "ketamine_iv", "template": "induction", "starts_at": at(before + timedelta(days=8), 10).isoformat(),
        "chair_id": chairs[1]})
    assert r.status_code == 201, r.text
    times = {local_of(o["start"]).strftime("%H:%M") for o in r.json()["occurrences"]}
    offsets = {local_of(o["start"]).utcoffset() for o in r.json()["occurrences"]}
    assert times == {"10:00"} and len(offsets) == 2


async def test_a_course_booked_in_one_go_sends_one_confirmation_and_a_reminder_per_visit(client, factory, db, follow_up):
    from sqlalchemy import text

    first = next_monday()
    clinic, h, patient, chairs = await setup(factory, first)
    course = await book_course(client, h, patient, first, chairs[0])

    async def notices():
        async with db.sessionmaker() as s:
            return (await s.execute(text("SELECT kind, payload FROM notices WHERE patient_id = :p"), {"p": patient.id})).all()

    assert await notices() == []  # the booking only booked; its follow-up is one change for the worker
    assert await follow_up() == 1
    rows = await notices()
    confirmations = [r.payload for r in rows if r.kind == "booking_confirmation"]
    assert len(confirmations) == 1 and len(confirmations[0]["visits"]) == len(course["appointments"]) == 8
    assert sum(r.kind == "reminder" for r in rows) == 8
