"""Booking, moving, cancelling one session and recording a no-show.

Postgres decides double booking (exclusion constraints on chair and patient); nurse capacity and
staff coverage are checked under a per-clinic-per-day advisory lock taken before the checks, so
competing bookings for one day are serialised and cannot both pass.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import Actor, record
from clinic.clinics import Clinic, clinic_of
from clinic.db import conflict_message, register_conflicts
from clinic.errors import Conflict, NotFound, RuleBroken
from clinic.patients.models import Patient
from clinic.patients.rules import clean_phone
from clinic.scheduling import changes, rules
from clinic.scheduling.models import Appointment, Chair, ChangeKind, SessionType
from clinic.scheduling.protocols import Protocol
from clinic.scheduling.rules import ClinicCalendar
from clinic.scheduling.service.appointments import AppointmentRow
from clinic.scheduling.service.availability import alternatives_near, booked_between, candidate_out, lock_days, shifts_between
from clinic.scheduling.service.lookups import calendar_of, chair_of, patient_of, patient_problem, session_type_of
from clinic.timeutil import utcnow

CHAIR_OVERLAP = "ex_appointments_chair_overlap"
PATIENT_OVERLAP = "ex_appointments_patient_overlap"
SHIFT_OVERLAP = "ex_shifts_user_overlap"
register_conflicts(
    {
        CHAIR_OVERLAP: "That chair is already booked for part of this time.",
        PATIENT_OVERLAP: "The patient already has a session booked for part of this time.",
        SHIFT_OVERLAP: "That staff member already has a shift overlapping this time.",
        "uq_session_types_clinic_kind": "This clinic already has a protocol of that kind.",
        "uq_closed_dates_clinic_day": "That date is already marked closed.",
    }
)
CONFLICT_CODES = {CHAIR_OVERLAP: ("chair_taken", "chair"), PATIENT_OVERLAP: ("patient_busy", "patient")}


@dataclass
class Escort:
    name: str | None = None
    phone: str | None = None


def escort_for(patient: Patient, timing: Protocol, name: str | None, phone: str | None) -> Escort:
    """The escort named at booking, else the patient's usual one, else "to confirm" (blank) for check-in."""
    name = (name or "").strip() or None
    phone = clean_phone({"escort_phone": phone}, "escort_phone", "Escort phone")
    if name and len(name) > 200:
        raise RuleBroken("Escort name is longer than 200 characters.", field="escort_name", code="too_long")
    if not timing.monitored:
        return Escort(name, phone)
    if name:
        return Escort(name, phone)
    return Escort(patient.escort_name, patient.escort_phone)


def _conflict_from(exc: IntegrityError) -> tuple[str, str, str, str | None]:
    """(code, conflict, sentence, constraint) for a refused insert or update."""
    sentence, name = conflict_message(exc)
    code, what = CONFLICT_CODES.get(name or "", ("conflict", "other"))
    return code, what, sentence, name


async def _refuse(
    session: AsyncSession, *, clinic_id: int, cal: ClinicCalendar, timing: Protocol, start: datetime, chair_id: int,
    patient_id: int, dose_mg: int | None, code: str, conflict: str, detail: str, now: datetime, ignore_id: int | None = None,
) -> Conflict:
    alts = await alternatives_near(session, clinic_id=clinic_id, cal=cal, timing=timing, wanted=start, patient_id=patient_id,
                                   chair_id=chair_id, dose_mg=dose_mg, ignore_id=ignore_id, now=now)
    names = dict((await session.exec(select(Chair.id, Chair.name).where(Chair.clinic_id == clinic_id))).all())
    return Conflict(detail, code=code, extra={"conflict": conflict, "alternatives": [candidate_out(a, cal.tz, names) for a in alts]})


async def place_slot(
    session: AsyncSession, appt: Appointment, *, clinic: Clinic, cal: ClinicCalendar, timing: Protocol, dose_mg: int | None, now: datetime,
    changes: dict[str, Any] | None = None, release: bool = False,
) -> None:
    """Write the appointment's slot: the exclusion constraints decide chair and patient overlap; then, under the
    day lock already held, nurse capacity and staff coverage. Raises Conflict.

    With `release` (a single booking or move), a refusal ends the transaction first, so the day lock is
    free again while the nearest alternatives are worked out: competing bookings do not queue behind that.
    Without it (a course), the slot is written inside a savepoint, so one refused visit leaves the others.

    A move passes its new slot as `changes`, applied inside the savepoint: begin_nested() first flushes what is
    pending, so a slot set before it would hit the constraints outside the savepoint and abort the whole request.
    """
    target = {"starts_at": appt.starts_at, "chair_id": appt.chair_id} | (changes or {})
    start, chair_id, patient_id, appt_id = target["starts_at"], target["chair_id"], appt.patient_id, appt.id
    # plain values: after a rollback the ORM objects are expired and must not be touched
    refuse = {"clinic_id": clinic.id, "cal": cal, "timing": timing, "start": start, "chair_id": chair_id, "patient_id": patient_id,
              "dose_mg": dose_mg, "now": now, "ignore_id": appt_id}
    try:
        async with nullcontext() if release else session.begin_nested():
            for key, value in (changes or {}).items():
                setattr(appt, key, value)
            session.add(appt)
            await session.flush()
            day = cal.local_day(appt.starts_at)
            lo, hi = rules.local_day_bounds(day, cal.tz)
            booked = await booked_between(session, clinic.id, lo, hi)
            shifts = await shifts_between(session, clinic.id, lo, hi)
            problem = rules.booking_problem(
                start=appt.starts_at, chair_id=appt.chair_id, patient_id=appt.patient_id, timing=timing, cal=cal,
                booked=booked, shifts=shifts, dose_mg=dose_mg, ignore_id=appt.id,
            )
            if problem is not None:
                raise _StaffingRefused(problem)
    except IntegrityError as exc:
        code, what, sentence, name = _conflict_from(exc)
        if name not in CONFLICT_CODES:
            raise
        if release:
            await session.rollback()
        raise await _refuse(session, code=code, conflict=what, detail=sentence, **refuse) from None
    except _StaffingRefused as refused:
        p = refused.problem
        if release:
            await session.rollback()
        raise await _refuse(session, code=p.code, conflict=p.code, detail=p.message, **refuse) from None


class _StaffingRefused(Exception):
    def __init__(self, problem: RuleBroken) -> None:
        super().__init__(problem.code)
        self.problem = problem


def parse_start(value: datetime | str | None, cal: ClinicCalendar, *, field: str = "starts_at") -> datetime:
    """An aware instant; a time without offset is read as the clinic's wall time."""
    if value is None or value == "":
        raise RuleBroken("Choose a start time.", field=field, code="required")
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise RuleBroken("The start time must be ISO 8601, e.g. 2026-03-09T10:00:00-04:00.", field=field, code="datetime_format") from None
    if value.tzinfo is None:
        if not rules.wall_time_exists(value.date(), value.time(), cal.tz):
            raise RuleBroken("That wall time does not exist in the clinic's zone (daylight saving change).", field=field, code="nonexistent_time")
        value = value.replace(tzinfo=cal.zone)
    return value.astimezone(rules.UTC)


async def book(
    session: AsyncSession,
    *,
    actor: Actor,
    queue: Any,
    patient_id: int,
    session_type: int | str,
    chair_id: int,
    starts_at: datetime | str,
    planned_dose_mg: int | None = None,
    escort_name: str | None = None,
    escort_phone: str | None = None,
    notes: str | None = None,
    course_id: int | None = None,
    now: datetime | None = None,
) -> AppointmentRow:
    """Book one session. 422 for bad input, 409 (with the nearest alternatives) when the slot is taken or unstaffed."""
    now = now or utcnow()
    clinic = await clinic_of(session, actor)
    cal = await calendar_of(session, clinic)
    st = await session_type_of(session, actor, session_type, field="session_type")
    timing = Protocol.of(st)
    patient = await patient_of(session, actor, patient_id)
    chair = await chair_of(session, actor, chair_id, timing)
    start = parse_start(starts_at, cal)
    if (p := rules.check_dose(timing, planned_dose_mg)) is not None:
        raise p
    if (p := rules.check_slot(start, timing, cal, now=now, dose_mg=planned_dose_mg)) is not None:
        raise p
    if (p := patient_problem(patient, timing, cal.local_day(start))) is not None:
        raise p
    escort = escort_for(patient, timing, escort_name, escort_phone)
    if notes is not None and len(notes) > 2000:
        raise RuleBroken("Notes are longer than 2000 characters.", field="notes", code="too_long")
    await lock_days(session, clinic.id, [cal.local_day(start)])
    w = timing.windows(start, planned_dose_mg)
    appt = Appointment(
        clinic_id=clinic.id, patient_id=patient.id, session_type_id=st.id, chair_id=chair.id, course_id=course_id,
        starts_at=w.start, ends_at=w.end, status="booked", planned_dose_mg=planned_dose_mg, escort_name=escort.name,
        escort_phone=escort.phone, notes=(notes or "").strip() or None, created_by=actor.user_id, created_at=now, updated_at=now,
    )
    await place_slot(session, appt, clinic=clinic, cal=cal, timing=timing, dose_mg=planned_dose_mg, now=now, release=True)
    record(session, actor=actor, action="appointment.book", entity="appointment", entity_id=appt.id, patient_id=patient.id,
           changes={"session_type": st.kind, "chair_id": chair.id, "starts_at": appt.starts_at, "ends_at": appt.ends_at,
                    "planned_dose_mg": planned_dose_mg, "course_id": course_id, "escort": "named" if escort.name else "to_confirm"})
    changes.add(session, queue=queue, kind=ChangeKind.BOOKED, appointment=appt)
    return AppointmentRow(appt, patient, st, chair)


async def _appointment_for_update(session: AsyncSession, actor: Actor, appointment_id: int) -> Appointment:
    appt = (
        await session.exec(
            select(Appointment).where(Appointment.id == appointment_id, Appointment.clinic_id == actor.clinic_id).with_for_update()
        )
    ).first()
    if appt is None:
        raise NotFound("No such appointment in this clinic.")
    return appt


async def move(
    session: AsyncSession,
    *,
    actor: Actor,
    queue: Any,
    appointment_id: int,
    starts_at: datetime | str,
    chair_id: int | None = None,
    now: datetime | None = None,
) -> Appointment:
    """Move a booked session to a new start (and chair); same checks as booking, itself left out."""
    now = now or utcnow()
    appt = await _appointment_for_update(session, actor, appointment_id)
    if appt.status != "booked":
        raise Conflict(f"Only a booked appointment can be moved; this one is {appt.status}.", code="not_booked", field="status")
    clinic = await clinic_of(session, actor)
    cal = await calendar_of(session, clinic)
    st = await session.get(SessionType, appt.session_type_id)
    timing = Protocol.of(st)
    patient = await session.get(Patient, appt.patient_id)
    chair = await chair_of(session, actor, chair_id if chair_id is not None else appt.chair_id, timing)
    start = parse_start(starts_at, cal)
    if (p := rules.check_slot(start, timing, cal, now=now, dose_mg=appt.planned_dose_mg)) is not None:
        raise p
    if (p := patient_problem(patient, timing, cal.local_day(start))) is not None:
        raise p
    if start == appt.starts_at and chair.id == appt.chair_id:
        return appt
    await lock_days(session, clinic.id, {cal.local_day(start), cal.local_day(appt.starts_at)})
    old = {"starts_at": appt.starts_at, "chair_id": appt.chair_id}
    w = timing.windows(start, appt.planned_dose_mg)
    slot = {"starts_at": w.start, "ends_at": w.end, "chair_id": chair.id, "updated_at": now}
    await place_slot(session, appt, clinic=clinic, cal=cal, timing=timing, dose_mg=appt.planned_dose_mg, now=now, changes=slot, release=True)
    record(session, actor=actor, action="appointment.move", entity="appointment", entity_id=appt.id, patient_id=appt.patient_id,
           changes={"from": old, "to": {"starts_at": appt.starts_at, "chair_id": appt.chair_id}})
    changes.add(session, queue=queue, kind=ChangeKind.MOVED, appointment=appt)
    return appt


def cancellation_reason(reason: str | None) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise RuleBroken("Give a reason for the cancellation.", field="reason", code="required")
    if len(reason) > 300:
        raise RuleBroken("The reason is longer than 300 characters.", field="reason", code="too_long")
    return reason


async def cancel_row(session: AsyncSession, appt: Appointment, *, actor: Actor, queue: Any, clinic: Clinic, cal: ClinicCalendar,
                      reason: str, now: datetime) -> None:
    if appt.status not in ("booked", "arrived"):
        raise Conflict(f"Only a booked appointment can be cancelled; this one is {appt.status}.", code="not_booked", field="status")
    appt.status = "cancelled"
    appt.cancel_reason = reason
    appt.cancelled_by = actor.user_id
    appt.cancelled_at = now
    appt.late_cancel = rules.is_late_cancel(appt.starts_at, now, cal.late_cancel_hours)
    appt.updated_at = now
    session.add(appt)
    await session.flush()
    record(session, actor=actor, action="appointment.cancel", entity="appointment", entity_id=appt.id, patient_id=appt.patient_id,
           changes={"reason": reason, "late": appt.late_cancel, "starts_at": appt.starts_at})
    changes.add(session, queue=queue, kind=ChangeKind.CANCELLED, appointment=appt)


async def cancel(session: AsyncSession, *, actor: Actor, queue: Any, appointment_id: int, reason: str | None,
                 now: datetime | None = None) -> Appointment:
    """Cancel with a reason; "late" when under the clinic's notice period (default 24 h) before the start."""
    now = now or utcnow()
    reason = cancellation_reason(reason)
    appt = await _appointment_for_update(session, actor, appointment_id)
    clinic = await clinic_of(session, actor)
    cal = await calendar_of(session, clinic)
    await cancel_row(session, appt, actor=actor, queue=queue, clinic=clinic, cal=cal, reason=reason, now=now)
    return appt


async def no_show(session: AsyncSession, *, actor: Actor, queue: Any, appointment_id: int, now: datetime | None = None) -> Appointment:
    """Record that a booked patient did not come; possible once the start time has passed."""
    now = now or utcnow()
    appt = await _appointment_for_update(session, actor, appointment_id)
    if appt.status != "booked":
        raise Conflict(f"Only a booked appointment can be a no-show; this one is {appt.status}.", code="not_booked", field="status")
    if now < appt.starts_at:
        raise Conflict("The session has not started yet: record a no-show once its start time has passed.", code="not_started", field="status")
    appt.status = "noshow"
    appt.updated_at = now
    session.add(appt)
    await session.flush()
    record(session, actor=actor, action="appointment.noshow", entity="appointment", entity_id=appt.id, patient_id=appt.patient_id,
           changes={"starts_at": appt.starts_at})
    return appt
