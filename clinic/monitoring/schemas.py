"""Monitoring's JSON shapes under /api/v1: the tablet's submissions, and the session, entry, dose, alert, board and REMS views."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal
from uuid import UUID

import msgspec
from msgspec import UNSET, Struct, UnsetType

from clinic.monitoring import rules
from clinic.monitoring.models import AlertLevel, DissociationForm, DoseKind
from clinic.scheduling.models import AppointmentStatus, SessionKind
from clinic.timeutil import Instant

# ---- bodies -------------------------------------------------------------------------------------


class CheckIn(Struct, forbid_unknown_fields=True):
    fasting_confirmed: bool
    escort_confirmed: bool
    escort_name: str | None = None
    escort_phone: str | None = None
    weight_kg: float | None = None
    taken_at: datetime | None = None


class Escort(Struct, forbid_unknown_fields=True):
    escort_name: str | None = None
    escort_phone: str | None = None


class StartDosing(Struct, forbid_unknown_fields=True):
    client_id: UUID
    taken_at: datetime | None = None
    lot_number: str | None = None
    dose_mg: int | None = None
    mg_per_kg: float | None = None


class Dose(Struct, forbid_unknown_fields=True):
    client_id: UUID
    kind: Literal["device", "infusion_end"]
    taken_at: datetime | None = None
    lot_number: str | None = None


class DoseCorrection(Struct, forbid_unknown_fields=True):
    client_id: UUID
    reason: str
    taken_at: datetime | None = None
    lot_number: str | None = None
    entered_in_error: bool = False


class Dissociation(Struct, forbid_unknown_fields=True):
    form: Literal["cadss6", "cadss23"]
    items: dict[str, int]


def _json_fields() -> list[tuple[str, Any, Any]]:
    """rules.Measurements' fields as JSON carries them: the CADSS answer nested, {"dissociation": {"form", "items"}}."""
    out = []
    for f in msgspec.structs.fields(rules.Measurements):
        if f.name == "dissociation_form":
            out.append(("dissociation", Dissociation | None, None))
        elif f.name != "dissociation_items":
            out.append((f.name, f.type, f.default))
    return out


MEASURES = _json_fields()
MEASURED = tuple(name for name, _, _ in MEASURES)
VITAL_SIGNS = tuple(rules.LIMITS)  # the measurements with a plausible range: BP, HR, SpO2, RR
SEDATION = ("moaas", "dissociation")


def _measures(names: tuple[str, ...], *, optional: bool = False) -> list[tuple[str, Any, Any]]:
    """Measurement fields for a body: as declared, or (a correction) left out unless sent."""
    return [(name, kind | UnsetType, UNSET) if optional else (name, kind, default) for name, kind, default in MEASURES if name in names]


def _submission(name: str, doc: str, measures: tuple[str, ...]) -> type[Struct]:
    """A check submitted from a tablet: its client_id (a repeat answers the first result), time, check key and values."""
    own = [("client_id", UUID), ("taken_at", datetime | None, None), ("check_key", str | None, None)]
    body = msgspec.defstruct(name, own + _measures(measures), kw_only=True, forbid_unknown_fields=True, module=__name__)
    body.__doc__ = doc
    return body


Vitals = _submission("Vitals", "Vital signs of one check, with an optional note.", (*VITAL_SIGNS, "note"))
Assessment = _submission("Assessment", "MOAA/S, a dissociation score (CADSS-6 or CADSS) and/or a note.", (*SEDATION, "note"))
Entry = _submission("Entry", "Everything a scheduled check may record, in one submission (the tablet's one-tap form).", MEASURED)
Correction = msgspec.defstruct(
    "Correction",
    [("client_id", UUID), ("reason", str), ("entered_in_error", bool, False), ("taken_at", datetime | UnsetType, UNSET), *_measures(MEASURED, optional=True)],
    kw_only=True,
    forbid_unknown_fields=True,
    module=__name__,
)
Correction.__doc__ = "The corrected values; a field left out keeps its previous value, null clears it."


def measurements_of(body: Any) -> rules.Measurements:
    """The values of any submission made of the measurement fields (a field it lacks is None)."""
    values = {name: getattr(body, name, None) for name in MEASURED}
    diss = values.pop("dissociation")
    return rules.Measurements(**values, dissociation_form=diss.form if diss else None, dissociation_items=dict(diss.items) if diss else None)


class Acknowledge(Struct, forbid_unknown_fields=True):
    note: str


class Discharge(Struct, forbid_unknown_fields=True):
    ready_to_leave_at: datetime | None = None
    note: str | None = None


class RemsSubmission(Struct, forbid_unknown_fields=True):
    submitted_on: date
    confirmation: str


# ---- views --------------------------------------------------------------------------------------


class AlertOut(Struct):
    id: int
    appointment_id: int
    entry_id: int | None
    level: AlertLevel
    code: str
    message: str
    raised_at: Instant
    acknowledged: bool
    acknowledged_by: int | None
    acknowledged_at: Instant | None
    note: str | None


class DissociationOut(Struct):
    form: DissociationForm
    items: dict[str, int]
    total: int


class Charted(Struct, kw_only=True):
    """What every chart row says: who recorded it and when, and whether a correction replaced it."""

    id: int
    appointment_id: int
    client_id: UUID
    taken_at: Instant
    recorded_by: int
    recorded_at: Instant
    supersedes_id: int | None
    correction_reason: str | None
    entered_in_error: bool
    superseded_by: int | None


class EntryOut(Charted, kw_only=True):
    check_key: str | None
    systolic: int | None
    diastolic: int | None
    heart_rate: int | None
    spo2: int | None
    resp_rate: int | None
    moaas: int | None
    dissociation: DissociationOut | None
    note: str | None
    # the alerts this entry raised (answers to a write and chart lists)
    alerts: list[AlertOut] | UnsetType = UNSET


class DoseOut(Charted, kw_only=True):
    kind: DoseKind
    device_number: int | None
    dose_mg: float | None
    lot_number: str | None
    mg_per_kg: float | None
    weight_kg: float | None


class BlockerOut(Struct):
    code: str
    message: str


class CheckOut(Struct):
    key: str
    label: str
    phase: str
    records: list[str]
    status: Literal["pending", "upcoming", "due", "overdue", "done"]
    due_at: Instant | None
    window_opens_at: Instant | None
    window_closes_at: Instant | None
    missing: list[str]
    done_at: Instant | None
    late: bool


class SessionStateOut(Struct):
    appointment_id: int
    patient_id: int
    kind: SessionKind
    status: AppointmentStatus
    phase: str
    phase_label: str
    checked_in_at: Instant | None
    dosing_started_at: Instant | None
    discharged_at: Instant | None
    discharged_by: int | None
    minutes_since_dosing: int | None
    escort_confirmed: bool
    fasting_confirmed: bool
    weight_kg: float | None
    planned_dose_mg: int | None
    checks: list[CheckOut]
    next_check: str | None
    pre_dose_blockers: list[BlockerOut]
    discharge_blockers: list[BlockerOut]
    open_alerts: list[AlertOut]
    dosing: list[DoseOut]
    facts: dict[str, Any]


class BoardCheck(Struct):
    key: str
    label: str
    status: str
    due_at: Instant | None
    missing: list[str]


class BoardAlert(Struct):
    id: int
    level: AlertLevel
    code: str
    message: str
    raised_at: Instant


class BoardCard(Struct, kw_only=True):
    appointment_id: int
    patient: str
    kind: SessionKind
    status: AppointmentStatus
    phase: str
    phase_label: str
    starts_at: Instant
    checked_in_at: Instant | None
    dosing_started_at: Instant | None
    discharged_at: Instant | None
    # the rest only for those who may open a session; the session's own state only once checked in
    safety_review_open: bool | UnsetType = UNSET  # a questionnaire answer (PHQ-9 item 9) awaits a prescriber's review
    minutes_since_dosing: int | None | UnsetType = UNSET
    next_check: BoardCheck | None | UnsetType = UNSET
    overdue_checks: list[BoardCheck] | UnsetType = UNSET
    open_alerts: list[BoardAlert] | UnsetType = UNSET
    discharge_blockers: list[BlockerOut] | UnsetType = UNSET
    escort_confirmed: bool | UnsetType = UNSET


class BoardChair(Struct):
    id: int
    name: str
    current: list[BoardCard]
    later_today: list[BoardCard]
    discharged_today: list[BoardCard]


class BoardOut(Struct, kw_only=True):
    clinic_id: int
    generated_at: Instant
    # counts for those who may open a session (the front desk sees who is where and the phase, no clinical detail)
    open_alerts: int | UnsetType = UNSET
    overdue_checks: int | UnsetType = UNSET
    chairs: list[BoardChair]


class RemsTracking(Struct):
    appointment_id: int
    patient_id: int
    session_date: date
    due_on: date
    submitted_on: date | None
    confirmation: str | None


class RemsPending(RemsTracking):
    overdue: bool


class RemsTrackerOut(Struct):
    today: date
    pending: list[RemsPending]
    submitted: list[RemsTracking]


class RemsFieldOut(Struct):
    section: str
    label: str
    value: str | None
    missing: bool
    note: str | None


class RemsFormOut(Struct):
    appointment_id: int
    fields: list[RemsFieldOut]
    missing: list[str]
    tracking: RemsTracking | None
