"""Scheduling rules as pure functions: opening hours, the grid, chair holds, staffing, availability and course dates (no I/O)."""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from clinic.errors import RuleBroken
from clinic.scheduling.protocols import CourseTemplate, Protocol, Windows

UTC = timezone.utc
DEFAULT_GRID_MINUTES = 15
DEFAULT_NURSE_RATIO = 3
DEFAULT_LATE_CANCEL_HOURS = 24
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


# ---- the clinic's calendar ------------------------------------------------------------------


def parse_hhmm(value: str) -> time:
    hh, mm = str(value).strip().split(":")
    h, m = int(hh), int(mm)
    if h == 24 and m == 0:
        return time(23, 59, 59, 999999)
    return time(h, m)


def parse_opening_hours(raw: dict[str, Any] | None) -> dict[int, tuple[tuple[time, time], ...]]:
    """{"0": [["08:00","18:00"]], ...} (Monday=0, local wall times) -> {0: ((08:00, 18:00),), ...}."""
    out: dict[int, tuple[tuple[time, time], ...]] = {}
    for d in range(7):
        spans = []
        for pair in (raw or {}).get(str(d), []) or []:
            start, end = parse_hhmm(pair[0]), parse_hhmm(pair[1])
            if end > start:
                spans.append((start, end))
        out[d] = tuple(sorted(spans))
    return out


def validate_opening_hours(raw: dict[str, Any]) -> RuleBroken | None:
    """Opening hours must be HH:MM pairs, each closing after it opens, not overlapping within a day."""
    for d in range(7):
        spans = []
        for pair in raw.get(str(d), []) or []:
            try:
                start, end = parse_hhmm(pair[0]), parse_hhmm(pair[1])
            except (ValueError, IndexError, TypeError):
                return RuleBroken(f"{WEEKDAYS[d]}: times must look like 08:00.", field="opening_hours", code="hours_format")
            if end <= start:
                return RuleBroken(f"{WEEKDAYS[d]}: closing time must be after opening time.", field="opening_hours", code="hours_order")
            spans.append((start, end))
        spans.sort()
        for (_, e1), (s2, _) in zip(spans, spans[1:]):
            if s2 < e1:
                return RuleBroken(f"{WEEKDAYS[d]}: opening periods overlap.", field="opening_hours", code="hours_overlap")
    return None


@dataclass(frozen=True)
class ClinicCalendar:
    """What the rules need to know about a clinic: its zone, hours, closed dates and settings."""

    tz: str
    hours: dict[int, tuple[tuple[time, time], ...]]
    closed: frozenset[date] = frozenset()
    grid_minutes: int = DEFAULT_GRID_MINUTES
    nurse_ratio: int = DEFAULT_NURSE_RATIO
    late_cancel_hours: int = DEFAULT_LATE_CANCEL_HOURS

    @classmethod
    def build(cls, *, tz: str, opening_hours: dict | None, closed: Iterable[date] = (), settings: dict | None = None) -> "ClinicCalendar":
        s = settings or {}
        return cls(
            tz=tz,
            hours=parse_opening_hours(opening_hours),
            closed=frozenset(closed),
            grid_minutes=int(s.get("grid_minutes") or DEFAULT_GRID_MINUTES),
            nurse_ratio=int(s.get("nurse_ratio") or DEFAULT_NURSE_RATIO),
            late_cancel_hours=int(s.get("late_cancel_hours") if s.get("late_cancel_hours") is not None else DEFAULT_LATE_CANCEL_HOURS),
        )

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def local_day(self, instant: datetime) -> date:
        return instant.astimezone(self.zone).date()

    def is_open_day(self, day: date) -> bool:
        return day not in self.closed and bool(self.hours.get(day.weekday()))

    def open_spans(self, day: date) -> list[tuple[datetime, datetime]]:
        """The day's opening periods as aware UTC instants (empty on a closed date)."""
        if day in self.closed:
            return []
        return [(wall_to_utc(day, s, self.tz), wall_to_utc(day, e, self.tz)) for s, e in self.hours.get(day.weekday(), ())]


def wall_to_utc(day: date, at: time, tz: str) -> datetime:
    """A clinic-local wall time on a day as a UTC instant: 10:00 stays 10:00 across DST."""
    return datetime.combine(day, at, tzinfo=ZoneInfo(tz)).astimezone(UTC)


def wall_time_exists(day: date, at: time, tz: str) -> bool:
    """False for wall times skipped by a spring-forward change (e.g. 02:30 on that night)."""
    local = datetime.combine(day, at, tzinfo=ZoneInfo(tz))
    back = local.astimezone(UTC).astimezone(ZoneInfo(tz))
    return back.replace(tzinfo=None) == local.replace(tzinfo=None)


def local_day_bounds(day: date, tz: str) -> tuple[datetime, datetime]:
    """[start, end) of a clinic-local calendar day in UTC (23 or 25 hours long on DST days)."""
    return wall_to_utc(day, time(0), tz), wall_to_utc(day + timedelta(days=1), time(0), tz)


def local_days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def on_grid(instant: datetime, cal: ClinicCalendar) -> bool:
    local = instant.astimezone(cal.zone)
    return local.second == 0 and local.microsecond == 0 and (local.hour * 60 + local.minute) % cal.grid_minutes == 0


# ---- a protocol's dose and slot -----------------------------------------------------------------


def check_dose(timing: Protocol, dose_mg: int | None) -> RuleBroken | None:
    if timing.doses_mg:
        allowed = ", ".join(str(d) for d in timing.doses_mg)
        if dose_mg is None:
            return RuleBroken(f"Enter the planned dose ({allowed} mg).", field="planned_dose_mg", code="dose_required")
        if dose_mg not in timing.doses_mg:
            return RuleBroken(f"The planned dose must be one of {allowed} mg.", field="planned_dose_mg", code="dose_not_allowed")
    elif dose_mg is not None:
        return RuleBroken("A planned dose in mg applies to esketamine sessions only.", field="planned_dose_mg", code="dose_not_applicable")
    return None


def check_slot(start: datetime, timing: Protocol, cal: ClinicCalendar, *, now: datetime, dose_mg: int | None = None) -> RuleBroken | None:
    """The calendar rules for one start: aware, in the future, on the grid, on an open day, inside opening hours."""
    if start.tzinfo is None:
        return RuleBroken("The start time needs a UTC offset.", field="starts_at", code="timezone_required")
    if start <= now:
        return RuleBroken("The start time is in the past.", field="starts_at", code="in_past")
    if not on_grid(start, cal):
        return RuleBroken(f"Sessions start on the {cal.grid_minutes}-minute grid (e.g. 10:00, 10:{cal.grid_minutes:02d}).", field="starts_at", code="off_grid")
    day = cal.local_day(start)
    if day in cal.closed:
        return RuleBroken(f"The clinic is closed on {day.isoformat()}.", field="starts_at", code="closed_date")
    spans = cal.open_spans(day)
    if not spans:
        return RuleBroken(f"The clinic is not open on {WEEKDAYS[day.weekday()]}s.", field="starts_at", code="closed_day")
    w = timing.windows(start, dose_mg)
    if not any(s <= w.start and w.care_end <= e for s, e in spans):
        return RuleBroken("The session must start and end within the clinic's opening hours.", field="starts_at", code="outside_opening_hours")
    return None


# ---- what is already booked and who is on shift -----------------------------------------------


class Booked(NamedTuple):
    """A live appointment as the rules see it."""

    chair_id: int
    patient_id: int
    start: datetime
    end: datetime
    care_end: datetime
    monitored: bool = True
    needs_therapist: bool = False
    id: int | None = None


class OnShift(NamedTuple):
    role: str  # nurse | prescriber | therapist
    start: datetime
    end: datetime
    user_id: int | None = None


def overlaps(a_start: datetime, a_end: datetime, b_start: datetime, b_end: datetime) -> bool:
    return a_start < b_end and b_start < a_end


def covered(start: datetime, end: datetime, shifts: Iterable[OnShift]) -> bool:
    """True when the union of the shifts covers [start, end) without a gap."""
    t = start
    for s in sorted(shifts, key=lambda x: x.start):
        if s.start > t:
            break
        if s.end > t:
            t = s.end
        if t >= end:
            return True
    return t >= end


def merged(shifts: Iterable[OnShift]) -> list[tuple[datetime, datetime]]:
    """Shifts as sorted, disjoint (start, end) spans; touching or overlapping shifts join."""
    spans: list[tuple[datetime, datetime]] = []
    for s in sorted(shifts, key=lambda x: x.start):
        if spans and s.start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], s.end))
        else:
            spans.append((s.start, s.end))
    return spans


_LATEST = datetime.max.replace(tzinfo=UTC)


def covered_by(start: datetime, end: datetime, spans: Sequence[tuple[datetime, datetime]]) -> bool:
    """covered() over spans from merged(): one bisect instead of a walk."""
    i = bisect_right(spans, (start, _LATEST)) - 1
    return i >= 0 and spans[i][0] <= start and spans[i][1] >= end


class StepFunction:
    """Piecewise-constant value over time: spare capacity = staff x ratio - load, per segment."""

    def __init__(self, changes: dict[datetime, int]) -> None:
        self.points: list[datetime] = sorted(changes)
        self.values: list[int] = []
        running = 0
        for p in self.points:
            running += changes[p]
            self.values.append(running)

    def minimum(self, start: datetime, end: datetime) -> int:
        """Least value over [start, end) (0 before the first change)."""
        if not self.points:
            return 0
        i = bisect_right(self.points, start) - 1
        lowest = self.values[i] if i >= 0 else 0
        j = bisect_left(self.points, end)
        for k in range(i + 1, j):
            lowest = min(lowest, self.values[k])
        return lowest


def spare_capacity(*, capacity_per_person: int, people: Iterable[OnShift], load: Iterable[tuple[datetime, datetime]]) -> StepFunction:
    changes: dict[datetime, int] = {}
    for p in people:
        changes[p.start] = changes.get(p.start, 0) + capacity_per_person
        changes[p.end] = changes.get(p.end, 0) - capacity_per_person
    for s, e in load:
        changes[s] = changes.get(s, 0) - 1
        changes[e] = changes.get(e, 0) + 1
    return StepFunction(changes)


@dataclass
class Staffing:
    """The staffing rules for one protocol, precomputed over the booked sessions and shifts they concern."""

    timing: Protocol
    nurse_ratio: int
    booked: Sequence[Booked]
    shifts: Sequence[OnShift]
    _nurse: StepFunction | None = field(default=None, init=False)
    _therapist: StepFunction | None = field(default=None, init=False)
    _prescribers: list[tuple[datetime, datetime]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        t = self.timing
        if t.monitored:
            self._nurse = spare_capacity(
                capacity_per_person=self.nurse_ratio,
                people=[s for s in self.shifts if s.role == "nurse"],
                load=[(b.start, b.care_end) for b in self.booked if b.monitored],
            )
        if t.needs_therapist:
            # a therapist is with one patient for the whole session
            self._therapist = spare_capacity(
                capacity_per_person=1,
                people=[s for s in self.shifts if s.role == "therapist"],
                load=[(b.start, b.care_end) for b in self.booked if b.needs_therapist],
            )
        if t.needs_prescriber:
            self._prescribers = merged(s for s in self.shifts if s.role == "prescriber")

    def problem(self, w: Windows) -> RuleBroken | None:
        if self._nurse is not None and self._nurse.minimum(w.start, w.care_end) < 1:
            return RuleBroken(f"No nurse has room for another monitored patient then (at most {self.nurse_ratio} per nurse on shift).", field="starts_at", code="nurse_capacity")
        if self.timing.needs_prescriber and not covered_by(w.clinical_start, w.care_end, self._prescribers):
            return RuleBroken("No prescriber is on shift for the whole dosing and monitoring time.", field="starts_at", code="no_prescriber")
        if self._therapist is not None and self._therapist.minimum(w.start, w.care_end) < 1:
            return RuleBroken("No therapist is free on shift for the whole session.", field="starts_at", code="no_therapist")
        return None


# ---- availability ------------------------------------------------------------------------------


class Candidate(NamedTuple):
    start: datetime
    end: datetime
    chair_id: int


@dataclass(frozen=True)
class Place:
    """A chair or a room that sessions can be booked in."""

    id: int
    kind: str = "chair"  # chair | room
    sort_order: int = 0


def places_for(timing: Protocol, places: Iterable[Place]) -> list[Place]:
    kind = "chair" if timing.needs_chair else "room"
    return sorted((p for p in places if p.kind == kind), key=lambda p: (p.sort_order, p.id))


def grid_starts(day: date, cal: ClinicCalendar, timing: Protocol, dose_mg: int | None = None) -> list[datetime]:
    """Every start on the grid for which the patient's stay fits inside one opening period."""
    out: list[datetime] = []
    if day in cal.closed:
        return out
    care = timedelta(minutes=timing.hold_minutes(dose_mg) - timing.turnover_minutes)
    step = cal.grid_minutes
    for open_at, close_at in cal.hours.get(day.weekday(), ()):
        open_minute = open_at.hour * 60 + open_at.minute
        minute = open_minute + (-open_minute) % step
        open_utc, close_utc = wall_to_utc(day, open_at, cal.tz), wall_to_utc(day, close_at, cal.tz)
        if open_at.second == 0 and close_utc - open_utc == datetime.combine(day, close_at) - datetime.combine(day, open_at):
            # no clock change inside the opening period: the grid is plain minutes after opening
            t = open_utc + timedelta(minutes=minute - open_minute)
            while t + care <= close_utc:
                out.append(t)
                t += timedelta(minutes=step)
            continue
        while minute < 24 * 60:
            at = time(minute // 60, minute % 60)
            if wall_time_exists(day, at, cal.tz):
                start = wall_to_utc(day, at, cal.tz)
                if start + care > close_utc:
                    break
                out.append(start)
            minute += step
    return out


class _ChairHolds:
    """A chair's live holds, sorted; they never overlap each other, so ends are sorted too."""

    def __init__(self, holds: Iterable[tuple[datetime, datetime]]) -> None:
        pairs = sorted(holds)
        self.starts = [s for s, _ in pairs]
        self.ends = [e for _, e in pairs]

    def free(self, start: datetime, end: datetime) -> bool:
        i = bisect_right(self.ends, start)  # first hold ending after start
        return i >= len(self.starts) or self.starts[i] >= end


def availability(
    *,
    timing: Protocol,
    cal: ClinicCalendar,
    days: Iterable[date],
    places: Iterable[Place],
    booked: Sequence[Booked],
    shifts: Sequence[OnShift],
    now: datetime,
    dose_mg: int | None = None,
    patient_id: int | None = None,
    chair_id: int | None = None,
    ignore_id: int | None = None,
) -> list[Candidate]:
    """(start, end, chair) candidates on the grid that satisfy every scheduling rule, by start then chair order.

    `booked` are the live appointments around the days asked for; `ignore_id` leaves one out
    (the appointment being moved).
    """
    booked = [b for b in booked if b.id is None or b.id != ignore_id]
    usable = places_for(timing, places)
    if chair_id is not None:
        usable = [p for p in usable if p.id == chair_id]
    if not usable:
        return []
    staffing = Staffing(timing=timing, nurse_ratio=cal.nurse_ratio, booked=booked, shifts=shifts)
    holds = {p.id: _ChairHolds((b.start, b.end) for b in booked if b.chair_id == p.id) for p in usable}
    own = _ChairHolds((b.start, b.end) for b in booked if patient_id is not None and b.patient_id == patient_id) if patient_id is not None else None
    hold = timedelta(minutes=timing.hold_minutes(dose_mg))
    care = hold - timedelta(minutes=timing.turnover_minutes)
    prep = timedelta(minutes=timing.prep_minutes)
    # starts the chair-independent rules allow (time, the patient's own sessions, staffing), ascending
    starts: list[datetime] = []
    for day in days:
        for start in grid_starts(day, cal, timing, dose_mg):
            if start <= now:
                continue
            end = start + hold
            if own is not None and not own.free(start, end):
                continue
            if staffing.problem(Windows(start, end, start + care, start + prep)) is not None:
                continue
            starts.append(start)
    starts.sort()
    found: list[tuple[datetime, int, int]] = []
    for rank, p in enumerate(usable):
        # one walk over the chair's holds in step with the ascending starts
        h_starts, h_ends = holds[p.id].starts, holds[p.id].ends
        i, n = 0, len(h_starts)
        for start in starts:
            while i < n and h_ends[i] <= start:
                i += 1
            if i == n or h_starts[i] >= start + hold:
                found.append((start, rank, p.id))
    found.sort()
    return [Candidate(start, start + hold, pid) for start, _, pid in found]


def page(candidates: Sequence[Candidate], *, after: datetime | None, limit: int) -> tuple[list[Candidate], datetime | None]:
    """The candidates (in availability's order) starting after `after`, at most `limit` of them in whole start times
    (one start with more free chairs than `limit` is a page of its own); and the page's last start when more follow."""
    starts = [c.start for c in candidates]
    first = bisect_right(starts, after) if after else 0
    rest, starts = candidates[first:], starts[first:]
    if len(rest) <= limit:
        return list(rest), None
    cut = bisect_left(starts, starts[limit]) or bisect_right(starts, starts[limit])
    if cut == len(rest):
        return list(rest), None
    return list(rest[:cut]), starts[cut - 1]


def nearest(candidates: Iterable[Candidate], wanted: datetime, *, chair_id: int | None = None, limit: int = 5,
            distinct_starts: bool = False) -> list[Candidate]:
    """The free candidates closest in time to the wanted start (the same chair first on a tie);
    with `distinct_starts`, one chair per start so the choices spread over more times."""
    ranked = sorted(candidates, key=lambda c: (abs((c.start - wanted).total_seconds()), c.chair_id != chair_id, c.start, c.chair_id))
    if distinct_starts:
        seen: set[datetime] = set()
        ranked = [c for c in ranked if not (c.start in seen or seen.add(c.start))]
    return ranked[:limit]


def booking_problem(
    *,
    start: datetime,
    chair_id: int,
    patient_id: int,
    timing: Protocol,
    cal: ClinicCalendar,
    booked: Sequence[Booked],
    shifts: Sequence[OnShift],
    dose_mg: int | None = None,
    ignore_id: int | None = None,
) -> RuleBroken | None:
    """Chair, patient and staffing rules for one slot (the calendar rules are check_slot)."""
    w = timing.windows(start, dose_mg)
    others = [b for b in booked if b.id is None or b.id != ignore_id]
    if any(b.chair_id == chair_id and overlaps(b.start, b.end, w.start, w.end) for b in others):
        return RuleBroken("That chair is already booked then.", field="chair_id", code="chair_taken")
    if any(b.patient_id == patient_id and overlaps(b.start, b.end, w.start, w.end) for b in others):
        return RuleBroken("The patient already has a session booked then.", field="patient_id", code="patient_busy")
    return Staffing(timing=timing, nurse_ratio=cal.nurse_ratio, booked=others, shifts=shifts).problem(w)


def is_late_cancel(starts_at: datetime, now: datetime, late_cancel_hours: int) -> bool:
    """A cancellation is "late" when made less than the clinic's notice period before the start."""
    return starts_at - now < timedelta(hours=late_cancel_hours)


# ---- courses -----------------------------------------------------------------------------------


def template_offsets(template: CourseTemplate) -> list[int]:
    """Ideal day offsets from the first session: spread `per_week` sessions evenly over each week,
    e.g. twice weekly -> 0, 3, 7, 10, ... (Mon/Thu); three times -> 0, 2, 4, 7, ... (Mon/Wed/Fri)."""
    gap = template.min_days_apart
    spacing = 7.0 / template.per_week
    offsets: list[int] = []
    for i in range(template.sessions):
        o = math.floor(i * spacing + 1e-9)
        if offsets and o - offsets[-1] < gap:
            o = offsets[-1] + gap
        offsets.append(o)
    return offsets


def course_days(template: CourseTemplate, first_day: date, is_open: Callable[[date], bool]) -> list[date]:
    """Dates for a course from its template, starting on `first_day`. A date the clinic is closed moves to the
    nearest open day (up to 3 days either way) that keeps `min_days_apart` from the session before; later
    sessions then keep their spacing from it. A date with no open day near it stays, to be reported."""
    gap = template.min_days_apart
    days: list[date] = []
    for want in (first_day + timedelta(days=o) for o in template_offsets(template)):
        earliest = days[-1] + timedelta(days=gap) if days else first_day
        want = max(want, earliest)
        chosen = want
        for shift in (0, 1, -1, 2, -2, 3, -3):
            d = want + timedelta(days=shift)
            if d >= earliest and is_open(d):
                chosen = d
                break
        days.append(chosen)
    return days


def course_span_ok(days: Sequence[date], template: CourseTemplate) -> bool:
    return all((b - a).days >= template.min_days_apart for a, b in zip(days, days[1:]))
