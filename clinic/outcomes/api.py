"""Outcome JSON routes (/api/v1): the twins of the staff pages, calling the same service functions."""

from __future__ import annotations

from typing import Annotated

from litestar import Request, Response, get, post, put
from litestar.params import Parameter

from clinic.auth.permissions import allows
from clinic.clinics import clinic_of
from clinic.fhir import FhirBundle
from clinic.http import CurrentActor, DbSession
from clinic.outcomes import fhir, rules, service
from clinic.outcomes.instruments import ORDER
from clinic.outcomes.schemas import (
    ClinicOutcomesOut,
    CorrectionIn,
    GroupOut,
    MeasureIn,
    MeasureOut,
    MeasureRecorded,
    PatientOutcomesOut,
    ReviewIn,
    ReviewOut,
    ScheduleIn,
    ScheduleOut,
    VisitOut,
    WaiverIn,
    WeekOut,
    cell_out,
    errors,
    measure_out,
    review_out,
    trend_out,
    visit_out,
)
from clinic.timeutil import both_zones

TAGS = ["outcomes"]
NO_PATIENT = "No such patient in this clinic."
BAD_ANSWERS = "An answer outside the item's options, a missing item, an unknown instrument: `field` names it; nothing was saved."


async def _tz(db_session: DbSession, actor: CurrentActor) -> str:
    return (await clinic_of(db_session, actor)).timezone


def _recorded(result: service.MeasureResult, tz: str) -> MeasureRecorded:
    return MeasureRecorded(measure_out(result.measure, tz), result.created, review_out(result.review, tz) if result.review else None)


@get("/patients/{patient_id:int}/outcome-measures", opt={"permission": "outcomes.read"}, tags=TAGS,
     summary="A patient's questionnaires with every answer and score (audited)", responses=errors(e404=NO_PATIENT))
async def measure_list(db_session: DbSession, actor: CurrentActor, patient_id: int,
                       current_only: Annotated[bool, Parameter(description="false adds corrected and withdrawn answers")] = True) -> list[MeasureOut]:
    po = await service.patient_outcomes(db_session, actor=actor, patient_id=patient_id)
    replaced = po.superseded
    rows = [m for m in reversed(po.history) if not current_only or (m.id not in replaced and not m.entered_in_error)]
    return [measure_out(m, po.clinic.timezone) for m in rows]


@post("/patients/{patient_id:int}/outcome-measures", opt={"permission": "outcomes.record"}, tags=TAGS,
      summary="Record a questionnaire answered on the patient's behalf (201; a repeated client_id answers 200 with the first result)",
      responses=errors(e404=NO_PATIENT, e422=BAD_ANSWERS))
async def measure_record(request: Request, db_session: DbSession, actor: CurrentActor, patient_id: int, data: MeasureIn) -> Response[MeasureRecorded]:
    result = await service.record_by_staff(db_session, actor=actor, patient_id=patient_id, instrument=data.instrument, answers=data.answers,
                                           client_id=data.client_id, appointment_id=data.appointment_id, completed_at=data.completed_at,
                                           queue=request.app.state.queue)
    return Response(_recorded(result, await _tz(db_session, actor)), status_code=201 if result.created else 200)


@post("/outcome-measures/{measure_id:int}/corrections", opt={"permission": "outcomes.record"}, tags=TAGS,
      summary="Correct a questionnaire (a new row supersedes it, with who, when and why; nothing is overwritten)",
      responses=errors(e404="No such questionnaire in this clinic.", e409="Already corrected: correct the newest version.",
                       e422=BAD_ANSWERS + " A reason is required."))
async def measure_correct(request: Request, db_session: DbSession, actor: CurrentActor, measure_id: int, data: CorrectionIn) -> Response[MeasureRecorded]:
    result = await service.correct_measure(db_session, actor=actor, measure_id=measure_id, client_id=data.client_id, reason=data.reason,
                                           answers=data.answers, entered_in_error=data.entered_in_error, queue=request.app.state.queue)
    return Response(_recorded(result, await _tz(db_session, actor)), status_code=201 if result.created else 200)


@get("/patients/{patient_id:int}/outcomes", opt={"permission": "outcomes.read"}, tags=TAGS,
     summary="A patient's trends: each instrument's totals, the baseline, change, response and remission (audited)",
     responses=errors(e404=NO_PATIENT))
async def patient_outcomes(db_session: DbSession, actor: CurrentActor, patient_id: int,
                           protocol: Annotated[str | None, Parameter(description="esketamine, ketamine_iv or kap: whose first dose marks the baseline")] = None
                           ) -> PatientOutcomesOut:
    po = await service.patient_outcomes(db_session, actor=actor, patient_id=patient_id, kind=protocol)
    tz = po.clinic.timezone
    return PatientOutcomesOut(po.patient.id, po.track_kind, {k: both_zones(v, tz) for k, v in po.first_dose.items()},  # type: ignore[arg-type,misc]
                              [trend_out(t, tz) for t in po.trends], [review_out(r, tz) for r in po.reviews])


@get("/patients/{patient_id:int}/fhir/outcomes", opt={"permission": "outcomes.read"}, tags=TAGS, media_type="application/fhir+json",
     summary="FHIR R4 Bundle: the Patient, a QuestionnaireResponse and a total-score Observation per current questionnaire",
     responses=errors(e404=NO_PATIENT))
async def patient_fhir(request: Request, db_session: DbSession, actor: CurrentActor, patient_id: int) -> Response[FhirBundle]:
    po = await service.patient_outcomes(db_session, actor=actor, patient_id=patient_id, action="outcomes.fhir_export")
    measures = [m for t in po.trends for m in t.measures]
    return Response(content=fhir.patient_bundle(po.patient, sorted(measures, key=lambda m: (m.completed_at, m.id)),
                                                base_url=request.app.state.settings.base_url), media_type="application/fhir+json")


@get("/appointments/{appointment_id:int}/outcomes-due", opt={"permission": "schedule.read"}, tags=TAGS,
     summary="The questionnaires due before a visit, whether each is answered, and what blocks its dosing (no answers, no scores)",
     responses=errors(e404="No such appointment in this clinic."))
async def visit_due(db_session: DbSession, actor: CurrentActor, appointment_id: int) -> VisitOut:
    return visit_out(await service.appointment_outcomes(db_session, clinic_id=actor.clinic_id, appointment_id=appointment_id),
                     await _tz(db_session, actor), clinical=allows("outcomes.read", actor.roles))


@post("/appointments/{appointment_id:int}/outcome-waiver", opt={"permission": "outcomes.review"}, tags=TAGS, status_code=201,
      summary="Waive a course's missing baseline questionnaires for this first dose (prescribers; the reason is kept and audited)",
      responses=errors(e404="No such appointment in this clinic.", e409="Nothing to waive, already waived, or dosing started.",
                       e422="The reason is missing."))
async def visit_waiver(db_session: DbSession, actor: CurrentActor, appointment_id: int, data: WaiverIn) -> VisitOut:
    await service.waive_baseline(db_session, actor=actor, appointment_id=appointment_id, reason=data.reason)
    return visit_out(await service.appointment_outcomes(db_session, clinic_id=actor.clinic_id, appointment_id=appointment_id),
                     await _tz(db_session, actor), clinical=allows("outcomes.read", actor.roles))


@get("/safety-reviews", opt={"permission": "outcomes.read"}, tags=TAGS, summary="Safety reviews (PHQ-9 item 9 above 0), open ones by default (audited)")
async def review_list(db_session: DbSession, actor: CurrentActor, open: bool = True, patient_id: int | None = None) -> list[ReviewOut]:
    tz = await _tz(db_session, actor)
    return [review_out(r, tz) for r in await service.reviews(db_session, actor=actor, open_only=open, patient_id=patient_id)]


@post("/safety-reviews/{review_id:int}", opt={"permission": "outcomes.review"}, tags=TAGS, status_code=200,
      summary="Record a prescriber's safety review (risk level low, moderate or high; action taken; safety plan yes/no); it lifts the dosing block",
      responses=errors(e404="No such safety review in this clinic.", e409="Already recorded.",
                       e422="risk_level, action_taken or safety_plan is missing or not allowed."))
async def review_record(db_session: DbSession, actor: CurrentActor, review_id: int, data: ReviewIn) -> ReviewOut:
    review = await service.record_review(db_session, actor=actor, review_id=review_id, risk_level=data.risk_level,
                                         action_taken=data.action_taken, safety_plan=data.safety_plan)
    return review_out(review, await _tz(db_session, actor))


@get("/outcomes", opt={"permission": "outcomes.clinic"}, tags=TAGS,
     summary="The clinic's outcomes: response and remission per protocol and diagnosis group; counts under 5 withheld (null, named in `withheld`)")
async def clinic_outcomes(db_session: DbSession, actor: CurrentActor) -> ClinicOutcomesOut:
    out = await service.clinic_outcomes(db_session, actor=actor)

    def groups(cells: dict[str, dict[str, rules.Cell]], labels: list[tuple[str, str]]) -> list[GroupOut]:
        return [GroupOut(k, label, {i: cell_out(cells[k][i]) for i in ORDER}) for k, label in labels]

    return ClinicOutcomesOut(
        rules.SMALL_CELL,
        groups(out.by_protocol, [(k, rules.KIND_LABELS[k]) for k in rules.DOSING_KINDS]),
        groups(out.by_group, [(k, label) for k, label, _ in rules.DIAGNOSIS_GROUPS]),
        {i: {k: [WeekOut(p.week, p.mean_change, p.patients) for p in points] for k, points in out.weekly[i].items()} for i in ORDER},
    )


@put("/session-types/{session_type_id:int}/outcome-schedule", opt={"permission": "admin"}, tags=TAGS,
     summary="When a protocol's questionnaires are due (admins; audited with before and after)",
     responses=errors(e404="No such protocol.", e422="A value out of range: `field` names it."))
async def schedule_save(db_session: DbSession, actor: CurrentActor, session_type_id: int, data: ScheduleIn) -> ScheduleOut:
    st, s = await service.save_schedule(db_session, actor=actor, session_type_id=session_type_id, data={
        "induction_every": data.induction_every, "end_of_course": data.end_of_course, "maintenance_days": data.maintenance_days,
        "baseline_valid_days": data.baseline_valid_days, "maintenance_templates": data.maintenance_templates})
    return ScheduleOut(st.id, st.kind, s.induction_every, s.end_of_course, s.maintenance_days, s.baseline_valid_days,  # type: ignore[arg-type]
                       list(s.maintenance_templates))


routes = [measure_list, measure_record, measure_correct, patient_outcomes, patient_fhir, visit_due, visit_waiver,
          review_list, review_record, clinic_outcomes, schedule_save]
