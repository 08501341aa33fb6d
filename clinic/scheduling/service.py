"""Scheduling use cases, one transaction each: availability, book, move, cancel, no-show, courses, and clinic setup reads.

Postgres decides double booking (exclusion constraints on chair and patient); nurse capacity and
staff coverage are checked under a per-clinic-per-day advisory lock taken before the checks, so
competing bookings for one day are serialised and cannot both pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

import msgspec
from msgspec import UNSET
from sqlalchemy import func, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import Actor, record, record_read
from clinic.db import conflict_message, register_conflicts
from clinic.errors import Conflict, NotFound, RuleBroken
from clinic.patients.models import Patient
from clinic.patients.rules import clean_phone
from clinic.scheduling import changes, rules
from clinic.scheduling.models import LIVE_STATUSES, Appointment, Chair, ChangeKind, Clinic, ClosedDate, Course, SessionType, Shift
from clinic.scheduling.protocols import CourseTemplate, Protocol
from clinic.scheduling.rules import Booked, Candidate, ClinicCalendar, OnShift, Place
from clinic.scheduling.schemas import CandidateOut, CoursePlanOut, OccurrenceConflict, OccurrenceOut
from clinic.timeutil import both_zones, utcnow

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
MAX_RANGE_DAYS = 62
# a hold never lasts a day: lets range queries stay on the (clinic_id, starts_at) index
MAX_HOLD = timedelta(days=1)
STAFF_ROLES = ("nurse", "prescriber", "therapist")


# ---- reading the clinic's setup ---------------------------------------------------------------


async def clinic_of(session: AsyncSession, actor: Actor) -> Clinic:
    clinic = await session.get(Clinic, actor.clinic_id)
    if clinic is None:
        raise NotFound("No such clinic.")
    return clinic


async def calendar_of(session: AsyncSession, clinic: Clinic) -> ClinicCalendar:
    closed = (await session.exec(select(ClosedDate.day).where(ClosedDate.clinic_id == clinic.id))).all()
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



# ---- what is booked and who is on shift ----------------------------------------------------------


async def booked_between(session: AsyncSession, clinic_id: int, start: datetime, end: datetime) -> list[Booked]:
    """Live appointments overlapping [start, end), with the facts the staffing rules need."""
    q = (
        select(
            Appointment.id, Appointment.chair_id, Appointment.patient_id, Appointment.starts_at, Appointment.ends_at,
            SessionType.monitored, SessionType.needs_therapist, SessionType.turnover_minutes,
        )
        .join(SessionType, SessionType.id == Appointment.session_type_id)
        .where(
            Appointment.clinic_id == clinic_id,
            Appointment.starts_at >= start - MAX_HOLD,
            Appointment.starts_at < end,
            Appointment.ends_at > start,
            col(Appointment.status).in_(LIVE_STATUSES),
        )
    )
    rows = (await session.exec(q)).all()
    return [
        Booked(chair_id=r[1], patient_id=r[2], start=r[3], end=r[4], care_end=max(r[4] - timedelta(minutes=r[7]), r[3]),
               monitored=r[5], needs_therapist=r[6], id=r[0])
        for r in rows
    ]


async def shifts_between(session: AsyncSession, clinic_id: int, start: datetime, end: datetime) -> list[OnShift]:
    q = select(Shift.role, Shift.starts_at, Shift.ends_at, Shift.user_id).where(
        Shift.clinic_id == clinic_id, Shift.starts_at >= start - MAX_HOLD, Shift.starts_at < end, Shift.ends_at > start
    )
    return [OnShift(role=r[0], start=r[1], end=r[2], user_id=r[3]) for r in (await session.exec(q)).all()]


async def lock_days(session: AsyncSession, clinic_id: int, days: Iterable[date]) -> None:
    """Serialise bookings per clinic and local day; always in date order, so two multi-day writers cannot deadlock."""
    for day in sorted(set(days)):
        await session.exec(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))").bindparams(k=f"schedule:{clinic_id}:{day.isoformat()}"))


def candidate_out(c: Candidate, tz: str, chair_names: dict[int, str] | None = None) -> CandidateOut:
    chair = chair_names.get(c.chair_id, "") if chair_names is not None else UNSET
    return CandidateOut(start=both_zones(c.start, tz), end=both_zones(c.end, tz), chair_id=c.chair_id, chair=chair)


# ---- availability ---------------------------------------------------------------------------------


@dataclass
class Availability:
    session_type: SessionType
    calendar: ClinicCalendar
    candidates: list[Candidate]
    chairs: dict[int, str]


async def find_availability(
    session: AsyncSession,
    *,
    actor: Actor,
    session_type: int | str,
    day_from: date,
    day_to: date,
    patient_id: int | None = None,
    chair_id: int | None = None,
    dose_mg: int | None = None,
    ignore_appointment_id: int | None = None,
    now: datetime | None = None,
) -> Availability:
    """Free (start, end, chair) candidates for a protocol over clinic-local days [day_from, day_to]."""
    now = now or utcnow()
    if day_to < day_from:
        raise RuleBroken("'to' must be on or after 'from'.", field="to", code="range_order")
    if (day_to - day_from).days + 1 > MAX_RANGE_DAYS:
        raise RuleBroken(f"Search at most {MAX_RANGE_DAYS} days at a time.", field="to", code="range_too_long")
    clinic = await clinic_of(session, actor)
    st = await session_type_of(session, actor, session_type)
    timing = Protocol.of(st)
    if timing.doses_mg and dose_mg is None:
        dose_mg = max(timing.doses_mg[:2] or timing.doses_mg)  # plan for the usual dose when none is given
    if (p := rules.check_dose(timing, dose_mg)) is not None:
        raise p
    cal = await calendar_of(session, clinic)
    rows = await chairs(session, actor)
    if chair_id is not None:
        await chair_of(session, actor, chair_id, timing)
    if patient_id is not None:
        await patient_of(session, actor, patient_id)
    start, _ = rules.local_day_bounds(day_from, cal.tz)
    _, end = rules.local_day_bounds(day_to, cal.tz)
    booked = await booked_between(session, clinic.id, start, end)
    shifts = await shifts_between(session, clinic.id, start, end)
    cands = rules.availability(
        timing=timing, cal=cal, days=rules.local_days(day_from, day_to), places=places_of(rows), booked=booked,
        shifts=shifts, now=now, dose_mg=dose_mg, patient_id=patient_id, chair_id=chair_id, ignore_id=ignore_appointment_id,
    )
    return Availability(session_type=st, calendar=cal, candidates=cands, chairs={c.id: c.name for c in rows})


async def alternatives_near(
    session: AsyncSession,
    *,
    clinic_id: int,
    cal: ClinicCalendar,
    timing: Protocol,
    wanted: datetime,
    patient_id: int,
    chair_id: int | None,
    dose_mg: int | None,
    ignore_id: int | None = None,
    now: datetime,
    limit: int = 5,
    days: Sequence[date] | None = None,
) -> list[Candidate]:
    """The nearest free slots to a wanted start: that day first, then the days around it."""
    day = cal.local_day(wanted)
    days = list(days) if days is not None else [day + timedelta(days=d) for d in range(-2, 4)]
    start, _ = rules.local_day_bounds(min(days), cal.tz)
    _, end = rules.local_day_bounds(max(days), cal.tz)
    booked = await booked_between(session, clinic_id, start, end)
    shifts = await shifts_between(session, clinic_id, start, end)
    place_rows = (await session.exec(select(Chair).where(Chair.clinic_id == clinic_id, Chair.active))).all()
    cands = rules.availability(
        timing=timing, cal=cal, days=days, places=places_of(place_rows), booked=booked, shifts=shifts,
        now=now, dose_mg=dose_mg, patient_id=patient_id, ignore_id=ignore_id,
    )
    same_day = [c for c in cands if cal.local_day(c.start) == day]
    return rules.nearest(same_day or cands, wanted, chair_id=chair_id, limit=limit, distinct_starts=True)


# ---- booking ---------------------------------------------------------------------------------------


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


async def _place(
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
    await _place(session, appt, clinic=clinic, cal=cal, timing=timing, dose_mg=planned_dose_mg, now=now, release=True)
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
    await _place(session, appt, clinic=clinic, cal=cal, timing=timing, dose_mg=appt.planned_dose_mg, now=now, changes=slot, release=True)
    record(session, actor=actor, action="appointment.move", entity="appointment", entity_id=appt.id, patient_id=appt.patient_id,
           changes={"from": old, "to": {"starts_at": appt.starts_at, "chair_id": appt.chair_id}})
    changes.add(session, queue=queue, kind=ChangeKind.MOVED, appointment=appt)
    return appt


def _reason(reason: str | None) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise RuleBroken("Give a reason for the cancellation.", field="reason", code="required")
    if len(reason) > 300:
        raise RuleBroken("The reason is longer than 300 characters.", field="reason", code="too_long")
    return reason


async def _cancel_row(session: AsyncSession, appt: Appointment, *, actor: Actor, queue: Any, clinic: Clinic, cal: ClinicCalendar,
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
    reason = _reason(reason)
    appt = await _appointment_for_update(session, actor, appointment_id)
    clinic = await clinic_of(session, actor)
    cal = await calendar_of(session, clinic)
    await _cancel_row(session, appt, actor=actor, queue=queue, clinic=clinic, cal=cal, reason=reason, now=now)
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


# ---- listing ---------------------------------------------------------------------------------------


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


# ---- courses ---------------------------------------------------------------------------------------


@dataclass
class Occurrence:
    index: int
    wanted: datetime
    start: datetime | None = None
    chair_id: int | None = None
    problem: RuleBroken | None = None
    alternatives: list[Candidate] = field(default_factory=list)
    appointment_id: int | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None and self.start is not None


@dataclass
class CoursePlan:
    session_type: SessionType
    template: str
    occurrences: list[Occurrence]
    calendar: ClinicCalendar
    chairs: dict[int, str]
    course: Course | None = None

    @property
    def conflicts(self) -> list[Occurrence]:
        return [o for o in self.occurrences if not o.ok]


def occurrence_out(o: Occurrence, tz: str, chairs: dict[int, str]) -> OccurrenceOut:
    return OccurrenceOut(
        index=o.index,
        wanted_start=both_zones(o.wanted, tz),
        start=both_zones(o.start, tz),
        chair_id=o.chair_id,
        chair=chairs.get(o.chair_id) if o.chair_id else None,
        ok=o.ok,
        appointment_id=o.appointment_id,
        conflict=None if o.problem is None else OccurrenceConflict(code=o.problem.code, field=o.problem.field, detail=o.problem.message),
        alternatives=[candidate_out(a, tz, chairs) for a in o.alternatives],
    )


def plan_out(plan: CoursePlan) -> CoursePlanOut:
    return CoursePlanOut(
        session_type=plan.session_type.kind,
        template=plan.template,
        course_id=plan.course.id if plan.course else None,
        occurrences=[occurrence_out(o, plan.calendar.tz, plan.chairs) for o in plan.occurrences],
        conflicts=len(plan.conflicts),
    )


def _template(protocol: Protocol, name: str | None) -> CourseTemplate:
    templates = protocol.course_templates
    if not name or name not in templates:
        names = ", ".join(templates) or "none"
        raise RuleBroken(f"Unknown course template for this protocol (available: {names}).", field="template", code="unknown_template")
    return templates[name]


async def _plan(
    session: AsyncSession, *, clinic: Clinic, cal: ClinicCalendar, st: SessionType, timing: Protocol, patient: Patient,
    wanted: list[tuple[datetime, int | None]], preferred_chair: int | None, dose_mg: int | None, min_gap: int, now: datetime,
    ignore_ids: set[int] = frozenset(), strict_chairs: bool = True,
) -> list[Occurrence]:
    """Fit each wanted start: its chair (or the preferred one) if free, else any chair at that time unless the
    chair was asked for explicitly (`strict_chairs`), else report why with the nearest alternatives that keep
    the course's spacing."""
    days = [cal.local_day(s) for s, _ in wanted]
    span = [d for d in rules.local_days(min(days) - timedelta(days=3), max(days) + timedelta(days=3))]
    lo, _ = rules.local_day_bounds(span[0], cal.tz)
    _, hi = rules.local_day_bounds(span[-1], cal.tz)
    booked = [b for b in await booked_between(session, clinic.id, lo, hi) if b.id not in ignore_ids]
    shifts = await shifts_between(session, clinic.id, lo, hi)
    place_rows = (await session.exec(select(Chair).where(Chair.clinic_id == clinic.id, Chair.active))).all()
    places = places_of(place_rows)
    cands = rules.availability(timing=timing, cal=cal, days=span, places=places, booked=booked, shifts=shifts,
                               now=now, dose_mg=dose_mg, patient_id=patient.id)
    by_start: dict[datetime, list[Candidate]] = {}
    for c in cands:
        by_start.setdefault(c.start, []).append(c)
    out: list[Occurrence] = []
    for i, (start, chair_pref) in enumerate(wanted):
        occ = Occurrence(index=i + 1, wanted=start)
        want_chair = chair_pref or preferred_chair
        problem = rules.check_slot(start, timing, cal, now=now, dose_mg=dose_mg)
        free = by_start.get(start, []) if problem is None else []
        flexible = chair_pref is None or not strict_chairs
        pick = next((c for c in free if c.chair_id == want_chair), None) or (free[0] if free and flexible else None)
        if pick is not None:
            occ.start, occ.chair_id = pick.start, pick.chair_id
        else:
            if problem is None:
                fitting = rules.places_for(timing, places)
                chair_id = want_chair or (fitting[0].id if fitting else 0)
                problem = rules.booking_problem(start=start, chair_id=chair_id, patient_id=patient.id, timing=timing, cal=cal,
                                                booked=booked, shifts=shifts, dose_mg=dose_mg) or RuleBroken("No chair is free at that time.", field="starts_at", code="no_free_chair")
            occ.problem = problem
            prev_day = days[i - 1] if i > 0 else None
            next_day = days[i + 1] if i + 1 < len(days) else None

            def keeps_gap(d: date) -> bool:
                return (prev_day is None or (d - prev_day).days >= min_gap) and (next_day is None or (next_day - d).days >= min_gap)

            near = [c for c in cands if abs((cal.local_day(c.start) - days[i]).days) <= 3 and keeps_gap(cal.local_day(c.start))]
            occ.alternatives = rules.nearest(near, start, chair_id=want_chair, limit=5, distinct_starts=True)
        out.append(occ)
    return out


async def book_course(
    session: AsyncSession,
    *,
    actor: Actor,
    queue: Any,
    patient_id: int,
    session_type: int | str,
    template: str,
    starts_at: datetime | str | None = None,
    chair_id: int | None = None,
    planned_dose_mg: int | None = None,
    escort_name: str | None = None,
    escort_phone: str | None = None,
    all_or_nothing: bool = True,
    occurrences: Sequence[tuple[datetime | str, int | None]] | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> CoursePlan:
    """Book a series from a protocol's course template, at the first session's local time of day.

    All-or-nothing by default: if any occurrence cannot be booked, nothing is and the 409 reports
    each conflicting occurrence with its nearest alternatives. `occurrences` (start, chair or None)
    replaces the generated dates, e.g. after the front desk picked alternatives. `dry_run` plans only.
    """
    now = now or utcnow()
    clinic = await clinic_of(session, actor)
    cal = await calendar_of(session, clinic)
    st = await session_type_of(session, actor, session_type, field="session_type")
    timing = Protocol.of(st)
    tpl = _template(timing, template)
    patient = await patient_of(session, actor, patient_id)
    if chair_id is not None:
        await chair_of(session, actor, chair_id, timing)
    if (p := rules.check_dose(timing, planned_dose_mg)) is not None:
        raise p
    if occurrences:
        if len(occurrences) > 52:
            raise RuleBroken("A course has at most 52 sessions.", field="occurrences", code="too_many")
        wanted: list[tuple[datetime, int | None]] = []
        for i, (s, c) in enumerate(occurrences):
            if c is not None:
                await chair_of(session, actor, c, timing, field=f"occurrences[{i}].chair_id")
            wanted.append((parse_start(s, cal, field=f"occurrences[{i}].starts_at"), c))
        wanted.sort(key=lambda x: x[0])
        first = wanted[0][0]
    else:
        first = parse_start(starts_at, cal)
        if (p := rules.check_slot(first, timing, cal, now=now, dose_mg=planned_dose_mg)) is not None:
            raise p
        local = first.astimezone(cal.zone)
        days = rules.course_days(tpl, local.date(), cal.is_open_day)
        wanted = [(rules.wall_to_utc(d, local.time().replace(tzinfo=None), cal.tz), None) for d in days]
    if (p := patient_problem(patient, timing, cal.local_day(first))) is not None:
        raise p
    escort = escort_for(patient, timing, escort_name, escort_phone)
    min_gap = tpl.min_days_apart
    if not dry_run:
        await lock_days(session, clinic.id, [cal.local_day(s) for s, _ in wanted])
    occs = await _plan(session, clinic=clinic, cal=cal, st=st, timing=timing, patient=patient, wanted=wanted,
                       preferred_chair=chair_id, dose_mg=planned_dose_mg, min_gap=min_gap, now=now)
    names = dict((await session.exec(select(Chair.id, Chair.name).where(Chair.clinic_id == clinic.id))).all())
    plan = CoursePlan(session_type=st, template=template, occurrences=occs, calendar=cal, chairs=names)
    if dry_run:
        return plan
    if plan.conflicts and (all_or_nothing or len(plan.conflicts) == len(occs)):
        raise _course_conflict(plan)
    course = Course(clinic_id=clinic.id, patient_id=patient.id, session_type_id=st.id, template=template,
                    created_by=actor.user_id, created_at=now)
    session.add(course)
    await session.flush()
    plan.course = course
    booked: list[Appointment] = []
    for occ in occs:
        if not occ.ok:
            continue
        w = timing.windows(occ.start, planned_dose_mg)
        appt = Appointment(
            clinic_id=clinic.id, patient_id=patient.id, session_type_id=st.id, chair_id=occ.chair_id, course_id=course.id,
            starts_at=w.start, ends_at=w.end, status="booked", planned_dose_mg=planned_dose_mg, escort_name=escort.name,
            escort_phone=escort.phone, created_by=actor.user_id, created_at=now, updated_at=now,
        )
        try:
            await _place(session, appt, clinic=clinic, cal=cal, timing=timing, dose_mg=planned_dose_mg, now=now)
        except Conflict as exc:
            occ.problem = RuleBroken(exc.detail, field="starts_at", code=exc.code or "conflict")
            occ.alternatives = []
            if all_or_nothing:
                raise _course_conflict(plan) from None
            continue
        occ.appointment_id = appt.id
        record(session, actor=actor, action="appointment.book", entity="appointment", entity_id=appt.id, patient_id=patient.id,
               changes={"session_type": st.kind, "chair_id": appt.chair_id, "starts_at": appt.starts_at, "ends_at": appt.ends_at,
                        "planned_dose_mg": planned_dose_mg, "course_id": course.id, "escort": "named" if escort.name else "to_confirm"})
        booked.append(appt)
    if not booked:
        raise _course_conflict(plan)
    changes.add(session, queue=queue, kind=ChangeKind.COURSE_BOOKED, appointment=booked[0],
                payload={"appointment_ids": [a.id for a in booked]})
    record(session, actor=actor, action="course.book", entity="course", entity_id=course.id, patient_id=patient.id,
           changes={"session_type": st.kind, "template": template, "booked": [o.appointment_id for o in occs if o.appointment_id],
                    "not_booked": [o.index for o in occs if not o.appointment_id]})
    return plan


def _course_conflict(plan: CoursePlan) -> Conflict:
    n, total = len(plan.conflicts), len(plan.occurrences)
    detail = f"{n} of {total} sessions cannot be booked as planned; nothing was booked. Pick an alternative for each and try again."
    return Conflict(detail, code="course_conflicts", extra=msgspec.structs.asdict(plan_out(plan)))


async def get_course(session: AsyncSession, *, actor: Actor, course_id: int) -> tuple[Course, list[AppointmentRow]]:
    course = await session.get(Course, course_id)
    if course is None or course.clinic_id != actor.clinic_id:
        raise NotFound("No such course in this clinic.")
    rows = await list_appointments(session, actor=actor, course_id=course.id)
    return course, rows


async def _remaining(session: AsyncSession, actor: Actor, course_id: int, from_appointment_id: int | None, now: datetime) -> list[Appointment]:
    course, _ = await get_course(session, actor=actor, course_id=course_id)
    since = now
    if from_appointment_id is not None:
        first = await session.get(Appointment, from_appointment_id)
        if first is None or first.course_id != course.id:
            raise RuleBroken("That appointment is not part of this course.", field="from_appointment_id", code="not_in_course")
        since = max(now, first.starts_at - timedelta(seconds=1))
    q = (
        select(Appointment)
        .where(Appointment.course_id == course.id, Appointment.clinic_id == actor.clinic_id, Appointment.status == "booked",
               Appointment.starts_at > since)
        .order_by(Appointment.starts_at)
        .with_for_update()
    )
    return list((await session.exec(q)).all())


async def cancel_course(session: AsyncSession, *, actor: Actor, queue: Any, course_id: int, reason: str | None,
                        from_appointment_id: int | None = None, now: datetime | None = None) -> list[Appointment]:
    """Cancel every remaining booked session of a course (from one occurrence on), leaving earlier ones intact."""
    now = now or utcnow()
    reason = _reason(reason)
    rows = await _remaining(session, actor, course_id, from_appointment_id, now)
    if not rows:
        raise Conflict("This course has no remaining booked sessions.", code="nothing_remaining")
    clinic = await clinic_of(session, actor)
    cal = await calendar_of(session, clinic)
    for appt in rows:
        await _cancel_row(session, appt, actor=actor, queue=queue, clinic=clinic, cal=cal, reason=reason, now=now)
    record(session, actor=actor, action="course.cancel", entity="course", entity_id=course_id, patient_id=rows[0].patient_id,
           changes={"reason": reason, "cancelled": [a.id for a in rows]})
    return rows


async def move_course(
    session: AsyncSession,
    *,
    actor: Actor,
    queue: Any,
    course_id: int,
    shift_days: int = 0,
    at_time: time | str | None = None,
    from_appointment_id: int | None = None,
    now: datetime | None = None,
) -> list[Appointment]:
    """Move every remaining booked session of a course by whole days and/or to a new local time of day.
    All or nothing: a conflict on any one moves none and reports each."""
    now = now or utcnow()
    if isinstance(at_time, str) and at_time:
        try:
            at_time = rules.parse_hhmm(at_time)
        except ValueError:
            raise RuleBroken("The new time must look like 10:30.", field="at_time", code="time_format") from None
    at_time = at_time or None
    if not shift_days and at_time is None:
        raise RuleBroken("Give a number of days to move by, a new time of day, or both.", field="shift_days", code="required")
    if abs(shift_days) > 60:
        raise RuleBroken("Move a course by at most 60 days.", field="shift_days", code="too_far")
    rows = await _remaining(session, actor, course_id, from_appointment_id, now)
    if not rows:
        raise Conflict("This course has no remaining booked sessions.", code="nothing_remaining")
    clinic = await clinic_of(session, actor)
    cal = await calendar_of(session, clinic)
    st = await session.get(SessionType, rows[0].session_type_id)
    timing = Protocol.of(st)
    patient = await session.get(Patient, rows[0].patient_id)
    tpl = timing.course_templates.get((await session.get(Course, course_id)).template) or CourseTemplate()
    wanted: list[tuple[datetime, int | None]] = []
    for appt in rows:
        local = appt.starts_at.astimezone(cal.zone)
        day = local.date() + timedelta(days=shift_days)
        # each session keeps its own chair when that chair is free at the new time
        wanted.append((rules.wall_to_utc(day, at_time or local.time().replace(tzinfo=None), cal.tz), appt.chair_id))
    old_days = [cal.local_day(a.starts_at) for a in rows]
    await lock_days(session, clinic.id, old_days + [cal.local_day(s) for s, _ in wanted])
    dose = rows[0].planned_dose_mg
    occs = await _plan(session, clinic=clinic, cal=cal, st=st, timing=timing, patient=patient, wanted=wanted,
                       preferred_chair=rows[0].chair_id, dose_mg=dose, min_gap=tpl.min_days_apart,
                       now=now, ignore_ids={a.id for a in rows}, strict_chairs=False)
    for occ, appt in zip(occs, rows):
        occ.appointment_id = appt.id
    names = dict((await session.exec(select(Chair.id, Chair.name).where(Chair.clinic_id == clinic.id))).all())
    plan = CoursePlan(session_type=st, template="", occurrences=occs, calendar=cal, chairs=names)
    if plan.conflicts:
        n = len(plan.conflicts)
        raise Conflict(f"{n} of {len(occs)} remaining sessions cannot move there; nothing was moved.", code="course_conflicts",
                       extra=msgspec.structs.asdict(plan_out(plan)))
    # later sessions first when moving later (earlier first when earlier) so the course never overlaps itself mid-way
    pairs = sorted(zip(rows, occs), key=lambda p: p[0].starts_at, reverse=shift_days > 0)
    for appt, occ in pairs:
        old = {"starts_at": appt.starts_at, "chair_id": appt.chair_id}
        w = timing.windows(occ.start, appt.planned_dose_mg)
        slot = {"starts_at": w.start, "ends_at": w.end, "chair_id": occ.chair_id, "updated_at": now}
        await _place(session, appt, clinic=clinic, cal=cal, timing=timing, dose_mg=appt.planned_dose_mg, now=now, changes=slot)
        record(session, actor=actor, action="appointment.move", entity="appointment", entity_id=appt.id, patient_id=appt.patient_id,
               changes={"from": old, "to": {"starts_at": appt.starts_at, "chair_id": appt.chair_id}, "course_id": course_id})
        changes.add(session, queue=queue, kind=ChangeKind.MOVED, appointment=appt)
    record(session, actor=actor, action="course.move", entity="course", entity_id=course_id, patient_id=patient.id,
           changes={"shift_days": shift_days, "at_time": at_time.strftime("%H:%M") if at_time else None, "moved": [a.id for a in rows]})
    return rows


async def count_live_between(session: AsyncSession, clinic_id: int, start: datetime, end: datetime) -> int:
    q = select(func.count()).select_from(Appointment).where(
        Appointment.clinic_id == clinic_id, Appointment.starts_at >= start, Appointment.starts_at < end,
        col(Appointment.status).in_(LIVE_STATUSES))
    return int((await session.exec(q)).one())
