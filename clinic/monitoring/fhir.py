"""FHIR R4 export of one supervised session: a collection Bundle of Patient, Appointment, Encounter and vital-sign Observations."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from clinic.monitoring.schemas import FhirBundle
from clinic.monitoring.service import SessionData
from clinic.timeutil import UTC

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
# local codes for scales LOINC does not cover; namespaced so they never pass for LOINC
LOCAL_CODES = "urn:clinic:codes"

APPOINTMENT_STATUS = {"booked": "booked", "arrived": "arrived", "in_progress": "arrived", "fulfilled": "fulfilled", "cancelled": "cancelled", "noshow": "noshow"}
ENCOUNTER_STATUS = {"booked": "planned", "arrived": "arrived", "in_progress": "in-progress", "fulfilled": "finished", "cancelled": "cancelled", "noshow": "cancelled"}
GENDER = {"female": "female", "male": "male", "other": "other"}

NAMESPACE = uuid.UUID("5b1f0c8e-8f0e-4a4e-9d7e-3f1f6c1d2a10")


def _urn(kind: str, key: Any) -> str:
    """Stable ids: exporting the same session twice gives the same fullUrls."""
    return f"urn:uuid:{uuid.uuid5(NAMESPACE, f'{kind}/{key}')}"


def _instant(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z") if dt else None


def _coding(system: str, code: str, display: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


def _quantity(value: int | float, unit: str, code: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": code}


def session_bundle(data: SessionData, *, base_url: str = "") -> FhirBundle:
    appt, patient, clinic, protocol = data.appointment, data.patient, data.clinic, data.protocol
    patient_ref = _urn("Patient", f"{clinic.id}/{patient.id}")
    appt_ref = _urn("Appointment", appt.id)
    encounter_ref = _urn("Encounter", appt.id)
    system = f"{base_url.rstrip('/')}/patients" if base_url else f"urn:clinic:{clinic.id}:patients"

    patient_res: dict[str, Any] = {
        "resourceType": "Patient",
        "id": str(patient.id),
        "identifier": [{"system": system, "value": str(patient.id)}],
        "name": [{"use": "official", "family": patient.last_name, "given": [patient.first_name]}],
        "gender": GENDER.get(patient.sex, "unknown"),
        "birthDate": patient.date_of_birth.isoformat(),
    }
    appointment_res: dict[str, Any] = {
        "resourceType": "Appointment",
        "id": str(appt.id),
        "status": APPOINTMENT_STATUS.get(appt.status, "booked"),
        "serviceType": [{"text": protocol.name}],
        "start": _instant(appt.starts_at),
        "end": _instant(appt.ends_at),
        "participant": [{"actor": {"reference": patient_ref}, "status": "accepted"}],
    }
    encounter_res: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": str(appt.id),
        "status": ENCOUNTER_STATUS.get(appt.status, "planned"),
        "class": _coding(ACT_CODE, "AMB", "ambulatory"),
        "type": [{"text": protocol.name}],
        "subject": {"reference": patient_ref},
        "appointment": [{"reference": appt_ref}],
    }
    if appt.checked_in_at:
        encounter_res["period"] = {"start": _instant(appt.checked_in_at)}
        if appt.discharged_at:
            encounter_res["period"]["end"] = _instant(appt.discharged_at)

    entries: list[dict[str, Any]] = [
        {"fullUrl": patient_ref, "resource": patient_res},
        {"fullUrl": appt_ref, "resource": appointment_res},
        {"fullUrl": encounter_ref, "resource": encounter_res},
    ]

    def observation(entry_id: int, suffix: str, code: dict[str, Any], category: str, when: datetime, amended: bool, **value: Any) -> None:
        ref = _urn("Observation", f"{entry_id}/{suffix}")
        res: dict[str, Any] = {
            "resourceType": "Observation",
            "id": f"{entry_id}-{suffix}",
            "status": "amended" if amended else "final",
            "category": [{"coding": [_coding(OBS_CATEGORY, category, "Vital Signs" if category == "vital-signs" else "Survey")]}],
            "code": code,
            "subject": {"reference": patient_ref},
            "encounter": {"reference": encounter_ref},
            "effectiveDateTime": _instant(when),
            **value,
        }
        entries.append({"fullUrl": ref, "resource": res})

    for e in data.current_entries():
        amended = e.supersedes_id is not None
        if e.systolic is not None and e.diastolic is not None:
            observation(
                e.id,  # type: ignore[arg-type]
                "bp",
                {"coding": [_coding(LOINC, "85354-9", "Blood pressure panel with all children optional")], "text": "Blood pressure"},
                "vital-signs",
                e.taken_at,
                amended,
                component=[
                    {"code": {"coding": [_coding(LOINC, "8480-6", "Systolic blood pressure")]}, "valueQuantity": _quantity(e.systolic, "mmHg", "mm[Hg]")},
                    {"code": {"coding": [_coding(LOINC, "8462-4", "Diastolic blood pressure")]}, "valueQuantity": _quantity(e.diastolic, "mmHg", "mm[Hg]")},
                ],
            )
        if e.heart_rate is not None:
            observation(e.id, "hr", {"coding": [_coding(LOINC, "8867-4", "Heart rate")], "text": "Heart rate"}, "vital-signs", e.taken_at, amended, valueQuantity=_quantity(e.heart_rate, "beats/minute", "/min"))  # type: ignore[arg-type]
        if e.spo2 is not None:
            observation(
                e.id,  # type: ignore[arg-type]
                "spo2",
                {
                    "coding": [
                        _coding(LOINC, "2708-6", "Oxygen saturation in Arterial blood"),
                        _coding(LOINC, "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
                    ],
                    "text": "SpO2",
                },
                "vital-signs",
                e.taken_at,
                amended,
                valueQuantity=_quantity(e.spo2, "%", "%"),
            )
        if e.resp_rate is not None:
            observation(e.id, "rr", {"coding": [_coding(LOINC, "9279-1", "Respiratory rate")], "text": "Respiratory rate"}, "vital-signs", e.taken_at, amended, valueQuantity=_quantity(e.resp_rate, "breaths/minute", "/min"))  # type: ignore[arg-type]
        if e.moaas is not None:
            observation(e.id, "moaas", {"coding": [_coding(LOCAL_CODES, "moaas", "Modified Observer's Assessment of Alertness/Sedation (0-5)")], "text": "MOAA/S"}, "survey", e.taken_at, amended, valueInteger=e.moaas)  # type: ignore[arg-type]
        if e.dissociation_total is not None:
            form = "CADSS-6" if e.dissociation_form == "cadss6" else "CADSS"
            observation(e.id, "dissociation", {"coding": [_coding(LOCAL_CODES, e.dissociation_form or "cadss", f"{form} total score")], "text": f"{form} total"}, "survey", e.taken_at, amended, valueInteger=e.dissociation_total)  # type: ignore[arg-type]

    return FhirBundle(
        resource_type="Bundle",
        id=str(uuid.uuid5(NAMESPACE, f"bundle/{appt.id}/{len(entries)}")),
        type="collection",
        timestamp=_instant(datetime.now(UTC)),
        entry=entries,
    )
