"""Monitoring JSON routes (/api/v1): the twins of the tablet pages, calling the same service functions."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter
from msgspec import UNSET

from clinic.audit.service import record
from clinic.fhir import FhirBundle, patient_ref
from clinic.http import CurrentActor, DbSession, provide_actor
from clinic.monitoring import fhir, rules, service, vitals
from clinic.monitoring.board import board_json, load_board, record_board_read, shows_clinical_detail
from clinic.monitoring.models import Alert, ClinicalEntry, DosingEntry, RemsForm
from clinic.monitoring.schemas import (
    MEASURED,
    Acknowledge,
    AlertOut,
    Assessment,
    BlockerOut,
    BoardOut,
    CheckIn,
    CheckOut,
    Correction,
    Discharge,
    DissociationOut,
    Dose,
    DoseCorrection,
    DoseOut,
    Entry,
    EntryOut,
    Escort,
    RemsFieldOut,
    RemsFormOut,
    RemsPending,
    RemsSubmission,
    RemsTrackerOut,
    RemsTracking,
    SessionStateOut,
    StartDosing,
    Vitals,
    measurements_of,
)
from clinic.outcomes import fhir as outcomes_fhir
from clinic.outcomes import service as outcomes
from clinic.timeutil import both_zones

TAGS = ["monitoring"]


# ---- shapes ---------------------------------------------------------------------------------------


def alert_json(a: Alert, tz: str) -> AlertOut:
    return AlertOut(
        id=a.id,
        appointment_id=a.appointment_id,
        entry_id=a.entry_id,
        level=a.level,
        code=a.code,
        message=a.message,
        raised_at=both_zones(a.raised_at, tz),
        acknowledged=a.acknowledged_at is not None,
        acknowledged_by=a.acknowledged_by,
        acknowledged_at=both_zones(a.acknowledged_at, tz),
        note=a.note,
    )


def charted(row: ClinicalEntry | DosingEntry, tz: str, superseded_by: int | None) -> dict[str, Any]:
    """The fields every chart row's view shares (Charted)."""
    return dict(
        id=row.id, appointment_id=row.appointment_id, client_id=row.client_id, taken_at=both_zones(row.taken_at, tz),
        recorded_by=row.recorded_by, recorded_at=both_zones(row.recorded_at, tz), supersedes_id=row.supersedes_id,
        correction_reason=row.correction_reason, entered_in_error=row.entered_in_error, superseded_by=superseded_by,
    )


def entry_json(e: ClinicalEntry, tz: str, *, alerts: list[Alert] | None = None, superseded_by: int | None = None) -> EntryOut:
    return EntryOut(
        **charted(e, tz, superseded_by),
        **{name: getattr(e, name) for name in MEASURED if name != "dissociation"},
        check_key=e.check_key,
        dissociation=DissociationOut(form=e.dissociation_form, items=e.dissociation_items, total=e.dissociation_total) if e.dissociation_total is not None else None,
        alerts=UNSET if alerts is None else [alert_json(a, tz) for a in alerts],
    )


def dose_json(d: DosingEntry, tz: str, *, superseded_by: int | None = None) -> DoseOut:
    return DoseOut(
        **charted(d, tz, superseded_by),
        kind=d.kind,
        device_number=d.device_number,
        dose_mg=float(d.dose_mg) if d.dose_mg is not None else None,
        lot_number=d.lot_number,
        mg_per_kg=float(d.mg_per_kg) if d.mg_per_kg is not None else None,
        weight_kg=float(d.weight_kg) if d.weight_kg is not None else None,
    )


def check_json(s: rules.CheckState, tz: str) -> CheckOut:
    return CheckOut(
        key=s.key, label=s.label, phase=s.phase, records=list(s.records), status=s.status, due_at=both_zones(s.due_at, tz),
        window_opens_at=both_zones(s.opens_at, tz), window_closes_at=both_zones(s.closes_at, tz), missing=list(s.missing),
        done_at=both_zones(s.done_at, tz), late=s.late,
    )


def state_json(state: service.SessionState) -> SessionStateOut:
    data = state.data
    appt, tz = data.appointment, data.tz
    return SessionStateOut(
        appointment_id=appt.id,
        patient_id=appt.patient_id,
        kind=data.kind,
        status=appt.status,
        phase=state.phase,
        phase_label=rules.PHASE_LABELS.get(state.phase, state.phase),
        checked_in_at=both_zones(appt.checked_in_at, tz),
        dosing_started_at=both_zones(appt.dosing_started_at, tz),
        discharged_at=both_zones(appt.discharged_at, tz),
        discharged_by=appt.discharged_by,
        minutes_since_dosing=state.minutes_since_dosing,
        escort_confirmed=appt.escort_confirmed,
        fasting_confirmed=appt.fasting_confirmed,
        weight_kg=appt.weight_kg,
        planned_dose_mg=data.planned_dose_mg(),
        checks=[check_json(s, tz) for s in state.schedule],
        next_check=state.next_check.key if state.next_check else None,
        pre_dose_blockers=[BlockerOut(code=b.code, message=b.message) for b in state.pre_dose],
        discharge_blockers=[BlockerOut(code=b.code, message=b.message) for b in state.blockers],
        open_alerts=[alert_json(a, tz) for a in data.open_alerts()],
        dosing=[dose_json(d, tz) for d in data.current_doses()],
        facts=appt.facts,
    )


def _superseded(rows: list[Any]) -> dict[int, int]:
    return {r.supersedes_id: r.id for r in rows if r.supersedes_id is not None}


def _created(body: Any, created: bool) -> Response:
    return Response(content=body, status_code=201 if created else 200)


def repeat_answers(view: type) -> dict[int, ResponseSpec]:
    """A submission whose client_id was seen before is answered 200 with the first result, writing nothing."""
    return {200: ResponseSpec(view, description="A repeated client_id: the first result; nothing new was written.", generate_examples=False)}


async def _record(request: Request, appointment_id: int, body: Any) -> Response[EntryOut]:
    # the busiest write there is: on driver connections, with no ORM session for the request (see record_entry),
    # and the actor made here rather than by Litestar's dependency resolution, which costs more than making it
    actor = provide_actor(request)
    state = request.app.state
    result = await vitals.record_entry(
        state.db.statements, actor=actor, appointment_id=appointment_id, client_id=body.client_id, values=measurements_of(body),
        taken_at=body.taken_at, check_key=body.check_key, memo=state.chart_memo, writer=state.entry_writer,
    )
    return _created(entry_json(result.entry, result.tz, alerts=result.alerts), result.created)



async def _tz(db_session: DbSession, actor: CurrentActor) -> str:
    from clinic.clinics import Clinic

    clinic = await db_session.get(Clinic, actor.clinic_id)
    return clinic.timezone if clinic else "UTC"


# ---- lifecycle --------------------------------------------------------------------------------------

@post("/appointments/{appointment_id:int}/check-in", opt={"permission": "session.run"}, tags=TAGS, summary="Check a patient in for a monitored session", status_code=200)
async def check_in(db_session: DbSession, actor: CurrentActor, appointment_id: int, data: CheckIn) -> SessionStateOut:
    """Fasting confirmed; escort recorded (confirmed now or later); weight for IV; REMS enrollment for esketamine (fixed rule)."""
    await service.check_in(
        db_session,
        actor=actor,
        appointment_id=appointment_id,
        fasting_confirmed=data.fasting_confirmed,
        escort_confirmed=data.escort_confirmed,
        escort_name=data.escort_name,
        escort_phone=data.escort_phone,
        weight_kg=data.weight_kg,
        taken_at=data.taken_at,
    )
    return state_json(await service.session_state(db_session, actor=actor, appointment_id=appointment_id, audit=False))


@post("/appointments/{appointment_id:int}/escort", opt={"permission": "session.run"}, tags=TAGS, summary="Confirm the escort who takes the patient home", status_code=200)
async def confirm_escort(db_session: DbSession, actor: CurrentActor, appointment_id: int, data: Escort) -> SessionStateOut:
    await service.confirm_escort(db_session, actor=actor, appointment_id=appointment_id, escort_name=data.escort_name, escort_phone=data.escort_phone)
    return state_json(await service.session_state(db_session, actor=actor, appointment_id=appointment_id, audit=False))


@post("/appointments/{appointment_id:int}/start-dosing", opt={"permission": "session.run"}, tags=TAGS, summary="Record the first dose once the pre-dose gate is clear",
      responses=repeat_answers(DoseOut))
async def start_dosing(db_session: DbSession, actor: CurrentActor, appointment_id: int, data: StartDosing) -> Response[DoseOut]:
    """409 with `blockers` while pre-dose checks are missing or a caution awaits a prescriber's acknowledgement."""
    result = await service.start_dosing(
        db_session, actor=actor, appointment_id=appointment_id, client_id=data.client_id, taken_at=data.taken_at, lot_number=data.lot_number, dose_mg=data.dose_mg, mg_per_kg=data.mg_per_kg
    )
    return _created(dose_json(result.dose, await _tz(db_session, actor)), result.created)


@get("/appointments/{appointment_id:int}/dosing", opt={"permission": "session.read"}, tags=TAGS, summary="Dosing entries of a session")
async def list_dosing(db_session: DbSession, actor: CurrentActor, appointment_id: int, current_only: bool = True) -> list[DoseOut]:
    data = await service.load_session(db_session, clinic_id=actor.clinic_id, appointment_id=appointment_id, entries=False, alerts=False)
    record(db_session, actor=actor, action="session.view", entity="appointment", entity_id=appointment_id, patient_id=data.appointment.patient_id, changes={"part": "dosing"})
    by = _superseded(data.doses)
    rows = data.current_doses() if current_only else data.doses
    return [dose_json(d, data.tz, superseded_by=by.get(d.id)) for d in rows]  # type: ignore[arg-type]


@post("/appointments/{appointment_id:int}/dosing", opt={"permission": "session.run"}, tags=TAGS, summary="Record a further esketamine device or the end of an IV infusion",
      responses=repeat_answers(DoseOut))
async def add_dose(db_session: DbSession, actor: CurrentActor, appointment_id: int, data: Dose) -> Response[DoseOut]:
    result = await service.record_dose(db_session, actor=actor, appointment_id=appointment_id, client_id=data.client_id, kind=data.kind, taken_at=data.taken_at, lot_number=data.lot_number)
    return _created(dose_json(result.dose, await _tz(db_session, actor)), result.created)


@post("/appointments/{appointment_id:int}/dosing/{dose_id:int}/corrections", opt={"permission": "session.run"}, tags=TAGS, summary="Correct a dosing entry (a new superseding row)",
      responses=repeat_answers(DoseOut))
async def correct_dose(db_session: DbSession, actor: CurrentActor, appointment_id: int, dose_id: int, data: DoseCorrection) -> Response[DoseOut]:
    result = await service.correct_dose(
        db_session,
        actor=actor,
        appointment_id=appointment_id,
        dose_id=dose_id,
        client_id=data.client_id,
        reason=data.reason,
        taken_at=data.taken_at,
        lot_number=data.lot_number,
        entered_in_error=data.entered_in_error,
    )
    return _created(dose_json(result.dose, await _tz(db_session, actor)), result.created)


# ---- entries ------------------------------------------------------------------------------------------


async def _list_entries(db_session: DbSession, actor: CurrentActor, appointment_id: int, *, current_only: bool, measures: tuple[str, ...], part: str) -> list[EntryOut]:
    data = await service.load_session(db_session, clinic_id=actor.clinic_id, appointment_id=appointment_id, doses=False)
    record(db_session, actor=actor, action="session.view", entity="appointment", entity_id=appointment_id, patient_id=data.appointment.patient_id, changes={"part": part})
    by = _superseded(data.entries)
    raised: dict[int, list[Alert]] = {}
    for a in data.alerts:
        if a.entry_id is not None:
            raised.setdefault(a.entry_id, []).append(a)
    rows = data.current_entries() if current_only else data.entries
    out = []
    for e in rows:
        r = service.reading_of(e)
        if measures and not (any(r.has(m) for m in measures) or (e.entered_in_error and not current_only)):
            if not (part == "assessments" and e.note):
                continue
        out.append(entry_json(e, data.tz, alerts=raised.get(e.id, []), superseded_by=by.get(e.id)))  # type: ignore[arg-type]
    return out


@get("/appointments/{appointment_id:int}/vitals", opt={"permission": "session.read"}, tags=TAGS, summary="Vital signs recorded on a session")
async def list_vitals(
    db_session: DbSession, actor: CurrentActor, appointment_id: int, current_only: bool = Parameter(default=True, description="false: include superseded rows")
) -> list[EntryOut]:
    return await _list_entries(db_session, actor, appointment_id, current_only=current_only, measures=("bp", "hr", "spo2", "rr"), part="vitals")


@post("/appointments/{appointment_id:int}/vitals", opt={"permission": "session.run"}, tags=TAGS, summary="Record vital signs (201; a repeated client_id answers 200 with the first result)",
      responses=repeat_answers(EntryOut))
async def add_vitals(request: Request, appointment_id: int, data: Vitals) -> Response[EntryOut]:
    """Plausibility limits apply (422 naming the field); alerts are evaluated on every entry and returned with it."""
    return await _record(request, appointment_id, data)


@get("/appointments/{appointment_id:int}/assessments", opt={"permission": "session.read"}, tags=TAGS, summary="MOAA/S, dissociation and notes recorded on a session")
async def list_assessments(db_session: DbSession, actor: CurrentActor, appointment_id: int, current_only: bool = True) -> list[EntryOut]:
    return await _list_entries(db_session, actor, appointment_id, current_only=current_only, measures=("moaas", "dissociation"), part="assessments")


@post("/appointments/{appointment_id:int}/assessments", opt={"permission": "session.run"}, tags=TAGS, summary="Record MOAA/S, a dissociation score (CADSS-6 or CADSS) and/or a note",
      responses=repeat_answers(EntryOut))
async def add_assessment(request: Request, appointment_id: int, data: Assessment) -> Response[EntryOut]:
    return await _record(request, appointment_id, data)


@post("/appointments/{appointment_id:int}/entries", opt={"permission": "session.run"}, tags=TAGS, summary="Record a whole check at once (vitals and assessments)",
      responses=repeat_answers(EntryOut))
async def add_entry(request: Request, appointment_id: int, data: Entry) -> Response[EntryOut]:
    return await _record(request, appointment_id, data)


@post("/appointments/{appointment_id:int}/entries/{entry_id:int}/corrections", opt={"permission": "session.run"}, tags=TAGS, summary="Correct an entry (a new row supersedes it; nothing is overwritten)",
      responses=repeat_answers(EntryOut))
async def correct_entry(db_session: DbSession, actor: CurrentActor, appointment_id: int, entry_id: int, data: Correction) -> Response[EntryOut]:
    changes: dict[str, Any] = {}
    for name in ("taken_at", *MEASURED):
        value = getattr(data, name)
        if value is not UNSET and name != "dissociation":
            changes[name] = value
    if data.dissociation is not UNSET:
        changes["dissociation_form"] = data.dissociation.form if data.dissociation else None
        changes["dissociation_items"] = dict(data.dissociation.items) if data.dissociation else None
    result = await service.correct_entry(
        db_session,
        actor=actor,
        appointment_id=appointment_id,
        entry_id=entry_id,
        client_id=data.client_id,
        reason=data.reason,
        changes=changes,
        entered_in_error=data.entered_in_error,
    )
    return _created(entry_json(result.entry, result.tz, alerts=result.alerts), result.created)


# ---- alerts, state, discharge ------------------------------------------------------------------------------


@get("/appointments/{appointment_id:int}/alerts", opt={"permission": "session.read"}, tags=TAGS, summary="Alerts of a session (open ones block discharge)")
async def list_alerts(db_session: DbSession, actor: CurrentActor, appointment_id: int, open_only: bool = False) -> list[AlertOut]:
    data = await service.load_session(db_session, clinic_id=actor.clinic_id, appointment_id=appointment_id, entries=False, doses=False)
    record(db_session, actor=actor, action="session.view", entity="appointment", entity_id=appointment_id, patient_id=data.appointment.patient_id, changes={"part": "alerts"})
    rows = data.open_alerts() if open_only else data.alerts
    return [alert_json(a, data.tz) for a in rows]


@post("/appointments/{appointment_id:int}/alerts/{alert_id:int}/acknowledge", opt={"permission": "session.run"}, tags=TAGS, summary="Acknowledge an alert with a note (pre-dose cautions: prescribers only)", status_code=200)
async def acknowledge(db_session: DbSession, actor: CurrentActor, appointment_id: int, alert_id: int, data: Acknowledge) -> AlertOut:
    alert = await service.acknowledge_alert(db_session, actor=actor, appointment_id=appointment_id, alert_id=alert_id, note=data.note)
    return alert_json(alert, await _tz(db_session, actor))


@get("/appointments/{appointment_id:int}/session", opt={"permission": "session.read"}, tags=TAGS, summary="A session's phase, check schedule, blockers and open alerts")
async def session_state(db_session: DbSession, actor: CurrentActor, appointment_id: int) -> SessionStateOut:
    return state_json(await service.session_state(db_session, actor=actor, appointment_id=appointment_id))


@post("/appointments/{appointment_id:int}/discharge", opt={"permission": "session.sign"}, tags=TAGS, summary="Sign the discharge (409 with `blockers` while any criterion is unmet)", status_code=200)
async def discharge(request: Request, db_session: DbSession, actor: CurrentActor, appointment_id: int, data: Discharge) -> SessionStateOut:
    state = await service.discharge(
        db_session, actor=actor, appointment_id=appointment_id, queue=request.app.state.queue, ready_to_leave_at=data.ready_to_leave_at, note=data.note
    )
    return state_json(state)


@get("/board", opt={"permission": "board.read"}, tags=TAGS, summary="The live board: every chair, its session, next check, overdue checks and open alerts")
async def board(db_session: DbSession, actor: CurrentActor) -> BoardOut:
    loaded = await load_board(db_session, clinic_id=actor.clinic_id)
    record_board_read(db_session, actor=actor, board=loaded, view="api")
    return board_json(loaded, clinical=shows_clinical_detail(actor.roles))


@get("/appointments/{appointment_id:int}/fhir", opt={"permission": "session.read"}, tags=TAGS, summary="FHIR R4 Bundle of the session (with the outcome questionnaires answered for it)", media_type="application/fhir+json")
async def fhir_bundle(request: Request, db_session: DbSession, actor: CurrentActor, appointment_id: int) -> Response[FhirBundle]:
    data = await service.load_session(db_session, clinic_id=actor.clinic_id, appointment_id=appointment_id, doses=False, alerts=False)
    record(db_session, actor=actor, action="session.fhir_export", entity="appointment", entity_id=appointment_id, patient_id=data.appointment.patient_id)
    # the questionnaires answered for this visit go with it
    measures = await outcomes.measures_of_visit(db_session, appointment_id=appointment_id)
    more = [e for m in measures for e in outcomes_fhir.measure_entries(m, patient_ref=patient_ref(data.patient), encounter_ref=fhir.encounter_ref(appointment_id))]
    return Response(content=fhir.session_bundle(data, base_url=request.app.state.settings.base_url, more=more), media_type="application/fhir+json")


# ---- REMS ----------------------------------------------------------------------------------------------------


def rems_json(form: RemsForm, view: type[RemsTracking] = RemsTracking, **more: Any) -> RemsTracking:
    return view(
        appointment_id=form.appointment_id,
        patient_id=form.patient_id,
        session_date=form.session_date,
        due_on=form.due_on,
        submitted_on=form.submitted_on,
        confirmation=form.confirmation,
        **more,
    )


@get("/rems-forms", opt={"permission": "session.read"}, tags=TAGS, summary="REMS Patient Monitoring Forms still to submit, and those submitted lately")
async def rems_forms(db_session: DbSession, actor: CurrentActor) -> RemsTrackerOut:
    pending, done, today = await service.rems_tracker(db_session, actor=actor)
    return RemsTrackerOut(
        today=today,
        pending=[rems_json(r.form, RemsPending, overdue=r.form.due_on < today) for r in pending],
        submitted=[rems_json(r.form) for r in done],
    )


@get("/appointments/{appointment_id:int}/rems-form", opt={"permission": "session.read"}, tags=TAGS, summary="The REMS Patient Monitoring Form of an esketamine session, filled from the chart")
async def rems_form(db_session: DbSession, actor: CurrentActor, appointment_id: int) -> RemsFormOut:
    state, fields = await service.rems_form(db_session, actor=actor, appointment_id=appointment_id)
    form = state.data.rems
    return RemsFormOut(
        appointment_id=appointment_id,
        fields=[RemsFieldOut(section=f.section, label=f.label, value=f.value or None, missing=f.missing, note=f.note or None) for f in fields],
        missing=[f.label for f in fields if f.missing],
        tracking=rems_json(form) if form else None,
    )


@post("/appointments/{appointment_id:int}/rems-form/submission", opt={"permission": "session.run"}, tags=TAGS, summary="Record that the REMS form was submitted, with its confirmation", status_code=200)
async def rems_submission(db_session: DbSession, actor: CurrentActor, appointment_id: int, data: RemsSubmission) -> RemsTracking:
    form = await service.record_rems_submission(db_session, actor=actor, appointment_id=appointment_id, submitted_on=data.submitted_on, confirmation=data.confirmation)
    return rems_json(form)


routes = [
    check_in,
    confirm_escort,
    start_dosing,
    list_dosing,
    add_dose,
    correct_dose,
    list_vitals,
    add_vitals,
    list_assessments,
    add_assessment,
    add_entry,
    correct_entry,
    list_alerts,
    acknowledge,
    session_state,
    discharge,
    board,
    fhir_bundle,
    rems_forms,
    rems_form,
    rems_submission,
]
