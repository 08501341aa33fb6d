"""Pure outcome rules (DOMAIN.md §2 scales, §5.6): answers checked and scored, which questionnaires are due before which
dosing session, when the patient is asked, and what the scores mean (response, remission, clinic rates with small cells
withheld). No I/O: services pass in what was recorded and the current time."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from clinic.errors import RuleBroken
from clinic.outcomes.instruments import (
    ASRS_HYPERACTIVE,
    ASRS_INATTENTIVE,
    ASRS_POSITIVE_SCREEN,
    INSTRUMENTS,
    ORDER,
    SAFETY_ITEM,
    Band,
    Instrument,
)

DOSING_KINDS = ("esketamine", "ketamine_iv", "kap")
KIND_LABELS = {"ketamine_iv": "IV ketamine", "esketamine": "Intranasal esketamine", "kap": "KAP"}
LIVE = ("booked", "arrived", "in_progress", "fulfilled")
# a staff member may enter a paper questionnaire up to this long after it was filled in
BACKDATE_LIMIT = timedelta(days=30)
CLOCK_SKEW = timedelta(seconds=60)
SMALL_CELL = 5  # fewer patients than this are shown as "< 5"
RISK_LEVELS = ("low", "moderate", "high")


# ---- answers and scores ---------------------------------------------------------------------------


def instrument_or_refuse(key: Any, *, field: str = "instrument") -> Instrument:
    found = INSTRUMENTS.get(key) if isinstance(key, str) else None
    if found is None:
        raise RuleBroken(f"instrument is one of {', '.join(ORDER)}.", field=field, code="unknown_instrument")
    return found


def _answer_value(raw: Any) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and raw.strip().lstrip("-").isdigit() and len(raw) < 6:
        return int(raw.strip())
    return None


def check_answers(instrument: Instrument, raw: Mapping[str, Any], *, partial: bool = False) -> dict[str, int]:
    """Answers keyed by item ("q1".. and "difficulty"), each one of that item's options; every scored item is required
    unless `partial` (progress saved on the way). Raises RuleBroken naming the first bad item."""
    out: dict[str, int] = {}
    for key, value in raw.items():
        item = instrument.item(key)
        if item is None:
            raise RuleBroken(f"{key!r} is not a question of the {instrument.short}.", field=key.strip() or "answers", code="unknown_item")
        if value is None or value == "":
            continue
        v = _answer_value(value)
        if v is None or v not in item.values:
            allowed = ", ".join(f"{o.value} ({o.label})" for o in item.options)
            raise RuleBroken(f"Question {item.number or key}: the answer must be one of {allowed}.", field=key, code="answer_not_an_option")
        out[key] = v
    if not partial:
        for item in instrument.scored_items:
            if item.key not in out:
                raise RuleBroken(f"Question {item.number} is not answered.", field=item.key, code="missing_answer")
    return {i.key: out[i.key] for i in instrument.items if i.key in out}  # in the form's order


def band_of(instrument: Instrument, total: int) -> Band | None:
    return next((b for b in instrument.bands if b.low <= total <= b.high), None)


def part_a_positive(answers: Mapping[str, int]) -> int:
    """ASRS Part A: how many of items 1-6 fall in the shaded boxes (1-3 at "Sometimes" or more, 4-6 at "Often" or more)."""
    asrs = INSTRUMENTS["asrs"]
    return sum(1 for item in asrs.items if item.shaded_from is not None and answers.get(item.key, -1) >= item.shaded_from)


@dataclass(frozen=True)
class Score:
    instrument: str
    total: int
    band: str | None = None
    safety_item: int | None = None  # PHQ-9 item 9
    part_a_positive: int | None = None  # ASRS
    inattentive: int | None = None  # ASRS items 1-4, 7-11
    hyperactive: int | None = None  # ASRS items 5-6, 12-18

    @property
    def needs_safety_review(self) -> bool:
        """DOMAIN §5.6, fixed: any answer above 0 on PHQ-9 item 9, whatever the total."""
        return bool(self.safety_item)

    @property
    def screen_positive(self) -> bool | None:
        return None if self.part_a_positive is None else self.part_a_positive >= ASRS_POSITIVE_SCREEN


def score(instrument_key: str, answers: Mapping[str, int]) -> Score:
    """Scores of a complete, checked answer set (check_answers first)."""
    inst = INSTRUMENTS[instrument_key]
    total = sum(answers[i.key] for i in inst.scored_items)
    band = band_of(inst, total)
    out = Score(instrument=inst.key, total=total, band=band.label if band else None)
    if inst.key == "phq9":
        return replace(out, safety_item=answers[SAFETY_ITEM])
    if inst.key == "asrs":
        return replace(out, part_a_positive=part_a_positive(answers), inattentive=sum(answers[f"q{n}"] for n in ASRS_INATTENTIVE),
                       hyperactive=sum(answers[f"q{n}"] for n in ASRS_HYPERACTIVE))
    return out


def check_completed_at(at: datetime, now: datetime) -> None:
    if at.tzinfo is None:
        raise RuleBroken("The time needs a UTC offset (e.g. 2026-03-02T10:15:00-05:00).", field="completed_at")
    if at > now + CLOCK_SKEW:
        raise RuleBroken("The questionnaire cannot have been completed in the future.", field="completed_at")
    if at < now - BACKDATE_LIMIT:
        raise RuleBroken("A questionnaire completed more than 30 days ago cannot be entered.", field="completed_at")


def check_reason(reason: str | None, *, field: str = "reason", what: str = "Say why") -> str:
    text = (reason or "").strip()
    if not text:
        raise RuleBroken(f"{what}.", field=field, code="required")
    if len(text) > 500:
        raise RuleBroken("The text is longer than 500 characters.", field=field, code="too_long")
    return text


def check_review(risk_level: Any, action_taken: Any, safety_plan: Any) -> tuple[str, str, bool]:
    """A prescriber's safety review: risk level, the action taken and whether a safety plan is in place."""
    if risk_level not in RISK_LEVELS:
        raise RuleBroken(f"risk_level is one of {', '.join(RISK_LEVELS)}.", field="risk_level", code="required")
    action = check_reason(action_taken, field="action_taken", what="Say what was done (e.g. called the patient, plan agreed)")
    if not isinstance(safety_plan, bool):
        raise RuleBroken("Say whether a safety plan is in place (yes or no).", field="safety_plan", code="required")
    return risk_level, action, safety_plan


# ---- which questionnaires a patient is asked -----------------------------------------------------------------


def instruments_for(diagnosis_codes: Iterable[str]) -> tuple[str, ...]:
    """PHQ-9 for everyone in a dosing course (it carries the safety item); GAD-7 with an anxiety diagnosis (ICD-10 F41.x);
    the ASRS with ADHD (F90.x)."""
    codes = [c.strip().upper() for c in diagnosis_codes or ()]
    out = ["phq9"]
    if any(c.startswith("F41") for c in codes):
        out.append("gad7")
    if any(c.startswith("F90") for c in codes):
        out.append("asrs")
    return tuple(out)


DIAGNOSIS_GROUPS = (("depression", "Depression (F32, F33)", ("F32", "F33")), ("adhd", "ADHD (F90)", ("F90",)),
                    ("anxiety", "Anxiety (F41)", ("F41",)))


def diagnosis_groups(codes: Iterable[str]) -> tuple[str, ...]:
    upper = [c.strip().upper() for c in codes or ()]
    return tuple(key for key, _, prefixes in DIAGNOSIS_GROUPS if any(c.startswith(prefixes) for c in upper))


@dataclass(frozen=True)
class OutcomeSchedule:
    """When the questionnaires are due: a setting per protocol (`protocol["outcomes"]`), defaults from DOMAIN §5.6."""

    induction_every: int = 2  # before every 2nd dosing session of an induction course (sessions 3, 5, 7 ...)
    end_of_course: bool = True  # before a course's last dosing session
    maintenance_days: int = 30  # maintenance courses and single sessions: when the last answers are older than this
    baseline_valid_days: int = 14  # answers older than this do not count for a visit
    maintenance_templates: tuple[str, ...] = ("weeks_5_8", "maintenance_weekly", "maintenance_biweekly")

    @classmethod
    def of(cls, protocol: Mapping[str, Any] | None) -> "OutcomeSchedule":
        raw = (protocol or {}).get("outcomes") or {}
        d = cls()
        try:
            return cls(
                induction_every=int(raw.get("induction_every", d.induction_every)),
                end_of_course=bool(raw.get("end_of_course", d.end_of_course)),
                maintenance_days=int(raw.get("maintenance_days", d.maintenance_days)),
                baseline_valid_days=int(raw.get("baseline_valid_days", d.baseline_valid_days)),
                maintenance_templates=tuple(str(t) for t in raw.get("maintenance_templates", d.maintenance_templates)),
            )
        except (TypeError, ValueError):
            return d

    def as_dict(self) -> dict[str, Any]:
        return {"induction_every": self.induction_every, "end_of_course": self.end_of_course, "maintenance_days": self.maintenance_days,
                "baseline_valid_days": self.baseline_valid_days, "maintenance_templates": list(self.maintenance_templates)}


def clean_schedule(data: Mapping[str, Any]) -> OutcomeSchedule:
    """An admin's edit of a protocol's schedule; RuleBroken names the field."""

    def whole(key: str, lo: int, hi: int) -> int:
        v = _answer_value(data.get(key))
        if v is None or not lo <= v <= hi:
            raise RuleBroken(f"{key.replace('_', ' ')} must be a whole number from {lo} to {hi}.", field=key)
        return v

    templates = data.get("maintenance_templates") or ()
    if isinstance(templates, str):
        templates = templates.split(",")
    if not isinstance(templates, (list, tuple)):
        raise RuleBroken("maintenance templates: a list of course template keys.", field="maintenance_templates")
    templates = tuple(t for t in (str(x).strip() for x in templates) if t)
    if any(len(t) > 40 for t in templates):
        raise RuleBroken("A template key is longer than 40 characters.", field="maintenance_templates")
    end = data.get("end_of_course")
    return OutcomeSchedule(
        # 0 turns the in-induction questionnaires off; baseline and end of course stay
        induction_every=whole("induction_every", 0, 12),
        end_of_course=end if isinstance(end, bool) else str(end).lower() in ("1", "true", "on", "yes"),
        maintenance_days=whole("maintenance_days", 7, 180),
        baseline_valid_days=whole("baseline_valid_days", 1, 60),
        maintenance_templates=templates,
    )


@dataclass(frozen=True)
class Visit:
    """A live dosing session of the patient."""

    id: int
    starts_at: datetime
    kind: str
    course_id: int | None = None
    template: str | None = None  # the course's template key
    dosing_started_at: datetime | None = None

    @property
    def at(self) -> datetime:
        return self.dosing_started_at or self.starts_at


@dataclass(frozen=True)
class Taken:
    """A completed questionnaire (the current version of it)."""

    instrument: str
    completed_at: datetime
    total: int = 0
    id: int | None = None
    part_a_positive: int | None = None


REASON_LABELS = {"baseline": "baseline before the course", "induction": "during induction", "end_of_course": "end of the course",
                 "monthly": "monthly"}


@dataclass(frozen=True)
class DueItem:
    instrument: str
    reason: str
    done_at: datetime | None = None

    @property
    def done(self) -> bool:
        return self.done_at is not None

    @property
    def label(self) -> str:
        return INSTRUMENTS[self.instrument].short

    @property
    def reason_label(self) -> str:
        return REASON_LABELS[self.reason]


@dataclass(frozen=True)
class Due:
    visit_id: int
    items: tuple[DueItem, ...] = ()
    baseline: bool = False  # the visit is a course's first dosing session: its answers are the course's baseline

    @property
    def open(self) -> tuple[DueItem, ...]:
        return tuple(i for i in self.items if not i.done)

    @property
    def baseline_missing(self) -> bool:
        return self.baseline and any(not i.done for i in self.items if i.reason == "baseline")

    @property
    def open_instruments(self) -> tuple[str, ...]:
        return tuple(i.instrument for i in self.open)


def _course_position(visit: Visit, visits: Sequence[Visit]) -> tuple[int, int]:
    course = sorted((v for v in visits if v.course_id == visit.course_id), key=lambda v: (v.starts_at, v.id))
    ids = [v.id for v in course]
    return ids.index(visit.id) + 1, len(course)


def due_for(visit: Visit, *, visits: Sequence[Visit], taken: Sequence[Taken], diagnosis_codes: Iterable[str],
            schedule: OutcomeSchedule) -> Due:
    """The questionnaires due before `visit` (DOMAIN §5.6) and whether each is done.

    A course's first dosing session asks for the baseline (every applicable instrument); an induction course then asks before
    every `induction_every`-th session (sessions 3, 5, 7 ... for 2) the instruments whose recall is two weeks, and before its
    last session for everything again. Maintenance courses and single sessions ask when the last answers are older than
    `maintenance_days`. Answers count for the visit when completed after the patient's previous dosing session (and not more
    than `baseline_valid_days` before the visit), and before this session's dosing started."""
    applicable = instruments_for(diagnosis_codes)
    wanted: dict[str, str] = {}
    baseline = False
    maintenance = visit.course_id is None or (visit.template or "") in schedule.maintenance_templates
    if visit.course_id is not None and not maintenance:
        n, count = _course_position(visit, visits)
        if n == 1:
            baseline = True
            wanted = {i: "baseline" for i in applicable}
        else:
            if schedule.induction_every and (n - 1) % schedule.induction_every == 0:
                wanted = {i: "induction" for i in applicable if INSTRUMENTS[i].repeat_in_induction}
            if schedule.end_of_course and n == count:
                wanted = {i: "end_of_course" for i in applicable}
    earlier = [v for v in visits if v.id != visit.id and (v.starts_at, v.id) < (visit.starts_at, visit.id)]
    lower = visit.starts_at - timedelta(days=schedule.baseline_valid_days)
    if earlier:
        lower = max(lower, max(v.at for v in earlier))
    upper = visit.dosing_started_at
    if maintenance:
        month_ago = visit.starts_at - timedelta(days=schedule.maintenance_days)
        for i in applicable:
            recent = any(t.instrument == i and month_ago <= t.completed_at <= lower for t in taken)
            if not recent:
                wanted[i] = "monthly"
    items = []
    for i in (k for k in ORDER if k in wanted):
        done = [t.completed_at for t in taken if t.instrument == i and lower < t.completed_at and (upper is None or t.completed_at <= upper)]
        items.append(DueItem(i, wanted[i], max(done) if done else None))
    return Due(visit.id, tuple(items), baseline)


# ---- when the patient is asked ---------------------------------------------------------------------------------------

NOTICE_HOUR = time(18, 0)
# no notice for a visit this close: there is no evening left to answer in
NOTICE_MIN_LEAD = timedelta(hours=2)


def notice_at(starts_at: datetime, tz: str) -> datetime:
    """18:00 on the day before the visit, in the patient's zone (the visit's date as the patient's calendar shows it);
    a wall time, so a daylight-saving change between the two days moves the instant, not the hour."""
    zone = ZoneInfo(tz)
    day_before: date = starts_at.astimezone(zone).date() - timedelta(days=1)
    return datetime.combine(day_before, NOTICE_HOUR, zone).astimezone(ZoneInfo("UTC"))


def notice_send_after(starts_at: datetime, tz: str, now: datetime) -> datetime | None:
    """When to send the notice for a visit (at once when 18:00 the day before has passed), or None when it is too late."""
    if starts_at - now < NOTICE_MIN_LEAD:
        return None
    return max(notice_at(starts_at, tz), now)


# ---- what the scores mean -------------------------------------------------------------------------------------------


def is_response(baseline: int, latest: int) -> bool:
    """A drop of at least half the baseline (integers, no rounding); a baseline of 0 has nothing to respond from."""
    return baseline > 0 and 2 * latest <= baseline


def is_remission(latest: int) -> bool:
    return latest < 5


@dataclass(frozen=True)
class Change:
    """One patient's course on one instrument and one protocol: the baseline, the latest answers after the first dose."""

    instrument: str
    baseline: Taken
    latest: Taken

    @property
    def change(self) -> int:
        return self.latest.total - self.baseline.total

    @property
    def response(self) -> bool | None:
        return is_response(self.baseline.total, self.latest.total) if INSTRUMENTS[self.instrument].response_and_remission else None

    @property
    def remission(self) -> bool | None:
        return is_remission(self.latest.total) if INSTRUMENTS[self.instrument].response_and_remission else None

    @property
    def part_a_change(self) -> int | None:
        if self.baseline.part_a_positive is None or self.latest.part_a_positive is None:
            return None
        return self.latest.part_a_positive - self.baseline.part_a_positive


def baseline_of(taken: Sequence[Taken], instrument: str, first_dose_at: datetime) -> Taken | None:
    """The latest answers at or before the first dose of the protocol."""
    before = [t for t in taken if t.instrument == instrument and t.completed_at <= first_dose_at]
    return max(before, key=lambda t: t.completed_at) if before else None


def change_of(taken: Sequence[Taken], instrument: str, first_dose_at: datetime) -> Change | None:
    base = baseline_of(taken, instrument, first_dose_at)
    after = [t for t in taken if t.instrument == instrument and t.completed_at > first_dose_at]
    if base is None or not after:
        return None
    return Change(instrument, base, max(after, key=lambda t: t.completed_at))


def week_of_course(at: datetime, first_dose_at: datetime) -> int:
    """Week 1 is the first 7 days from the first dose; answers at or before it are week 0 (the baseline)."""
    if at <= first_dose_at:
        return 0
    return (at - first_dose_at) // timedelta(days=7) + 1


@dataclass(frozen=True)
class Track:
    """A patient on one dosing protocol: from the first dose of that protocol on."""

    patient_id: int
    kind: str
    first_dose_at: datetime
    groups: tuple[str, ...] = ()
    taken: tuple[Taken, ...] = ()


@dataclass
class Cell:
    """Response and remission (PHQ-9, GAD-7) or change (ASRS) for one group of patients; counts under 5 are withheld."""

    patients: int | None
    responders: int | None = None
    remitters: int | None = None
    response_rate: float | None = None
    remission_rate: float | None = None
    mean_change: float | None = None
    mean_part_a_change: float | None = None
    withheld: list[str] = field(default_factory=list)  # names of the counts (and their rates) below 5, shown as "< 5"


def _mean(values: Sequence[int]) -> float:
    return round(sum(values) / len(values), 1)


def cell_of(changes: Sequence[Change], instrument: str) -> Cell:
    n = len(changes)
    if n < SMALL_CELL:
        withheld = ["patients", "responders", "remitters"] if INSTRUMENTS[instrument].response_and_remission else ["patients"]
        return Cell(patients=None, withheld=withheld)
    out = Cell(patients=n, mean_change=_mean([c.change for c in changes]))
    if INSTRUMENTS[instrument].response_and_remission:
        for name, count in (("responders", sum(1 for c in changes if c.response)), ("remitters", sum(1 for c in changes if c.remission))):
            rate_name = "response_rate" if name == "responders" else "remission_rate"
            if count < SMALL_CELL:
                out.withheld.append(name)
            else:
                setattr(out, name, count)
                setattr(out, rate_name, round(count / n, 3))
    else:
        parts = [c.part_a_change for c in changes if c.part_a_change is not None]
        out.mean_part_a_change = _mean(parts) if parts else None
    return out


@dataclass(frozen=True)
class WeekPoint:
    week: int
    mean_change: float | None  # None: fewer than 5 patients answered that week
    patients: int | None


def weekly_change(tracks: Sequence[Track], instrument: str) -> list[WeekPoint]:
    """Mean change from baseline by week of course (each patient's latest answers of the week; the baseline is week 0, a
    change of 0); weeks with fewer than 5 patients are withheld."""
    by_week: dict[int, list[int]] = {}
    for t in tracks:
        base = baseline_of(t.taken, instrument, t.first_dose_at)
        if base is None:
            continue
        latest: dict[int, Taken] = {}
        for x in t.taken:
            if x.instrument == instrument and x.completed_at > t.first_dose_at:
                w = week_of_course(x.completed_at, t.first_dose_at)
                if w not in latest or x.completed_at > latest[w].completed_at:
                    latest[w] = x
        for w, x in latest.items():
            by_week.setdefault(w, []).append(x.total - base.total)
    out = []
    for w in sorted(by_week):
        values = by_week[w]
        ok = len(values) >= SMALL_CELL
        out.append(WeekPoint(w, _mean(values) if ok else None, len(values) if ok else None))
    return out if any(p.mean_change is not None for p in out) else []


@dataclass
class ClinicOutcomes:
    by_protocol: dict[str, dict[str, Cell]]  # kind -> instrument -> cell
    by_group: dict[str, dict[str, Cell]]  # diagnosis group -> instrument -> cell
    weekly: dict[str, dict[str, list[WeekPoint]]]  # instrument -> kind -> points


def clinic_outcomes(tracks: Sequence[Track]) -> ClinicOutcomes:
    """Patients with a baseline and a follow-up, per protocol (IV vs intranasal vs KAP) and per diagnosis group."""
    by_protocol: dict[str, dict[str, Cell]] = {}
    by_group: dict[str, dict[str, Cell]] = {}
    weekly: dict[str, dict[str, list[WeekPoint]]] = {i: {} for i in ORDER}
    for kind in DOSING_KINDS:
        mine = [t for t in tracks if t.kind == kind]
        by_protocol[kind] = {i: cell_of([c for t in mine if (c := change_of(t.taken, i, t.first_dose_at))], i) for i in ORDER}
        for i in ORDER:
            points = weekly_change(mine, i)
            if points:
                weekly[i][kind] = points
    for key, _, _ in DIAGNOSIS_GROUPS:
        # a patient on two protocols counts once per group: from the first dose of their first protocol
        first: dict[int, Track] = {}
        for t in sorted(tracks, key=lambda t: t.first_dose_at):
            if key in t.groups:
                first.setdefault(t.patient_id, t)
        by_group[key] = {i: cell_of([c for t in first.values() if (c := change_of(t.taken, i, t.first_dose_at))], i) for i in ORDER}
    return ClinicOutcomes(by_protocol, by_group, weekly)
