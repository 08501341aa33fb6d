"""A supervised session through the JSON API, as an integrator or a tablet sees it: check-in, entries, dosing, alerts, discharge."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from clinic.audit.models import AuditEvent
from clinic.monitoring.models import Alert, ClinicalEntry, DosingEntry, RemsForm
from clinic.scheduling.models import Appointment
from clinic.timeutil import utcnow
from tests.factories import appointment, bearer


def ago(minutes: float) -> str:
    return (utcnow() - timedelta(minutes=minutes)).isoformat()


def cid() -> str:
    return str(uuid.uuid4())


@dataclass
class Api:
    client: Any
    token: str

    async def post(self, path: str, body: dict[str, Any] | None = None):
        return await self.client.post(f"/api/v1{path}", json=body or {}, headers=bearer(self.token))

    async def get(self, path: str, **params: Any):
        return await self.client.get(f"/api/v1{path}", params=params, headers=bearer(self.token))


@dataclass
class Session:
    clinic: Any
    patient: Any
    appt: Any
    nurse: Api
    prescriber: Api
    nurse_user: Any
    prescriber_user: Any

    @property
    def path(self) -> str:
        return f"/appointments/{self.appt.id}"


async def chair_ids(factory, clinic) -> list[int]:
    from clinic.scheduling.models import Chair

    async with factory.db.sessionmaker() as s:
        return list((await s.execute(select(Chair.id).where(Chair.clinic_id == clinic.id, Chair.kind == "chair").order_by(Chair.sort_order))).scalars())


async def make_session(client, factory, *, kind: str = "esketamine", starts_ago: float = 160, rems: bool = True, clinic=None, chair: int = 0, **appt_kw: Any) -> Session:
    clinic = clinic or await factory.clinic(chairs=2)
    chair_id = (await chair_ids(factory, clinic))[chair]
    nurse = await factory.user(clinic, "nurse", full_name="Nora Nurse", credentials="RN")
    prescriber = await factory.user(clinic, "prescriber", full_name="Dr. Priya Patel", credentials="MD")
    patient_kw: dict[str, Any] = {"medication_flags": ["benzodiazepines"]}
    if rems:
        patient_kw |= {"rems_enrolled_on": date(2024, 1, 10), "rems_patient_id": "RP-10022"}
    patient = await factory.patient(clinic, first_name="Jordan", last_name="Rivera", **patient_kw)
    appt = await appointment(factory, clinic, patient, utcnow() - timedelta(minutes=starts_ago), kind=kind, chair_id=chair_id, escort_name="Sam Rivera", escort_phone="555-0199", **appt_kw)
    return Session(clinic, patient, appt, Api(client, await factory.token(nurse)), Api(client, await factory.token(prescriber)), nurse, prescriber)


async def check_in(s: Session, minutes_ago: float, **extra: Any):
    body = {"fasting_confirmed": True, "escort_confirmed": True, "taken_at": ago(minutes_ago)} | extra
    r = await s.nurse.post(f"{s.path}/check-in", body)
    assert r.status_code == 200, r.text
    return r


async def vitals(s: Session, minutes_ago: float, *, check_key: str | None = None, **values: Any):
    body = {"client_id": cid(), "taken_at": ago(minutes_ago), "check_key": check_key, **values}
    r = await s.nurse.post(f"{s.path}/entries", body)
    assert r.status_code == 201, r.text
    return r.json()


CADSS6_ZERO = {"form": "cadss6", "items": {"1": 0, "2": 0, "6": 0, "7": 0, "15": 0, "22": 0}}


async def dosed_esketamine(s: Session, dosed_ago: float, *, devices: int = 2) -> None:
    """Checked in, pre-dose BP and SpO2, devices given 5 minutes apart, `dosed_ago` minutes ago."""
    await check_in(s, dosed_ago + 15)
    await vitals(s, dosed_ago + 5, check_key="pre_dose", systolic=128, diastolic=82, spo2=98, heart_rate=72)
    r = await s.nurse.post(f"{s.path}/start-dosing", {"client_id": cid(), "taken_at": ago(dosed_ago), "lot_number": "LOT-A1", "dose_mg": 28 * devices})
    assert r.status_code == 201, r.text
    for n in range(2, devices + 1):
        r = await s.nurse.post(f"{s.path}/dosing", {"client_id": cid(), "kind": "device", "taken_at": ago(dosed_ago - 5 * (n - 1)), "lot_number": "LOT-A1"})
        assert r.status_code == 201, r.text


async def monitored_to_discharge(s: Session, dosed_ago: float = 130) -> None:
    """An uneventful esketamine session with every check done, ready for the prescriber."""
    await dosed_esketamine(s, dosed_ago)
    await vitals(s, dosed_ago - 40, check_key="t40", systolic=142, diastolic=88, spo2=97, moaas=4, dissociation={"form": "cadss6", "items": {"1": 1, "2": 2, "6": 0, "7": 1, "15": 0, "22": 1}})
    await vitals(s, dosed_ago - 80, check_key="t80", spo2=98)
    await vitals(s, max(dosed_ago - 120, 1), check_key="discharge", systolic=126, diastolic=80, spo2=98, moaas=5, dissociation=CADSS6_ZERO)


async def count(db, model, **where: Any) -> int:
    async with db.sessionmaker() as s:
        q = select(func.count()).select_from(model)
        for k, v in where.items():
            q = q.where(getattr(model, k) == v)
        return (await s.execute(q)).scalar_one()


# ---- idempotency and bad input ------------------------------------------------------------------


async def test_a_repeated_client_id_writes_one_row_and_returns_the_first_result(client, factory, db):
    s = await make_session(client, factory)
    await check_in(s, 10)
    body = {"client_id": cid(), "taken_at": ago(2), "systolic": 185, "diastolic": 95, "spo2": 97}
    first = await s.nurse.post(f"{s.path}/vitals", body)
    again = await s.nurse.post(f"{s.path}/vitals", body)
    retry_changed = await s.nurse.post(f"{s.path}/vitals", body | {"systolic": 120})
    assert first.status_code == 201 and again.status_code == 200 and retry_changed.status_code == 200
    assert again.json() == first.json() == retry_changed.json()
    assert first.json()["alerts"][0]["code"] == "bp_high"
    assert await count(db, ClinicalEntry, appointment_id=s.appt.id) == 1
    assert await count(db, Alert, appointment_id=s.appt.id) == 2  # the alert and the esketamine pre-dose caution, once


async def test_a_client_id_from_another_session_is_refused(client, factory):
    s = await make_session(client, factory)
    other = await make_session(client, factory, clinic=s.clinic, chair=1, starts_ago=20)
    await check_in(s, 10)
    await check_in(other, 10)
    body = {"client_id": cid(), "spo2": 97}
    assert (await s.nurse.post(f"{s.path}/vitals", body)).status_code == 201
    r = await s.nurse.post(f"{other.path}/vitals", body)
    assert r.status_code == 409 and r.json()["field"] == "client_id"


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"systolic": 320, "diastolic": 80}, "systolic"),
        ({"systolic": 120, "diastolic": 130}, "diastolic"),
        ({"systolic": 120}, "diastolic"),
        ({"heart_rate": 12}, "heart_rate"),
        ({"spo2": 101}, "spo2"),
        ({"resp_rate": 70}, "resp_rate"),
        ({"moaas": 6}, "moaas"),
        ({"dissociation": {"form": "cadss6", "items": {"1": 5, "2": 0, "6": 0, "7": 0, "15": 0, "22": 0}}}, "item_1"),
        ({"dissociation": {"form": "cadss6", "items": {"1": 1}}}, "item_2"),
        ({}, "values"),
    ],
)
async def test_implausible_values_are_refused_naming_the_field_and_nothing_is_written(client, factory, db, values, field):
    s = await make_session(client, factory)
    await check_in(s, 10)
    r = await s.nurse.post(f"{s.path}/entries", {"client_id": cid(), **values})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field
    assert await count(db, ClinicalEntry, appointment_id=s.appt.id) == 0


async def test_times_in_the_future_or_beyond_twelve_hours_or_before_check_in_are_refused(client, factory, db):
    s = await make_session(client, factory, starts_ago=60)
    await check_in(s, 30)
    for when in ((utcnow() + timedelta(minutes=5)).isoformat(), ago(13 * 60), ago(45), "2026-01-01T10:00:00"):
        r = await s.nurse.post(f"{s.path}/vitals", {"client_id": cid(), "taken_at": when, "spo2": 97})
        assert r.status_code == 422 and r.json()["field"] == "taken_at", (when, r.text)
    assert await count(db, ClinicalEntry, appointment_id=s.appt.id) == 0


async def test_an_entry_on_an_appointment_not_checked_in_is_a_conflict(client, factory, db):
    s = await make_session(client, factory)
    r = await s.nurse.post(f"{s.path}/vitals", {"client_id": cid(), "spo2": 97})
    assert r.status_code == 409 and "Check the patient in" in r.json()["detail"]
    assert await count(db, ClinicalEntry) == 0 or await count(db, ClinicalEntry, appointment_id=s.appt.id) == 0


async def test_another_clinics_appointment_is_not_found(client, factory):
    s = await make_session(client, factory)
    outsider = await make_session(client, factory)
    r = await outsider.nurse.post(f"{s.path}/check-in", {"fasting_confirmed": True, "escort_confirmed": True})
    assert r.status_code == 404


# ---- check-in ----------------------------------------------------------------------------------------


async def test_esketamine_check_in_needs_rems_enrollment(client, factory, db):
    s = await make_session(client, factory, rems=False)
    r = await s.nurse.post(f"{s.path}/check-in", {"fasting_confirmed": True, "escort_confirmed": True})
    assert r.status_code == 409 and r.json()["field"] == "rems_enrollment" and "REMS" in r.json()["detail"]
    async with db.sessionmaker() as x:
        assert (await x.get(Appointment, s.appt.id)).status == "booked"


async def test_check_in_needs_fasting_and_iv_needs_a_plausible_weight(client, factory):
    s = await make_session(client, factory, kind="ketamine_iv", rems=False)
    r = await s.nurse.post(f"{s.path}/check-in", {"fasting_confirmed": False, "escort_confirmed": True, "weight_kg": 80})
    assert r.status_code == 422 and r.json()["field"] == "fasting_confirmed"
    r = await s.nurse.post(f"{s.path}/check-in", {"fasting_confirmed": True, "escort_confirmed": True})
    assert r.status_code == 422 and r.json()["field"] == "weight_kg"
    r = await s.nurse.post(f"{s.path}/check-in", {"fasting_confirmed": True, "escort_confirmed": True, "weight_kg": 400})
    assert r.status_code == 422 and r.json()["field"] == "weight_kg"
    r = await s.nurse.post(f"{s.path}/check-in", {"fasting_confirmed": True, "escort_confirmed": False, "weight_kg": 81.5})
    assert r.status_code == 200 and r.json()["status"] == "arrived" and r.json()["weight_kg"] == 81.5
    again = await s.nurse.post(f"{s.path}/check-in", {"fasting_confirmed": True, "escort_confirmed": True, "weight_kg": 81.5})
    assert again.status_code == 409 and "Already checked in" in again.json()["detail"]


async def test_front_desk_and_billing_cannot_run_a_session(client, factory):
    s = await make_session(client, factory)
    for role in ("front_desk", "billing"):
        user = await factory.user(s.clinic, role)
        r = await Api(client, await factory.token(user)).post(f"{s.path}/check-in", {"fasting_confirmed": True, "escort_confirmed": True})
        assert r.status_code == 403


# ---- the pre-dose gate ------------------------------------------------------------------------------


async def test_dosing_before_the_pre_dose_check_is_refused_with_the_blocker(client, factory, db):
    s = await make_session(client, factory)
    await check_in(s, 30)
    r = await s.nurse.post(f"{s.path}/start-dosing", {"client_id": cid(), "lot_number": "L1", "dose_mg": 56})
    assert r.status_code == 409
    assert [b["code"] for b in r.json()["blockers"]] == ["pre_dose_check"]
    assert "SpO2" in r.json()["blockers"][0]["message"]
    # a BP from 25 minutes ago is not a pre-dose BP any more
    await vitals(s, 25, systolic=130, diastolic=80, spo2=98)
    r = await s.nurse.post(f"{s.path}/start-dosing", {"client_id": cid(), "lot_number": "L1", "dose_mg": 56})
    assert r.status_code == 409 and r.json()["blockers"][0]["code"] == "pre_dose_check"
    assert await count(db, DosingEntry, appointment_id=s.appt.id) == 0


async def test_a_pre_dose_caution_needs_a_prescribers_acknowledgement_with_a_reason(client, factory, db):
    s = await make_session(client, factory)
    await check_in(s, 20)
    entry = await vitals(s, 3, systolic=152, diastolic=88, spo2=98)
    caution = entry["alerts"][0]
    assert caution["level"] == "caution" and caution["code"] == "pre_dose_bp"
    r = await s.nurse.post(f"{s.path}/start-dosing", {"client_id": cid(), "lot_number": "L1", "dose_mg": 56})
    assert r.status_code == 409 and [b["code"] for b in r.json()["blockers"]] == ["pre_dose_caution"]
    r = await s.nurse.post(f"{s.path}/alerts/{caution['id']}/acknowledge", {"note": "ok"})
    assert r.status_code == 403
    r = await s.prescriber.post(f"{s.path}/alerts/{caution['id']}/acknowledge", {"note": ""})
    assert r.status_code == 422 and r.json()["field"] == "note"
    r = await s.prescriber.post(f"{s.path}/alerts/{caution['id']}/acknowledge", {"note": "Baseline hypertension, stable; proceed with 56 mg."})
    assert r.status_code == 200 and r.json()["acknowledged"] is True
    r = await s.nurse.post(f"{s.path}/start-dosing", {"client_id": cid(), "lot_number": "L1", "dose_mg": 56})
    assert r.status_code == 201, r.text
    state = (await s.nurse.get(f"{s.path}/session")).json()
    assert state["status"] == "in_progress" and state["phase"] == "dosing"


async def test_devices_need_five_minutes_rest_a_lot_number_and_stop_at_the_planned_dose(client, factory, db):
    s = await make_session(client, factory)
    await check_in(s, 30)
    await vitals(s, 12, systolic=128, diastolic=80, spo2=98)
    r = await s.nurse.post(f"{s.path}/start-dosing", {"client_id": cid(), "taken_at": ago(10), "dose_mg": 56})
    assert r.status_code == 422 and r.json()["field"] == "lot_number"
    start = {"client_id": cid(), "taken_at": ago(10), "dose_mg": 56, "lot_number": "LOT-7"}
    assert (await s.nurse.post(f"{s.path}/start-dosing", start)).status_code == 201
    assert (await s.nurse.post(f"{s.path}/start-dosing", start)).status_code == 200  # a retry of the same tap
    r = await s.nurse.post(f"{s.path}/dosing", {"client_id": cid(), "kind": "device", "taken_at": ago(7), "lot_number": "LOT-7"})
    assert r.status_code == 422 and r.json()["field"] == "taken_at" and "5 minutes" in r.json()["detail"]
    r = await s.nurse.post(f"{s.path}/dosing", {"client_id": cid(), "kind": "device", "taken_at": ago(5), "lot_number": "LOT-7"})
    assert r.status_code == 201 and r.json()["device_number"] == 2
    r = await s.nurse.post(f"{s.path}/dosing", {"client_id": cid(), "kind": "device", "lot_number": "LOT-7"})
    assert r.status_code == 409 and r.json()["field"] == "device_number"
    assert await count(db, DosingEntry, appointment_id=s.appt.id) == 2
    assert await count(db, RemsForm, appointment_id=s.appt.id) == 1


# ---- alerts and discharge ------------------------------------------------------------------------------


async def test_an_open_alert_blocks_discharge_until_acknowledged(client, factory, db):
    s = await make_session(client, factory, starts_ago=170)
    await monitored_to_discharge(s, 130)
    entry = await vitals(s, 1, spo2=90)
    alert = entry["alerts"][0]
    assert alert["level"] == "urgent" and alert["code"] == "spo2_low"
    await vitals(s, 0.5, spo2=97)
    r = await s.prescriber.post(f"{s.path}/discharge", {})
    assert r.status_code == 409
    codes = [b["code"] for b in r.json()["blockers"]]
    assert codes == ["open_alert"] and "SpO2 90%" in r.json()["blockers"][0]["message"]
    async with db.sessionmaker() as x:
        assert (await x.get(Appointment, s.appt.id)).status == "in_progress"
    assert (await s.nurse.post(f"{s.path}/alerts/{alert['id']}/acknowledge", {"note": "Repositioned, SpO2 97% on room air."})).status_code == 200
    r = await s.prescriber.post(f"{s.path}/discharge", {"note": "Alert, oriented, escort present."})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "fulfilled" and body["phase"] == "discharged"
    assert body["facts"]["dose_mg"] == 56 and body["facts"]["devices"] == 2 and body["facts"]["lot_numbers"] == ["LOT-A1", "LOT-A1"]
    assert body["facts"]["monitoring_minutes"] >= 130
    assert (await s.prescriber.post(f"{s.path}/discharge", {})).status_code == 409


async def test_discharge_before_120_minutes_of_esketamine_monitoring_is_refused_naming_it(client, factory, db):
    s = await make_session(client, factory, starts_ago=120)
    await dosed_esketamine(s, 90)
    await vitals(s, 50, check_key="t40", systolic=130, diastolic=80, spo2=98, moaas=5, dissociation=CADSS6_ZERO)
    r = await s.prescriber.post(f"{s.path}/discharge", {})
    assert r.status_code == 409
    blockers = {b["code"]: b["message"] for b in r.json()["blockers"]}
    assert "min_monitoring_time" in blockers
    assert "at least 120 minutes" in blockers["min_monitoring_time"] and "90 so far" in blockers["min_monitoring_time"]
    assert "min_monitoring_time" in r.json()["detail"] or "120 minutes" in r.json()["detail"]
    async with db.sessionmaker() as x:
        appt = await x.get(Appointment, s.appt.id)
        assert appt.status == "in_progress" and appt.discharged_at is None


async def test_only_a_prescriber_signs_the_discharge(client, factory):
    s = await make_session(client, factory, starts_ago=170)
    await monitored_to_discharge(s, 130)
    assert (await s.nurse.post(f"{s.path}/discharge", {})).status_code == 403
    assert (await s.prescriber.post(f"{s.path}/discharge", {})).status_code == 200


async def test_each_unmet_criterion_is_named(client, factory):
    s = await make_session(client, factory, starts_ago=170)
    await check_in(s, 150, escort_confirmed=False)
    await vitals(s, 137, systolic=128, diastolic=82, spo2=98)
    assert (await s.nurse.post(f"{s.path}/start-dosing", {"client_id": cid(), "taken_at": ago(135), "lot_number": "L", "dose_mg": 28})).status_code == 201
    await vitals(s, 10, systolic=182, diastolic=100, spo2=97, moaas=4)
    state = (await s.nurse.get(f"{s.path}/session")).json()
    codes = [b["code"] for b in state["discharge_blockers"]]
    assert codes == ["discharge_check", "bp_out_of_range", "moaas_not_alert", "open_alert", "escort_not_confirmed", "rems_incomplete"]
    rems = next(b for b in state["discharge_blockers"] if b["code"] == "rems_incomplete")["message"]
    assert "BP at 40 minutes" in rems and "dissociation assessment" in rems
    assert (await s.nurse.post(f"{s.path}/escort", {"escort_name": "Sam Rivera"})).json()["escort_confirmed"] is True


async def test_two_alert_level_bp_readings_in_a_row_escalate_to_urgent(client, factory):
    s = await make_session(client, factory, starts_ago=90)
    await dosed_esketamine(s, 60)
    first = await vitals(s, 20, systolic=184, diastolic=96, spo2=97)
    assert [a["code"] for a in first["alerts"]] == ["bp_high"]
    state = (await s.nurse.get(f"{s.path}/session")).json()
    repeat = next(c for c in state["checks"] if c["key"].startswith("repeat_bp@"))
    assert repeat["status"] == "overdue"  # asked for within 5 minutes, 20 minutes ago
    second = await vitals(s, 16, systolic=181, diastolic=92, spo2=97)
    assert [(a["level"], a["code"]) for a in second["alerts"]] == [("urgent", "bp_high_repeated")]
    state = (await s.nurse.get(f"{s.path}/session")).json()
    repeat = next(c for c in state["checks"] if c["key"] == repeat["key"])
    assert repeat["status"] == "done"
    hr = await vitals(s, 15, heart_rate=131)
    assert [(a["level"], a["code"]) for a in hr["alerts"]] == [("alert", "hr_high")]


async def test_the_check_schedule_counts_from_the_actual_dosing_time(client, factory):
    s = await make_session(client, factory, starts_ago=90)
    await dosed_esketamine(s, 45)
    state = (await s.nurse.get(f"{s.path}/session")).json()
    checks = {c["key"]: c for c in state["checks"]}
    dosed = datetime.fromisoformat(state["dosing_started_at"]["utc"])
    assert datetime.fromisoformat(checks["t40"]["due_at"]["utc"]) == dosed + timedelta(minutes=40)
    assert checks["pre_dose"]["status"] == "done" and checks["t40"]["status"] == "due" and checks["t80"]["status"] == "upcoming"
    assert state["next_check"] == "t40" and checks["t40"]["missing"] == ["bp", "spo2", "moaas", "dissociation"]
    await vitals(s, 1, check_key="t40", systolic=130, diastolic=80, spo2=97)
    state = (await s.nurse.get(f"{s.path}/session")).json()
    t40 = next(c for c in state["checks"] if c["key"] == "t40")
    assert t40["status"] == "due" and t40["missing"] == ["moaas", "dissociation"]


# ---- corrections ------------------------------------------------------------------------------------------


async def test_a_correction_supersedes_the_entry_and_nothing_is_overwritten(client, factory, db):
    s = await make_session(client, factory, starts_ago=60)
    await check_in(s, 30)
    entry = await vitals(s, 5, systolic=128, diastolic=82, spo2=89)
    assert entry["alerts"][0]["code"] == "spo2_low"
    r = await s.nurse.post(f"{s.path}/entries/{entry['id']}/corrections", {"client_id": cid(), "reason": "Probe was off the finger", "spo2": 98})
    assert r.status_code == 201, r.text
    fixed = r.json()
    assert fixed["supersedes_id"] == entry["id"] and fixed["spo2"] == 98 and fixed["systolic"] == 128
    assert fixed["correction_reason"] == "Probe was off the finger" and fixed["recorded_by"] == s.nurse_user.id
    current = (await s.nurse.get(f"{s.path}/vitals")).json()
    assert [e["id"] for e in current] == [fixed["id"]]
    everything = (await s.nurse.get(f"{s.path}/vitals", current_only="false")).json()
    old = next(e for e in everything if e["id"] == entry["id"])
    assert old["spo2"] == 89 and old["superseded_by"] == fixed["id"]
    again = await s.nurse.post(f"{s.path}/entries/{entry['id']}/corrections", {"client_id": cid(), "reason": "twice", "spo2": 97})
    assert again.status_code == 409
    r = await s.nurse.post(f"{s.path}/entries/{fixed['id']}/corrections", {"client_id": cid(), "reason": "Wrong patient", "entered_in_error": True})
    assert r.status_code == 201 and r.json()["entered_in_error"] is True
    assert (await s.nurse.get(f"{s.path}/vitals")).json() == []
    assert (await s.nurse.post(f"{s.path}/entries/{entry['id']}/corrections", {"client_id": cid(), "reason": ""})).status_code == 422


async def test_a_correction_raises_its_alerts_but_not_one_whose_code_is_still_open(client, factory, db):
    s = await make_session(client, factory, starts_ago=60)
    await check_in(s, 30)
    low = await vitals(s, 10, spo2=89)
    assert [a["code"] for a in low["alerts"]] == ["spo2_low"]
    entry = await vitals(s, 5, systolic=128, diastolic=82, spo2=97, heart_rate=80)
    r = await s.nurse.post(f"{s.path}/entries/{entry['id']}/corrections", {"client_id": cid(), "reason": "Read off the wrong monitor", "spo2": 88, "heart_rate": 130})
    assert r.status_code == 201, r.text
    fixed = r.json()
    assert [(a["code"], a["entry_id"]) for a in fixed["alerts"]] == [("hr_high", fixed["id"])]  # the low SpO2 is on the board already
    ack = await s.nurse.post(f"{s.path}/alerts/{low['alerts'][0]['id']}/acknowledge", {"note": "Probe re-seated."})
    assert ack.status_code == 200, ack.text
    r = await s.nurse.post(f"{s.path}/entries/{fixed['id']}/corrections", {"client_id": cid(), "reason": "Still the wrong monitor", "spo2": 87})
    assert r.status_code == 201, r.text
    assert [a["code"] for a in r.json()["alerts"]] == ["spo2_low"]  # acknowledged, so raised again; the high HR is still open
    assert await count(db, Alert, appointment_id=s.appt.id) == 3


async def test_the_database_refuses_to_change_or_delete_an_entry(engine_db, owner_db, factory):
    """Even for the tables' owner (the app's own role may not even try: tests/integration/test_db_roles.py)."""
    from tests.factories import Factory

    f = Factory(engine_db)
    clinic = await f.clinic()
    nurse = await f.user(clinic, "nurse")
    patient = await f.patient(clinic)
    appt = await appointment(f, clinic, patient, utcnow(), status="arrived", checked_in_at=utcnow())
    entry = ClinicalEntry(clinic_id=clinic.id, appointment_id=appt.id, client_id=uuid.uuid4(), taken_at=utcnow(), recorded_by=nurse.id, spo2=97)
    await f.add(entry)
    async with owner_db.engine.connect() as conn:
        for sql in ("UPDATE clinical_entries SET spo2 = 80 WHERE id = :id", "DELETE FROM clinical_entries WHERE id = :id"):
            with pytest.raises(DBAPIError, match="append-only"):
                async with conn.begin():
                    await conn.execute(text(sql), {"id": entry.id})
    alert = Alert(clinic_id=clinic.id, appointment_id=appt.id, entry_id=entry.id, level="alert", code="x", message="m")
    await f.add(alert)
    async with owner_db.engine.connect() as conn:
        async with conn.begin():
            await conn.execute(text("UPDATE session_alerts SET acknowledged_at = now(), acknowledged_by = :u, note = 'seen' WHERE id = :id"), {"id": alert.id, "u": nurse.id})
        with pytest.raises(DBAPIError, match="first acknowledgement"):
            async with conn.begin():
                await conn.execute(text("UPDATE session_alerts SET note = 'rewritten' WHERE id = :id"), {"id": alert.id})


async def test_a_dosing_correction_moves_the_schedule_with_the_first_device(client, factory):
    s = await make_session(client, factory, starts_ago=90)
    await dosed_esketamine(s, 50, devices=1)
    doses = (await s.nurse.get(f"{s.path}/dosing")).json()
    r = await s.nurse.post(f"{s.path}/dosing/{doses[0]['id']}/corrections", {"client_id": cid(), "reason": "Clock on the wall was wrong", "taken_at": ago(48), "lot_number": "LOT-B2"})
    assert r.status_code == 201 and r.json()["lot_number"] == "LOT-B2" and r.json()["supersedes_id"] == doses[0]["id"]
    state = (await s.nurse.get(f"{s.path}/session")).json()
    assert state["dosing_started_at"]["utc"] == r.json()["taken_at"]["utc"]
    r = await s.nurse.post(f"{s.path}/dosing/{r.json()['id']}/corrections", {"client_id": cid(), "reason": "x", "entered_in_error": True})
    assert r.status_code == 409


# ---- IV ---------------------------------------------------------------------------------------------------


async def test_iv_dose_is_mg_per_kg_times_weight_and_recovery_follows_the_infusion_end(client, factory):
    s = await make_session(client, factory, kind="ketamine_iv", rems=False, starts_ago=90)
    await check_in(s, 80, weight_kg=82.4)
    await vitals(s, 72, systolic=124, diastolic=78, heart_rate=70, spo2=98)
    r = await s.nurse.post(f"{s.path}/start-dosing", {"client_id": cid(), "taken_at": ago(70), "mg_per_kg": 1.5})
    assert r.status_code == 422 and r.json()["field"] == "mg_per_kg"
    r = await s.nurse.post(f"{s.path}/start-dosing", {"client_id": cid(), "taken_at": ago(70)})
    assert r.status_code == 201 and r.json()["dose_mg"] == 41.2 and r.json()["mg_per_kg"] == 0.5
    r = await s.nurse.post(f"{s.path}/dosing", {"client_id": cid(), "kind": "infusion_end", "taken_at": ago(71)})
    assert r.status_code == 422
    assert (await s.nurse.post(f"{s.path}/dosing", {"client_id": cid(), "kind": "infusion_end", "taken_at": ago(20)})).status_code == 201
    state = (await s.nurse.get(f"{s.path}/session")).json()
    codes = [b["code"] for b in state["discharge_blockers"]]
    assert "recovery_time" in codes and "min_monitoring_time" not in codes


# ---- audit ------------------------------------------------------------------------------------------------


async def test_clinical_writes_and_chart_reads_are_audited(client, factory, db):
    s = await make_session(client, factory)
    await check_in(s, 10)
    await vitals(s, 2, spo2=97)
    await s.nurse.get(f"{s.path}/vitals")
    await s.nurse.get(f"{s.path}/session")
    async with db.sessionmaker() as x:
        actions = (await x.execute(select(AuditEvent.action).where(AuditEvent.patient_id == s.patient.id).order_by(AuditEvent.id))).scalars().all()
    assert actions == ["session.check_in", "session.entry", "session.view", "session.view"]


async def test_a_kap_session_records_its_single_dose(client, factory):
    s = await make_session(client, factory, kind="kap", rems=False, starts_ago=40)
    await check_in(s, 30)
    await vitals(s, 4, systolic=122, diastolic=78, heart_rate=70, spo2=99)
    r = await s.nurse.post(f"{s.path}/start-dosing", {"client_id": cid()})
    assert r.status_code == 422 and r.json()["field"] == "dose_mg"
    r = await s.nurse.post(f"{s.path}/start-dosing", {"client_id": cid(), "dose_mg": 150})
    assert r.status_code == 201 and r.json()["kind"] == "dose" and r.json()["dose_mg"] == 150
    state = (await s.nurse.get(f"{s.path}/session")).json()
    assert state["phase"] == "monitoring" and state["next_check"] == "session@15"
