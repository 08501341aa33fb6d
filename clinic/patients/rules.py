"""Patient input rules (pure): what a valid name, date of birth, contact, consent, REMS record and diagnosis look like."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from clinic.patients.models import MEDICATION_FLAGS

SEXES = ("female", "male", "other", "unknown")
NOTICE_CHANNELS = ("email", "none")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# ICD-10-CM: letter, digit, alphanumeric, then an optional dot and up to four more
ICD10_RE = re.compile(r"^[A-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$")
REMS_ID_RE = re.compile(r"^[A-Za-z0-9-]{4,40}$")
EDITABLE = (
    "first_name", "last_name", "date_of_birth", "sex", "email", "phone", "notice_channel", "notice_consent",
    "notices_opted_out", "escort_name", "escort_phone", "rems_enrolled_on", "rems_patient_id",
    "medication_flags", "diagnosis_codes",
)


@dataclass
class PatientProblem(Exception):
    field: str
    code: str
    message: str


def digits(value: str) -> str:
    return re.sub(r"\D", "", value or "")


def _text(data: dict, key: str, *, required: bool, max_len: int, label: str) -> str | None:
    raw = data.get(key)
    value = (str(raw).strip() if raw is not None else "") or None
    if value is None:
        if required:
            raise PatientProblem(key, "required", f"{label} is required.")
        return None
    if len(value) > max_len:
        raise PatientProblem(key, "too_long", f"{label} is longer than {max_len} characters.")
    return value


def _date(data: dict, key: str, label: str) -> date | None:
    raw = data.get(key)
    if raw in (None, ""):
        return None
    if isinstance(raw, datetime):
        return raw.date()
    if isinstance(raw, date):
        return raw
    try:
        return date.fromisoformat(str(raw).strip())
    except ValueError:
        raise PatientProblem(key, "date_format", f"{label} must be a date like 1980-05-17.") from None


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "on", "yes")


def clean_phone(data: dict, key: str, label: str) -> str | None:
    value = _text(data, key, required=False, max_len=40, label=label)
    if value is None:
        return None
    if not re.fullmatch(r"[0-9+()\-.\s]+", value) or not 7 <= len(digits(value)) <= 15:
        raise PatientProblem(key, "phone_format", f"{label} must be a phone number of 7 to 15 digits.")
    return value


def _list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [v for v in re.split(r"[\s,;]+", value) if v]
    return [str(v).strip() for v in value if str(v).strip()]


def clean_patient(data: dict[str, Any], *, today: date, partial: bool = False) -> dict[str, Any]:
    """Validated column values from form or JSON input; raises PatientProblem naming the first bad field.

    With partial=True only the keys present are checked and returned (an edit).
    """
    out: dict[str, Any] = {}

    def wanted(key: str) -> bool:
        return not partial or key in data

    for key, label in (("first_name", "First name"), ("last_name", "Last name")):
        if wanted(key):
            out[key] = _text(data, key, required=True, max_len=100, label=label)
    if wanted("date_of_birth"):
        dob = _date(data, "date_of_birth", "Date of birth")
        if dob is None:
            raise PatientProblem("date_of_birth", "required", "Date of birth is required.")
        if dob > today:
            raise PatientProblem("date_of_birth", "in_future", "Date of birth cannot be in the future.")
        if dob.year < 1900:
            raise PatientProblem("date_of_birth", "too_old", "Date of birth must be after 1900.")
        out["date_of_birth"] = dob
    if wanted("sex"):
        sex = (str(data.get("sex") or "").strip().lower()) or None
        if sex not in SEXES:
            raise PatientProblem("sex", "not_allowed", "Sex must be one of: female, male, other, unknown.")
        out["sex"] = sex
    if wanted("email"):
        email = _text(data, "email", required=False, max_len=254, label="Email")
        if email is not None:
            email = email.lower()
            if not EMAIL_RE.match(email):
                raise PatientProblem("email", "email_format", "Email must look like name@example.org.")
        out["email"] = email
    if wanted("phone"):
        out["phone"] = clean_phone(data, "phone", "Phone")
    if wanted("notice_channel"):
        channel = (str(data.get("notice_channel") or "email").strip().lower())
        if channel not in NOTICE_CHANNELS:
            raise PatientProblem("notice_channel", "not_allowed", "Notice channel must be email or none.")
        out["notice_channel"] = channel
    if wanted("notice_consent"):
        out["notice_consent"] = _bool(data.get("notice_consent"))
    if wanted("notices_opted_out"):
        out["notices_opted_out"] = _bool(data.get("notices_opted_out"))
    if wanted("escort_name"):
        out["escort_name"] = _text(data, "escort_name", required=False, max_len=200, label="Escort name")
    if wanted("escort_phone"):
        out["escort_phone"] = clean_phone(data, "escort_phone", "Escort phone")
    if wanted("rems_enrolled_on"):
        enrolled = _date(data, "rems_enrolled_on", "REMS enrollment date")
        if enrolled is not None and enrolled > today:
            raise PatientProblem("rems_enrolled_on", "in_future", "The REMS enrollment date cannot be in the future.")
        out["rems_enrolled_on"] = enrolled
    if wanted("rems_patient_id"):
        rems_id = _text(data, "rems_patient_id", required=False, max_len=40, label="REMS patient id")
        if rems_id is not None and not REMS_ID_RE.match(rems_id):
            raise PatientProblem("rems_patient_id", "rems_id_format", "The REMS patient id may hold letters, digits and dashes (4 to 40).")
        out["rems_patient_id"] = rems_id
    if wanted("medication_flags"):
        flags = _list(data.get("medication_flags"))
        unknown = [f for f in flags if f not in MEDICATION_FLAGS]
        if unknown:
            raise PatientProblem("medication_flags", "unknown_flag", f"Unknown medication flag; allowed: {', '.join(MEDICATION_FLAGS)}.")
        out["medication_flags"] = sorted(set(flags), key=MEDICATION_FLAGS.index)
    if wanted("diagnosis_codes"):
        codes = [c.upper() for c in _list(data.get("diagnosis_codes"))]
        bad = [c for c in codes if not ICD10_RE.match(c)]
        if bad:
            raise PatientProblem("diagnosis_codes", "icd10_format", "Diagnosis codes must be ICD-10 codes like F32.2 or F33.1.")
        if len(codes) > 12:
            raise PatientProblem("diagnosis_codes", "too_many", "At most 12 diagnosis codes.")
        out["diagnosis_codes"] = list(dict.fromkeys(codes))
    return out


def check_rems_pair(enrolled_on: date | None, rems_id: str | None) -> None:
    """An enrollment is recorded with both its date and its id, or not at all."""
    if enrolled_on and not rems_id:
        raise PatientProblem("rems_patient_id", "required", "Enter the REMS patient id with the enrollment date.")
    if rems_id and not enrolled_on:
        raise PatientProblem("rems_enrolled_on", "required", "Enter the REMS enrollment date with the patient id.")


def parse_search(q: str) -> dict[str, Any]:
    """What a search box query means: a date of birth, a phone number, or a name."""
    q = (q or "").strip()
    if not q:
        return {}
    for fmt in ("%Y-%m-%d", "%m/%d/%Y", "%m-%d-%Y"):
        try:
            return {"dob": datetime.strptime(q, fmt).date()}
        except ValueError:
            pass
    d = digits(q)
    if d and len(d) >= 3 and re.fullmatch(r"[0-9+()\-.\s]+", q):
        return {"phone": d}
    return {"name": [w for w in re.split(r"[\s,]+", q) if w][:3]}
