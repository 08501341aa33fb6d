"""FHIR R4 export of one supervised session: a collection Bundle of Patient, Appointment, Encounter and vital-sign Observations."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from clinic.fhir import ACT_CODE, LOCAL_CODES, LOINC, OBS_CATEGORY, UCUM, FhirBundle, bundle, patient_entry
from clinic.fhir import coding as _coding
from clinic.fhir import instant as _instant
from clinic.fhir import urn as _urn
from clinic.monitoring.service import SessionData

APPOINTMENT_STATUS = {"booked": "booked", "arrived": "arrived", "in_progress": "arrived", "fulfilled": "fulfilled", "cancelled": "cancelled", "noshow": "noshow"}
ENCOUNTER_STATUS = {"booked": "planned", "arrived": "arrived", "in_progress": "in-progress", "fulfilled": "finished", "cancelled": "cancelled", "noshow": "cancelled"}


def _quantity(value: int | float, unit: str, code: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": code}


def encounter_ref(appointment_id: int) -> str:
    return _urn("Encounter", appointment_id)


def session_bundle(data: SessionData, *, base_url: str = "", more: Sequence[dict[str, Any]] = ()) -> FhirBundle:
    """The session's resources, then `more` entries about it (its outcome questionnaires)."""
    appt, protocol = data.appointment, data.protocol
    patient = patient_entry(data.patient, base_url=base_url)
    patient_ref = patient["fullUrl"]
    appt_ref = _urn("Appointment", appt.id)
    encounter = encounter_ref(appt.id)  # type: ignore[arg-type]
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
        patient,
        {"fullUrl": appt_ref, "resource": appointment_res},
        {"fullUrl": encounter, "resource": encounter_res},
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
            "encounter": {"reference": encounter},
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

    return bundle([*entries, *more], key=f"bundle/{appt.id}")
