"""Patients through the JSON API: registration, validation, search, edits, and the audited chart read."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import text

from tests.factories import bearer

GOOD = {
    "first_name": "Maya", "last_name": "Okafor", "date_of_birth": "1984-07-09", "sex": "female",
    "email": "Maya.Okafor@Example.org", "phone": "(555) 301-4477", "notice_channel": "email", "notice_consent": True,
    "escort_name": "Chidi Okafor", "escort_phone": "555-301-4478", "rems_enrolled_on": "2025-02-03", "rems_patient_id": "RP-5521",
    "medication_flags": ["benzodiazepines", "opioids"], "diagnosis_codes": ["f33.1", "F41.1"],
}


async def desk(factory):
    clinic = await factory.clinic()
    return clinic, bearer(await factory.token(await factory.user(clinic, "front_desk")))


async def count(factory, clinic) -> int:
    async with factory.db.sessionmaker() as s:
        return (await s.execute(text("SELECT count(*) FROM patients WHERE clinic_id = :c"), {"c": clinic.id})).scalar_one()


async def test_register_a_patient_with_everything(client, factory):
    clinic, h = await desk(factory)
    r = await client.post("/api/v1/patients", headers=h, json=GOOD)
    assert r.status_code == 201, r.text
    p = r.json()
    assert p["name"] == "Maya Okafor" and p["email"] == "maya.okafor@example.org"
    assert p["notice_consent_at"] is not None and p["rems_enrolled"] is True
    assert p["medication_flags"] == ["benzodiazepines", "opioids"] and p["diagnosis_codes"] == ["F33.1", "F41.1"]


async def test_each_bad_field_is_422_by_name_and_nothing_is_written(client, factory):
    clinic, h = await desk(factory)
    tomorrow = (date.today() + timedelta(days=2)).isoformat()
    cases = [
        ({"first_name": "  "}, "first_name"),
        ({"last_name": "x" * 101}, "last_name"),
        ({"date_of_birth": tomorrow}, "date_of_birth"),
        ({"date_of_birth": "17/05/1980"}, "date_of_birth"),
        ({"sex": "robot"}, "sex"),
        ({"email": "not-an-email"}, "email"),
        ({"phone": "12"}, "phone"),
        ({"notice_channel": "fax"}, "notice_channel"),
        ({"escort_phone": "call"}, "escort_phone"),
        ({"rems_enrolled_on": tomorrow}, "rems_enrolled_on"),
        ({"rems_patient_id": None}, "rems_patient_id"),
        ({"medication_flags": ["caffeine"]}, "medication_flags"),
        ({"diagnosis_codes": ["depression"]}, "diagnosis_codes"),
    ]
    for change, field in cases:
        r = await client.post("/api/v1/patients", headers=h, json={**GOOD, **change})
        assert r.status_code == 422, (change, r.text)
        assert r.json()["field"] == field, (change, r.json())
    for missing in ("first_name", "last_name", "date_of_birth", "sex"):
        r = await client.post("/api/v1/patients", headers=h, json={k: v for k, v in GOOD.items() if k != missing})
        assert r.status_code == 422 and r.json()["field"] == missing
    assert await count(factory, clinic) == 0


async def test_search_by_name_dob_or_phone(client, factory):
    clinic, h = await desk(factory)
    await factory.patient(clinic, first_name="Maya", last_name="Okafor", date_of_birth=date(1984, 7, 9), phone="(555) 301-4477")
    await factory.patient(clinic, first_name="Mark", last_name="Oakes", date_of_birth=date(1970, 1, 2), phone="555-999-0000")
    await factory.patient(await factory.clinic(), first_name="Maya", last_name="Okafor")  # another clinic's
    names = lambda r: [p["name"] for p in r.json()]  # noqa: E731
    assert names(await client.get("/api/v1/patients?q=oka", headers=h)) == ["Maya Okafor"]
    assert names(await client.get("/api/v1/patients?q=ma", headers=h)) == ["Mark Oakes", "Maya Okafor"]
    assert names(await client.get("/api/v1/patients?q=maya okaf", headers=h)) == ["Maya Okafor"]
    assert names(await client.get("/api/v1/patients?q=1984-07-09", headers=h)) == ["Maya Okafor"]
    assert names(await client.get("/api/v1/patients?q=07/09/1984", headers=h)) == ["Maya Okafor"]
    assert names(await client.get("/api/v1/patients?q=3014477", headers=h)) == ["Maya Okafor"]
    assert names(await client.get("/api/v1/patients?q=555 301", headers=h)) == ["Maya Okafor"]
    assert names(await client.get("/api/v1/patients?q=100%25", headers=h)) == []


async def test_edit_changes_only_what_is_sent_and_consent_is_timed(client, factory):
    clinic, h = await desk(factory)
    p = (await client.post("/api/v1/patients", headers=h, json={**GOOD, "notice_consent": False})).json()
    assert p["notice_consent_at"] is None
    r = await client.patch(f"/api/v1/patients/{p['id']}", headers=h, json={"notice_consent": True, "phone": "555-301-0000"})
    assert r.status_code == 200
    q = r.json()
    assert q["notice_consent_at"] is not None and q["phone"] == "555-301-0000" and q["last_name"] == "Okafor"
    r = await client.patch(f"/api/v1/patients/{p['id']}", headers=h, json={"notices_opted_out": True})
    assert r.json()["notices_opted_out"] is True
    r = await client.patch(f"/api/v1/patients/{p['id']}", headers=h, json={"rems_patient_id": None})
    assert r.status_code == 422 and r.json()["field"] == "rems_patient_id"
    r = await client.patch(f"/api/v1/patients/{p['id']}", headers=h, json={"rems_patient_id": None, "rems_enrolled_on": None})
    assert r.status_code == 200 and r.json()["rems_enrolled"] is False


async def test_reading_a_chart_is_audited_and_shows_upcoming_and_past(client, factory):
    clinic, h = await desk(factory)
    admin = bearer(await factory.token(await factory.user(clinic, "admin")))
    patient = await factory.patient(clinic)
    from clinic.scheduling.models import Appointment, Chair, SessionType
    from sqlmodel import select

    async with factory.db.sessionmaker() as s:
        chair = (await s.exec(select(Chair).where(Chair.clinic_id == clinic.id, Chair.kind == "chair"))).first()
        iv = (await s.exec(select(SessionType).where(SessionType.clinic_id == clinic.id, SessionType.kind == "ketamine_iv"))).first()
    now = datetime.now(ZoneInfo("UTC")).replace(microsecond=0)
    past = Appointment(clinic_id=clinic.id, patient_id=patient.id, session_type_id=iv.id, chair_id=chair.id,
                       starts_at=now - timedelta(days=7), ends_at=now - timedelta(days=7) + timedelta(minutes=95), status="fulfilled")
    soon = Appointment(clinic_id=clinic.id, patient_id=patient.id, session_type_id=iv.id, chair_id=chair.id,
                       starts_at=now + timedelta(days=7), ends_at=now + timedelta(days=7, minutes=95))
    await factory.add(past, soon)
    r = await client.get(f"/api/v1/patients/{patient.id}", headers=h)
    assert r.status_code == 200
    chart = r.json()
    assert [a["id"] for a in chart["upcoming"]] == [soon.id] and [a["id"] for a in chart["past"]] == [past.id]
    events = (await client.get(f"/api/v1/audit-events?action=chart.read&patient_id={patient.id}", headers=admin)).json()
    assert len(events) == 1 and events[0]["entity_id"] == str(patient.id)


async def test_billing_reads_but_cannot_edit_and_other_clinics_see_nothing(client, factory):
    clinic, h = await desk(factory)
    p = (await client.post("/api/v1/patients", headers=h, json=GOOD)).json()
    billing = bearer(await factory.token(await factory.user(clinic, "billing")))
    assert (await client.get(f"/api/v1/patients/{p['id']}", headers=billing)).status_code == 200
    assert (await client.patch(f"/api/v1/patients/{p['id']}", headers=billing, json={"phone": "555-000-1111"})).status_code == 403
    other = bearer(await factory.token(await factory.user(await factory.clinic(), "front_desk")))
    assert (await client.get(f"/api/v1/patients/{p['id']}", headers=other)).status_code == 404
    assert (await client.get("/api/v1/patients?q=Okafor", headers=other)).json() == []
