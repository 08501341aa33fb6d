"""The day and week views: one column per chair and the clinic's hours as rows; a week's sessions by day."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from litestar import get
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Template

from clinic.audit.service import Actor
from clinic.http import CurrentActor, CurrentClinic, DbSession
from clinic.outcomes import service as outcomes
from clinic.pages import base_context, can, parse_day, week_start
from clinic.scheduling import rules, service, setup
from clinic.scheduling.models import LIVE_STATUSES, Chair, ChairKind
from clinic.scheduling.rules import ClinicCalendar
from clinic.scheduling.web.booking import slot_value
from clinic.timeutil import utcnow


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
async def day_view(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic) -> Template:
    """One column per chair, the clinic's hours as rows; click an empty slot to book it."""
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
async def week_view(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic) -> Template:
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


routes = [day_view, week_view]
