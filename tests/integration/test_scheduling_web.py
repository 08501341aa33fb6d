"""The front desk's pages in the browser's terms: day and week views, the booking flow, patients, and clinic setup."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import text

from tests.factories import csrf_headers, login, staff_on_shift

NY = ZoneInfo("America/New_York")
HX = {"hx-request": "true"}


def monday(weeks_ahead: int = 2) -> date:
    today = datetime.now(NY).date()
    return today + timedelta(days=(7 - today.weekday()) % 7 + 7 * weeks_ahead)


def slot(day: date, h: int, m: int, chair_id: int) -> str:
    return f"{datetime(day.year, day.month, day.day, h, m, tzinfo=NY).astimezone(ZoneInfo('UTC')).isoformat()}|{chair_id}"


async def desk(client, factory, *roles):
    clinic = await factory.clinic(chairs=3)
    user = await factory.user(clinic, *(roles or ("front_desk",)))
    assert (await login(client, user.email)).status_code in (302, 303)
    day = monday()
    await staff_on_shift(factory, clinic, [day])
    patient = await factory.patient(clinic, first_name="Maya", last_name="Okafor", rems_enrolled_on=date(2025, 1, 1), rems_patient_id="RP-4411",
                                    escort_name="Chidi Okafor", escort_phone="555-301-4478")
    async with factory.db.sessionmaker() as s:
        chairs = [r[0] for r in (await s.execute(text("SELECT id FROM chairs WHERE clinic_id = :c AND kind = 'chair' ORDER BY sort_order"), {"c": clinic.id}))]
    return clinic, patient, day, chairs


async def book(client, patient, day, chair, h=10, m=0, kind="ketamine_iv", **extra):
    data = {"patient_id": str(patient.id), "session_type": kind, "slot": slot(day, h, m, chair), **extra}
    return await client.post("/schedule/book", data=data, headers={**csrf_headers(client), **HX})


async def test_booking_through_the_form_then_seeing_it_on_the_day_and_week(client, factory):
    clinic, patient, day, chairs = await desk(client, factory)
    r = await book(client, patient, day, chairs[1], kind="esketamine", planned_dose_mg="84", escort_name="", notes="Prefers the window seat")
    assert r.status_code == 200 and r.headers["hx-redirect"].startswith("/schedule/appointments/")
    page = await client.get(r.headers["hx-redirect"])
    assert page.status_code == 200
    assert "Maya Okafor" in page.text and "84 mg" in page.text and "Chidi Okafor" in page.text and "10:00" in page.text
    dayview = await client.get(f"/schedule?date={day.isoformat()}")
    assert dayview.status_code == 200
    assert "Maya Okafor" in dayview.text and "Chair 2" in dayview.text and "10:00–12:35" in dayview.text
    # empty slots link into the booking flow with chair and start filled in
    assert f"/schedule/book?chair_id={chairs[0]}&amp;start=" in dayview.text
    week = await client.get(f"/schedule/week?date={day.isoformat()}")
    assert week.status_code == 200 and "Maya Okafor" in week.text


async def test_a_lost_slot_shows_why_and_one_click_alternatives(client, factory):
    clinic, patient, day, chairs = await desk(client, factory)
    other = await factory.patient(clinic)
    assert (await book(client, other, day, chairs[0])).status_code == 200
    r = await book(client, patient, day, chairs[0])
    assert r.status_code == 409 and r.headers["hx-retarget"] == "#flash"
    assert "already booked" in r.text and 'name="alt_slot"' in r.text and 'form="book-form"' in r.text
    # picking an alternative books it
    alt = r.text.split('name="alt_slot" value="')[1].split('"')[0]
    r = await client.post("/schedule/book", data={"patient_id": str(patient.id), "session_type": "ketamine_iv", "slot": slot(day, 10, 0, chairs[0]), "alt_slot": alt},
                          headers={**csrf_headers(client), **HX})
    assert r.status_code == 200 and "hx-redirect" in r.headers


async def test_bad_form_input_names_the_field(client, factory):
    clinic, patient, day, chairs = await desk(client, factory)
    r = await book(client, patient, day, chairs[0], h=7, m=0)
    assert r.status_code == 422 and 'data-field="starts_at"' in r.text and "opening hours" in r.text
    r = await client.post("/schedule/book", data={"patient_id": str(patient.id), "session_type": "ketamine_iv"}, headers={**csrf_headers(client), **HX})
    assert r.status_code == 422 and 'data-field="slot"' in r.text


async def test_booking_page_and_slot_picker_for_a_returning_patient(client, factory):
    clinic, patient, day, chairs = await desk(client, factory)
    page = await client.get(f"/schedule/book?patient_id={patient.id}")
    assert page.status_code == 200 and "Maya Okafor" in page.text and 'hx-get="/schedule/book/slots"' in page.text
    slots = await client.get(f"/schedule/book/slots?session_type=ketamine_iv&patient_id={patient.id}&from={day.isoformat()}", headers=HX)
    assert slots.status_code == 200
    assert slot(day, 10, 0, chairs[0]) in slots.text and day.strftime("%a %d %b") in slots.text
    # no shifts on the following days: they show as full, not as free
    assert "Full" in slots.text


async def test_move_cancel_and_no_show_from_the_appointment_page(client, factory):
    clinic, patient, day, chairs = await desk(client, factory)
    r = await book(client, patient, day, chairs[0])
    appt_url = r.headers["hx-redirect"].split("?")[0]
    appt_id = int(appt_url.rsplit("/", 1)[1])
    assert (await client.get(f"{appt_url}/move")).status_code == 200
    r = await client.post(f"{appt_url}/move", data={"slot": slot(day, 13, 0, chairs[1])}, headers={**csrf_headers(client), **HX})
    assert r.status_code == 200 and r.headers["hx-redirect"].endswith("done=moved")
    page = await client.get(r.headers["hx-redirect"])
    assert "13:00" in page.text and "Moved" in page.text
    r = await client.post(f"{appt_url}/cancel", data={"reason": ""}, headers={**csrf_headers(client), **HX})
    assert r.status_code == 422 and 'data-field="reason"' in r.text
    r = await client.post(f"{appt_url}/cancel", data={"reason": "other", "reason_other": "Family emergency"}, headers={**csrf_headers(client), **HX})
    assert r.status_code == 200
    async with factory.db.sessionmaker() as s:
        status, reason = (await s.execute(text("SELECT status, cancel_reason FROM appointments WHERE id = :i"), {"i": appt_id})).one()
    assert (status, reason) == ("cancelled", "Family emergency")
    r = await client.post(f"{appt_url}/no-show", headers={**csrf_headers(client), **HX})
    assert r.status_code == 409


async def test_course_preview_and_booking_through_the_form(client, factory):
    clinic, patient, day, chairs = await desk(client, factory)
    await staff_on_shift(factory, clinic, [day + timedelta(days=i) for i in range(1, 28)])
    form = {"patient_id": str(patient.id), "session_type": "esketamine", "template": "induction", "first_day": day.isoformat(), "at": "10:30",
            "chair_id": "", "planned_dose_mg": "56"}
    r = await client.post("/schedule/courses/preview", data=form, headers={**csrf_headers(client), **HX})
    assert r.status_code == 200 and r.text.count('name="occ-') == 8 and "All 8 sessions fit" in r.text
    occs = {k: v for k, v in (part.split('" value="') for part in r.text.split('name="')[1:] if part.startswith("occ-")) for v in [v.split('"')[0]]}
    r = await client.post("/schedule/courses", data={**form, "planned": "1", **occs}, headers={**csrf_headers(client), **HX})
    assert r.status_code == 200 and "/schedule/courses/" in r.headers["hx-redirect"]
    page = await client.get(r.headers["hx-redirect"])
    assert page.status_code == 200 and page.text.count("10:30") >= 8 and "Course booked: 8 sessions" in page.text


async def test_patient_search_as_you_type_and_the_audited_patient_page(client, factory):
    clinic, patient, day, chairs = await desk(client, factory)
    page = await client.get("/patients")
    assert 'hx-trigger="input changed delay:250ms, search"' in page.text
    r = await client.get("/patients/search?q=oka", headers=HX)
    assert "Okafor, Maya" in r.text and f'href="/patients/{patient.id}"' in r.text
    r = await client.get("/patients/search?q=oka&pick=book", headers=HX)
    assert f'href="/schedule/book?patient_id={patient.id}"' in r.text
    r = await client.get(f"/patients/{patient.id}")
    assert r.status_code == 200 and "REMS" in r.text
    async with factory.db.sessionmaker() as s:
        n = (await s.execute(text("SELECT count(*) FROM audit_events WHERE action = 'chart.read' AND patient_id = :p"), {"p": patient.id})).scalar_one()
    assert n == 1


async def test_register_and_edit_a_patient_through_the_form(client, factory):
    clinic, patient, day, chairs = await desk(client, factory)
    data = {"first_name": "Leo", "last_name": "Varga", "date_of_birth": "1990-02-03", "sex": "male", "email": "leo@example.org",
            "phone": "555 222 1111", "notice_channel": "email", "notice_consent": "1", "medication_flags": ["opioids", "maois"],
            "diagnosis_codes": "F33.1, f41.1", "then": ""}
    r = await client.post("/patients", data={**data, "email": "nope"}, headers={**csrf_headers(client), **HX})
    assert r.status_code == 422 and 'data-field="email"' in r.text
    r = await client.post("/patients", data=data, headers={**csrf_headers(client), **HX})
    assert r.status_code == 200
    pid = int(r.headers["hx-redirect"].split("/")[2].split("?")[0])
    page = await client.get(f"/patients/{pid}")
    assert "Leo Varga" in page.text and "Opioids" in page.text and "MAOIs" in page.text and "F33.1, F41.1" in page.text
    r = await client.post(f"/patients/{pid}/edit", data={**data, "phone": "555 222 9999", "medication_flags": []}, headers={**csrf_headers(client), **HX})
    assert r.status_code == 200
    page = await client.get(f"/patients/{pid}")
    assert "555 222 9999" in page.text and "none flagged" in page.text


async def test_admin_pages_for_clinic_setup(client, factory):
    clinic, patient, day, chairs = await desk(client, factory, "admin")
    for path in ("/admin/clinic", "/admin/chairs", "/admin/protocols", "/admin/shifts"):
        assert (await client.get(path)).status_code == 200, path
    h = {**csrf_headers(client), **HX}
    form = {"name": "Riverside", "display_name": "Riverside Clinic", "timezone": "America/Chicago", "phone": "", "address": "",
            "nurse_ratio": "2", "grid_minutes": "15", "late_cancel_hours": "48", "reminder_hours": "24"}
    for d in range(7):
        if d < 5:
            form |= {f"open-{d}": "1", f"from-{d}-0": "09:00", f"to-{d}-0": "17:00"}
    bad = {**form, "to-0-0": "08:00"}
    r = await client.post("/admin/clinic", data=bad, headers=h)
    assert r.status_code == 422 and "Monday" in r.text
    assert (await client.post("/admin/clinic", data=form, headers=h)).status_code == 200
    api = await client.get("/api/v1/clinic")
    assert api.json()["timezone"] == "America/Chicago" and api.json()["settings"]["nurse_ratio"] == 2
    assert api.json()["opening_hours"]["5"] == []
    r = await client.post("/admin/clinic/closed-dates", data={"day": day.isoformat(), "reason": "Inventory"}, headers=h)
    assert r.status_code == 200
    assert (await client.post("/admin/clinic/closed-dates", data={"day": day.isoformat()}, headers=h)).status_code == 409
    r = await client.post("/admin/chairs", data={"name": "Chair 9", "kind": "chair"}, headers=h)
    assert r.status_code == 200 and "Chair 9" in (await client.get("/admin/chairs")).text
    nurse = await factory.user(clinic, "nurse")
    shift = {"user_id": str(nurse.id), "role": "nurse", "first_day": (day + timedelta(days=7)).isoformat(),
             "last_day": (day + timedelta(days=11)).isoformat(), "start": "08:00", "end": "16:00", "weekdays": ["0", "1", "2"]}
    assert (await client.post("/admin/shifts", data=shift, headers=h)).status_code == 200
    assert (await client.post("/admin/shifts", data=shift, headers=h)).status_code == 409  # overlapping shifts for one person
    assert (await client.post("/admin/shifts", data={**shift, "role": "prescriber"}, headers=h)).status_code == 422
    rows = (await client.get(f"/api/v1/shifts?from={(day + timedelta(days=7)).isoformat()}&to={(day + timedelta(days=11)).isoformat()}")).json()
    assert len([s for s in rows if s["user_id"] == nurse.id]) == 3


async def test_an_admin_edits_a_protocol_and_a_bad_value_is_refused_naming_its_field(client, factory):
    clinic, patient, day, chairs = await desk(client, factory, "admin")
    h = csrf_headers(client)
    kap = next(t for t in (await client.get("/api/v1/session-types")).json() if t["kind"] == "kap")
    weekly = {"label": "Weekly, 6 sessions", "sessions": 6, "per_week": 1, "min_days_apart": 7, "weeks": 6}
    r = await client.patch(f"/api/v1/session-types/{kap['id']}", json={"monitoring_minutes": 130, "course_templates": {"weekly": weekly}}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["monitoring_minutes"] == 130 and r.json()["hold_minutes"] == 15 + 130 + 10
    assert r.json()["course_templates"] == {"weekly": weekly}
    for bad, field in (({**weekly, "sessions": "six"}, "course_templates.weekly.sessions"), ({**weekly, "per_week": 0}, "course_templates.weekly.per_week")):
        r = await client.patch(f"/api/v1/session-types/{kap['id']}", json={"course_templates": {"weekly": bad}}, headers=h)
        assert r.status_code == 422 and r.json()["field"] == field, r.text
    form = {"name": "KAP", "prep_minutes": "15", "dosing_minutes": "0", "monitoring_minutes": "120", "turnover_minutes": "10", "active": "1",
            "template_rows": "1", "t-0-key": "weekly", "t-0-label": "Weekly", "t-0-sessions": "3", "t-0-per_week": "1", "t-0-min_days_apart": "7", "t-0-weeks": "3"}
    assert (await client.post(f"/admin/protocols/{kap['id']}", data=form, headers={**h, **HX})).status_code == 200
    saved = (await client.get(f"/api/v1/session-types/{kap['id']}")).json()
    assert saved["name"] == "KAP" and saved["hold_minutes"] == 145
    assert saved["course_templates"] == {"weekly": {"label": "Weekly", "sessions": 3, "per_week": 1, "min_days_apart": 7, "weeks": 3}}
    r = await client.post(f"/admin/protocols/{kap['id']}", data={**form, "t-0-sessions": "60"}, headers={**h, **HX})
    assert r.status_code == 422 and "Sessions" in r.text
    assert "Weekly" in (await client.get("/admin/protocols")).text
    page = await client.get(f"/admin/protocols/{kap['id']}")
    assert page.status_code == 200 and 'value="weekly"' in page.text
    esketamine = next(t for t in (await client.get("/api/v1/session-types")).json() if t["kind"] == "esketamine")
    assert "each device after the first adds 5 minutes" in (await client.get(f"/admin/protocols/{esketamine['id']}")).text


async def test_front_desk_cannot_open_clinic_setup(client, factory):
    clinic, patient, day, chairs = await desk(client, factory)
    assert (await client.get("/admin/clinic")).status_code == 403
    assert (await client.post("/admin/chairs", data={"name": "x"}, headers={**csrf_headers(client), **HX})).status_code == 403
