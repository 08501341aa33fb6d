"""Listing appointments and reading one, joined to their patient, protocol and chair (audited reads)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import Actor, record_read
from clinic.clinics import clinic_of
from clinic.errors import NotFound
from clinic.patients.models import Patient
from clinic.scheduling import rules
from clinic.scheduling.models import Appointment, Chair, SessionType
from clinic.scheduling.service.availability import MAX_HOLD


@dataclass
class AppointmentRow:
    appointment: Appointment
    patient: Patient
    session_type: SessionType
    chair: Chair


async def list_appointments(
    session: AsyncSession,
    *,
    actor: Actor,
    day: date | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    status: Sequence[str] | None = None,
    patient_id: int | None = None,
    chair_id: int | None = None,
    course_id: int | None = None,
    limit: int = 500,
    tz: str | None = None,
) -> list[AppointmentRow]:
    q = (
        select(Appointment, Patient, SessionType, Chair)
        .join(Patient, Patient.id == Appointment.patient_id)
        .join(SessionType, SessionType.id == Appointment.session_type_id)
        .join(Chair, Chair.id == Appointment.chair_id)
        .where(Appointment.clinic_id == actor.clinic_id)
    )
    if day is not None:
        if tz is None:
            tz = (await clinic_of(session, actor)).timezone
        start, end = rules.local_day_bounds(day, tz)
    if start is not None:
        q = q.where(Appointment.starts_at >= start - MAX_HOLD, Appointment.ends_at > start)
    if end is not None:
        q = q.where(Appointment.starts_at < end)
    if status:
        q = q.where(col(Appointment.status).in_(list(status)))
    if patient_id is not None:
        q = q.where(Appointment.patient_id == patient_id)
    if chair_id is not None:
        q = q.where(Appointment.chair_id == chair_id)
    if course_id is not None:
        q = q.where(Appointment.course_id == course_id)
    q = q.order_by(Appointment.starts_at, Chair.sort_order, Appointment.id).limit(max(1, min(limit, 5000)))
    rows = [AppointmentRow(*r) for r in (await session.exec(q)).all()]
    record_read(session, actor=actor, what="appointments", rows=len(rows), patient_ids=[r.appointment.patient_id for r in rows],
                query={"day": day, "start": start, "end": end, "status": list(status or ()), "patient_id": patient_id,
                       "chair_id": chair_id, "course_id": course_id})
    return rows


async def get_appointment(session: AsyncSession, *, actor: Actor, appointment_id: int) -> AppointmentRow:
    q = (
        select(Appointment, Patient, SessionType, Chair)
        .join(Patient, Patient.id == Appointment.patient_id)
        .join(SessionType, SessionType.id == Appointment.session_type_id)
        .join(Chair, Chair.id == Appointment.chair_id)
        .where(Appointment.id == appointment_id, Appointment.clinic_id == actor.clinic_id)
    )
    row = (await session.exec(q)).first()
    if row is None:
        raise NotFound("No such appointment in this clinic.")
    return AppointmentRow(*row)
