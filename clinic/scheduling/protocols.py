"""A protocol as every rule reads it: a typed, frozen object decoded from a SessionType (its protocol JSON and its
columns), each default stated once, here; and the protocols a new clinic is seeded with (DOMAIN.md §1-2).

Protocols are data an admin edits per clinic. SessionType.protocol holds the fields of Protocol below that are not
SessionType columns (each optional: a missing one takes its default here); unknown keys are ignored.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, NamedTuple

import msgspec
from msgspec import Meta, Struct

from clinic.errors import RuleBroken

# what a scheduled check may ask to record
MEASURES = ("bp", "hr", "spo2", "rr", "moaas", "dissociation")
Phase = Literal["pre_dose", "monitoring", "discharge"]
AtLeastOne = Annotated[int, Meta(ge=1)]


class Check(Struct, frozen=True):
    """A scheduled check: at `at_minutes` from the start of dosing (negative: before it), recording `records`;
    with `repeat_every_minutes`, again every so often until `until_minutes`."""

    key: str
    label: str
    at_minutes: int
    records: tuple[str, ...] = ()
    window_minutes: int | None = None  # None: 5 minutes either side for a repeating check, 10 for a single one
    repeat_every_minutes: Annotated[int, Meta(gt=0)] | None = None
    until_minutes: int | None = None  # None: at_minutes
    phase: Phase | None = None  # None: pre_dose before dosing, monitoring after

    @property
    def window(self) -> int:
        if self.window_minutes is not None:
            return self.window_minutes
        return 5 if self.repeat_every_minutes else 10


@dataclass(frozen=True)
class PlannedCheck:
    """One occurrence of a check (a repeating check gives one per repeat)."""

    key: str
    label: str
    phase: str  # pre_dose | monitoring | discharge
    at_minutes: int
    window_minutes: int
    records: tuple[str, ...]


class UrgentAt(Struct, frozen=True):
    """An urgent alert: BP at or above these, SpO2 or RR below these, MOAA/S at or below this."""

    systolic_at_least: int = 200
    diastolic_at_least: int = 120
    spo2_below: int = 92
    rr_below: int = 8
    moaas_at_most: int = 2


class AlertAt(Struct, frozen=True):
    """An alert: BP at or above these (repeat within the minutes given; twice in a row is urgent), HR above this."""

    systolic_at_least: int = 180
    diastolic_at_least: int = 110
    hr_above: int = 120
    repeat_within_minutes: int = 5


class Thresholds(Struct, frozen=True):
    urgent: UrgentAt = UrgentAt()
    alert: AlertAt = AlertAt()


class PreDoseCaution(Struct, frozen=True):
    """A BP above these before dosing needs a prescriber's acknowledgement (esketamine)."""

    systolic_above: int = 140
    diastolic_above: int = 90


class DischargeLimits(Struct, frozen=True):
    """What the last readings since dosing must show before a prescriber may sign the discharge."""

    systolic_max: int = 179
    diastolic_max: int = 109
    spo2_min: int = 92
    moaas_required: int = 5


class DosePerKg(Struct, frozen=True):
    """An IV dose in mg per kg of body weight: the one offered, and the range a prescriber may choose in."""

    default: float = 0.5
    min: float = 0.1
    max: float = 1.0


class CourseTemplate(Struct, frozen=True):
    """A course: `sessions` sessions, `per_week` a week, at least `min_days_apart` days apart, over about `weeks` weeks."""

    label: str = ""
    sessions: AtLeastOne = 1
    per_week: AtLeastOne | Annotated[float, Meta(gt=0)] = 1
    min_days_apart: AtLeastOne = 1
    weeks: AtLeastOne | None = None


class Billing(Struct, frozen=True):
    """How a session's charges follow from its facts: the rule, and the codes it bills."""

    rule: str | None = None  # esketamine | infusion | kap | therapy_minutes | em_minutes
    up_to_56: str = "G2082"  # esketamine, up to 56 mg
    over_56: str = "G2083"
    first: str = "96365"  # infusion, the first hour
    additional_hour: str = "96366"
    short_push: str = "96374"  # an infusion of 15 minutes or less
    drug: str | None = None
    codes: tuple[str, ...] = ()


class Windows(NamedTuple):
    """A session's spans: the chair hold [start, end), the patient's stay [start, care_end),
    and dosing plus monitoring [clinical_start, care_end), when a prescriber must be on site."""

    start: datetime
    end: datetime
    care_end: datetime
    clinical_start: datetime


# the SessionType columns a Protocol carries besides its JSON
COLUMNS = ("kind", "name", "needs_chair", "monitored", "needs_prescriber", "needs_therapist", "requires_rems",
           "prep_minutes", "dosing_minutes", "monitoring_minutes", "turnover_minutes")


class Protocol(Struct, frozen=True, dict=True):
    """Everything a rule needs to know about a kind of session: how long it holds a chair or room and who it needs
    (the SessionType columns), its doses, check schedule, alert thresholds, discharge limits, courses, instructions
    and billing (its protocol JSON)."""

    # the SessionType columns
    kind: str
    name: str
    needs_chair: bool
    monitored: bool
    needs_prescriber: bool
    needs_therapist: bool
    requires_rems: bool
    prep_minutes: int
    dosing_minutes: int
    monitoring_minutes: int
    turnover_minutes: int
    # doses: esketamine's allowed doses, device size and the rest between devices; an IV dose by weight
    doses_mg: tuple[int, ...] = ()
    mg_per_device: Annotated[int, Meta(gt=0)] = 28
    minutes_between_devices: int = 5
    dose_mg_per_kg: DosePerKg | None = None
    # durations the rules count from the start of dosing
    infusion_minutes: int = 40
    min_monitoring_minutes: int = 0
    recovery_minutes_after_infusion: int = 0
    session_minutes: int = 55  # a therapy session, for estimates made before it happens
    checks: tuple[Check, ...] = ()
    thresholds: Thresholds = Thresholds()
    pre_dose_caution: PreDoseCaution | None = None
    discharge: DischargeLimits = DischargeLimits()
    course_templates: dict[str, CourseTemplate] = {}
    instructions: tuple[str, ...] = ()
    billing: Billing = Billing()

    @classmethod
    def of(cls, st: Any) -> Protocol:
        """From a SessionType (or anything with its attributes)."""
        return cls.from_parts(st.protocol, {c: getattr(st, c) for c in COLUMNS})

    @classmethod
    def from_parts(cls, protocol: Mapping[str, Any] | None, columns: Mapping[str, Any]) -> Protocol:
        return msgspec.convert({**(protocol or {}), **columns}, cls)

    @classmethod
    def checked(cls, protocol: Mapping[str, Any] | None, columns: Mapping[str, Any]) -> Protocol:
        """from_parts for an edit: a value the protocol cannot hold is refused naming its field (e.g. course_templates.weekly.sessions)."""
        templates = (protocol or {}).get("course_templates")
        if isinstance(templates, Mapping):  # one by one: msgspec names an entry of a mapping [...], not by its key
            for name, template in templates.items():
                _fitted(template, CourseTemplate, f"course_templates.{name}")
        return _fitted({**(protocol or {}), **columns}, cls, "")

    # ---- doses and the chair hold (scheduling) ----

    @property
    def is_iv(self) -> bool:
        """Dosed by weight (an IV infusion): check-in takes the weight, dosing starts with the infusion."""
        return self.dose_mg_per_kg is not None

    def devices(self, dose_mg: int | None) -> int:
        if not dose_mg or not self.doses_mg:
            return 1
        return max(1, math.ceil(dose_mg / self.mg_per_device))

    def hold_minutes(self, dose_mg: int | None = None) -> int:
        """Prep + dosing (+ rest between nasal devices) + monitoring + turnover."""
        extra = (self.devices(dose_mg) - 1) * self.minutes_between_devices if self.doses_mg else 0
        return self.prep_minutes + self.dosing_minutes + extra + self.monitoring_minutes + self.turnover_minutes

    def windows(self, start: datetime, dose_mg: int | None = None) -> Windows:
        end = start + timedelta(minutes=self.hold_minutes(dose_mg))
        return Windows(start=start, end=end, care_end=end - timedelta(minutes=self.turnover_minutes), clinical_start=start + timedelta(minutes=self.prep_minutes))

    # ---- the check schedule (monitoring) ----

    @functools.cached_property
    def planned_checks(self) -> tuple[PlannedCheck, ...]:
        """The checks in time order, repeating ones expanded (e.g. every 10 minutes until 40: 10, 20, 30, 40)."""
        out: list[PlannedCheck] = []
        for c in self.checks:
            records = tuple(r for r in c.records if r in MEASURES)
            phase = c.phase or ("pre_dose" if c.at_minutes < 0 else "monitoring")
            if c.repeat_every_minutes:
                at = c.at_minutes
                until = c.at_minutes if c.until_minutes is None else c.until_minutes
                while at <= until:
                    out.append(PlannedCheck(f"{c.key}@{at}", f"{c.label} ({at} min)", phase, at, c.window, records))
                    at += c.repeat_every_minutes
            else:
                out.append(PlannedCheck(c.key, c.label, phase, c.at_minutes, c.window, records))
        return tuple(sorted(out, key=lambda p: p.at_minutes))

    @functools.cached_property
    def check_keys(self) -> frozenset[str]:
        return frozenset(p.key for p in self.planned_checks)


def _fitted(value: Any, kind: type[Any], field: str) -> Any:
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        message, _, path = str(exc).partition(" - at `$")
        named = (field + path.rstrip("`")).lstrip(".") or "protocol"
        raise RuleBroken(f"The protocol cannot hold this value: {message}.", field=named, code="invalid_protocol") from None


@functools.lru_cache(maxsize=64)
def protocol_from_json(text: str) -> Protocol:
    """A protocol read as one JSON value (protocol_json below); a clinic has a handful, each decoded once per process."""
    return msgspec.json.decode(text, type=Protocol)


def protocol_json(st: str) -> str:
    """SQL for the whole protocol of the session type aliased `st` as one JSON value: its protocol column and its columns."""
    pairs = ", ".join(f"'{c}', {st}.{c}" for c in COLUMNS)
    return f"({st}.protocol || jsonb_build_object({pairs}))"


# ---- the protocols a new clinic starts with --------------------------------------------------------------

THRESHOLDS = msgspec.to_builtins(Thresholds())
DISCHARGE = msgspec.to_builtins(DischargeLimits())

ESKETAMINE = {
    "kind": "esketamine",
    "name": "Esketamine nasal spray (Spravato)",
    "needs_chair": True,
    "monitored": True,
    "needs_prescriber": True,
    "requires_rems": True,
    "prep_minutes": 15,
    "dosing_minutes": 0,  # (devices - 1) x minutes_between_devices added per booking
    "monitoring_minutes": 120,
    "turnover_minutes": 10,
    "protocol": {
        "doses_mg": [28, 56, 84],
        "mg_per_device": 28,
        "minutes_between_devices": 5,
        "min_monitoring_minutes": 120,
        "checks": [
            {"key": "pre_dose", "label": "Pre-dose BP and SpO2", "at_minutes": -10, "window_minutes": 10, "records": ["bp", "spo2"], "phase": "pre_dose"},
            {"key": "t40", "label": "40-minute check", "at_minutes": 40, "window_minutes": 10, "records": ["bp", "spo2", "moaas", "dissociation"], "phase": "monitoring"},
            {"key": "t80", "label": "80-minute SpO2", "at_minutes": 80, "window_minutes": 10, "records": ["spo2"], "phase": "monitoring"},
            {"key": "discharge", "label": "Before discharge", "at_minutes": 120, "window_minutes": 15, "records": ["bp", "spo2", "moaas", "dissociation"], "phase": "discharge"},
        ],
        "thresholds": THRESHOLDS,
        "pre_dose_caution": {"systolic_above": 140, "diastolic_above": 90},
        "discharge": DISCHARGE,
        "course_templates": {
            "induction": {"label": "Induction: twice weekly for 4 weeks", "sessions": 8, "per_week": 2, "min_days_apart": 2, "weeks": 4},
            "weeks_5_8": {"label": "Weeks 5-8: weekly", "sessions": 4, "per_week": 1, "min_days_apart": 7, "weeks": 4},
            "maintenance_weekly": {"label": "Maintenance: weekly", "sessions": 4, "per_week": 1, "min_days_apart": 7, "weeks": 4},
            "maintenance_biweekly": {"label": "Maintenance: every 2 weeks", "sessions": 4, "per_week": 0.5, "min_days_apart": 14, "weeks": 8},
        },
        "instructions": [
            "Do not eat for 2 hours before your visit.",
            "Do not drink anything for 30 minutes before your visit.",
            "If you use a nasal steroid or decongestant, use it at least 1 hour before your visit.",
            "Do not drive until the next day after a restful sleep: arrange for someone to take you home.",
        ],
        "billing": {"rule": "esketamine", "up_to_56": "G2082", "over_56": "G2083", "drug": "J0013"},
    },
}

KETAMINE_IV = {
    "kind": "ketamine_iv",
    "name": "IV ketamine infusion",
    "needs_chair": True,
    "monitored": True,
    "prep_minutes": 15,
    "dosing_minutes": 40,
    "monitoring_minutes": 30,
    "turnover_minutes": 10,
    "protocol": {
        "dose_mg_per_kg": {"default": 0.5, "min": 0.1, "max": 1.0},
        "infusion_minutes": 40,
        "min_monitoring_minutes": 70,  # 40 infusion + 30 recovery after it ends
        "recovery_minutes_after_infusion": 30,
        "checks": [
            {"key": "pre_dose", "label": "Baseline vitals", "at_minutes": -10, "window_minutes": 10, "records": ["bp", "hr", "spo2"], "phase": "pre_dose"},
            {"key": "infusion", "label": "Infusion vitals", "at_minutes": 10, "repeat_every_minutes": 10, "until_minutes": 40, "window_minutes": 5, "records": ["bp", "hr", "spo2"], "phase": "monitoring"},
            {"key": "recovery", "label": "Recovery vitals", "at_minutes": 55, "repeat_every_minutes": 15, "until_minutes": 70, "window_minutes": 5, "records": ["bp", "hr", "spo2"], "phase": "monitoring"},
            {"key": "discharge", "label": "Before discharge", "at_minutes": 70, "window_minutes": 15, "records": ["bp", "hr", "spo2", "moaas"], "phase": "discharge"},
        ],
        "thresholds": THRESHOLDS,
        "discharge": DISCHARGE,
        "course_templates": {
            "induction": {"label": "6 infusions over 2-3 weeks", "sessions": 6, "per_week": 3, "min_days_apart": 1, "weeks": 3},
        },
        "instructions": [
            "Do not eat for 4 hours before your visit; clear liquids are fine until 2 hours before.",
            "Do not drive for the rest of the day: arrange for someone to take you home.",
        ],
        "billing": {"rule": "infusion", "first": "96365", "additional_hour": "96366", "short_push": "96374", "drug": "J3490"},
    },
}

KAP = {
    "kind": "kap",
    "name": "Ketamine-assisted psychotherapy",
    "needs_chair": True,
    "monitored": True,
    "needs_therapist": True,
    "prep_minutes": 15,
    "dosing_minutes": 0,
    "monitoring_minutes": 120,
    "turnover_minutes": 10,
    "protocol": {
        "min_monitoring_minutes": 90,
        "checks": [
            {"key": "pre_dose", "label": "Baseline vitals", "at_minutes": -10, "window_minutes": 10, "records": ["bp", "hr", "spo2"], "phase": "pre_dose"},
            {"key": "session", "label": "Session vitals", "at_minutes": 15, "repeat_every_minutes": 15, "until_minutes": 90, "window_minutes": 5, "records": ["bp", "hr", "spo2"], "phase": "monitoring"},
            {"key": "discharge", "label": "Before discharge", "at_minutes": 90, "window_minutes": 15, "records": ["bp", "hr", "spo2", "moaas"], "phase": "discharge"},
        ],
        "thresholds": THRESHOLDS,
        "discharge": DISCHARGE,
        "course_templates": {"series": {"label": "3 sessions, weekly", "sessions": 3, "per_week": 1, "min_days_apart": 7, "weeks": 3}},
        "billing": {"rule": "kap", "codes": ["0820T", "0821T", "0822T"]},
    },
}

INTEGRATION = {
    "kind": "integration",
    "name": "Integration psychotherapy",
    "needs_chair": False,
    "monitored": False,
    "needs_therapist": True,
    "prep_minutes": 0,
    "dosing_minutes": 0,
    "monitoring_minutes": 55,
    "turnover_minutes": 5,
    "protocol": {
        "checks": [],
        "course_templates": {"weekly": {"label": "Weekly, 4 sessions", "sessions": 4, "per_week": 1, "min_days_apart": 7, "weeks": 4}},
        "billing": {"rule": "therapy_minutes"},
    },
}

CONSULT = {
    "kind": "consult",
    "name": "Consultation",
    "needs_chair": False,
    "monitored": False,
    "needs_prescriber": True,
    "prep_minutes": 0,
    "dosing_minutes": 0,
    "monitoring_minutes": 45,
    "turnover_minutes": 5,
    "protocol": {"checks": [], "course_templates": {}, "billing": {"rule": "em_minutes"}},
}

DEFAULT_PROTOCOLS = (ESKETAMINE, KETAMINE_IV, KAP, INTEGRATION, CONSULT)


def default_protocols() -> list[dict]:
    return copy.deepcopy(list(DEFAULT_PROTOCOLS))
