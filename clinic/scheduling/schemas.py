"""Scheduling's JSON shapes under /api/v1: the bodies it accepts and the views it answers with."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

import msgspec
from msgspec import UNSET, Struct, UnsetType

from clinic.scheduling.models import AppointmentStatus, ChairKind, SessionKind
from clinic.timeutil import Instant

# ---- bodies: the service checks required fields and values, so a missing one is a 422 that names it


class ChairIn(Struct):
    name: str = ""
    kind: str = "chair"
    sort_order: int | None = None


class ChairPatch(Struct):
    name: str | UnsetType = UNSET
    active: bool | UnsetType = UNSET
    sort_order: int | UnsetType = UNSET


class SessionTypePatch(Struct):
    name: str | UnsetType = UNSET
    active: bool | UnsetType = UNSET
    prep_minutes: int | UnsetType = UNSET
    dosing_minutes: int | UnsetType = UNSET
    monitoring_minutes: int | UnsetType = UNSET
    turnover_minutes: int | UnsetType = UNSET
    course_templates: dict[str, dict[str, Any]] | UnsetType = UNSET


class BookIn(Struct):
    patient_id: int | None = None
    session_type: str | int | None = None
    chair_id: int | None = None
    starts_at: datetime | None = None
    planned_dose_mg: int | None = None
    escort_name: str | None = None
    escort_phone: str | None = None
    notes: str | None = None


class MoveIn(Struct):
    starts_at: datetime | None = None
    chair_id: int | None = None


class CancelIn(Struct):
    reason: str = ""


class OccurrenceIn(Struct):
    starts_at: datetime
    chair_id: int | None = None


class CourseIn(Struct):
    patient_id: int | None = None
    session_type: str | int | None = None
    template: str = ""
    starts_at: datetime | None = None
    chair_id: int | None = None
    planned_dose_mg: int | None = None
    escort_name: str | None = None
    escort_phone: str | None = None
    all_or_nothing: bool = True
    occurrences: list[OccurrenceIn] | None = None


class CourseCancelIn(Struct):
    reason: str = ""
    from_appointment_id: int | None = None


class CourseMoveIn(Struct):
    shift_days: int = 0
    at_time: str | None = None
    from_appointment_id: int | None = None


class ShiftIn(Struct):
    user_id: int | None = None
    role: str = ""
    starts_at: datetime | None = None
    ends_at: datetime | None = None


class ClinicPatch(Struct):
    name: str | UnsetType = UNSET
    display_name: str | UnsetType = UNSET
    timezone: str | UnsetType = UNSET
    phone: str | UnsetType = UNSET
    address: str | UnsetType = UNSET
    opening_hours: dict[str, list[list[str]]] | UnsetType = UNSET
    settings: dict[str, Any] | UnsetType = UNSET


class ClosedDateIn(Struct):
    day: date | None = None
    reason: str = ""


# ---- views ------------------------------------------------------------------------------------------


class PatientRef(Struct):
    id: int
    name: str


class SessionTypeRef(Struct):
    id: int
    kind: SessionKind
    name: str


class ChairOut(Struct):
    id: int
    name: str
    kind: ChairKind
    active: bool
    sort_order: int


class ChairRef(Struct):
    id: int
    name: str
    kind: ChairKind


class EscortStatus(StrEnum):
    confirmed = "confirmed"
    named = "named"
    to_confirm = "to_confirm"


class EscortOut(Struct):
    name: str | None
    phone: str | None
    status: EscortStatus


class AppointmentOut(Struct):
    id: int
    status: AppointmentStatus
    patient_id: int
    patient: PatientRef
    session_type: SessionTypeRef
    chair_id: int
    chair: ChairRef
    starts_at: Instant
    ends_at: Instant
    local_date: date
    planned_dose_mg: int | None
    escort: EscortOut
    course_id: int | None
    notes: str | None
    cancel_reason: str | None
    cancelled_at: Instant | None
    late_cancel: bool
    created_at: Instant
    updated_at: Instant


class SessionTypeOut(Struct):
    id: int
    kind: SessionKind
    name: str
    active: bool
    needs_chair: bool
    monitored: bool
    needs_prescriber: bool
    needs_therapist: bool
    requires_rems: bool
    prep_minutes: int
    dosing_minutes: int
    monitoring_minutes: int
    turnover_minutes: int
    # minutes a booking holds its chair; per planned dose (mg, as text) where the dose changes it
    hold_minutes: dict[str, int] | int
    doses_mg: list[int]
    course_templates: dict[str, dict[str, Any]]
    instructions: list[str]


class CandidateOut(Struct):
    start: Instant
    end: Instant
    chair_id: int
    chair: str | UnsetType = UNSET


class AvailabilityOut(Struct):
    session_type: SessionKind
    day_from: date = msgspec.field(name="from")
    day_to: date = msgspec.field(name="to")
    timezone: str
    truncated: bool
    next: str | None  # the following page's link; null on the last
    candidates: list[CandidateOut]


class OccurrenceConflict(Struct):
    code: str | None
    field: str | None
    detail: str


class OccurrenceOut(Struct):
    index: int
    wanted_start: Instant
    start: Instant | None
    chair_id: int | None
    chair: str | None
    ok: bool
    appointment_id: int | None
    conflict: OccurrenceConflict | None
    alternatives: list[CandidateOut]


class CoursePlanOut(Struct):
    session_type: SessionKind
    template: str
    course_id: int | None
    occurrences: list[OccurrenceOut]
    conflicts: int


class CourseOut(Struct):
    id: int
    patient_id: int
    session_type_id: int
    template: str
    created_at: Instant
    appointments: list[AppointmentOut]


class ShiftOut(Struct):
    id: int
    user_id: int
    staff: str
    role: str
    starts_at: Instant
    ends_at: Instant


class ClinicOut(Struct):
    id: int
    name: str
    display_name: str
    timezone: str
    phone: str
    address: str
    opening_hours: dict[str, list[list[str]]]
    settings: dict[str, Any]


class ClosedDateOut(Struct):
    id: int
    day: date
    reason: str


class ClosedDateAdded(ClosedDateOut):
    still_booked: int
