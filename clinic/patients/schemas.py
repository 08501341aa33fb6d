"""Patients' JSON shapes under /api/v1: the bodies to register and edit a patient, and the patient and chart views."""

from __future__ import annotations

from datetime import date

from msgspec import UNSET, Struct, UnsetType

from clinic.scheduling.schemas import AppointmentOut
from clinic.timeutil import Instant


# required fields are checked by the service, so a missing one is a 422 that names it
class PatientIn(Struct):
    first_name: str = ""
    last_name: str = ""
    date_of_birth: date | None = None
    sex: str = ""
    email: str | None = None
    phone: str | None = None
    notice_channel: str = "email"
    notice_consent: bool = False
    notices_opted_out: bool = False
    escort_name: str | None = None
    escort_phone: str | None = None
    rems_enrolled_on: date | None = None
    rems_patient_id: str | None = None
    medication_flags: list[str] = []
    diagnosis_codes: list[str] = []
    time_zone: str | None = None  # IANA name; null: the clinic's


class PatientPatch(Struct):
    first_name: str | UnsetType = UNSET
    last_name: str | UnsetType = UNSET
    date_of_birth: date | UnsetType = UNSET
    sex: str | UnsetType = UNSET
    email: str | None | UnsetType = UNSET
    phone: str | None | UnsetType = UNSET
    notice_channel: str | UnsetType = UNSET
    notice_consent: bool | UnsetType = UNSET
    notices_opted_out: bool | UnsetType = UNSET
    escort_name: str | None | UnsetType = UNSET
    escort_phone: str | None | UnsetType = UNSET
    rems_enrolled_on: date | None | UnsetType = UNSET
    rems_patient_id: str | None | UnsetType = UNSET
    medication_flags: list[str] | UnsetType = UNSET
    diagnosis_codes: list[str] | UnsetType = UNSET
    time_zone: str | None | UnsetType = UNSET


class PatientOut(Struct, kw_only=True):
    id: int
    first_name: str
    last_name: str
    name: str
    date_of_birth: date
    sex: str
    email: str | None
    phone: str | None
    notice_channel: str
    notice_consent_at: Instant | None
    notices_opted_out: bool
    escort_name: str | None
    escort_phone: str | None
    rems_enrolled_on: date | None
    rems_patient_id: str | None
    rems_enrolled: bool
    medication_flags: list[str]
    diagnosis_codes: list[str]
    time_zone: str | None  # null: the clinic's (questionnaire notices go at 18:00 in this zone)
    created_at: Instant


class PatientChart(PatientOut, kw_only=True):
    """A patient with their sessions: reading it is a chart read (audited)."""

    upcoming: list[AppointmentOut]
    past: list[AppointmentOut]
