"""Patient records: create, edit, search, and the audited chart read with upcoming and past sessions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import func, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import Actor, record, record_read
from clinic.errors import NotFound
from clinic.patients import rules
from clinic.patients.models import Patient
from clinic.timeutil import utcnow


def _apply(patient: Patient, values: dict, *, now: datetime) -> list[str]:
    """Set cleaned values on the row; returns the names of the fields that changed."""
    changed: list[str] = []
    consent = values.pop("notice_consent", None)
    for key, value in values.items():
        if getattr(patient, key) != value:
            setattr(patient, key, value)
            changed.append(key)
    if consent is True and patient.notice_consent_at is None:
        patient.notice_consent_at = now  # consent is recorded with its time
        changed.append("notice_consent_at")
    elif consent is False and patient.notice_consent_at is not None:
        patient.notice_consent_at = None
        changed.append("notice_consent_at")
    return changed


async def create_patient(session: AsyncSession, *, actor: Actor, data: dict, now: datetime | None = None) -> Patient:
    now = now or utcnow()
    values = rules.clean_patient(data, today=now.date())
    rules.check_rems_pair(values.get("rems_enrolled_on"), values.get("rems_patient_id"))
    patient = Patient(clinic_id=actor.clinic_id, first_name=values["first_name"], last_name=values["last_name"],
                      date_of_birth=values["date_of_birth"], sex=values["sex"])
    _apply(patient, values, now=now)
    session.add(patient)
    await session.flush()
    # field names only: the audit trail says what changed, the chart holds the values
    record(session, actor=actor, action="patient.create", entity="patient", entity_id=patient.id, patient_id=patient.id,
           changes={"fields": sorted(k for k in data if k in rules.EDITABLE)})
    return patient


async def get_patient(session: AsyncSession, *, actor: Actor, patient_id: int, for_update: bool = False) -> Patient:
    q = select(Patient).where(Patient.id == patient_id, Patient.clinic_id == actor.clinic_id)
    if for_update:
        q = q.with_for_update()
    patient = (await session.exec(q)).first()
    if patient is None:
        raise NotFound("No such patient in this clinic.")
    return patient


async def update_patient(session: AsyncSession, *, actor: Actor, patient_id: int, data: dict, now: datetime | None = None) -> Patient:
    now = now or utcnow()
    patient = await get_patient(session, actor=actor, patient_id=patient_id, for_update=True)
    values = rules.clean_patient(data, today=now.date(), partial=True)
    rules.check_rems_pair(values.get("rems_enrolled_on", patient.rems_enrolled_on), values.get("rems_patient_id", patient.rems_patient_id))
    changed = _apply(patient, values, now=now)
    if changed:
        session.add(patient)
        await session.flush()
        record(session, actor=actor, action="patient.update", entity="patient", entity_id=patient.id, patient_id=patient.id,
               changes={"fields": changed})
    return patient


async def search_patients(session: AsyncSession, *, actor: Actor, q: str, limit: int = 20) -> list[Patient]:
    """Patients whose name, date of birth or phone matches; an empty query lists the most recent."""
    parsed = rules.parse_search(q)
    stmt = select(Patient).where(Patient.clinic_id == actor.clinic_id)
    if "dob" in parsed:
        stmt = stmt.where(Patient.date_of_birth == parsed["dob"])
    elif "phone" in parsed:
        stmt = stmt.where(func.regexp_replace(func.coalesce(Patient.phone, ""), r"\D", "", "g").contains(parsed["phone"]))
    elif "name" in parsed:
        for word in parsed["name"]:
            like = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            stmt = stmt.where(or_(col(Patient.first_name).ilike(like), col(Patient.last_name).ilike(like),
                                  col(Patient.last_name).ilike("%-" + like)))
    if parsed:
        stmt = stmt.order_by(Patient.last_name, Patient.first_name, Patient.id)
    else:
        stmt = stmt.order_by(col(Patient.id).desc())
    found = list((await session.exec(stmt.limit(max(1, min(limit, 100))))).all())
    record_read(session, actor=actor, what="patients", query={"q": q, "limit": limit}, rows=len(found), patient_ids=[p.id for p in found])
    return found


@dataclass
class Chart:
    patient: Patient
    upcoming: list
    past: list


async def read_chart(session: AsyncSession, *, actor: Actor, patient_id: int, now: datetime | None = None) -> Chart:
    """The patient with upcoming and past sessions; every read of a chart is audited."""
    from clinic.scheduling.service import list_appointments

    now = now or utcnow()
    patient = await get_patient(session, actor=actor, patient_id=patient_id)
    rows = await list_appointments(session, actor=actor, patient_id=patient.id, limit=1000)
    upcoming = [r for r in rows if r.appointment.ends_at > now and r.appointment.status in ("booked", "arrived", "in_progress")]
    past = [r for r in rows if r not in upcoming]
    upcoming.sort(key=lambda r: r.appointment.starts_at)
    past.sort(key=lambda r: r.appointment.starts_at, reverse=True)
    record(session, actor=actor, action="chart.read", entity="patient", entity_id=patient.id, patient_id=patient.id)
    return Chart(patient=patient, upcoming=upcoming, past=past)


def age_on(dob: date, day: date) -> int:
    return day.year - dob.year - ((day.month, day.day) < (dob.month, dob.day))
