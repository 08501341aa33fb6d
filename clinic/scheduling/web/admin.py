"""Clinic-setup admin pages: the clinic's details and hours, closed dates, chairs and rooms, protocols, staff shifts."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import msgspec
from litestar import Response, get, post
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Template
from msgspec import Struct

from clinic.errors import RuleBroken
from clinic.forms import decode_form, read_form
from clinic.http import CurrentActor, CurrentClinic, DbSession
from clinic.pages import base_context, go, parse_day, week_start
from clinic.scheduling import rules, service, setup
from clinic.scheduling.models import SessionType
from clinic.scheduling.protocols import Protocol
from clinic.timeutil import utcnow

# rows of the course-template table a protocol form may send (the page shows the templates plus a blank row)
MAX_TEMPLATE_ROWS = 50
COMMON_ZONES = ("America/New_York", "America/Chicago", "America/Denver", "America/Phoenix", "America/Los_Angeles",
                "America/Anchorage", "Pacific/Honolulu", "America/Puerto_Rico", "Europe/London", "Europe/Berlin", "Australia/Sydney")



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
async def admin_clinic(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic) -> Template:
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
async def admin_chairs(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic) -> Template:
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
async def admin_protocols(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic) -> Template:
    types = await service.session_types(db_session, actor, active_only=False)
    return Template("scheduling/admin_protocols.html", context=base_context(
        clinic, types=types, timing=Protocol.of, section="protocols", done=request.query_params.get("done")))


@get("/admin/protocols/{session_type_id:int}", opt={"permission": "admin"}, include_in_schema=False)
async def admin_protocol(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, session_type_id: int) -> Template:
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
async def admin_shifts(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic) -> Template:
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
    admin_clinic, admin_clinic_save, admin_closed_add, admin_closed_remove, admin_chairs, admin_chair_add, admin_chair_save,
    admin_protocols, admin_protocol, admin_protocol_save, admin_shifts, admin_shift_add, admin_shift_remove,
]
