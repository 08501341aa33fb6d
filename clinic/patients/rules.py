"""Patient input rules (pure): what a valid name, date of birth, contact, consent, REMS record and diagnosis look like."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

from clinic.errors import RuleBroken
from clinic.names import single_line
from clinic.patients.models import MEDICATION_FLAGS
from clinic.timeutil import valid_zone

SEXES = ("female", "male", "other", "unknown")
NOTICE_CHANNELS = ("email", "none")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# ICD-10-CM: letter, digit, alphanumeric, then an optional dot and up to four more
ICD10_RE = re.compile(r"^[A-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$")
REMS_ID_RE = re.compile(r"^[A-Za-z0-9-]{4,40}$")
EDITABLE = (
    "first_name", "last_name", "date_of_birth", "sex", "email", "phone", "notice_channel", "notice_consent",
    "notices_opted_out", "escort_name", "escort_phone", "rems_enrolled_on", "rems_patient_id",
    "medication_flags", "diagnosis_codes", "time_zone",
)


def digits(value: str) -> str:
    return re.sub(r"\D", "", value or "")


def _text(data: dict, key: str, *, required: bool, max_len: int, label: str) -> str | None:
    raw = data.get(key)
    value = (str(raw).strip() if raw is not None else "") or None
    if value is None:
        if required:
            raise RuleBroken(f"{label} is required.", field=key, code="required")
        return None
    if len(value) > max_len:
        raise RuleBroken(f"{label} is longer than {max_len} characters.", field=key, code="too_long")
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
        raise RuleBroken(f"{label} must be a date like 1980-05-17.", field=key, code="date_format") from None


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "on", "yes")


def clean_phone(data: dict, key: str, label: str) -> str | None:
    value = _text(data, key, required=False, max_len=40, label=label)
    if value is None:
        return None
    if not re.fullmatch(r"[0-9+()\-.\s]+", value) or not 7 <= len(digits(value)) <= 15:
        raise RuleBroken(f"{label} must be a phone number of 7 to 15 digits.", field=key, code="phone_format")
    return value


def _list(data: dict, key: str) -> list[str]:
    value = data.get(key)
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [v for v in re.split(r"[\s,;]+", value) if v]
    if not isinstance(value, (list, tuple)):
        raise RuleBroken("Give a list, or the values separated by commas.", field=key, code="list_format")
    return [str(v).strip() for v in value if str(v).strip()]


def clean_patient(data: dict[str, Any], *, today: date, partial: bool = False) -> dict[str, Any]:
    """Validated column values from form or JSON input; raises RuleBroken naming the first bad field.

    With partial=True only the keys present are checked and returned (an edit).
    """
    out: dict[str, Any] = {}

    def wanted(key: str) -> bool:
        return not partial or key in data

    for key, label in (("first_name", "First name"), ("last_name", "Last name")):
        if wanted(key):
            # names reach notices' greetings and headers: one line only
            out[key] = single_line(_text(data, key, required=True, max_len=100, label=label), field=key, label=label)
    if wanted("date_of_birth"):
        dob = _date(data, "date_of_birth", "Date of birth")
        if dob is None:
            raise RuleBroken("Date of birth is required.", field="date_of_birth", code="required")
        if dob > today:
            raise RuleBroken("Date of birth cannot be in the future.", field="date_of_birth", code="in_future")
        if dob.year < 1900:
            raise RuleBroken("Date of birth must be after 1900.", field="date_of_birth", code="too_old")
        out["date_of_birth"] = dob
    if wanted("sex"):
        sex = (str(data.get("sex") or "").strip().lower()) or None
        if sex not in SEXES:
            raise RuleBroken("Sex must be one of: female, male, other, unknown.", field="sex", code="not_allowed")
        out["sex"] = sex
    if wanted("email"):
        email = _text(data, "email", required=False, max_len=254, label="Email")
        if email is not None:
            email = email.lower()
            if not EMAIL_RE.match(email):
                raise RuleBroken("Email must look like name@example.org.", field="email", code="email_format")
        out["email"] = email
    if wanted("phone"):
        out["phone"] = clean_phone(data, "phone", "Phone")
    if wanted("notice_channel"):
        channel = (str(data.get("notice_channel") or "email").strip().lower())
        if channel not in NOTICE_CHANNELS:
            raise RuleBroken("Notice channel must be email or none.", field="notice_channel", code="not_allowed")
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
            raise RuleBroken("The REMS enrollment date cannot be in the future.", field="rems_enrolled_on", code="in_future")
        out["rems_enrolled_on"] = enrolled
    if wanted("rems_patient_id"):
        rems_id = _text(data, "rems_patient_id", required=False, max_len=40, label="REMS patient id")
        if rems_id is not None and not REMS_ID_RE.match(rems_id):
            raise RuleBroken("The REMS patient id may hold letters, digits and dashes (4 to 40).", field="rems_patient_id", code="rems_id_format")
        out["rems_patient_id"] = rems_id
    if wanted("medication_flags"):
        flags = _list(data, "medication_flags")
        unknown = [f for f in flags if f not in MEDICATION_FLAGS]
        if unknown:
            raise RuleBroken(f"Unknown medication flag; allowed: {', '.join(MEDICATION_FLAGS)}.", field="medication_flags", code="unknown_flag")
        out["medication_flags"] = sorted(set(flags), key=MEDICATION_FLAGS.index)
    if wanted("diagnosis_codes"):
        codes = [c.upper() for c in _list(data, "diagnosis_codes")]
        bad = [c for c in codes if not ICD10_RE.match(c)]
        if bad:
            raise RuleBroken("Diagnosis codes must be ICD-10 codes like F32.2 or F33.1.", field="diagnosis_codes", code="icd10_format")
        if len(codes) > 12:
            raise RuleBroken("At most 12 diagnosis codes.", field="diagnosis_codes", code="too_many")
        out["diagnosis_codes"] = list(dict.fromkeys(codes))
    if wanted("time_zone"):
        zone = _text(data, "time_zone", required=False, max_len=64, label="Time zone")
        if zone is not None and not valid_zone(zone):
            raise RuleBroken("Time zone must be an IANA zone like America/Chicago (empty: the clinic's).", field="time_zone", code="unknown_zone")
        out["time_zone"] = zone
    return out


def check_rems_pair(enrolled_on: date | None, rems_id: str | None) -> None:
    """An enrollment is recorded with both its date and its id, or not at all."""
    if enrolled_on and not rems_id:
        raise RuleBroken("Enter the REMS patient id with the enrollment date.", field="rems_patient_id", code="required")
    if rems_id and not enrolled_on:
        raise RuleBroken("Enter the REMS enrollment date with the patient id.", field="rems_enrolled_on", code="required")


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
