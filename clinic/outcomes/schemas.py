"""The outcome domain's JSON shapes under /api/v1 (msgspec Structs): what a client sends, what it gets back, and the error answers
each operation documents."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from litestar.openapi.datastructures import ResponseSpec
from msgspec import Struct

from clinic.http import ErrorBody
from clinic.monitoring.rules import Blocker
from clinic.outcomes import rules
from clinic.outcomes.instruments import INSTRUMENTS
from clinic.outcomes.models import OutcomeMeasure, SafetyReview
from clinic.timeutil import Instant, both_zones

# ---- bodies ----------------------------------------------------------------------------------------------------------


class MeasureIn(Struct, forbid_unknown_fields=True):
    """Answers entered by staff on the patient's behalf. `instrument`: phq9, gad7 or asrs; `answers` maps "q1".. (and the
    optional "difficulty") to the chosen option's value, a whole number (PHQ-9 and GAD-7 0-3, ASRS 0-4). An answer outside
    an item's options or a missing item is a 422 whose `field` names the item."""

    client_id: UUID
    instrument: str
    answers: dict[str, Any]
    appointment_id: int | None = None
    completed_at: datetime | None = None


class CorrectionIn(Struct, forbid_unknown_fields=True):
    """Only the answers that change; or `entered_in_error` to withdraw the answers."""

    client_id: UUID
    reason: str
    answers: dict[str, Any] = {}
    entered_in_error: bool = False


class ReviewIn(Struct, forbid_unknown_fields=True):
    risk_level: str  # low | moderate | high
    action_taken: str
    safety_plan: bool


class WaiverIn(Struct, forbid_unknown_fields=True):
    reason: str


class ScheduleIn(Struct, forbid_unknown_fields=True):
    induction_every: int
    end_of_course: bool
    maintenance_days: int
    baseline_valid_days: int
    maintenance_templates: list[str]


# ---- answers ---------------------------------------------------------------------------------------------------------


def errors(**meanings: str) -> dict[int, ResponseSpec]:
    """This operation's own words for some error answers (the shared ErrorBody shape): errors(e404="...", e422="...")."""
    return {int(k[1:]): ResponseSpec(ErrorBody, description=v, generate_examples=False) for k, v in meanings.items()}


class ScoreOut(Struct):
    total: int
    band: str | None
    safety_item: int | None  # PHQ-9 item 9; above 0 opens a safety review
    part_a_positive: int | None  # ASRS: Part A answers in the shaded boxes (4 or more: a positive screen)
    screen_positive: bool | None
    inattentive: int | None  # ASRS items 1-4, 7-11
    hyperactive: int | None  # ASRS items 5-6, 12-18


def score_out(s: rules.Score) -> ScoreOut:
    return ScoreOut(s.total, s.band, s.safety_item, s.part_a_positive, s.screen_positive, s.inattentive, s.hyperactive)


class MeasureOut(Struct):
    id: int
    patient_id: int
    appointment_id: int | None
    instrument: str
    version: str
    answers: dict[str, int]
    score: ScoreOut
    completed_at: Instant
    completed_by: str  # patient | staff
    completed_by_user_id: int | None
    via: str  # link | kiosk | staff
    recorded_by: int | None
    recorded_at: Instant
    supersedes_id: int | None
    correction_reason: str | None
    entered_in_error: bool


def measure_out(m: OutcomeMeasure, tz: str) -> MeasureOut:
    return MeasureOut(m.id, m.patient_id, m.appointment_id, m.instrument, m.version, m.answers, score_out(rules.score(m.instrument, m.answers)),  # type: ignore[arg-type]
                      both_zones(m.completed_at, tz), m.completed_by, m.completed_by_user_id, m.via, m.recorded_by, both_zones(m.recorded_at, tz),  # type: ignore[arg-type]
                      m.supersedes_id, m.correction_reason, m.entered_in_error)


class ReviewOut(Struct):
    id: int
    patient_id: int
    measure_id: int
    raised_at: Instant
    open: bool
    reviewed_by: int | None
    reviewed_at: Instant | None
    risk_level: str | None
    action_taken: str | None
    safety_plan: bool | None


def review_out(r: SafetyReview, tz: str) -> ReviewOut:
    return ReviewOut(r.id, r.patient_id, r.measure_id, both_zones(r.raised_at, tz), r.reviewed_at is None, r.reviewed_by,  # type: ignore[arg-type]
                     both_zones(r.reviewed_at, tz), r.risk_level, r.action_taken, r.safety_plan)


class MeasureRecorded(Struct):
    measure: MeasureOut
    created: bool  # false: this client_id was seen before; the first result is returned
    safety_review: ReviewOut | None


class DueOut(Struct):
    instrument: str
    label: str
    reason: str  # baseline | induction | end_of_course | monthly
    done: bool
    done_at: Instant | None


class BlockerOut(Struct):
    code: str
    message: str


class VisitOut(Struct):
    """A visit's questionnaires: no answers, no scores (the front desk reads this; a safety review only for clinical staff)."""

    appointment_id: int
    dosing: bool
    baseline: bool
    due: list[DueOut]
    baseline_waived: bool
    open_safety_reviews: list[int]
    blockers: list[BlockerOut]


def visit_out(v, tz: str, *, clinical: bool) -> VisitOut:
    """`clinical`: the reader may see a safety review (the front desk sees only what is due and the baseline's block)."""
    due = v.due.items if v.due else ()
    return VisitOut(v.appointment_id, v.due is not None, bool(v.due and v.due.baseline),
                    [DueOut(i.instrument, i.label, i.reason, i.done, both_zones(i.done_at, tz)) for i in due], v.waiver is not None,
                    [r.id for r in v.open_reviews] if clinical else [],
                    [blocker_out(b) for b in v.blockers() if clinical or b.code != "safety_review"])


def blocker_out(b: Blocker) -> BlockerOut:
    return BlockerOut(b.code, b.message)


class PointOut(Struct):
    measure_id: int
    completed_at: Instant
    total: int
    band: str | None
    change_from_baseline: int | None


class TrendOut(Struct):
    instrument: str
    label: str
    baseline: PointOut | None
    latest: PointOut | None
    change: int | None
    response: bool | None  # PHQ-9, GAD-7: a drop of at least half the baseline
    remission: bool | None  # PHQ-9, GAD-7: latest total under 5
    part_a_change: int | None  # ASRS: change in Part A answers in the shaded boxes
    points: list[PointOut]


class PatientOutcomesOut(Struct):
    patient_id: int
    protocol: str | None  # the protocol whose first dose marks the baseline
    first_dose: dict[str, Instant]  # protocol -> first dose given under it
    trends: list[TrendOut]
    safety_reviews: list[ReviewOut]


def trend_out(t, tz: str) -> TrendOut:
    base = t.baseline.total if t.baseline else None
    points = [PointOut(m.id, both_zones(m.completed_at, tz), m.total, rules.score(m.instrument, m.answers).band,  # type: ignore[arg-type]
                       m.total - base if base is not None else None) for m in t.measures]
    by_id = {p.measure_id: p for p in points}
    c = t.change
    return TrendOut(t.instrument, INSTRUMENTS[t.instrument].short, by_id.get(t.baseline.id) if t.baseline else None,
                    points[-1] if points else None, c.change if c else None, c.response if c else None, c.remission if c else None,
                    c.part_a_change if c else None, points)


class CellOut(Struct):
    """One group on one instrument. A count under 5 is null and named in `withheld` (the page shows "< 5"); its rate too."""

    patients: int | None
    responders: int | None
    remitters: int | None
    response_rate: float | None
    remission_rate: float | None
    mean_change: float | None
    mean_part_a_change: float | None
    withheld: list[str]


class GroupOut(Struct):
    key: str
    label: str
    instruments: dict[str, CellOut]


class WeekOut(Struct):
    week: int
    mean_change: float | None  # null: fewer than 5 patients answered that week
    patients: int | None


class ClinicOutcomesOut(Struct):
    small_cell: int  # counts below this are withheld
    by_protocol: list[GroupOut]
    by_diagnosis: list[GroupOut]
    weekly_change: dict[str, dict[str, list[WeekOut]]]  # instrument -> protocol -> weeks


def cell_out(c: rules.Cell) -> CellOut:
    return CellOut(c.patients, c.responders, c.remitters, c.response_rate, c.remission_rate, c.mean_change, c.mean_part_a_change, list(c.withheld))


class ScheduleOut(Struct):
    session_type_id: int
    kind: str
    induction_every: int
    end_of_course: bool
    maintenance_days: int
    baseline_valid_days: int
    maintenance_templates: list[str]
