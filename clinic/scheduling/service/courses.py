"""Courses: planning a series from a protocol's template, booking, cancelling and moving what remains of it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

import msgspec
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import Actor, record
from clinic.clinics import Clinic, clinic_of
from clinic.errors import Conflict, NotFound, RuleBroken
from clinic.patients.models import Patient
from clinic.scheduling import changes, rules
from clinic.scheduling.models import Appointment, Chair, ChangeKind, Course, SessionType
from clinic.scheduling.protocols import CourseTemplate, Protocol
from clinic.scheduling.rules import Candidate, ClinicCalendar
from clinic.scheduling.schemas import CoursePlanOut, OccurrenceConflict, OccurrenceOut
from clinic.scheduling.service.appointments import AppointmentRow, list_appointments
from clinic.scheduling.service.availability import booked_between, candidate_out, lock_days, shifts_between
from clinic.scheduling.service.booking import cancel_row, cancellation_reason, escort_for, parse_start, place_slot
from clinic.scheduling.service.lookups import calendar_of, chair_of, patient_of, patient_problem, places_of, session_type_of
from clinic.timeutil import both_zones, utcnow


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
            await place_slot(session, appt, clinic=clinic, cal=cal, timing=timing, dose_mg=planned_dose_mg, now=now)
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
    reason = cancellation_reason(reason)
    rows = await _remaining(session, actor, course_id, from_appointment_id, now)
    if not rows:
        raise Conflict("This course has no remaining booked sessions.", code="nothing_remaining")
    clinic = await clinic_of(session, actor)
    cal = await calendar_of(session, clinic)
    for appt in rows:
        await cancel_row(session, appt, actor=actor, queue=queue, clinic=clinic, cal=cal, reason=reason, now=now)
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
        await place_slot(session, appt, clinic=clinic, cal=cal, timing=timing, dose_mg=appt.planned_dose_mg, now=now, changes=slot)
        record(session, actor=actor, action="appointment.move", entity="appointment", entity_id=appt.id, patient_id=appt.patient_id,
               changes={"from": old, "to": {"starts_at": appt.starts_at, "chair_id": appt.chair_id}, "course_id": course_id})
        changes.add(session, queue=queue, kind=ChangeKind.MOVED, appointment=appt)
    record(session, actor=actor, action="course.move", entity="course", entity_id=course_id, patient_id=patient.id,
           changes={"shift_days": shift_days, "at_time": at_time.strftime("%H:%M") if at_time else None, "moved": [a.id for a in rows]})
    return rows
