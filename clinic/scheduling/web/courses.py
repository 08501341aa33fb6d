"""Course pages: plan a series from a protocol's template, book it, and cancel or move what remains."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from litestar import Response, get, post
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Template
from msgspec import Struct

from clinic.audit.service import Actor
from clinic.errors import Conflict, RuleBroken
from clinic.forms import decode_form, read_form
from clinic.http import CurrentActor, CurrentClinic, DbSession, swapped
from clinic.pages import base_context, can, go
from clinic.patients.models import Patient
from clinic.scheduling import rules, service
from clinic.scheduling.models import AppointmentStatus, SessionKind, SessionType
from clinic.scheduling.protocols import Protocol
from clinic.scheduling.rules import ClinicCalendar
from clinic.scheduling.web.booking import Picked, last_booking, parse_slot, slot_value
from clinic.timeutil import utcnow


def _grid_times(cal: ClinicCalendar) -> list[str]:
    spans = [s for d in range(7) for s in cal.hours.get(d, ())]
    if not spans:
        return []
    first = min(s for s, _ in spans)
    last = max(e for _, e in spans)
    m, end, out = first.hour * 60 + first.minute, last.hour * 60 + last.minute, []
    m += (-m) % cal.grid_minutes
    while m < end:
        out.append(f"{m // 60:02d}:{m % 60:02d}")
        m += cal.grid_minutes
    return out


@get("/schedule/courses/new", opt={"permission": "schedule.write"}, include_in_schema=False)
async def course_page(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic) -> Template:
    cal = await service.calendar_of(db_session, clinic)
    q = request.query_params
    picked = decode_form(q, Picked)
    patient = await service.patient_of(db_session, actor, picked.patient_id) if picked.patient_id is not None else None
    last = await last_booking(db_session, actor, patient.id) if patient else None
    types = [st for st in await service.session_types(db_session, actor) if Protocol.of(st).course_templates]
    zone = ZoneInfo(clinic.timezone)
    today = utcnow().astimezone(zone).date()
    first = today + timedelta(days=1)
    while not cal.is_open_day(first) and (first - today).days < 14:
        first += timedelta(days=1)
    chosen = q.get("session_type") or (SessionKind.esketamine if any(t.kind == SessionKind.esketamine for t in types) else (types[0].kind if types else ""))
    return Template("scheduling/course_new.html", context=base_context(
        clinic, patient=patient, types=types, chosen=chosen, first=first, times=_grid_times(cal),
        at=(last.starts_at.astimezone(zone).strftime("%H:%M") if last else "10:00"), chairs=await service.chairs(db_session, actor),
        dose=(last.planned_dose_mg if last and last.planned_dose_mg else 56)))


class CourseForm(Struct):
    session_type: str = ""
    template: str = ""
    first_day: str = ""
    at: str = ""  # clinic-local HH:MM of every session
    patient_id: int | None = None
    chair_id: int | None = None
    planned_dose_mg: int | None = None
    escort_name: str | None = None
    escort_phone: str | None = None
    planned: str = ""  # "1" once the plan was shown: its occ-N choices follow


class CourseCancelForm(Struct):
    reason: str | None = None
    from_appointment_id: int | None = None


class CourseMoveForm(Struct):
    shift_days: int | None = None
    at_time: str = ""
    from_appointment_id: int | None = None


async def _course_args(db_session, actor: Actor, form: CourseForm) -> dict[str, Any]:
    st = await service.session_type_of(db_session, actor, form.session_type or None, field="session_type")
    starts_at = None
    if form.first_day and form.at:
        try:
            starts_at = datetime.combine(date.fromisoformat(form.first_day), rules.parse_hhmm(form.at))
        except ValueError:
            raise RuleBroken("Choose the first date and a time.", field="starts_at", code="datetime_format") from None
    return {
        "patient_id": form.patient_id, "session_type": st.id, "template": form.template, "starts_at": starts_at,
        "chair_id": form.chair_id, "planned_dose_mg": form.planned_dose_mg if Protocol.of(st).doses_mg else None,
        "escort_name": form.escort_name, "escort_phone": form.escort_phone,
    }


@post("/schedule/courses/preview", opt={"permission": "schedule.write"}, include_in_schema=False)
async def course_preview(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic) -> Template:
    form = await read_form(request, CourseForm)
    plan = await service.book_course(db_session, actor=actor, queue=None, dry_run=True, **(await _course_args(db_session, actor, form)))
    return Template("scheduling/_course_plan.html", context=base_context(clinic, plan=plan, slot_value=slot_value))


@post("/schedule/courses", opt={"permission": "schedule.write"}, include_in_schema=False)
async def course_submit(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic) -> Response:
    raw = await request.form()
    form = decode_form(raw, CourseForm)
    args = await _course_args(db_session, actor, form)
    chosen = []
    # the plan's choices, one per session: occ-0, occ-1, ... (a slot value, or "skip")
    for key in sorted((k for k in raw.keys() if re.fullmatch(r"occ-[0-9]{1,3}", k)), key=lambda k: int(k[4:])):
        value = raw.get(key)
        if value and value != "skip":
            chosen.append(parse_slot(value, field=key))
    if form.planned == "1" and not chosen:
        raise RuleBroken("Every session was left out: choose at least one time.", field="occurrences", code="empty")
    try:
        plan = await service.book_course(db_session, actor=actor, queue=request.app.state.queue, occurrences=chosen or None, **args)
    except Conflict as exc:
        if exc.code != "course_conflicts":
            raise
        # someone took a time meanwhile: show the refreshed plan with new alternatives
        plan = await service.book_course(db_session, actor=actor, queue=None, dry_run=True, occurrences=chosen or None, **args)
        context = base_context(clinic, plan=plan, slot_value=slot_value, lost=exc.detail)
        return swapped(request, "scheduling/_course_plan.html", context, into="#course-plan", status_code=409)
    return go(request, f"/schedule/courses/{plan.course.id}?done=booked")


@get("/schedule/courses/{course_id:int}", opt={"permission": "schedule.read"}, include_in_schema=False)
async def course_view(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, course_id: int) -> Template:
    course, rows = await service.get_course(db_session, actor=actor, course_id=course_id)
    st = await db_session.get(SessionType, course.session_type_id)
    patient = await db_session.get(Patient, course.patient_id)
    tpl = Protocol.of(st).course_templates.get(course.template)
    now = utcnow()
    remaining = [r for r in rows if r.appointment.status == AppointmentStatus.booked and r.appointment.starts_at > now]
    cal = await service.calendar_of(db_session, clinic)
    return Template("scheduling/course.html", context=base_context(
        clinic, course=course, rows=rows, st=st, patient=patient, tpl=tpl, remaining=remaining, times=_grid_times(cal),
        can_write=can(request, "schedule.write"), done=request.query_params.get("done")))


@post("/schedule/courses/{course_id:int}/cancel", opt={"permission": "schedule.write"}, include_in_schema=False)
async def course_cancel(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, course_id: int) -> Response:
    form = await read_form(request, CourseCancelForm)
    await service.cancel_course(db_session, actor=actor, queue=request.app.state.queue, course_id=course_id,
                                reason=form.reason, from_appointment_id=form.from_appointment_id)
    return go(request, f"/schedule/courses/{course_id}?done=cancelled")


@post("/schedule/courses/{course_id:int}/move", opt={"permission": "schedule.write"}, include_in_schema=False)
async def course_move(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, course_id: int) -> Response:
    form = await read_form(request, CourseMoveForm)
    try:
        await service.move_course(db_session, actor=actor, queue=request.app.state.queue, course_id=course_id,
                                  shift_days=form.shift_days or 0, at_time=form.at_time or None,
                                  from_appointment_id=form.from_appointment_id)
    except Conflict as exc:
        if exc.code != "course_conflicts":
            raise
        zone = ZoneInfo(clinic.timezone)
        lines = []
        for o in exc.extra.get("occurrences", []):
            if not o.ok:
                when = datetime.fromisoformat(o.wanted_start.utc).astimezone(zone).strftime("%a %d %b %H:%M")
                lines.append(f"{when}: {o.conflict.detail}")
        return swapped(request, "scheduling/_move_report.html", {"detail": exc.detail, "lines": lines}, into="#flash", status_code=409)
    return go(request, f"/schedule/courses/{course_id}?done=moved")


routes = [course_page, course_preview, course_submit, course_view, course_cancel, course_move]
