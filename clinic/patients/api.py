"""Patients JSON API under /api/v1: search, create, edit, and the audited chart read."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import get, patch, post
from litestar.params import Parameter

from clinic.http import CurrentActor, CurrentClinic, DbSession, given
from clinic.patients import service
from clinic.patients.models import Patient
from clinic.patients.schemas import PatientChart, PatientIn, PatientOut, PatientPatch
from clinic.scheduling.api import appointment_out
from clinic.timeutil import both_zones

TAG = ["patients"]


def patient_out(p: Patient, tz: str, view: type[PatientOut] = PatientOut, **more: Any) -> PatientOut:
    return view(
        id=p.id,
        first_name=p.first_name,
        last_name=p.last_name,
        name=p.full_name,
        date_of_birth=p.date_of_birth,
        sex=p.sex,
        email=p.email,
        phone=p.phone,
        notice_channel=p.notice_channel,
        notice_consent_at=both_zones(p.notice_consent_at, tz),
        notices_opted_out=p.notices_opted_out,
        escort_name=p.escort_name,
        escort_phone=p.escort_phone,
        rems_enrolled_on=p.rems_enrolled_on,
        rems_patient_id=p.rems_patient_id,
        rems_enrolled=bool(p.rems_enrolled_on and p.rems_patient_id),
        medication_flags=list(p.medication_flags or []),
        diagnosis_codes=list(p.diagnosis_codes or []),
        time_zone=p.time_zone,
        created_at=both_zones(p.created_at, tz),
        **more,
    )


@get("/patients", opt={"permission": "patients.read"}, tags=TAG, summary="Search patients by name, date of birth or phone")
async def search(
    db_session: DbSession,
    actor: CurrentActor,
    clinic: CurrentClinic,
    q: Annotated[str, Parameter(description="name words, a date of birth (YYYY-MM-DD or MM/DD/YYYY) or phone digits")] = "",
    limit: Annotated[int, Parameter(ge=1, le=100)] = 20,
) -> list[PatientOut]:
    tz = clinic.timezone
    return [patient_out(p, tz) for p in await service.search_patients(db_session, actor=actor, q=q, limit=limit)]


@post("/patients", opt={"permission": "patients.write"}, tags=TAG, summary="Register a patient")
async def create(db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, data: PatientIn) -> PatientOut:
    tz = clinic.timezone
    patient = await service.create_patient(db_session, actor=actor, data=msgspec.structs.asdict(data))
    return patient_out(patient, tz)


@get("/patients/{patient_id:int}", opt={"permission": "patients.read"}, tags=TAG, summary="A patient's chart with upcoming and past sessions (audited)")
async def read(db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, patient_id: int) -> PatientChart:
    tz = clinic.timezone
    chart = await service.read_chart(db_session, actor=actor, patient_id=patient_id)
    return patient_out(
        chart.patient, tz, PatientChart,
        upcoming=[appointment_out(r, tz) for r in chart.upcoming],
        past=[appointment_out(r, tz) for r in chart.past],
    )


@patch("/patients/{patient_id:int}", opt={"permission": "patients.write"}, tags=TAG, summary="Edit a patient (send only what changes)")
async def edit(db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, patient_id: int, data: PatientPatch) -> PatientOut:
    tz = clinic.timezone
    return patient_out(await service.update_patient(db_session, actor=actor, patient_id=patient_id, data=given(data)), tz)


routes = [search, create, read, edit]
