"""The booking flow (patient, protocol, slot, confirm) and an appointment's page: move, cancel, no-show."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from litestar import Response, get, post
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Template
from msgspec import Struct

from clinic.audit.service import Actor
from clinic.clinics import Clinic
from clinic.errors import Conflict, RuleBroken
from clinic.forms import decode_form, read_form
from clinic.http import CurrentActor, CurrentClinic, DbSession, swapped
from clinic.outcomes import service as outcomes
from clinic.pages import base_context, can, go, parse_day
from clinic.scheduling import rules, service
from clinic.scheduling.models import LIVE_STATUSES, Appointment
from clinic.scheduling.protocols import Protocol
from clinic.timeutil import utcnow


def slot_value(start: datetime, chair_id: int) -> str:
    return f"{start.astimezone(rules.UTC).isoformat()}|{chair_id}"


def parse_slot(value: str | None, field: str = "slot") -> tuple[datetime, int]:
    try:
        s, c = str(value or "").split("|")
        return datetime.fromisoformat(s), int(c)
    except ValueError:
        raise RuleBroken("Choose a time from the list.", field=field, code="required") from None



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


async def last_booking(db_session, actor: Actor, patient_id: int) -> Appointment | None:
    """The patient's latest session that has begun (else their next one): its protocol, dose and time become the defaults."""
    from sqlmodel import col, select

    base = select(Appointment).where(Appointment.clinic_id == actor.clinic_id, Appointment.patient_id == patient_id,
                                     col(Appointment.status).in_(LIVE_STATUSES))
    now = utcnow()
    last = (await db_session.exec(base.where(Appointment.starts_at <= now).order_by(col(Appointment.starts_at).desc()).limit(1))).first()
    return last or (await db_session.exec(base.order_by(Appointment.starts_at).limit(1))).first()


@get("/schedule/book", opt={"permission": "schedule.write"}, include_in_schema=False)
async def book_page(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic) -> Template:
    """Patient -> protocol -> slot -> confirm. A returning patient starts with their usual protocol, dose and time."""
    q = request.query_params
    picked = decode_form(q, Picked)
    patient = None
    last = None
    if picked.patient_id is not None:
        patient = await service.patient_of(db_session, actor, picked.patient_id)
        last = await last_booking(db_session, actor, patient.id)
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
async def book_slots(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic) -> Template:
    """The slot picker fragment: one choice per free start time (the preferred chair first), seven days from `from`."""
    q = request.query_params
    wanted = decode_form(q, SlotsQuery)
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
async def book_submit(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic) -> Response:
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
        return await _conflict_fragment(request, db_session, actor, clinic, exc, target_form="book-form")
    return go(request, f"/schedule/appointments/{booked.appointment.id}?done=booked")


async def _conflict_fragment(request: HTMXRequest, db_session, actor: Actor, clinic: Clinic, exc: Conflict, *, target_form: str) -> Response:
    """A lost race or an unstaffed time: say why, and offer the nearest free times as one-click choices."""
    zone = ZoneInfo(clinic.timezone)
    alts = []
    for a in exc.extra.get("alternatives", []):
        start = datetime.fromisoformat(a.start.utc)
        alts.append({"value": slot_value(start, a.chair_id), "label": start.astimezone(zone).strftime("%a %d %b %H:%M"), "chair": a.chair or ""})
    context = {"error": exc.body(), "alternatives": alts, "target_form": target_form}
    return swapped(request, "scheduling/_conflict.html", context, into="#flash", status_code=409)


# ---- an appointment ----------------------------------------------------------------------------------


@get("/schedule/appointments/{appointment_id:int}", opt={"permission": "schedule.read"}, include_in_schema=False)
async def appointment_page(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, appointment_id: int) -> Template:
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
async def move_page(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, appointment_id: int) -> Template:
    row = await service.get_appointment(db_session, actor=actor, appointment_id=appointment_id)
    zone = ZoneInfo(clinic.timezone)
    day = parse_day(request.query_params.get("from"), clinic.timezone) if request.query_params.get("from") else row.appointment.starts_at.astimezone(zone).date()
    return Template("scheduling/move.html", context=base_context(
        clinic, row=row, a=row.appointment, day=day, usual=row.appointment.starts_at.astimezone(zone).strftime("%H:%M")))


@post("/schedule/appointments/{appointment_id:int}/move", opt={"permission": "schedule.write"}, include_in_schema=False)
async def move_submit(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, appointment_id: int) -> Response:
    form = await read_form(request, SlotForm)
    start, chair_id = parse_slot(form.alt_slot or form.slot)
    try:
        await service.move(db_session, actor=actor, queue=request.app.state.queue, appointment_id=appointment_id, starts_at=start, chair_id=chair_id)
    except Conflict as exc:
        if exc.code in ("not_booked",):
            raise
        return await _conflict_fragment(request, db_session, actor, clinic, exc, target_form="move-form")
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


routes = [book_page, book_slots, book_submit, appointment_page, move_page, move_submit, cancel_submit, no_show_submit]
