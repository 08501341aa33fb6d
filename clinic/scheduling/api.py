"""Scheduling JSON API under /api/v1: chairs, session-types, availability, appointments, courses, shifts, clinic setup."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated
from urllib.parse import urlencode

import msgspec
from litestar import Request, delete, get, patch, post
from litestar.params import Parameter

from clinic.clinics import Clinic, ClosedDate
from clinic.errors import NotFound, RuleBroken
from clinic.http import CurrentActor, CurrentClinic, DbSession, given
from clinic.scheduling import rules, service, setup
from clinic.scheduling.models import APPOINTMENT_STATUSES, Chair, SessionType, Shift
from clinic.scheduling.protocols import Protocol
from clinic.scheduling.schemas import (
    AppointmentOut,
    AvailabilityOut,
    BookIn,
    CancelIn,
    ChairIn,
    ChairOut,
    ChairPatch,
    ChairRef,
    ClinicOut,
    ClinicPatch,
    ClosedDateAdded,
    ClosedDateIn,
    ClosedDateOut,
    CourseCancelIn,
    CourseIn,
    CourseMoveIn,
    CourseOut,
    CoursePlanOut,
    EscortOut,
    EscortStatus,
    MoveIn,
    PatientRef,
    SessionTypeOut,
    SessionTypePatch,
    SessionTypeRef,
    ShiftIn,
    ShiftOut,
)
from clinic.scheduling.service import AppointmentRow
from clinic.timeutil import both_zones

TAG = ["scheduling"]
SETUP_TAG = ["clinic setup"]
# about two days of a six-chair clinic (four weeks of it are ~3,300 candidates, 630 KB)
AVAILABILITY_PAGE = 200


# ---- shapes -------------------------------------------------------------------------------------


def escort_out(a) -> EscortOut:
    status = EscortStatus.confirmed if a.escort_confirmed else (EscortStatus.named if a.escort_name else EscortStatus.to_confirm)
    return EscortOut(name=a.escort_name, phone=a.escort_phone, status=status)


def appointment_out(row: AppointmentRow, tz: str) -> AppointmentOut:
    a = row.appointment
    return AppointmentOut(
        id=a.id,
        status=a.status,
        patient_id=a.patient_id,
        patient=PatientRef(id=row.patient.id, name=row.patient.full_name),
        session_type=SessionTypeRef(id=row.session_type.id, kind=row.session_type.kind, name=row.session_type.name),
        chair_id=a.chair_id,
        chair=ChairRef(id=row.chair.id, name=row.chair.name, kind=row.chair.kind),
        starts_at=both_zones(a.starts_at, tz),
        ends_at=both_zones(a.ends_at, tz),
        local_date=a.starts_at.astimezone(rules.ZoneInfo(tz)).date(),
        planned_dose_mg=a.planned_dose_mg,
        escort=escort_out(a),
        course_id=a.course_id,
        notes=a.notes,
        cancel_reason=a.cancel_reason,
        cancelled_at=both_zones(a.cancelled_at, tz),
        late_cancel=a.late_cancel,
        created_at=both_zones(a.created_at, tz),
        updated_at=both_zones(a.updated_at, tz),
    )


def chair_out(c: Chair) -> ChairOut:
    return ChairOut(id=c.id, name=c.name, kind=c.kind, active=c.active, sort_order=c.sort_order)


def session_type_out(st: SessionType) -> SessionTypeOut:
    timing = Protocol.of(st)
    return SessionTypeOut(
        id=st.id,
        kind=st.kind,
        name=st.name,
        active=st.active,
        needs_chair=st.needs_chair,
        monitored=st.monitored,
        needs_prescriber=st.needs_prescriber,
        needs_therapist=st.needs_therapist,
        requires_rems=st.requires_rems,
        prep_minutes=st.prep_minutes,
        dosing_minutes=st.dosing_minutes,
        monitoring_minutes=st.monitoring_minutes,
        turnover_minutes=st.turnover_minutes,
        hold_minutes={str(d): timing.hold_minutes(d) for d in timing.doses_mg} if timing.doses_mg else timing.hold_minutes(),
        doses_mg=list(timing.doses_mg),
        course_templates=msgspec.to_builtins(timing.course_templates),
        instructions=list(timing.instructions),
    )


def shift_out(s: Shift, name: str, tz: str) -> ShiftOut:
    return ShiftOut(id=s.id, user_id=s.user_id, staff=name, role=s.role, starts_at=both_zones(s.starts_at, tz), ends_at=both_zones(s.ends_at, tz))


def clinic_out(c: Clinic) -> ClinicOut:
    return ClinicOut(
        id=c.id, name=c.name, display_name=c.display_name, timezone=c.timezone, phone=c.phone,
        address=c.address, opening_hours=c.opening_hours, settings=c.settings,
    )


def queue_of(request: Request):
    return request.app.state.queue


# ---- chairs and session types -------------------------------------------------------------------


@get("/chairs", opt={"permission": "schedule.read"}, tags=TAG, summary="List chairs and rooms")
async def list_chairs(db_session: DbSession, actor: CurrentActor, include_inactive: bool = False) -> list[ChairOut]:
    return [chair_out(c) for c in await service.chairs(db_session, actor, active_only=not include_inactive)]


@post("/chairs", opt={"permission": "admin"}, tags=SETUP_TAG, summary="Add a chair or room (admin)")
async def create_chair(db_session: DbSession, actor: CurrentActor, data: ChairIn) -> ChairOut:
    return chair_out(await setup.add_chair(db_session, actor=actor, name=data.name, kind=data.kind, sort_order=data.sort_order))


@patch("/chairs/{chair_id:int}", opt={"permission": "admin"}, tags=SETUP_TAG, summary="Rename, reorder or retire a chair (admin)")
async def edit_chair(db_session: DbSession, actor: CurrentActor, chair_id: int, data: ChairPatch) -> ChairOut:
    return chair_out(await setup.update_chair(db_session, actor=actor, chair_id=chair_id, data=given(data)))


@get("/session-types", opt={"permission": "schedule.read"}, tags=TAG, summary="List protocols (session types)")
async def list_session_types(db_session: DbSession, actor: CurrentActor, include_inactive: bool = False) -> list[SessionTypeOut]:
    return [session_type_out(st) for st in await service.session_types(db_session, actor, active_only=not include_inactive)]


@get("/session-types/{session_type_id:int}", opt={"permission": "schedule.read"}, tags=TAG, summary="One protocol")
async def get_session_type(db_session: DbSession, actor: CurrentActor, session_type_id: int) -> SessionTypeOut:
    st = await db_session.get(SessionType, session_type_id)
    if st is None or st.clinic_id != actor.clinic_id:
        raise NotFound("No such protocol.")
    return session_type_out(st)


@patch("/session-types/{session_type_id:int}", opt={"permission": "admin"}, tags=SETUP_TAG, summary="Edit a protocol's durations and course templates (admin)")
async def edit_session_type(db_session: DbSession, actor: CurrentActor, session_type_id: int, data: SessionTypePatch) -> SessionTypeOut:
    return session_type_out(await setup.update_session_type(db_session, actor=actor, session_type_id=session_type_id, data=given(data)))


# ---- availability -----------------------------------------------------------------------------------


@get("/availability", opt={"permission": "schedule.read"}, tags=TAG, summary="Free (start, end, chair) candidates for a protocol",
     description=f"Paged: at most `limit` ({AVAILABILITY_PAGE} unless given) candidates in whole start times; `next` is the link "
                 "to the following page (null on the last), `truncated` says one follows.")
async def availability(
    request: Request,
    db_session: DbSession,
    actor: CurrentActor,
    session_type: Annotated[str, Parameter(description="protocol kind (e.g. esketamine) or id")],
    day_from: Annotated[date, Parameter(query="from", description="first clinic-local day, YYYY-MM-DD")],
    day_to: Annotated[date | None, Parameter(query="to", description="last clinic-local day (inclusive); default: from")] = None,
    patient_id: Annotated[int | None, Parameter(description="leave out times this patient is already booked")] = None,
    chair_id: int | None = None,
    dose_mg: Annotated[int | None, Parameter(description="esketamine planned dose (changes the hold)")] = None,
    limit: Annotated[int, Parameter(ge=1, le=20000, description="candidates per page (whole start times)")] = AVAILABILITY_PAGE,
    after: Annotated[datetime | None, Parameter(description="the next page: starts after this instant (follow `next`)")] = None,
) -> AvailabilityOut:
    if after is not None and after.tzinfo is None:
        raise RuleBroken("Give the time with a UTC offset.", field="after", code="timezone_required")
    found = await service.find_availability(
        db_session, actor=actor, session_type=session_type, day_from=day_from, day_to=day_to or day_from,
        patient_id=patient_id, chair_id=chair_id, dose_mg=dose_mg,
    )
    tz = found.calendar.tz
    shown, last = rules.page(found.candidates, after=after, limit=limit)
    next_page = None
    if last is not None:
        query = [(k, v) for k, v in request.query_params.multi_items() if k != "after"] + [("after", last.isoformat())]
        next_page = f"{request.url.path}?{urlencode(query)}"
    return AvailabilityOut(
        session_type=found.session_type.kind,
        day_from=day_from,
        day_to=day_to or day_from,
        timezone=tz,
        truncated=last is not None,
        next=next_page,
        candidates=[service.candidate_out(c, tz, found.chairs) for c in shown],
    )


# ---- appointments -----------------------------------------------------------------------------------


async def _one(db_session, actor, clinic: Clinic, appointment_id: int) -> AppointmentOut:
    row = await service.get_appointment(db_session, actor=actor, appointment_id=appointment_id)
    tz = clinic.timezone
    return appointment_out(row, tz)


@get("/appointments", opt={"permission": "schedule.read"}, tags=TAG, summary="List appointments")
async def list_appointments(
    db_session: DbSession,
    actor: CurrentActor,
    clinic: CurrentClinic,
    day: Annotated[date | None, Parameter(query="date", description="clinic-local day, YYYY-MM-DD")] = None,
    day_from: Annotated[datetime | None, Parameter(query="from", description="instant, ISO 8601 with offset")] = None,
    day_to: Annotated[datetime | None, Parameter(query="to", description="instant, ISO 8601 with offset")] = None,
    status: Annotated[str | None, Parameter(description="one status or several, comma-separated")] = None,
    patient_id: int | None = None,
    chair_id: int | None = None,
    course_id: int | None = None,
    limit: Annotated[int, Parameter(ge=1, le=5000)] = 500,
) -> list[AppointmentOut]:
    statuses = [s.strip() for s in status.split(",") if s.strip()] if status else None
    for s in statuses or []:
        if s not in APPOINTMENT_STATUSES:
            raise RuleBroken(f"Unknown status; use one of {', '.join(APPOINTMENT_STATUSES)}.", field="status", code="unknown_status")
    for name, v in (("from", day_from), ("to", day_to)):
        if v is not None and v.tzinfo is None:
            raise RuleBroken("Give the time with a UTC offset.", field=name, code="timezone_required")
    tz = clinic.timezone
    rows = await service.list_appointments(
        db_session, actor=actor, day=day, start=day_from, end=day_to, status=statuses, patient_id=patient_id,
        chair_id=chair_id, course_id=course_id, limit=limit, tz=tz,
    )
    return [appointment_out(r, tz) for r in rows]


@post("/appointments", opt={"permission": "schedule.write"}, tags=TAG, summary="Book one session",
      description="422 names the field and rule for bad input; 409 names the conflict (chair, patient, nurse capacity, "
                  "prescriber or therapist coverage) and offers `alternatives: [{start, end, chair_id}]`.")
async def book(request: Request, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, data: BookIn) -> AppointmentOut:
    row = await service.book(
        db_session, actor=actor, queue=queue_of(request), patient_id=data.patient_id, session_type=data.session_type,
        chair_id=data.chair_id, starts_at=data.starts_at, planned_dose_mg=data.planned_dose_mg, escort_name=data.escort_name,
        escort_phone=data.escort_phone, notes=data.notes,
    )
    return appointment_out(row, clinic.timezone)


@get("/appointments/{appointment_id:int}", opt={"permission": "schedule.read"}, tags=TAG, summary="One appointment")
async def get_appointment(db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, appointment_id: int) -> AppointmentOut:
    return await _one(db_session, actor, clinic, appointment_id)


@post("/appointments/{appointment_id:int}/move", opt={"permission": "schedule.write"}, tags=TAG, summary="Move a booked session", status_code=200)
async def move(request: Request, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, appointment_id: int, data: MoveIn) -> AppointmentOut:
    await service.move(db_session, actor=actor, queue=queue_of(request), appointment_id=appointment_id, starts_at=data.starts_at, chair_id=data.chair_id)
    return await _one(db_session, actor, clinic, appointment_id)


@post("/appointments/{appointment_id:int}/cancel", opt={"permission": "schedule.write"}, tags=TAG, summary="Cancel with a reason (late when under 24 h)", status_code=200)
async def cancel(request: Request, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, appointment_id: int, data: CancelIn) -> AppointmentOut:
    await service.cancel(db_session, actor=actor, queue=queue_of(request), appointment_id=appointment_id, reason=data.reason)
    return await _one(db_session, actor, clinic, appointment_id)


@post("/appointments/{appointment_id:int}/no-show", opt={"permission": "schedule.write"}, tags=TAG, summary="Record a no-show", status_code=200)
async def no_show(request: Request, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, appointment_id: int) -> AppointmentOut:
    await service.no_show(db_session, actor=actor, queue=queue_of(request), appointment_id=appointment_id)
    return await _one(db_session, actor, clinic, appointment_id)


# ---- courses ----------------------------------------------------------------------------------------


async def _course(db_session, request, actor, data: CourseIn, *, dry_run: bool) -> service.CoursePlan:
    return await service.book_course(
        db_session, actor=actor, queue=queue_of(request), patient_id=data.patient_id, session_type=data.session_type,
        template=data.template, starts_at=data.starts_at, chair_id=data.chair_id, planned_dose_mg=data.planned_dose_mg,
        escort_name=data.escort_name, escort_phone=data.escort_phone, all_or_nothing=data.all_or_nothing,
        occurrences=[(o.starts_at, o.chair_id) for o in data.occurrences] if data.occurrences else None, dry_run=dry_run,
    )


@post("/courses/preview", opt={"permission": "schedule.read"}, tags=TAG, summary="Plan a course without booking it", status_code=200)
async def preview_course(request: Request, db_session: DbSession, actor: CurrentActor, data: CourseIn) -> CoursePlanOut:
    return service.plan_out(await _course(db_session, request, actor, data, dry_run=True))


@post("/courses", opt={"permission": "schedule.write"}, tags=TAG, summary="Book a course from a protocol's template",
      description="All-or-nothing by default: a 409 `course_conflicts` lists every occurrence with its conflict and nearest "
                  "alternatives, and nothing is booked. Send `occurrences` to book chosen starts instead of the template's.")
async def book_course(request: Request, db_session: DbSession, actor: CurrentActor, data: CourseIn) -> CoursePlanOut:
    plan = await _course(db_session, request, actor, data, dry_run=False)
    return service.plan_out(plan)


async def _course_view(db_session, actor, clinic: Clinic, course_id: int) -> CourseOut:
    course, rows = await service.get_course(db_session, actor=actor, course_id=course_id)
    tz = clinic.timezone
    return CourseOut(id=course.id, patient_id=course.patient_id, session_type_id=course.session_type_id, template=course.template,
                     created_at=both_zones(course.created_at, tz), appointments=[appointment_out(r, tz) for r in rows])


@get("/courses/{course_id:int}", opt={"permission": "schedule.read"}, tags=TAG, summary="A course with its sessions")
async def get_course(db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, course_id: int) -> CourseOut:
    return await _course_view(db_session, actor, clinic, course_id)


@post("/courses/{course_id:int}/cancel", opt={"permission": "schedule.write"}, tags=TAG, summary="Cancel all remaining sessions of a course", status_code=200)
async def cancel_course(request: Request, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, course_id: int, data: CourseCancelIn) -> CourseOut:
    await service.cancel_course(db_session, actor=actor, queue=queue_of(request), course_id=course_id, reason=data.reason,
                                from_appointment_id=data.from_appointment_id)
    return await _course_view(db_session, actor, clinic, course_id)


@post("/courses/{course_id:int}/move", opt={"permission": "schedule.write"}, tags=TAG, summary="Move all remaining sessions of a course", status_code=200)
async def move_course(request: Request, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, course_id: int, data: CourseMoveIn) -> CourseOut:
    await service.move_course(db_session, actor=actor, queue=queue_of(request), course_id=course_id, shift_days=data.shift_days,
                              at_time=data.at_time, from_appointment_id=data.from_appointment_id)
    return await _course_view(db_session, actor, clinic, course_id)


# ---- shifts and clinic setup --------------------------------------------------------------------------


@get("/shifts", opt={"permission": "schedule.read"}, tags=SETUP_TAG, summary="Staff shifts in a range")
async def list_shifts(
    db_session: DbSession,
    actor: CurrentActor,
    clinic: CurrentClinic,
    day_from: Annotated[date, Parameter(query="from", description="first clinic-local day")],
    day_to: Annotated[date | None, Parameter(query="to", description="last clinic-local day (inclusive)")] = None,
) -> list[ShiftOut]:
    tz = clinic.timezone
    day_to = day_to or day_from
    if (day_to - day_from).days > 92 or day_to < day_from:
        raise RuleBroken("Ask for at most 93 days, 'to' on or after 'from'.", field="to", code="range")
    lo, _ = rules.local_day_bounds(day_from, tz)
    _, hi = rules.local_day_bounds(day_to, tz)
    return [shift_out(s, u.full_name, tz) for s, u in await setup.list_shifts(db_session, actor=actor, start=lo, end=hi)]


@post("/shifts", opt={"permission": "admin"}, tags=SETUP_TAG, summary="Add a staff shift (admin)")
async def create_shift(db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, data: ShiftIn) -> ShiftOut:
    tz = clinic.timezone
    shift = await setup.add_shift(db_session, actor=actor, user_id=data.user_id, role=data.role, starts_at=data.starts_at, ends_at=data.ends_at)
    return shift_out(shift, "", tz)


@delete("/shifts/{shift_id:int}", opt={"permission": "admin"}, tags=SETUP_TAG, summary="Remove a staff shift (admin)", status_code=204)
async def delete_shift(db_session: DbSession, actor: CurrentActor, shift_id: int) -> None:
    await setup.remove_shift(db_session, actor=actor, shift_id=shift_id)


@get("/clinic", opt={"permission": "schedule.read"}, tags=SETUP_TAG, summary="The clinic: zone, opening hours, settings")
async def get_clinic(clinic: CurrentClinic) -> ClinicOut:
    return clinic_out(clinic)


@patch("/clinic", opt={"permission": "admin"}, tags=SETUP_TAG, summary="Change the clinic's zone, hours or settings (admin)")
async def edit_clinic(request: Request, db_session: DbSession, actor: CurrentActor, data: ClinicPatch) -> ClinicOut:
    idle_limit = request.app.state.settings.idle_timeout_minutes
    return clinic_out(await setup.update_clinic(db_session, actor=actor, data=given(data), idle_limit_minutes=idle_limit))


def closed_out(c: ClosedDate) -> ClosedDateOut:
    return ClosedDateOut(id=c.id, day=c.day, reason=c.reason)


@get("/closed-dates", opt={"permission": "schedule.read"}, tags=SETUP_TAG, summary="Dates the clinic is closed")
async def list_closed(db_session: DbSession, actor: CurrentActor, since: date | None = None) -> list[ClosedDateOut]:
    return [closed_out(c) for c in await setup.closed_dates(db_session, actor=actor, since=since)]


@post("/closed-dates", opt={"permission": "admin"}, tags=SETUP_TAG, summary="Close the clinic on a date (admin)",
      description="Sessions already booked that day stay booked; `still_booked` says how many to move or cancel.")
async def create_closed(db_session: DbSession, actor: CurrentActor, data: ClosedDateIn) -> ClosedDateAdded:
    row, still = await setup.add_closed_date(db_session, actor=actor, day=data.day, reason=data.reason)
    return ClosedDateAdded(id=row.id, day=row.day, reason=row.reason, still_booked=still)


@delete("/closed-dates/{closed_date_id:int}", opt={"permission": "admin"}, tags=SETUP_TAG, summary="Reopen a closed date (admin)", status_code=204)
async def delete_closed(db_session: DbSession, actor: CurrentActor, closed_date_id: int) -> None:
    await setup.remove_closed_date(db_session, actor=actor, closed_date_id=closed_date_id)


routes = [
    list_chairs, create_chair, edit_chair, list_session_types, get_session_type, edit_session_type, availability,
    list_appointments, book, get_appointment, move, cancel, no_show, preview_course, book_course, get_course, cancel_course,
    move_course, list_shifts, create_shift, delete_shift, get_clinic, edit_clinic, list_closed, create_closed, delete_closed,
]
