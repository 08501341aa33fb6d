"""What is booked and who is on shift over a span, the per-day booking lock, and the free slots for a protocol."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from msgspec import UNSET
from sqlalchemy import func, text
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import Actor
from clinic.clinics import clinic_of
from clinic.errors import RuleBroken
from clinic.scheduling import rules
from clinic.scheduling.models import LIVE_STATUSES, Appointment, Chair, SessionType, Shift
from clinic.scheduling.protocols import Protocol
from clinic.scheduling.rules import Booked, Candidate, ClinicCalendar, OnShift
from clinic.scheduling.schemas import CandidateOut
from clinic.scheduling.service.lookups import calendar_of, chair_of, chairs, patient_of, places_of, session_type_of
from clinic.timeutil import both_zones, utcnow

MAX_RANGE_DAYS = 62
# a hold never lasts a day: lets range queries stay on the (clinic_id, starts_at) index
MAX_HOLD = timedelta(days=1)


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


async def count_live_between(session: AsyncSession, clinic_id: int, start: datetime, end: datetime) -> int:
    q = select(func.count()).select_from(Appointment).where(
        Appointment.clinic_id == clinic_id, Appointment.starts_at >= start, Appointment.starts_at < end,
        col(Appointment.status).in_(LIVE_STATUSES))
    return int((await session.exec(q)).one())
