"""Patient pages: search as you type, register, edit, and the patient page with upcoming and past sessions."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import msgspec
from litestar import Response, get, post
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Template
from msgspec import Struct

from clinic.clinics import Clinic
from clinic.forms import read_form
from clinic.http import CurrentActor, CurrentClinic, DbSession
from clinic.pages import base_context, can, go
from clinic.patients import service
from clinic.patients.models import MEDICATION_FLAGS
from clinic.patients.rules import NOTICE_CHANNELS, SEXES

FLAG_LABELS = {
    "benzodiazepines": "Benzodiazepines",
    "non_benzodiazepine_sedative_hypnotics": "Non-benzodiazepine sedative hypnotics",
    "psychostimulants": "Psychostimulants",
    "maois": "MAOIs",
    "opioids": "Opioids",
}


def _context(clinic: Clinic, **kw: Any) -> dict[str, Any]:
    return base_context(clinic, flag_labels=FLAG_LABELS, flags=MEDICATION_FLAGS, sexes=SEXES, channels=NOTICE_CHANNELS, **kw)


class PatientForm(Struct):
    """The register and edit form: text as typed (the rules read dates, phones and code lists), the flags and boxes ticked."""

    first_name: str | None = None
    last_name: str | None = None
    date_of_birth: str | None = None
    sex: str | None = None
    email: str | None = None
    phone: str | None = None
    notice_channel: str | None = None
    escort_name: str | None = None
    escort_phone: str | None = None
    rems_enrolled_on: str | None = None
    rems_patient_id: str | None = None
    diagnosis_codes: str | None = None
    time_zone: str | None = None
    medication_flags: list[str] = []
    notice_consent: bool = False
    notices_opted_out: bool = False
    then: str = ""  # "book": go on to book the new patient


async def _form_data(request: HTMXRequest) -> tuple[dict[str, Any], str]:
    data = msgspec.structs.asdict(await read_form(request, PatientForm))
    return data, data.pop("then")


@get("/patients", opt={"permission": "patients.read"}, include_in_schema=False)
async def patients_page(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic) -> Template:
    q = request.query_params.get("q") or ""
    results = await service.search_patients(db_session, actor=actor, q=q, limit=25)
    return Template("patients/list.html", context=_context(clinic, q=q, results=results, pick="", can_write=can(request, "patients.write"), extra=""))


@get("/patients/search", opt={"permission": "patients.read"}, include_in_schema=False)
async def patients_search(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic) -> Template:
    """Results as the front desk types; in a booking flow each result picks the patient for it."""
    q = request.query_params.get("q") or ""
    pick = request.query_params.get("pick") or ""
    keep = {k: request.query_params.get(k) for k in ("start", "chair_id") if request.query_params.get(k)}
    results = await service.search_patients(db_session, actor=actor, q=q, limit=15) if q.strip() or not pick else []
    return Template("patients/_results.html", context=_context(clinic, q=q, results=results, pick=pick, extra=("&" + urlencode(keep)) if keep else ""))


@get("/patients/new", opt={"permission": "patients.write"}, include_in_schema=False)
async def new_patient(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic) -> Template:
    return Template("patients/form.html", context=_context(clinic, patient=None, then=request.query_params.get("then") or ""))


@post("/patients", opt={"permission": "patients.write"}, include_in_schema=False)
async def create_patient(request: HTMXRequest, db_session: DbSession, actor: CurrentActor) -> Response:
    data, then = await _form_data(request)
    patient = await service.create_patient(db_session, actor=actor, data=data)
    if then == "book":
        return go(request, f"/schedule/book?patient_id={patient.id}")
    return go(request, f"/patients/{patient.id}?done=created")


@get("/patients/{patient_id:int}", opt={"permission": "patients.read"}, include_in_schema=False)
async def patient_page(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, patient_id: int) -> Template:
    chart = await service.read_chart(db_session, actor=actor, patient_id=patient_id)
    p = chart.patient
    from datetime import date

    return Template("patients/detail.html", context=_context(
        clinic, p=p, upcoming=chart.upcoming, past=chart.past, age=service.age_on(p.date_of_birth, date.today()),
        can_write=can(request, "patients.write"), can_book=can(request, "schedule.write"), done=request.query_params.get("done")))


@get("/patients/{patient_id:int}/edit", opt={"permission": "patients.write"}, include_in_schema=False)
async def edit_patient(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, patient_id: int) -> Template:
    patient = await service.get_patient(db_session, actor=actor, patient_id=patient_id)
    return Template("patients/form.html", context=_context(clinic, patient=patient, then=""))


@post("/patients/{patient_id:int}/edit", opt={"permission": "patients.write"}, include_in_schema=False)
async def save_patient(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, patient_id: int) -> Response:
    data, _ = await _form_data(request)
    await service.update_patient(db_session, actor=actor, patient_id=patient_id, data=data)
    return go(request, f"/patients/{patient_id}?done=saved")


routes = [patients_page, patients_search, new_patient, create_patient, patient_page, edit_patient, save_patient]
