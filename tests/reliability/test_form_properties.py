"""The forms people use most, starting from a valid submission with one field made hostile (or dropped, or sent
twice): either it is saved as one row, or it is refused with nothing written and the answer names that field.

Registration (front desk), the tablet's vitals entry (nurse), booking (front desk) and sign-in (anyone).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from hypothesis import strategies as st
from sqlalchemy import text

from clinic.timeutil import utcnow
from tests.factories import appointment, csrf_headers, login, staff_on_shift
from tests.reliability.conftest import booking_day, local_iso
from tests.reliability.helpers import explore, named_fields

HOSTILE = [
    "", " ", "0", "-1", "1e309", "NaN", "99999999999999999999", "2147483648", "3.5", "0001-01-01", "9999-12-31",
    "2026-02-30", "25:61", "\x00", "a\x00b", "\r\n", "<script>alert(1)</script>", "' OR 1=1 --", "\u202eevil",
    "😀" * 200, "Ωmega ñandú 東京", "A" * 5000, "9" * 50_000, "not-a-uuid", "on", "[]",
]
values = st.one_of(st.sampled_from(HOSTILE), st.text(st.characters(exclude_categories=("Cs",)), max_size=30),
                   st.integers(-(10**15), 10**15).map(str))


# one of each kind, sent into every field of the form (the random examples then mix the rest)
SWEEP = ["", "\x00", "-1", "2147483648", "1e309", "0001-01-01", "😀" * 200, "A" * 5000, "9" * 50_000, "<script>alert(1)</script>", "\u202e"]


def mutations(fields: list[str]):
    return st.tuples(st.sampled_from(["value", "missing", "repeat"]), st.sampled_from(fields), values)


async def sweep_and_explore(fields: list[str], check, *, max_examples: int = 30) -> None:
    for name in fields:
        await check(("missing", name, ""))
        for value in SWEEP:
            await check(("value", name, value))
    await explore(mutations(fields), check, max_examples=max_examples)


def mutate(base: dict[str, str], how: str, name: str, value: str) -> dict[str, list[str]]:
    data = {k: [v] for k, v in base.items()}
    if how == "missing":
        data.pop(name, None)
    elif how == "value":
        data[name] = [value]
    else:
        data.setdefault(name, []).append(value)
    return data


async def count(db, sql: str, **params) -> int:
    async with db.sessionmaker() as s:
        return (await s.execute(text(sql), params)).scalar_one()


def judge(r, name: str, related: dict[str, set[str]], written: int, what: str) -> None:
    where = f"{what}: {r.status_code} {r.text[:300]!r}"
    assert r.status_code < 500, where
    if r.status_code < 400:
        assert written == 1, f"{where}: accepted but wrote {written} rows"
        return
    assert written == 0, f"{where}: refused but wrote {written} rows"
    if r.status_code == 422:
        named = named_fields(r.text)
        assert named, f"{where}: names no field"
        assert named <= related.get(name, set()) | {name}, f"{where}: names {named}, not {name}"


async def test_patient_registration(client, factory, db):
    clinic = await factory.clinic()
    desk = await factory.user(clinic, "front_desk")
    await login(client, desk.email)
    h = csrf_headers(client) | {"HX-Request": "true"}
    base = {"first_name": "Ada", "last_name": "Lovelace", "date_of_birth": "1980-05-17", "sex": "female",
            "email": "ada@example.org", "phone": "555-010-2030", "notice_channel": "email", "notice_consent": "1",
            "escort_name": "Sam Rivera", "escort_phone": "555-010-2031", "rems_enrolled_on": "2025-01-02",
            "rems_patient_id": "RP-100234", "diagnosis_codes": "F33.2", "medication_flags": "opioids"}
    related = {"email": {"notice_channel", "notice_consent"}, "notice_channel": {"email", "notice_consent"},
               "notice_consent": {"email", "notice_channel"}, "rems_enrolled_on": {"rems_patient_id", "rems_enrollment"},
               "rems_patient_id": {"rems_enrolled_on", "rems_enrollment"}}
    assert (await client.post("/patients", data=base, headers=h)).status_code == 200  # the baseline is valid

    async def check(m):
        how, name, value = m
        before = await count(db, "SELECT count(*) FROM patients WHERE clinic_id = :c", c=clinic.id)
        r = await client.post("/patients", data=mutate(base, how, name, value), headers=h)
        written = await count(db, "SELECT count(*) FROM patients WHERE clinic_id = :c", c=clinic.id) - before
        judge(r, name, related, written, f"register {how} {name}={value[:30]!r}")

    await sweep_and_explore(sorted(base) + ["unknown_field"], check)


async def test_tablet_vitals_entry(client, factory, db):
    clinic = await factory.clinic()
    nurse = await factory.user(clinic, "nurse")
    patient = await factory.patient(clinic, rems_enrolled_on=utcnow().date() - timedelta(days=30), rems_patient_id="RP-100234")
    appt = await appointment(factory, clinic, patient, utcnow().replace(microsecond=0) - timedelta(minutes=20))
    token = await factory.token(nurse)
    r = await client.post(f"/api/v1/appointments/{appt.id}/check-in", headers={"Authorization": f"Bearer {token}"},
                          json={"fasting_confirmed": True, "escort_confirmed": True, "escort_name": "Sam Rivera"})
    assert r.status_code == 200, r.text
    await login(client, nurse.email)
    h = csrf_headers(client) | {"HX-Request": "true"}
    base = {"systolic": "128", "diastolic": "82", "heart_rate": "74", "spo2": "98", "resp_rate": "14", "moaas": "5",
            "note": "calm", "check_key": "", "taken_at": ""}
    related = {"systolic": {"diastolic"}, "diastolic": {"systolic"}}
    url = f"/sessions/{appt.id}/entries"
    assert (await client.post(url, data=base | {"client_id": str(uuid.uuid4())}, headers=h)).status_code == 200

    async def check(m):
        how, name, value = m
        data = mutate(base | {"client_id": str(uuid.uuid4())}, how, name, value)
        before = await count(db, "SELECT count(*) FROM clinical_entries WHERE appointment_id = :a", a=appt.id)
        r = await client.post(url, data=data, headers=h)
        written = await count(db, "SELECT count(*) FROM clinical_entries WHERE appointment_id = :a", a=appt.id) - before
        judge(r, name, related, written, f"entry {how} {name}={value[:30]!r}")

    await sweep_and_explore(sorted(base) + ["client_id", "unknown_field"], check)


async def test_booking(client, factory, db):
    clinic = await factory.clinic(chairs=3)
    desk = await factory.user(clinic, "front_desk")
    day = booking_day()
    await staff_on_shift(factory, clinic, [day], nurses=4)
    patients = [await factory.patient(clinic, rems_enrolled_on=day - timedelta(days=60), rems_patient_id=f"RP-10{i:04d}") for i in range(3)]
    async with db.sessionmaker() as s:
        chair = (await s.execute(text("SELECT id FROM chairs WHERE clinic_id = :c AND kind = 'chair' ORDER BY id"), {"c": clinic.id})).scalar()
    await login(client, desk.email)
    h = csrf_headers(client) | {"HX-Request": "true"}
    starts = iter([local_iso(day, hh, mm) for hh in range(8, 16) for mm in (0, 15, 30, 45)] * 50)

    def base() -> dict[str, str]:
        # a fresh patient and time each try, so a valid submission is really bookable
        return {"patient_id": str(patients[len(patients) - 1].id), "session_type": "ketamine_iv", "slot": f"{next(starts)}|{chair}",
                "escort_name": "Sam Rivera", "escort_phone": "555-010-2031", "notes": "first visit", "planned_dose_mg": ""}

    sample = base()
    r = await client.post("/schedule/book", data=sample, headers=h)
    assert r.status_code == 200 and r.headers.get("hx-redirect"), r.text[:300]
    related = {"slot": {"starts_at", "chair_id"}, "alt_slot": {"slot", "starts_at", "chair_id"}, "session_type": {"slot", "starts_at"},
               "patient_id": {"slot", "starts_at"}}

    async def check(m):
        how, name, value = m
        before = await count(db, "SELECT count(*) FROM appointments WHERE clinic_id = :c", c=clinic.id)
        r = await client.post("/schedule/book", data=mutate(base(), how, name, value), headers=h)
        written = await count(db, "SELECT count(*) FROM appointments WHERE clinic_id = :c", c=clinic.id) - before
        judge(r, name, related, written, f"book {how} {name}={value[:30]!r}")

    await sweep_and_explore(sorted(sample) + ["alt_slot", "unknown_field"], check)


async def test_sign_in(client, factory, db):
    clinic = await factory.clinic()
    user = await factory.user(clinic, "nurse")
    await client.get("/login")
    base = {"email": user.email, "password": "wrong-password-123", "next": "/board"}

    async def check(m):
        how, name, value = m
        client.cookies.delete("clinic_session")
        data = mutate(base, how, name, value)
        data["_csrf_token"] = [client.cookies.get("csrftoken") or ""]
        before = await count(db, "SELECT count(*) FROM web_sessions")
        r = await client.post("/login", data=data, follow_redirects=False)
        assert r.status_code < 500, (how, name, value[:30], r.status_code)
        # never signed in without the password, and never an echo of what was typed as a password
        assert await count(db, "SELECT count(*) FROM web_sessions") == before
        assert "clinic_session" not in r.headers.get("set-cookie", "")
        if how != "missing" and name == "password" and len(value) >= 4:
            assert value not in r.text
        if r.status_code in (301, 302, 303):
            location = r.headers["location"]
            assert location.startswith("/") and not location.startswith("//"), location

    await sweep_and_explore(["email", "password", "next", "unknown_field"], check)
