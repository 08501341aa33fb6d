"""Reading the clinic's setup and the request's checks: the clinic and its calendar, protocols, chairs and rooms, the patient."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import Actor
from clinic.clinics import Clinic, closed_dates
from clinic.errors import RuleBroken
from clinic.patients.models import Patient
from clinic.scheduling.models import Chair, SessionType
from clinic.scheduling.protocols import Protocol
from clinic.scheduling.rules import ClinicCalendar, Place


async def calendar_of(session: AsyncSession, clinic: Clinic) -> ClinicCalendar:
    closed = await closed_dates(session, clinic.id)
    return ClinicCalendar.build(tz=clinic.timezone, opening_hours=clinic.opening_hours, closed=closed, settings=clinic.settings)


async def session_type_of(session: AsyncSession, actor: Actor, ref: int | str | None, *, field: str = "session_type") -> SessionType:
    """A protocol of this clinic by id or kind; 422 naming the field when unknown or retired."""
    if ref is None or ref == "":
        raise RuleBroken("Choose a protocol.", field=field, code="required")
    q = select(SessionType).where(SessionType.clinic_id == actor.clinic_id)
    # an id in ASCII digits ("³".isdigit() is true, but int("³") raises), else a kind
    if isinstance(ref, int) or (str(ref).isascii() and str(ref).isdigit() and len(str(ref)) <= 10):
        q = q.where(SessionType.id == int(ref))
    else:
        q = q.where(SessionType.kind == str(ref))
    st = (await session.exec(q)).first()
    if st is None or not st.active:
        raise RuleBroken("Unknown protocol for this clinic.", field=field, code="unknown_protocol")
    return st


async def session_types(session: AsyncSession, actor: Actor, *, active_only: bool = True) -> list[SessionType]:
    q = select(SessionType).where(SessionType.clinic_id == actor.clinic_id)
    if active_only:
        q = q.where(SessionType.active)
    return list((await session.exec(q.order_by(SessionType.id))).all())


async def chairs(session: AsyncSession, actor: Actor, *, active_only: bool = True) -> list[Chair]:
    q = select(Chair).where(Chair.clinic_id == actor.clinic_id)
    if active_only:
        q = q.where(Chair.active)
    return list((await session.exec(q.order_by(Chair.kind, Chair.sort_order, Chair.id))).all())


def places_of(rows: Iterable[Chair]) -> list[Place]:
    return [Place(c.id, c.kind, c.sort_order) for c in rows if c.active]


async def chair_of(session: AsyncSession, actor: Actor, chair_id: int | None, timing: Protocol, *, field: str = "chair_id") -> Chair:
    if chair_id is None:
        raise RuleBroken("Choose a chair or room.", field=field, code="required")
    chair = await session.get(Chair, chair_id) if chair_id is not None else None
    if chair is None or chair.clinic_id != actor.clinic_id or not chair.active:
        raise RuleBroken("Unknown chair or room for this clinic.", field=field, code="unknown_chair")
    wanted = "chair" if timing.needs_chair else "room"
    if chair.kind != wanted:
        raise RuleBroken(f"This protocol needs a {wanted}, not a {chair.kind}.", field=field, code="wrong_place_kind")
    return chair


async def patient_of(session: AsyncSession, actor: Actor, patient_id: int | None) -> Patient:
    if patient_id is None:
        raise RuleBroken("Choose a patient.", field="patient_id", code="required")
    patient = await session.get(Patient, patient_id) if patient_id is not None else None
    if patient is None or patient.clinic_id != actor.clinic_id:
        raise RuleBroken("Unknown patient for this clinic.", field="patient_id", code="unknown_patient")
    return patient


def patient_problem(patient: Patient, timing: Protocol, session_day: date) -> RuleBroken | None:
    """Data a patient must have on file before this protocol can be booked."""
    if not (patient.phone or patient.email):
        return RuleBroken("The patient has no phone or email on file: add one before booking.", field="patient_id", code="patient_contact_missing")
    if timing.requires_rems:
        if not (patient.rems_enrolled_on and patient.rems_patient_id):
            return RuleBroken("This patient is not enrolled in the Spravato REMS: record the enrollment date and REMS patient id before booking esketamine.", field="patient_id", code="rems_not_enrolled")
        if patient.rems_enrolled_on > session_day:
            return RuleBroken("The patient's Spravato REMS enrollment starts after this session date.", field="patient_id", code="rems_not_enrolled")
    return None
