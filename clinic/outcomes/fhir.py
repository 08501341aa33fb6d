"""FHIR R4 export of outcome measures: each completed questionnaire as a QuestionnaireResponse plus an Observation of its total
(LOINC 44249-1/44261-6 for the PHQ-9, 69737-5/70274-6 for the GAD-7; the ASRS, which LOINC does not cover, under local codes)."""

from __future__ import annotations

from typing import Any

from clinic.fhir import LOCAL_CODES, LOINC, OBS_CATEGORY, FhirBundle, bundle, coding, instant, patient_entry, urn
from clinic.outcomes import rules
from clinic.outcomes.instruments import INSTRUMENTS
from clinic.outcomes.models import OutcomeMeasure
from clinic.patients.models import Patient

# LOINC's canonical Questionnaire for a panel; the ASRS has a local one
QUESTIONNAIRE = {"phq9": "http://loinc.org/q/44249-1", "gad7": "http://loinc.org/q/69737-5", "asrs": "urn:clinic:questionnaire:asrs-v1.1"}


def _answer(instrument: str, key: str, value: int) -> dict[str, Any]:
    item = INSTRUMENTS[instrument].item(key)
    option = next(o for o in item.options if o.value == value)  # type: ignore[union-attr]
    if option.loinc:
        return {"valueCoding": coding(LOINC, option.loinc, option.label)}
    return {"valueCoding": coding(LOCAL_CODES, f"{instrument}-answer-{value}", option.label)}


def measure_entries(m: OutcomeMeasure, *, patient_ref: str, encounter_ref: str | None = None) -> list[dict[str, Any]]:
    """A QuestionnaireResponse with every answer, and an Observation of the total derived from it."""
    inst = INSTRUMENTS[m.instrument]
    score = rules.score(m.instrument, m.answers)
    qr_ref = urn("QuestionnaireResponse", m.id)
    items = []
    for item in inst.items:
        if item.key not in m.answers:
            continue
        entry: dict[str, Any] = {"linkId": item.key, "text": item.text, "answer": [_answer(m.instrument, item.key, m.answers[item.key])]}
        if item.loinc:
            entry["definition"] = f"{LOINC}/{item.loinc}"
        items.append(entry)
    context = {"encounter": {"reference": encounter_ref}} if encounter_ref else {}
    qr: dict[str, Any] = {
        "resourceType": "QuestionnaireResponse",
        "id": str(m.id),
        "questionnaire": QUESTIONNAIRE[m.instrument],
        "status": "entered-in-error" if m.entered_in_error else ("amended" if m.supersedes_id else "completed"),
        "subject": {"reference": patient_ref},
        "authored": instant(m.completed_at),
        # the patient answered, or staff on the patient's behalf
        "source": {"reference": patient_ref} if m.completed_by == "patient" else {"display": "clinic staff on the patient's behalf"},
        "item": items,
        **context,
    }
    code = ({"coding": [coding(LOINC, inst.loinc_total, inst.total_display)], "text": f"{inst.short} total"} if inst.loinc_total
            else {"coding": [coding(LOCAL_CODES, f"{m.instrument}-total", inst.total_display)], "text": f"{inst.short} total"})
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"{m.id}-total",
        "status": "entered-in-error" if m.entered_in_error else ("amended" if m.supersedes_id else "final"),
        "category": [{"coding": [coding(OBS_CATEGORY, "survey", "Survey")]}],
        "code": code,
        "subject": {"reference": patient_ref},
        "effectiveDateTime": instant(m.completed_at),
        "valueInteger": score.total,
        "derivedFrom": [{"reference": qr_ref}],
        **context,
    }
    if score.band:
        obs["interpretation"] = [{"text": score.band}]
    if m.instrument == "asrs":
        obs["component"] = [
            {"code": {"coding": [coding(LOCAL_CODES, "asrs-part-a-shaded", "ASRS Part A answers in the shaded boxes (0-6)")]},
             "valueInteger": score.part_a_positive},
            {"code": {"coding": [coding(LOCAL_CODES, "asrs-inattentive", "ASRS inattentive subscale (items 1-4, 7-11)")]},
             "valueInteger": score.inattentive},
            {"code": {"coding": [coding(LOCAL_CODES, "asrs-hyperactive", "ASRS hyperactive/impulsive subscale (items 5-6, 12-18)")]},
             "valueInteger": score.hyperactive},
        ]
    return [{"fullUrl": qr_ref, "resource": qr}, {"fullUrl": urn("Observation", f"outcome/{m.id}"), "resource": obs}]


def patient_bundle(patient: Patient, measures: list[OutcomeMeasure], *, base_url: str = "") -> FhirBundle:
    """Every current outcome measure of one patient, with the Patient."""
    entries = [patient_entry(patient, base_url=base_url)]
    for m in measures:
        entries += measure_entries(m, patient_ref=entries[0]["fullUrl"])
    return bundle(entries, key=f"outcomes/{patient.clinic_id}/{patient.id}")
