"""Front-desk pages: day and week views, the booking flow, appointments, courses, and the clinic-setup admin pages."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import msgspec
from litestar import Response, get, post
from litestar.plugins.htmx import ClientRedirect, HTMXRequest
from litestar.response import Redirect, Template
from msgspec import Struct

from clinic.audit.service import Actor
from clinic.errors import Conflict, RuleBroken
from clinic.forms import decode_form, read_form
from clinic.http import CurrentActor, DbSession, swapped
from clinic.outcomes import service as outcomes
from clinic.patients.models import Patient
from clinic.scheduling import rules, service, setup
from clinic.scheduling.models import LIVE_STATUSES, Appointment, AppointmentStatus, Chair, ChairKind, Clinic, SessionKind, SessionType
from clinic.scheduling.protocols import Protocol
from clinic.scheduling.rules import ClinicCalendar
from clinic.timeutil import utcnow

KIND_LABELS = {SessionKind.esketamine: "Esketamine", SessionKind.ketamine_iv: "IV ketamine", SessionKind.kap: "KAP",
               SessionKind.integration: "Integration", SessionKind.consult: "Consult"}
STATUS_BADGES = {AppointmentStatus.booked: "due", AppointmentStatus.arrived: "warn", AppointmentStatus.in_progress: "warn",
                 AppointmentStatus.fulfilled: "ok", AppointmentStatus.cancelled: "bad", AppointmentStatus.noshow: "bad"}
STATUS_LABELS = {AppointmentStatus.booked: "Booked", AppointmentStatus.arrived: "Arrived", AppointmentStatus.in_progress: "In session",
                 AppointmentStatus.fulfilled: "Discharged", AppointmentStatus.cancelled: "Cancelled", AppointmentStatus.noshow: "No-show"}
# rows of the course-template table a protocol form may send (the page shows the templates plus a blank row)
MAX_TEMPLATE_ROWS = 50
COMMON_ZONES = ("America/New_York", "America/Chicago", "America/Denver", "America/Phoenix", "America/Los_Angeles",
                "America/Anchorage", "Pacific/Honolulu", "America/Puerto_Rico", "Europe/London", "Europe/Berlin", "Australia/Sydney")


# ---- helpers shared with the patient pages --------------------------------------------------------


def go(request: HTMXRequest, url: str) -> Response:
    """After a successful write: htmx follows HX-Redirect, a plain form a 303."""
    if request.htmx:
        redirect = ClientRedirect(url)
        redirect.status_code = 200  # not the route's 201: nothing is shown, the browser goes to `url`
        return redirect
    return Redirect(path=url, status_code=303)


def parse_day(value: str | None, tz: str) -> date:
    if value:
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise RuleBroken("The date must look like 2026-12-14.", field="date", code="date_format") from None
    return utcnow().astimezone(ZoneInfo(tz)).date()


def week_start(day: date) -> date:
    return day - timedelta(days=day.weekday())


def base_context(clinic: Clinic, **kw: Any) -> dict[str, Any]:
    return {"clinic": clinic, "tz": clinic.timezone, "kind_labels": KIND_LABELS, "status_badges": STATUS_BADGES,
            "status_labels": STATUS_LABELS, **kw}


def can(request: HTMXRequest, permission: str) -> bool:
    from clinic.auth.permissions import allows

    user = request.scope.get("user")
    return bool(user and allows(permission, user.roles))


def slot_value(start: datetime, chair_id: int) -> str:
    return f"{start.astimezone(rules.UTC).isoformat()}|{chair_id}"


def parse_slot(value: str | None, field: str = "slot") -> tuple[datetime, int]:
    try:
        s, c = str(value or "").split("|")
        return datetime.fromisoformat(s), int(c)
    except ValueError:
        raise RuleBroken("Choose a time from the list.", field=field, code="required") from None


# ---- day and week views ------------------------------------------------------------------------------


@dataclass
class Cell:
    row: int
    span: int = 1
    start: datetime | None = None
    appt: Any = None  # AppointmentRow
    bookable: bool = False


def day_grid(day: date, cal: ClinicCalendar, chairs: list[Chair], rows: list, now: datetime) -> dict[str, Any]:
    """Rows = the grid's slots across the day's opening hours (widened to fit every booked session),
    columns = chairs then rooms; each live appointment spans the rows it holds."""
    tz = cal.tz
    step = cal.grid_minutes
    spans = cal.hours.get(day.weekday(), ())
    live = [r for r in rows if r.appointment.status in LIVE_STATUSES]
    minutes = [t.hour * 60 + t.minute for s, e in spans for t in (s, e)]
    for r in live:
        for instant in (r.appointment.starts_at, r.appointment.ends_at):
            lt = instant.astimezone(ZoneInfo(tz))
            minutes.append(lt.hour * 60 + lt.minute if lt.date() == day else 24 * 60)
    if not minutes:
        return {"times": [], "columns": [], "open": False}
    first = min(minutes) // step * step
    last = -(-max(minutes) // step) * step
    times = []
    for m in range(first, min(last, 24 * 60), step):
        at = time(m // 60, m % 60)
        if not rules.wall_time_exists(day, at, tz):
            continue
        start = rules.wall_to_utc(day, at, tz)
        opened = day not in cal.closed and any(s <= at < e for s, e in spans)
        times.append({"label": at.strftime("%H:%M"), "start": start, "open": opened, "hour": m % 60 == 0})
    columns = []
    for chair in chairs:
        cells: list[Cell] = []
        taken: set[int] = set()
        for r in live:
            if r.appointment.chair_id != chair.id:
                continue
            a = r.appointment
            i = min((j for j, t in enumerate(times) if t["start"] >= a.starts_at), default=None)
            if i is None:
                continue
            # the first row at or after the start; a start between rows (grid changed) still lands
            j = max((k for k, t in enumerate(times) if t["start"] < a.ends_at), default=i)
            span = max(1, j - i + 1)
            cells.append(Cell(row=i, span=span, appt=r))
            taken.update(range(i, i + span))
        for i, t in enumerate(times):
            if i not in taken:
                cells.append(Cell(row=i, start=t["start"], bookable=t["open"] and t["start"] > now))
        cells.sort(key=lambda c: c.row)
        columns.append({"chair": chair, "cells": cells})
    return {"times": times, "columns": columns, "open": bool(spans) and day not in cal.closed}


async def _staff_summary(db_session, actor: Actor, day: date, tz: str) -> list[dict[str, Any]]:
    lo, hi = rules.local_day_bounds(day, tz)
    out = []
    for shift, user in await setup.list_shifts(db_session, actor=actor, start=lo, end=hi):
        out.append({"role": shift.role, "name": user.full_name, "starts_at": shift.starts_at, "ends_at": shift.ends_at})
    return out


@get("/schedule", opt={"permission": "schedule.read"}, include_in_schema=False)
async def day_view(request: HTMXRequest, db_session: DbSession, actor: CurrentActor) -> Template:
    """One column per chair, the clinic's hours as rows; click an empty slot to book it."""
    clinic = await service.clinic_of(db_session, actor)
    cal = await service.calendar_of(db_session, clinic)
    day = parse_day(request.query_params.get("date"), clinic.timezone)
    chairs = await service.chairs(db_session, actor)
    rows = await service.list_appointments(db_session, actor=actor, day=day, tz=clinic.timezone, limit=2000)
    now = utcnow()
    grid = day_grid(day, cal, chairs, rows, now)
    ctx = base_context(
        clinic, outcome_flags=await outcomes.visits_outcomes(db_session, clinic_id=clinic.id, appointments=[r.appointment for r in rows]),
        clinical=can(request, "outcomes.read"),
        day=day, grid=grid, rows=rows, inactive=[r for r in rows if r.appointment.status not in LIVE_STATUSES],
        staff=await _staff_summary(db_session, actor, day, clinic.timezone), closed_reason=None,
        today=now.astimezone(ZoneInfo(clinic.timezone)).date(), can_book=can(request, "schedule.write"),
        prev_day=day - timedelta(days=1), next_day=day + timedelta(days=1), slot_value=slot_value, now=now,
    )
    if day in cal.closed:
        closed = await setup.closed_dates(db_session, actor=actor, since=day)
        ctx["closed_reason"] = next((c.reason or "Closed" for c in closed if c.day == day), "Closed")
    return Template("scheduling/day.html", context=ctx)


@get("/schedule/week", opt={"permission": "schedule.read"}, include_in_schema=False)
async def week_view(request: HTMXRequest, db_session: DbSession, actor: CurrentActor) -> Template:
    clinic = await service.clinic_of(db_session, actor)
    cal = await service.calendar_of(db_session, clinic)
    monday = week_start(parse_day(request.query_params.get("date"), clinic.timezone))
    lo, _ = rules.local_day_bounds(monday, clinic.timezone)
    _, hi = rules.local_day_bounds(monday + timedelta(days=6), clinic.timezone)
    rows = await service.list_appointments(db_session, actor=actor, start=lo, end=hi, limit=5000)
    zone = ZoneInfo(clinic.timezone)
    days = []
    chairs = [c for c in await service.chairs(db_session, actor) if c.kind == ChairKind.chair]
    for i in range(7):
        d = monday + timedelta(days=i)
        todays = [r for r in rows if r.appointment.starts_at.astimezone(zone).date() == d]
        open_ = cal.is_open_day(d)
        if not open_ and not todays:
            continue
        live = [r for r in todays if r.appointment.status in LIVE_STATUSES]
        spans = cal.hours.get(d.weekday(), ())
        days.append({"day": d, "open": open_, "rows": todays, "live": len(live),
                     "hours": ", ".join(f"{s.strftime('%H:%M')}-{e.strftime('%H:%M')}" for s, e in spans) if open_ else "Closed",
                     "monitored": sum(1 for r in live if r.session_type.monitored)})
    now = utcnow()
    return Template("scheduling/week.html", context=base_context(
        clinic, monday=monday, days=days, chairs=chairs, prev_week=monday - timedelta(days=7), next_week=monday + timedelta(days=7),
        today=now.astimezone(zone).date(), can_book=can(request, "schedule.write")))


# ---- the booking flow -------------------------------------------------------------------------------


class Picked(Struct):
    """What a link into the booking flow may carry."""

    patient_id: int | None = None
    chair_id: int | None = None


class SlotsQuery(Picked):
    days: int | None = None
    planned_dose_mg: int | None = None
    appointment_id: int | None = None  # the session being moved: its own time counts as free


class SlotForm(Struct):
    slot: str = ""
    alt_slot: str = ""  # a time offered after a conflict


class BookForm(SlotForm):
    session_type: str = ""
    patient_id: int | None = None
    planned_dose_mg: int | None = None
    escort_name: str | None = None
    escort_phone: str | None = None
    notes: str | None = None


class CancelForm(Struct):
    reason: str | None = None
    reason_other: str | None = None  # when the reason chosen is "other"


async def _last_booking(db_session, actor: Actor, patient_id: int) -> Appointment | None:
    """The patient's latest session that has begun (else their next one): its protocol, dose and time become the defaults."""
    from sqlmodel import col, select

    base = select(Appointment).where(Appointment.clinic_id == actor.clinic_id, Appointment.patient_id == patient_id,
                                     col(Appointment.status).in_(LIVE_STATUSES))
    now = utcnow()
    last = (await db_session.exec(base.where(Appointment.starts_at <= now).order_by(col(Appointment.starts_at).desc()).limit(1))).first()
    return last or (await db_session.exec(base.order_by(Appointment.starts_at).limit(1))).first()


@get("/schedule/book", opt={"permission": "schedule.write"}, include_in_schema=False)
async def book_page(request: HTMXRequest, db_session: DbSession, actor: CurrentActor) -> Template:
    """Patient -> protocol -> slot -> confirm. A returning patient starts with their usual protocol, dose and time."""
    clinic = await service.clinic_of(db_session, actor)
    q = request.query_params
    picked = decode_form(q, Picked)
    patient = None
    last = None
    if picked.patient_id is not None:
        patient = await service.patient_of(db_session, actor, picked.patient_id)
        last = await _last_booking(db_session, actor, patient.id)
    types = await service.session_types(db_session, actor)
    by_id = {st.id: st for st in types}
    chosen = q.get("session_type") or (str(by_id[last.session_type_id].kind) if last and last.session_type_id in by_id else "")
    picked_start = q.get("start")
    picked_chair = picked.chair_id
    zone = ZoneInfo(clinic.timezone)
    day = parse_day(q.get("from"), clinic.timezone)
    if picked_start:
        try:
            day = datetime.fromisoformat(picked_start).astimezone(zone).date()
        except ValueError:
            picked_start = None
    usual = last.starts_at.astimezone(zone).strftime("%H:%M") if last else None
    holds = {}
    for st in types:
        t = Protocol.of(st)
        holds[st.kind] = f"{t.hold_minutes(min(t.doses_mg))}–{t.hold_minutes(max(t.doses_mg))}" if t.doses_mg else str(t.hold_minutes())
    ctx = base_context(
        clinic, patient=patient, last=last, types=types, chosen=chosen, holds=holds,
        last_kind=next((st.kind for st in types if last and st.id == last.session_type_id), ""),
        dosed=[st.kind for st in types if Protocol.of(st).doses_mg], dose=(last.planned_dose_mg if last and last.planned_dose_mg else 56),
        picked_start=picked_start, picked_chair=picked_chair, day=day, usual=usual,
        picked_value=slot_value(datetime.fromisoformat(picked_start), picked_chair) if picked_start and picked_chair else "",
    )
    return Template("scheduling/book.html", context=ctx)


@get("/schedule/book/slots", opt={"permission": "schedule.read"}, include_in_schema=False)
async def book_slots(request: HTMXRequest, db_session: DbSession, actor: CurrentActor) -> Template:
    """The slot picker fragment: one choice per free start time (the preferred chair first), seven days from `from`."""
    q = request.query_params
    wanted = decode_form(q, SlotsQuery)
    clinic = await service.clinic_of(db_session, actor)
    day = parse_day(q.get("from"), clinic.timezone)
    today = utcnow().astimezone(ZoneInfo(clinic.timezone)).date()
    day = max(day, today)
    days = wanted.days or 7
    kind = q.get("session_type")
    context = base_context(clinic, day=day, empty=None, groups=[], picked_missing=None, name=q.get("name") or "slot", picked=q.get("picked") or "",
                           usual=q.get("usual") or "", prev_from=max(today, day - timedelta(days=days)), next_from=day + timedelta(days=days),
                           can_go_back=day > today, query=q)
    if not kind:
        context["empty"] = "Choose a protocol to see free times."
        return Template("scheduling/_slots.html", context=context)
    st = await service.session_type_of(db_session, actor, kind, field="session_type")
    dose = wanted.planned_dose_mg if Protocol.of(st).doses_mg else None
    found = await service.find_availability(
        db_session, actor=actor, session_type=st.id, day_from=day, day_to=day + timedelta(days=days - 1),
        patient_id=wanted.patient_id, dose_mg=dose, ignore_appointment_id=wanted.appointment_id,
    )
    prefer = wanted.chair_id
    picked_start, picked_chair = (None, None)
    if context["picked"]:
        picked_start, picked_chair = parse_slot(context["picked"])
    zone = ZoneInfo(clinic.timezone)
    by_day: dict[date, dict[datetime, list[int]]] = {}
    for c in found.candidates:
        by_day.setdefault(c.start.astimezone(zone).date(), {}).setdefault(c.start, []).append(c.chair_id)
    groups = []
    for d in rules.local_days(day, day + timedelta(days=days - 1)):
        starts = by_day.get(d, {})
        choices = []
        for start, chair_ids in sorted(starts.items()):
            want = picked_chair if picked_start == start and picked_chair in chair_ids else prefer
            chair_id = want if want in chair_ids else chair_ids[0]
            choices.append({"start": start, "chair_id": chair_id, "chair": found.chairs.get(chair_id, ""), "free": len(chair_ids),
                            "value": slot_value(start, chair_id), "label": start.astimezone(zone).strftime("%H:%M")})
        groups.append({"day": d, "choices": choices, "open": found.calendar.is_open_day(d)})
    context.update(groups=groups, st=st, hold=Protocol.of(st).hold_minutes(dose))
    if picked_start is not None and not any(c.start == picked_start and c.chair_id == picked_chair for c in found.candidates):
        context["picked_missing"] = f"{picked_start.astimezone(zone).strftime('%a %d %b %H:%M')}, {found.chairs.get(picked_chair, 'that chair')}"
    if not found.candidates:
        context["empty"] = "No free time in these days for this protocol (chairs, staff on shift or the patient's own sessions)."
    return Template("scheduling/_slots.html", context=context)


@post("/schedule/book", opt={"permission": "schedule.write"}, include_in_schema=False)
async def book_submit(request: HTMXRequest, db_session: DbSession, actor: CurrentActor) -> Response:
    form = await read_form(request, BookForm)
    slot = form.alt_slot or form.slot
    if not slot:
        raise RuleBroken("Choose a free time from the list.", field="slot", code="required")
    start, chair_id = parse_slot(slot)
    st = await service.session_type_of(db_session, actor, form.session_type or None, field="session_type")
    try:
        booked = await service.book(
            db_session, actor=actor, queue=request.app.state.queue, patient_id=form.patient_id,
            session_type=st.id, chair_id=chair_id, starts_at=start,
            planned_dose_mg=form.planned_dose_mg if Protocol.of(st).doses_mg else None,
            escort_name=form.escort_name, escort_phone=form.escort_phone, notes=form.notes,
        )
    except Conflict as exc:
        return await _conflict_fragment(request, db_session, actor, exc, target_form="book-form")
    return go(request, f"/schedule/appointments/{booked.appointment.id}?done=booked")


async def _conflict_fragment(request: HTMXRequest, db_session, actor: Actor, exc: Conflict, *, target_form: str) -> Response:
    """A lost race or an unstaffed time: say why, and offer the nearest free times as one-click choices."""
    clinic = await service.clinic_of(db_session, actor)
    zone = ZoneInfo(clinic.timezone)
    alts = []
    for a in exc.extra.get("alternatives", []):
        start = datetime.fromisoformat(a.start.utc)
        alts.append({"value": slot_value(start, a.chair_id), "label": start.astimezone(zone).strftime("%a %d %b %H:%M"), "chair": a.chair or ""})
    context = {"error": exc.body(), "alternatives": alts, "target_form": target_form}
    return swapped(request, "scheduling/_conflict.html", context, into="#flash", status_code=409)


# ---- an appointment ----------------------------------------------------------------------------------


@get("/schedule/appointments/{appointment_id:int}", opt={"permission": "schedule.read"}, include_in_schema=False)
async def appointment_page(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, appointment_id: int) -> Template:
    clinic = await service.clinic_of(db_session, actor)
    cal = await service.calendar_of(db_session, clinic)
    row = await service.get_appointment(db_session, actor=actor, appointment_id=appointment_id)
    a = row.appointment
    course_rows = await service.list_appointments(db_session, actor=actor, course_id=a.course_id) if a.course_id else []
    now = utcnow()
    created_by = None
    if a.created_by:
        from clinic.auth.models import StaffUser

        user = await db_session.get(StaffUser, a.created_by)
        created_by = user.full_name if user else None
    return Template("scheduling/appointment.html", context=base_context(
        clinic, row=row, a=a, course_rows=course_rows, course_index=next((i + 1 for i, r in enumerate(course_rows) if r.appointment.id == a.id), None),
        late_if_cancelled=rules.is_late_cancel(a.starts_at, now, cal.late_cancel_hours), started=now >= a.starts_at,
        can_write=can(request, "schedule.write"), done=request.query_params.get("done"), created_by=created_by,
        late_hours=cal.late_cancel_hours, oc=await outcomes.visit_outcomes(db_session, clinic_id=clinic.id, appointment=a)))


@get("/schedule/appointments/{appointment_id:int}/move", opt={"permission": "schedule.write"}, include_in_schema=False)
async def move_page(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, appointment_id: int) -> Template:
    clinic = await service.clinic_of(db_session, actor)
    row = await service.get_appointment(db_session, actor=actor, appointment_id=appointment_id)
    zone = ZoneInfo(clinic.timezone)
    day = parse_day(request.query_params.get("from"), clinic.timezone) if request.query_params.get("from") else row.appointment.starts_at.astimezone(zone).date()
    return Template("scheduling/move.html", context=base_context(
        clinic, row=row, a=row.appointment, day=day, usual=row.appointment.starts_at.astimezone(zone).strftime("%H:%M")))


@post("/schedule/appointments/{appointment_id:int}/move", opt={"permission": "schedule.write"}, include_in_schema=False)
async def move_submit(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, appointment_id: int) -> Response:
    form = await read_form(request, SlotForm)
    start, chair_id = parse_slot(form.alt_slot or form.slot)
    try:
        await service.move(db_session, actor=actor, queue=request.app.state.queue, appointment_id=appointment_id, starts_at=start, chair_id=chair_id)
    except Conflict as exc:
        if exc.code in ("not_booked",):
            raise
        return await _conflict_fragment(request, db_session, actor, exc, target_form="move-form")
    return go(request, f"/schedule/appointments/{appointment_id}?done=moved")


@post("/schedule/appointments/{appointment_id:int}/cancel", opt={"permission": "schedule.write"}, include_in_schema=False)
async def cancel_submit(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, appointment_id: int) -> Response:
    form = await read_form(request, CancelForm)
    reason = form.reason_other if form.reason == "other" else form.reason
    await service.cancel(db_session, actor=actor, queue=request.app.state.queue, appointment_id=appointment_id, reason=reason)
    return go(request, f"/schedule/appointments/{appointment_id}?done=cancelled")


@post("/schedule/appointments/{appointment_id:int}/no-show", opt={"permission": "schedule.write"}, include_in_schema=False)
async def no_show_submit(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, appointment_id: int) -> Response:
    await service.no_show(db_session, actor=actor, queue=request.app.state.queue, appointment_id=appointment_id)
    return go(request, f"/schedule/appointments/{appointment_id}?done=noshow")


# ---- courses -----------------------------------------------------------------------------------------


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
async def course_page(request: HTMXRequest, db_session: DbSession, actor: CurrentActor) -> Template:
    clinic = await service.clinic_of(db_session, actor)
    cal = await service.calendar_of(db_session, clinic)
    q = request.query_params
    picked = decode_form(q, Picked)
    patient = await service.patient_of(db_session, actor, picked.patient_id) if picked.patient_id is not None else None
    last = await _last_booking(db_session, actor, patient.id) if patient else None
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
async def course_preview(request: HTMXRequest, db_session: DbSession, actor: CurrentActor) -> Template:
    clinic = await service.clinic_of(db_session, actor)
    form = await read_form(request, CourseForm)
    plan = await service.book_course(db_session, actor=actor, queue=None, dry_run=True, **(await _course_args(db_session, actor, form)))
    return Template("scheduling/_course_plan.html", context=base_context(clinic, plan=plan, slot_value=slot_value))


@post("/schedule/courses", opt={"permission": "schedule.write"}, include_in_schema=False)
async def course_submit(request: HTMXRequest, db_session: DbSession, actor: CurrentActor) -> Response:
    clinic = await service.clinic_of(db_session, actor)
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
async def course_view(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, course_id: int) -> Template:
    clinic = await service.clinic_of(db_session, actor)
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
async def course_move(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, course_id: int) -> Response:
    form = await read_form(request, CourseMoveForm)
    try:
        await service.move_course(db_session, actor=actor, queue=request.app.state.queue, course_id=course_id,
                                  shift_days=form.shift_days or 0, at_time=form.at_time or None,
                                  from_appointment_id=form.from_appointment_id)
    except Conflict as exc:
        if exc.code != "course_conflicts":
            raise
        clinic = await service.clinic_of(db_session, actor)
        zone = ZoneInfo(clinic.timezone)
        lines = []
        for o in exc.extra.get("occurrences", []):
            if not o.ok:
                when = datetime.fromisoformat(o.wanted_start.utc).astimezone(zone).strftime("%a %d %b %H:%M")
                lines.append(f"{when}: {o.conflict.detail}")
        return swapped(request, "scheduling/_move_report.html", {"detail": exc.detail, "lines": lines}, into="#flash", status_code=409)
    return go(request, f"/schedule/courses/{course_id}?done=moved")


# ---- clinic setup (admin) -------------------------------------------------------------------------------


WEEKDAY_NAMES = rules.WEEKDAYS


class ClinicForm(Struct):
    """The clinic's details; the opening-hours grid (open-D, from-D-K, to-D-K) and the settings are read by name."""

    name: str | None = None
    display_name: str | None = None
    timezone: str | None = None
    phone: str | None = None
    address: str | None = None


class ClosedDateForm(Struct):
    day: date | None = None
    reason: str = ""


class ChairForm(Struct):
    name: str = ""
    kind: str = ""
    sort_order: int = 0
    active: bool = False


class ProtocolForm(Struct):
    """A protocol's name and state; its minutes and the course-template rows (t-N-...) are read by name."""

    name: str | None = None
    active: bool = False
    template_rows: int = 0


class ShiftForm(Struct):
    first_day: date | None = None
    last_day: date | None = None
    start: str = ""
    end: str = ""
    weekdays: list[int] | None = None
    user_id: int | None = None
    role: str = ""


class ShiftRemoveForm(Struct):
    week: date | None = None  # the week to show again


@get("/admin/clinic", opt={"permission": "admin"}, include_in_schema=False)
async def admin_clinic(request: HTMXRequest, db_session: DbSession, actor: CurrentActor) -> Template:
    clinic = await service.clinic_of(db_session, actor)
    today = utcnow().astimezone(ZoneInfo(clinic.timezone)).date()
    hours = []
    for d in range(7):
        spans = (clinic.opening_hours or {}).get(str(d)) or []
        hours.append({"day": d, "name": WEEKDAY_NAMES[d], "open": bool(spans), "spans": spans + [["", ""]] * (2 - len(spans))})
    zones = list(COMMON_ZONES) if clinic.timezone in COMMON_ZONES else [clinic.timezone, *COMMON_ZONES]
    return Template("scheduling/admin_clinic.html", context=base_context(
        clinic, hours=hours, zones=zones, closed=await setup.closed_dates(db_session, actor=actor, since=today - timedelta(days=30)),
        settings=clinic.settings or {}, grid_choices=setup.GRID_CHOICES, section="clinic", done=request.query_params.get("done"),
        still=request.query_params.get("still")))


@post("/admin/clinic", opt={"permission": "admin"}, include_in_schema=False)
async def admin_clinic_save(request: HTMXRequest, db_session: DbSession, actor: CurrentActor) -> Response:
    form = await request.form()
    details = decode_form(form, ClinicForm)
    hours: dict[str, list[list[str]]] = {}
    for d in range(7):
        spans = []
        if form.get(f"open-{d}"):
            for k in (0, 1):
                a, b = (form.get(f"from-{d}-{k}") or "").strip(), (form.get(f"to-{d}-{k}") or "").strip()
                if a or b:
                    spans.append([a, b])
            if not spans:
                raise RuleBroken(f"{WEEKDAY_NAMES[d]}: give opening and closing times, or untick Open.", field="opening_hours", code="hours_format")
        hours[str(d)] = spans
    data: dict[str, Any] = msgspec.structs.asdict(details)
    data["opening_hours"] = hours
    data["settings"] = {k: form.get(k) for k in setup.SETTING_LIMITS}
    await setup.update_clinic(db_session, actor=actor, data=data, idle_limit_minutes=request.app.state.settings.idle_timeout_minutes)
    return go(request, "/admin/clinic?done=saved")


@post("/admin/clinic/closed-dates", opt={"permission": "admin"}, include_in_schema=False)
async def admin_closed_add(request: HTMXRequest, db_session: DbSession, actor: CurrentActor) -> Response:
    form = await read_form(request, ClosedDateForm)
    _, still = await setup.add_closed_date(db_session, actor=actor, day=form.day, reason=form.reason)
    return go(request, "/admin/clinic?" + urlencode({"done": "closed", "still": still}))


@post("/admin/clinic/closed-dates/{closed_date_id:int}/delete", opt={"permission": "admin"}, include_in_schema=False)
async def admin_closed_remove(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, closed_date_id: int) -> Response:
    await setup.remove_closed_date(db_session, actor=actor, closed_date_id=closed_date_id)
    return go(request, "/admin/clinic?done=reopened")


@get("/admin/chairs", opt={"permission": "admin"}, include_in_schema=False)
async def admin_chairs(request: HTMXRequest, db_session: DbSession, actor: CurrentActor) -> Template:
    clinic = await service.clinic_of(db_session, actor)
    return Template("scheduling/admin_chairs.html", context=base_context(
        clinic, chairs=await service.chairs(db_session, actor, active_only=False), section="chairs", done=request.query_params.get("done")))


@post("/admin/chairs", opt={"permission": "admin"}, include_in_schema=False)
async def admin_chair_add(request: HTMXRequest, db_session: DbSession, actor: CurrentActor) -> Response:
    form = await read_form(request, ChairForm)
    await setup.add_chair(db_session, actor=actor, name=form.name, kind=form.kind or "chair")
    return go(request, "/admin/chairs?done=added")


@post("/admin/chairs/{chair_id:int}", opt={"permission": "admin"}, include_in_schema=False)
async def admin_chair_save(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, chair_id: int) -> Response:
    form = await read_form(request, ChairForm)
    data: dict[str, Any] = {"name": form.name, "sort_order": form.sort_order, "active": form.active}
    await setup.update_chair(db_session, actor=actor, chair_id=chair_id, data=data)
    return go(request, "/admin/chairs?done=saved")


@get("/admin/protocols", opt={"permission": "admin"}, include_in_schema=False)
async def admin_protocols(request: HTMXRequest, db_session: DbSession, actor: CurrentActor) -> Template:
    clinic = await service.clinic_of(db_session, actor)
    types = await service.session_types(db_session, actor, active_only=False)
    return Template("scheduling/admin_protocols.html", context=base_context(
        clinic, types=types, timing=Protocol.of, section="protocols", done=request.query_params.get("done")))


@get("/admin/protocols/{session_type_id:int}", opt={"permission": "admin"}, include_in_schema=False)
async def admin_protocol(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, session_type_id: int) -> Template:
    clinic = await service.clinic_of(db_session, actor)
    st = await db_session.get(SessionType, session_type_id)
    if st is None or st.clinic_id != actor.clinic_id:
        from clinic.errors import NotFound

        raise NotFound("No such protocol.")
    return Template("scheduling/admin_protocol.html", context=base_context(
        clinic, st=st, protocol=Protocol.of(st), section="protocols"))


@post("/admin/protocols/{session_type_id:int}", opt={"permission": "admin"}, include_in_schema=False)
async def admin_protocol_save(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, session_type_id: int) -> Response:
    form = await request.form()
    edited = decode_form(form, ProtocolForm)
    data: dict[str, Any] = {"name": edited.name, "active": edited.active, **{k: form.get(k) for k in setup.MINUTE_FIELDS}}
    templates: dict[str, dict[str, Any]] = {}
    if not 0 <= edited.template_rows <= MAX_TEMPLATE_ROWS:
        raise RuleBroken(f"A protocol has at most {MAX_TEMPLATE_ROWS} course templates.", field="template_rows", code="out_of_range")
    for i in range(edited.template_rows):
        key = (form.get(f"t-{i}-key") or "").strip()
        if not key or form.get(f"t-{i}-remove"):
            continue
        templates[key] = {k: form.get(f"t-{i}-{k}") for k in ("label", "sessions", "per_week", "min_days_apart", "weeks")}
    data["course_templates"] = templates
    await setup.update_session_type(db_session, actor=actor, session_type_id=session_type_id, data=data)
    return go(request, "/admin/protocols?done=saved")


@get("/admin/shifts", opt={"permission": "admin"}, include_in_schema=False)
async def admin_shifts(request: HTMXRequest, db_session: DbSession, actor: CurrentActor) -> Template:
    clinic = await service.clinic_of(db_session, actor)
    monday = week_start(parse_day(request.query_params.get("date"), clinic.timezone))
    lo, _ = rules.local_day_bounds(monday, clinic.timezone)
    _, hi = rules.local_day_bounds(monday + timedelta(days=6), clinic.timezone)
    shifts = await setup.list_shifts(db_session, actor=actor, start=lo, end=hi)
    zone = ZoneInfo(clinic.timezone)
    days = [{"day": monday + timedelta(days=i), "shifts": [(s, u) for s, u in shifts if s.starts_at.astimezone(zone).date() == monday + timedelta(days=i)]}
            for i in range(7)]
    staff = await setup.staff_for_shifts(db_session, actor=actor)
    return Template("scheduling/admin_shifts.html", context=base_context(
        clinic, monday=monday, friday=monday + timedelta(days=4), days=days, staff=[(u, setup.shift_roles(u)) for u in staff], prev_week=monday - timedelta(days=7),
        next_week=monday + timedelta(days=7), section="shifts", done=request.query_params.get("done"), weekdays=WEEKDAY_NAMES))


@post("/admin/shifts", opt={"permission": "admin"}, include_in_schema=False)
async def admin_shift_add(request: HTMXRequest, db_session: DbSession, actor: CurrentActor) -> Response:
    form = await read_form(request, ShiftForm)
    if form.first_day is None:
        raise RuleBroken("Choose the first day.", field="first_day", code="date_format")
    try:
        start, end = rules.parse_hhmm(form.start), rules.parse_hhmm(form.end)
    except ValueError:
        raise RuleBroken("Times must look like 08:00.", field="start", code="time_format") from None
    await setup.add_shifts_for_days(db_session, actor=actor, user_id=form.user_id, role=form.role, first_day=form.first_day,
                                    last_day=form.last_day or form.first_day, start=start, end=end,
                                    weekdays=set(form.weekdays) if form.weekdays is not None else None)
    return go(request, f"/admin/shifts?date={form.first_day.isoformat()}&done=added")


@post("/admin/shifts/{shift_id:int}/delete", opt={"permission": "admin"}, include_in_schema=False)
async def admin_shift_remove(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, shift_id: int) -> Response:
    form = await read_form(request, ShiftRemoveForm)
    await setup.remove_shift(db_session, actor=actor, shift_id=shift_id)
    return go(request, f"/admin/shifts?date={form.week.isoformat() if form.week else ''}&done=removed")


routes = [
    day_view, week_view, book_page, book_slots, book_submit, appointment_page, move_page, move_submit, cancel_submit, no_show_submit,
    course_page, course_preview, course_submit, course_view, course_cancel, course_move,
    admin_clinic, admin_clinic_save, admin_closed_add, admin_closed_remove, admin_chairs, admin_chair_add, admin_chair_save,
    admin_protocols, admin_protocol, admin_protocol_save, admin_shifts, admin_shift_add, admin_shift_remove,
]
