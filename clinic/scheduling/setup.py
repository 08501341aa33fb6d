"""Clinic setup an admin edits: zone, opening hours, settings, closed dates, chairs and rooms, protocols, staff shifts."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import available_timezones

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import Actor, record
from clinic.auth.models import StaffUser
from clinic.clinics import Clinic, ClosedDate, clinic_of
from clinic.db import conflict_message
from clinic.errors import Conflict, NotFound, RuleBroken
from clinic.names import single_line
from clinic.scheduling import rules
from clinic.scheduling.models import LIVE_STATUSES, Appointment, Chair, SessionType, Shift
from clinic.scheduling.protocols import COLUMNS, Protocol
from clinic.scheduling.service import count_live_between
from clinic.timeutil import utcnow

GRID_CHOICES = (5, 10, 15, 20, 30, 60)
SETTING_LIMITS = {"nurse_ratio": (1, 10), "late_cancel_hours": (0, 168), "reminder_hours": (1, 168), "grid_minutes": (5, 60),
                  "notice_delay_minutes": (1, 1440)}
MINUTE_FIELDS = ("prep_minutes", "dosing_minutes", "monitoring_minutes", "turnover_minutes")
MAX_SHIFT = timedelta(hours=16)


def _int(value: Any, field: str, lo: int, hi: int, label: str) -> int:
    try:
        n = int(str(value).strip())
    except (TypeError, ValueError):
        raise RuleBroken(f"{label} must be a whole number.", field=field, code="not_a_number") from None
    if not lo <= n <= hi:
        raise RuleBroken(f"{label} must be between {lo} and {hi}.", field=field, code="out_of_range")
    return n


def _name(value: Any, field: str, label: str, max_len: int = 100) -> str:
    v = str(value or "").strip()
    if not v:
        raise RuleBroken(f"{label} is required.", field=field, code="required")
    if len(v) > max_len:
        raise RuleBroken(f"{label} is longer than {max_len} characters.", field=field, code="too_long")
    return single_line(v, field=field, label=label)


# ---- the clinic ---------------------------------------------------------------------------------


async def update_clinic(session: AsyncSession, *, actor: Actor, data: dict[str, Any], idle_limit_minutes: int) -> Clinic:
    """Change any of: name, display_name, timezone, phone, address, opening_hours, settings (partial)."""
    clinic = await clinic_of(session, actor)
    changes: dict[str, Any] = {}
    for key, label, n in (("name", "Name", 200), ("display_name", "Name shown to patients", 200)):
        if key in data:
            changes[key] = _name(data[key], key, label, n)
    for key, n in (("phone", 40), ("address", 300)):
        if key in data:
            changes[key] = str(data[key] or "").strip()[:n]
    if "timezone" in data:
        tz = str(data["timezone"] or "").strip()
        if tz not in available_timezones():
            raise RuleBroken("Time zone must be an IANA name like America/New_York.", field="timezone", code="unknown_timezone")
        changes["timezone"] = tz
    if "opening_hours" in data:
        hours = data["opening_hours"] or {}
        if not isinstance(hours, dict):
            raise RuleBroken("Opening hours must map weekday 0-6 to [[open, close], ...].", field="opening_hours", code="hours_format")
        hours = {str(d): [[str(a), str(b)] for a, b in (hours.get(str(d)) or [])] for d in range(7)}
        if (p := rules.validate_opening_hours(hours)) is not None:
            raise p
        changes["opening_hours"] = hours
    if "settings" in data:
        incoming = data["settings"] or {}
        new_settings = dict(clinic.settings or {})
        # the idle logoff: a clinic may shorten the server's limit, never lengthen it
        limits = {**SETTING_LIMITS, "idle_timeout_minutes": (1, idle_limit_minutes)}
        for key, (lo, hi) in limits.items():
            if key in incoming and incoming[key] not in (None, ""):
                new_settings[key] = _int(incoming[key], f"settings.{key}", lo, hi, key.replace("_", " ").capitalize())
        if new_settings.get("grid_minutes", 15) not in GRID_CHOICES:
            raise RuleBroken(f"The grid must be one of {', '.join(map(str, GRID_CHOICES))} minutes.", field="settings.grid_minutes", code="grid_not_allowed")
        changes["settings"] = new_settings
    changed = {k: v for k, v in changes.items() if getattr(clinic, k) != v}
    for k, v in changed.items():
        setattr(clinic, k, v)
    if changed:
        session.add(clinic)
        await session.flush()
        record(session, actor=actor, action="clinic.update", entity="clinic", entity_id=clinic.id, changes=changed)
    return clinic


async def closed_dates(session: AsyncSession, *, actor: Actor, since: date | None = None) -> list[ClosedDate]:
    q = select(ClosedDate).where(ClosedDate.clinic_id == actor.clinic_id)
    if since is not None:
        q = q.where(ClosedDate.day >= since)
    return list((await session.exec(q.order_by(ClosedDate.day))).all())


async def add_closed_date(session: AsyncSession, *, actor: Actor, day: date | str | None, reason: str = "") -> tuple[ClosedDate, int]:
    """Mark a date closed; returns it with the number of live sessions still booked that day (to move or cancel)."""
    if isinstance(day, str):
        try:
            day = date.fromisoformat(day.strip())
        except ValueError:
            raise RuleBroken("The date must look like 2026-12-24.", field="day", code="date_format") from None
    if day is None:
        raise RuleBroken("Choose a date.", field="day", code="required")
    clinic = await clinic_of(session, actor)
    row = ClosedDate(clinic_id=clinic.id, day=day, reason=str(reason or "").strip()[:200])
    try:
        async with session.begin_nested():
            session.add(row)
            await session.flush()
    except IntegrityError as exc:
        raise Conflict(conflict_message(exc)[0], field="day", code="duplicate") from None
    record(session, actor=actor, action="closed_date.add", entity="closed_date", entity_id=row.id, changes={"day": day, "reason": row.reason})
    lo, hi = rules.local_day_bounds(day, clinic.timezone)
    return row, await count_live_between(session, clinic.id, lo, hi)


async def remove_closed_date(session: AsyncSession, *, actor: Actor, closed_date_id: int) -> None:
    row = await session.get(ClosedDate, closed_date_id)
    if row is None or row.clinic_id != actor.clinic_id:
        raise NotFound("No such closed date.")
    await session.delete(row)
    record(session, actor=actor, action="closed_date.remove", entity="closed_date", entity_id=closed_date_id, changes={"day": row.day})


# ---- chairs and rooms -----------------------------------------------------------------------------


async def add_chair(session: AsyncSession, *, actor: Actor, name: str, kind: str = "chair", sort_order: int | None = None) -> Chair:
    if kind not in ("chair", "room"):
        raise RuleBroken("Kind must be chair or room.", field="kind", code="not_allowed")
    name = _name(name, "name", "Name")
    if sort_order is None:
        existing = (await session.exec(select(Chair.sort_order).where(Chair.clinic_id == actor.clinic_id))).all()
        sort_order = (max(existing) + 1) if existing else 0
    chair = Chair(clinic_id=actor.clinic_id, name=name, kind=kind, sort_order=_int(sort_order, "sort_order", 0, 999, "Order"))
    session.add(chair)
    await session.flush()
    record(session, actor=actor, action="chair.add", entity="chair", entity_id=chair.id, changes={"name": name, "kind": kind})
    return chair


async def update_chair(session: AsyncSession, *, actor: Actor, chair_id: int, data: dict[str, Any], now: datetime | None = None) -> Chair:
    chair = await session.get(Chair, chair_id)
    if chair is None or chair.clinic_id != actor.clinic_id:
        raise NotFound("No such chair or room.")
    changes: dict[str, Any] = {}
    if "name" in data:
        changes["name"] = _name(data["name"], "name", "Name")
    if "sort_order" in data:
        changes["sort_order"] = _int(data["sort_order"], "sort_order", 0, 999, "Order")
    if "active" in data:
        active = bool(data["active"])
        if not active and chair.active:
            upcoming = (await session.exec(
                select(Appointment.id).where(Appointment.chair_id == chair.id, Appointment.ends_at > (now or utcnow()),
                                             col(Appointment.status).in_(LIVE_STATUSES)).limit(1))).first()
            if upcoming is not None:
                raise Conflict("This chair still has upcoming sessions: move them to another chair first.", field="active", code="chair_in_use")
        changes["active"] = active
    changed = {k: v for k, v in changes.items() if getattr(chair, k) != v}
    for k, v in changed.items():
        setattr(chair, k, v)
    if changed:
        session.add(chair)
        await session.flush()
        record(session, actor=actor, action="chair.update", entity="chair", entity_id=chair.id, changes=changed)
    return chair


# ---- protocols ----------------------------------------------------------------------------------


def _clean_templates(raw: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, dict):
        raise RuleBroken("Course templates must map a name to {label, sessions, per_week, min_days_apart, weeks}.", field="course_templates", code="template_format")
    out: dict[str, dict[str, Any]] = {}
    for name, t in raw.items():
        key = str(name).strip()
        if not key or not key.replace("_", "").isalnum() or len(key) > 40:
            raise RuleBroken("A course template name uses letters, digits and _ (at most 40).", field="course_templates", code="template_name")
        if not isinstance(t, dict):
            raise RuleBroken(f"Template {key}: give label, sessions, per_week, min_days_apart.", field="course_templates", code="template_format")
        f = f"course_templates.{key}"
        sessions = _int(t.get("sessions"), f + ".sessions", 1, 52, "Sessions")
        try:
            per_week = float(t.get("per_week"))
        except (TypeError, ValueError):
            raise RuleBroken("Sessions per week must be a number.", field=f + ".per_week", code="not_a_number") from None
        if not 0.25 <= per_week <= 5:
            raise RuleBroken("Sessions per week must be between 0.25 and 5.", field=f + ".per_week", code="out_of_range")
        gap = _int(t.get("min_days_apart", 1), f + ".min_days_apart", 1, 28, "Days apart")
        if gap > 7 / per_week + 1e-9 and per_week >= 1:
            raise RuleBroken("Days apart is more than the spacing per week allows.", field=f + ".min_days_apart", code="spacing")
        out[key] = {
            "label": str(t.get("label") or key).strip()[:100],
            "sessions": sessions,
            "per_week": int(per_week) if per_week == int(per_week) else per_week,
            "min_days_apart": gap,
            "weeks": _int(t.get("weeks") or max(1, round(sessions / per_week)), f + ".weeks", 1, 104, "Weeks"),
        }
    return out


async def update_session_type(session: AsyncSession, *, actor: Actor, session_type_id: int, data: dict[str, Any]) -> SessionType:
    """Edit a protocol's name, durations, active flag and course templates; booked sessions keep their holds."""
    st = await session.get(SessionType, session_type_id)
    if st is None or st.clinic_id != actor.clinic_id:
        raise NotFound("No such protocol.")
    changes: dict[str, Any] = {}
    if "name" in data:
        changes["name"] = _name(data["name"], "name", "Name")
    for key in MINUTE_FIELDS:
        if key in data and data[key] not in (None, ""):
            changes[key] = _int(data[key], key, 0, 600, key.replace("_", " ").capitalize())
    if "active" in data:
        changes["active"] = bool(data["active"])
    if st.kind == "esketamine" and changes.get("monitoring_minutes", st.monitoring_minutes) < 120:
        # fixed by the Spravato label and REMS: at least 2 hours of monitoring
        raise RuleBroken("Esketamine monitoring cannot be shorter than 120 minutes (Spravato REMS).", field="monitoring_minutes", code="rems_minimum")
    if "course_templates" in data:
        protocol = dict(st.protocol or {})
        protocol["course_templates"] = _clean_templates(data["course_templates"])
        changes["protocol"] = protocol
    total = sum(changes.get(k, getattr(st, k)) for k in MINUTE_FIELDS)
    if total <= 0:
        raise RuleBroken("A session must last at least one minute.", field="monitoring_minutes", code="out_of_range")
    # every rule reads the protocol through Protocol: the edited one must decode
    Protocol.checked(changes.get("protocol", st.protocol), {c: changes.get(c, getattr(st, c)) for c in COLUMNS})
    changed = {k: v for k, v in changes.items() if getattr(st, k) != v}
    for k, v in changed.items():
        setattr(st, k, v)
    if changed:
        session.add(st)
        await session.flush()
        record(session, actor=actor, action="session_type.update", entity="session_type", entity_id=st.id,
               changes={k: (v if k != "protocol" else {"course_templates": v["course_templates"]}) for k, v in changed.items()})
    return st


# ---- staff shifts -------------------------------------------------------------------------------


async def staff_for_shifts(session: AsyncSession, *, actor: Actor) -> list[StaffUser]:
    q = select(StaffUser).where(StaffUser.clinic_id == actor.clinic_id, StaffUser.active).order_by(StaffUser.full_name)
    return [u for u in (await session.exec(q)).all() if shift_roles(u)]


def shift_roles(user: StaffUser) -> list[str]:
    roles = [r for r in ("nurse", "prescriber") if r in (user.roles or [])]
    if user.is_therapist:
        roles.append("therapist")
    return roles


async def list_shifts(session: AsyncSession, *, actor: Actor, start: datetime, end: datetime) -> list[tuple[Shift, StaffUser]]:
    q = (
        select(Shift, StaffUser)
        .join(StaffUser, StaffUser.id == Shift.user_id)
        .where(Shift.clinic_id == actor.clinic_id, Shift.starts_at < end, Shift.ends_at > start, Shift.starts_at >= start - timedelta(days=1))
        .order_by(Shift.starts_at, Shift.role, StaffUser.full_name)
    )
    return [(s, u) for s, u in (await session.exec(q)).all()]


async def add_shift(session: AsyncSession, *, actor: Actor, user_id: int | None, role: str, starts_at: datetime | None, ends_at: datetime | None) -> Shift:
    """One shift for a nurse, prescriber or therapist; a person is never on two overlapping shifts."""
    user = await session.get(StaffUser, user_id) if user_id is not None else None
    if user is None or user.clinic_id != actor.clinic_id or not user.active:
        raise RuleBroken("Unknown staff member for this clinic.", field="user_id", code="unknown_staff")
    if role not in ("nurse", "prescriber", "therapist"):
        raise RuleBroken("Role must be nurse, prescriber or therapist.", field="role", code="not_allowed")
    if role not in shift_roles(user):
        raise RuleBroken(f"This staff member cannot work a {role} shift.", field="role", code="role_mismatch")
    if starts_at is None or ends_at is None:
        raise RuleBroken("Give the shift's start and end.", field="starts_at" if starts_at is None else "ends_at", code="required")
    if starts_at.tzinfo is None or ends_at.tzinfo is None:
        raise RuleBroken("Shift times need a UTC offset.", field="starts_at", code="timezone_required")
    if ends_at <= starts_at:
        raise RuleBroken("A shift must end after it starts.", field="ends_at", code="order")
    if ends_at - starts_at > MAX_SHIFT:
        raise RuleBroken("A shift lasts at most 16 hours.", field="ends_at", code="too_long")
    shift = Shift(clinic_id=actor.clinic_id, user_id=user.id, role=role, starts_at=starts_at, ends_at=ends_at)
    try:
        async with session.begin_nested():
            session.add(shift)
            await session.flush()
    except IntegrityError as exc:
        raise Conflict(conflict_message(exc)[0], field="starts_at", code="shift_overlap") from None
    record(session, actor=actor, action="shift.add", entity="shift", entity_id=shift.id,
           changes={"user_id": user.id, "role": role, "starts_at": starts_at, "ends_at": ends_at})
    return shift


async def add_shifts_for_days(
    session: AsyncSession, *, actor: Actor, user_id: int | None, role: str, first_day: date, last_day: date,
    start: time, end: time, weekdays: set[int] | None = None,
) -> list[Shift]:
    """The same local hours on each chosen weekday of a date range (skipping closed dates)."""
    clinic = await clinic_of(session, actor)
    if last_day < first_day:
        raise RuleBroken("The last day must be on or after the first.", field="last_day", code="range_order")
    if (last_day - first_day).days > 92:
        raise RuleBroken("Add at most 93 days of shifts at a time.", field="last_day", code="range_too_long")
    closed = {c.day for c in await closed_dates(session, actor=actor, since=first_day)}
    out = []
    for day in rules.local_days(first_day, last_day):
        if (weekdays is not None and day.weekday() not in weekdays) or day in closed:
            continue
        out.append(await add_shift(session, actor=actor, user_id=user_id, role=role,
                                   starts_at=rules.wall_to_utc(day, start, clinic.timezone), ends_at=rules.wall_to_utc(day, end, clinic.timezone)))
    if not out:
        raise RuleBroken("No open day in that range matches the chosen weekdays.", field="weekdays", code="empty")
    return out


async def remove_shift(session: AsyncSession, *, actor: Actor, shift_id: int) -> None:
    shift = await session.get(Shift, shift_id)
    if shift is None or shift.clinic_id != actor.clinic_id:
        raise NotFound("No such shift.")
    await session.delete(shift)
    await session.flush()
    record(session, actor=actor, action="shift.remove", entity="shift", entity_id=shift_id,
           changes={"user_id": shift.user_id, "role": shift.role, "starts_at": shift.starts_at, "ends_at": shift.ends_at})

