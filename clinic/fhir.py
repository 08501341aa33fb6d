"""FHIR R4 building blocks every export shares: stable ids, instants, codings, the code systems, the Patient and the Bundle."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from msgspec import Struct

from clinic.patients.models import Patient
from clinic.timeutil import UTC

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
# local codes for scales LOINC does not cover; namespaced so they never pass for LOINC
LOCAL_CODES = "urn:clinic:codes"
GENDER = {"female": "female", "male": "male", "other": "other"}

NAMESPACE = uuid.UUID("5b1f0c8e-8f0e-4a4e-9d7e-3f1f6c1d2a10")


def urn(kind: str, key: Any) -> str:
    """Stable ids: exporting the same record twice gives the same fullUrls."""
    return f"urn:uuid:{uuid.uuid5(NAMESPACE, f'{kind}/{key}')}"


def instant(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z") if dt else None


def coding(system: str, code: str, display: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


def patient_ref(patient: Patient) -> str:
    return urn("Patient", f"{patient.clinic_id}/{patient.id}")


def patient_entry(patient: Patient, *, base_url: str = "") -> dict[str, Any]:
    system = f"{base_url.rstrip('/')}/patients" if base_url else f"urn:clinic:{patient.clinic_id}:patients"
    resource = {
        "resourceType": "Patient",
        "id": str(patient.id),
        "identifier": [{"system": system, "value": str(patient.id)}],
        "name": [{"use": "official", "family": patient.last_name, "given": [patient.first_name]}],
        "gender": GENDER.get(patient.sex, "unknown"),
        "birthDate": patient.date_of_birth.isoformat(),
    }
    return {"fullUrl": patient_ref(patient), "resource": resource}


class FhirBundle(Struct, rename={"resource_type": "resourceType"}):
    """A FHIR R4 Bundle (type collection); each entry is a FHIR resource as the FHIR specification defines it."""

    resource_type: Literal["Bundle"]
    id: str
    type: Literal["collection"]
    timestamp: str
    entry: list[dict[str, Any]]


def bundle(entries: list[dict[str, Any]], *, key: str) -> FhirBundle:
    """A collection Bundle; its id is stable for the same `key` and number of entries."""
    return FhirBundle(resource_type="Bundle", id=str(uuid.uuid5(NAMESPACE, f"{key}/{len(entries)}")), type="collection",
                      timestamp=instant(datetime.now(UTC)), entry=entries)  # type: ignore[arg-type]
