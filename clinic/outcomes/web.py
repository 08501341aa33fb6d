"""Outcome pages: the patient's questionnaire behind a DOB-gated link or on the waiting-room kiosk, and the staff pages (a
patient's trends, answers entered on a patient's behalf and corrected, safety reviews, baseline waivers, the clinic's
outcomes, a protocol's schedule). Each calls the same service functions as the JSON API."""

from __future__ import annotations

import uuid
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from litestar import Response, get, post
from litestar.datastructures import Cookie
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Redirect, Template
from msgspec import Struct

from clinic.audit.service import SYSTEM, record
from clinic.auth.middleware import SESSION_COOKIE
from clinic.auth.models import StaffUser
from clinic.auth.permissions import allows
from clinic.auth.web import safe_next
from clinic.billing.models import CostLink
from clinic.clinics import Clinic
from clinic.errors import ClinicError, NotFound, RuleBroken
from clinic.forms import decode_form, read_form
from clinic.http import CurrentActor, DbSession
from clinic.notices import links
from clinic.notices import service as notices
from clinic.notices.web import date_of_birth
from clinic.outcomes import chart, rules, service
from clinic.outcomes.instruments import INSTRUMENTS, ORDER, Instrument
from clinic.patients.models import Patient
from clinic.scheduling.models import SessionType
from clinic.timeutil import utcnow

HEAD = '<link rel="stylesheet" href="/static/css/outcomes.css">'
OPENED_COOKIE = "clinic_q"  # the questionnaire link this browser opened (after the date of birth, or by the kiosk)
OPEN_PURPOSE = "questionnaire-open"


def _can(request: HTMXRequest, permission: str) -> bool:
    user = request.scope.get("user")
    return bool(user and allows(permission, user.roles))


class AnswersForm(Struct):
    """A questionnaire's form besides its items (whose keys depend on the instrument: see `answers_in`)."""

    client_id: uuid.UUID  # the submission's id, made with the page: a second send is answered with the first result
    instrument: str = ""
    appointment_id: int | None = None
    next: str = ""


class CorrectionForm(Struct):
    client_id: uuid.UUID
    reason: str = ""
    entered_in_error: bool = False


class ReviewForm(Struct):
    risk_level: str | None = None
    action_taken: str | None = None
    safety_plan: str | None = None  # yes | no
    next: str = ""


class WaiverForm(Struct):
    reason: str = ""
    next: str = ""


class ScheduleForm(Struct):
    """As typed: the rules read the numbers and name the one they refuse."""

    induction_every: str | None = None
    maintenance_days: str | None = None
    baseline_valid_days: str | None = None
    end_of_course: bool = False
    maintenance_templates: list[str] = []


def answers_in(form: Any, inst: Instrument) -> dict[str, str]:
    """The instrument's items as the form sent them (other fields are not answers)."""
    return {i.key: v for i in inst.items if isinstance(v := form.get(i.key), str) and v}


def _back(next_path: str, default: str) -> Response:
    return Redirect(path=safe_next(next_path) or default, status_code=303)


# ---- the patient's questionnaire: /q/{token} ---------------------------------------------------------------------------


async def _link(request: HTMXRequest, db_session: DbSession, token: str) -> tuple[CostLink | None, Clinic | None, str | None]:
    secret = request.app.state.settings.secret_key
    link, problem = await notices.open_link(db_session, secret, token, kinds=service.QUESTIONNAIRE_KINDS, purpose="questionnaire")
    clinic = await db_session.get(Clinic, link.clinic_id) if link else None
    return link, clinic, problem


def _refusal(problem: str, clinic: Clinic | None) -> Template:
    return Template("notices/link_problem.html", context={"head": HEAD, "problem": problem, "clinic": clinic},
                    status_code=403 if problem == "locked" else 404)


def _opened(request: HTMXRequest, link: CostLink) -> bool:
    try:
        return links.verify(request.app.state.settings.secret_key, request.cookies.get(OPENED_COOKIE) or "", purpose=OPEN_PURPOSE) == link.id
    except links.LinkProblem:
        return False


def opened_cookie(request: HTMXRequest, link: CostLink) -> Cookie:
    """HttpOnly, for the questionnaire pages only, ending with the link."""
    settings = request.app.state.settings
    return Cookie(key=OPENED_COOKIE, value=links.sign(settings.secret_key, link.id, link.expires_at, OPEN_PURPOSE), path="/q/",  # type: ignore[arg-type]
                  httponly=True, samesite="lax", secure=settings.base_url.startswith("https"),
                  max_age=max(int((link.expires_at - utcnow()).total_seconds()), 1))


def _dob_page(clinic: Clinic, token: str, left: int, error: str | None = None, status: int = 200) -> Template:
    return Template("notices/link_dob.html", status_code=status, context={
        "head": HEAD, "clinic": clinic, "token": token, "left": left, "error": error, "action": f"/q/{token}"})


def _visit_day(visit: service.LinkVisit) -> str:
    local = visit.appointment.starts_at.astimezone(ZoneInfo(visit.clinic.timezone))
    return f"{local:%A} {local.day} {local:%B} at {local:%H:%M}"


def _questionnaire(visit: service.LinkVisit, token: str, *, error: ClinicError | None = None, answers: dict[str, Any] | None = None,
                   saved: bool = False) -> Template:
    inst = INSTRUMENTS[visit.next]  # type: ignore[index]
    return Template("outcomes/questionnaire.html", status_code=error.status_code if error else 200, context={
        "head": HEAD, "v": visit, "inst": inst, "token": token, "day": _visit_day(visit), "client_id": uuid.uuid4(),
        "answers": answers if answers is not None else visit.drafts.get(inst.key, {}), "error": error, "saved": saved,
        "step": len(visit.answered) + 1, "steps": len(visit.answered) + len(visit.to_answer), "kiosk": visit.link.kind == "kiosk"})


def _after(visit: service.LinkVisit, token: str, *, status: int = 200) -> Template:
    return Template("outcomes/answered.html", status_code=status, context={
        "head": HEAD, "v": visit, "token": token, "day": _visit_day(visit), "kiosk": visit.link.kind == "kiosk"})


@get("/q/{token:str}", opt={"public": True}, include_in_schema=False)
async def questionnaire_page(request: HTMXRequest, db_session: DbSession, token: str, saved: str | None = None) -> Template:
    link, clinic, problem = await _link(request, db_session, token)
    if problem:
        return _refusal(problem, clinic)
    if not _opened(request, link):  # type: ignore[arg-type]
        return _dob_page(clinic, token, notices.MAX_DOB_TRIES - link.failed_attempts)  # type: ignore[arg-type,union-attr]
    visit = await service.link_visit(db_session, link)  # type: ignore[arg-type]
    if visit.next is None:
        return _after(visit, token, status=409)  # answered already: nothing to send twice
    return _questionnaire(visit, token, saved=bool(saved))


@post("/q/{token:str}", opt={"public": True}, include_in_schema=False)
async def questionnaire_open(request: HTMXRequest, db_session: DbSession, token: str) -> Response:
    """The date of birth gate, counted and locked exactly as the cost links are."""
    link, clinic, problem = await _link(request, db_session, token)
    if problem:
        return _refusal(problem, clinic)
    patient = await db_session.get(Patient, link.patient_id)  # type: ignore[union-attr]
    left = notices.try_date_of_birth(db_session, link, patient, await date_of_birth(request))  # type: ignore[arg-type]
    if left == 0:
        record(db_session, actor=SYSTEM, clinic_id=clinic.id, action="outcomes.link_locked", entity="cost_link", entity_id=link.id,  # type: ignore[union-attr]
               patient_id=link.patient_id)  # type: ignore[union-attr]
        return _refusal("locked", clinic)
    if left is not None:
        return _dob_page(clinic, token, left, "That date of birth does not match our records.", 422)  # type: ignore[arg-type]
    record(db_session, actor=SYSTEM, clinic_id=clinic.id, action="outcomes.link_opened", entity="cost_link", entity_id=link.id,  # type: ignore[union-attr]
           patient_id=link.patient_id)  # type: ignore[union-attr]
    return Redirect(path=f"/q/{token}", status_code=303, cookies=[opened_cookie(request, link)])  # type: ignore[arg-type]


async def _answering(request: HTMXRequest, db_session: DbSession, token: str) -> tuple[service.LinkVisit, Any, Instrument] | Template:
    """The opened link's visit, the form it sent and the questionnaire that form answers; or the page that refuses it."""
    link, clinic, problem = await _link(request, db_session, token)
    if problem:
        return _refusal(problem, clinic)
    if not _opened(request, link):  # type: ignore[arg-type]
        return _dob_page(clinic, token, notices.MAX_DOB_TRIES - link.failed_attempts, "Confirm your date of birth first.", 403)  # type: ignore[arg-type,union-attr]
    form = await request.form()
    return await service.link_visit(db_session, link), form, rules.instrument_or_refuse(form.get("instrument"))  # type: ignore[arg-type]


@post("/q/{token:str}/progress", opt={"public": True}, include_in_schema=False)
async def questionnaire_progress(request: HTMXRequest, db_session: DbSession, token: str) -> Response:
    """Answers so far, saved as the patient goes (htmx, on every change) or with "Save and finish later"."""
    answering = await _answering(request, db_session, token)
    if isinstance(answering, Template):
        return answering
    visit, form, inst = answering
    try:
        await service.save_draft(db_session, link=visit.link, instrument=inst.key, answers=answers_in(form, inst))
    except ClinicError as exc:
        if request.htmx:
            raise
        return _questionnaire(visit, token, error=exc, answers=answers_in(form, inst))
    if request.htmx:
        return Response(content="", status_code=204)
    return Redirect(path=f"/q/{token}?saved=1", status_code=303)


@post("/q/{token:str}/answers", opt={"public": True}, include_in_schema=False)
async def questionnaire_submit(request: HTMXRequest, db_session: DbSession, token: str) -> Response:
    answering = await _answering(request, db_session, token)
    if isinstance(answering, Template):
        return answering
    visit, form, inst = answering
    try:
        result = await service.submit_from_link(db_session, link=visit.link, instrument=inst.key, answers=answers_in(form, inst),
                                                client_id=decode_form(form, AnswersForm).client_id, queue=request.app.state.queue)
    except RuleBroken as exc:
        if visit.next is None or exc.code == "not_due":
            return _after(visit, token, status=409)
        # the same page again, with what was answered kept and the missing question named
        return _questionnaire(visit, token, error=exc, answers=answers_in(form, inst))
    after = await service.link_visit(db_session, visit.link)
    if after.next is not None and not result.score.needs_safety_review:
        return Redirect(path=f"/q/{token}", status_code=303)
    return _after(after, token)


@post("/outcomes/appointments/{appointment_id:int}/kiosk", opt={"permission": "outcomes.kiosk"}, include_in_schema=False)
async def kiosk_start(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, appointment_id: int) -> Response:
    """Hand the tablet over: this browser's staff session ends, and it may open only this visit's questionnaires."""
    user = request.scope["user"]
    link = await service.start_kiosk(db_session, actor=actor, appointment_id=appointment_id,
                                     web_session_id=user.credential_id if user.via == "session" else None)
    token = links.sign(request.app.state.settings.secret_key, link.id, link.expires_at, "questionnaire")  # type: ignore[arg-type]
    response = Redirect(path=f"/q/{token}", status_code=303, cookies=[opened_cookie(request, link)])
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# ---- staff: a patient's answers over time -------------------------------------------------------------------------------


def _trend_rows(po: service.PatientOutcomes, trend: service.Trend) -> list[dict[str, Any]]:
    rows = []
    for m in reversed(trend.measures):
        s = service.score_of(m)
        rows.append({"m": m, "score": s, "change": m.total - trend.baseline.total if trend.baseline else None,
                     "is_baseline": bool(trend.baseline and trend.baseline.id == m.id),
                     "who": "patient" if m.completed_by == "patient" else po.who(m.completed_by_user_id)})
    return rows


@get("/patients/{patient_id:int}/outcomes", opt={"permission": "outcomes.read"}, include_in_schema=False)
async def patient_page(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, patient_id: int, kind: str | None = None) -> Template:
    po = await service.patient_outcomes(db_session, actor=actor, patient_id=patient_id, kind=kind)
    tz = po.clinic.timezone
    sections = []
    for t in po.trends:
        sections.append({"t": t, "inst": INSTRUMENTS[t.instrument], "rows": _trend_rows(po, t),
                         "chart": chart.trend_chart(t.instrument, t.measures, visits=po.visits, baseline=t.baseline, tz=tz,
                                                    chart_id=f"chart-{t.instrument}")})
    return Template("outcomes/patient.html", context={
        "head": HEAD, "po": po, "p": po.patient, "tz": tz, "sections": sections, "kind_labels": rules.KIND_LABELS,
        "can_record": _can(request, "outcomes.record"), "can_review": _can(request, "outcomes.review"),
        "open_reviews": [r for r in po.reviews if r.reviewed_at is None], "corrected": [m for m in po.history if m.supersedes_id or m.id in po.superseded],
        "instruments": INSTRUMENTS, "done": request.query_params.get("done")})


@get("/patients/{patient_id:int}/outcomes/new", opt={"permission": "outcomes.record"}, include_in_schema=False)
async def entry_page(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, patient_id: int, instrument: str = "phq9",
                     appointment_id: int | None = None, next: str | None = None) -> Template:
    inst = rules.instrument_or_refuse(instrument)
    patient = await service.patient_of(db_session, clinic_id=actor.clinic_id, patient_id=patient_id)
    return Template("outcomes/entry.html", context={"head": HEAD, "p": patient, "inst": inst, "appointment_id": appointment_id,
                                                    "next": safe_next(next) or "", "client_id": uuid.uuid4(), "answers": {}, "error": None})


@post("/patients/{patient_id:int}/outcomes", opt={"permission": "outcomes.record"}, include_in_schema=False)
async def entry_submit(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, patient_id: int) -> Response:
    form = await request.form()
    inst = rules.instrument_or_refuse(form.get("instrument"))
    appointment_id = None
    try:
        fields = decode_form(form, AnswersForm)
        appointment_id = fields.appointment_id
        await service.record_by_staff(db_session, actor=actor, patient_id=patient_id, instrument=inst.key, answers=answers_in(form, inst),
                                      client_id=fields.client_id, appointment_id=appointment_id, queue=request.app.state.queue)
    except RuleBroken as exc:
        patient = await service.patient_of(db_session, clinic_id=actor.clinic_id, patient_id=patient_id)
        return Template("outcomes/entry.html", status_code=exc.status_code, context={
            "head": HEAD, "p": patient, "inst": inst, "appointment_id": appointment_id, "next": safe_next(form.get("next")) or "",
            "client_id": uuid.uuid4() if exc.field == "client_id" else form.get("client_id"), "answers": answers_in(form, inst), "error": exc})
    return _back(fields.next, f"/patients/{patient_id}/outcomes?done=recorded")


@get("/outcomes/measures/{measure_id:int}", opt={"permission": "outcomes.read"}, include_in_schema=False)
async def measure_page(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, measure_id: int) -> Template:
    m = await service.get_measure(db_session, actor=actor, measure_id=measure_id)
    po = await service.patient_outcomes(db_session, actor=actor, patient_id=m.patient_id, audit=False)
    return Template("outcomes/measure.html", context={
        "head": HEAD, "m": m, "inst": INSTRUMENTS[m.instrument], "score": service.score_of(m), "po": po, "p": po.patient,
        "tz": po.clinic.timezone, "superseded_by": po.superseded.get(m.id), "can_record": _can(request, "outcomes.record"),
        "client_id": uuid.uuid4(), "review": next((r for r in po.reviews if r.measure_id == m.id), None)})


@post("/outcomes/measures/{measure_id:int}/correct", opt={"permission": "outcomes.record"}, include_in_schema=False)
async def measure_correct(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, measure_id: int) -> Response:
    form = await request.form()
    fields = decode_form(form, CorrectionForm)
    old = await service.get_measure(db_session, actor=actor, measure_id=measure_id)
    result = await service.correct_measure(db_session, actor=actor, measure_id=measure_id, client_id=fields.client_id,
                                           reason=fields.reason, answers=answers_in(form, INSTRUMENTS[old.instrument]),
                                           entered_in_error=fields.entered_in_error, queue=request.app.state.queue)
    return Redirect(path=f"/outcomes/measures/{result.measure.id}", status_code=303)


# ---- staff: safety reviews, waivers ---------------------------------------------------------------------------------------


@get("/outcomes/safety/{review_id:int}", opt={"permission": "outcomes.read"}, include_in_schema=False)
async def review_page(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, review_id: int) -> Template:
    review, measure, patient = await service.get_review(db_session, actor=actor, review_id=review_id)
    clinic = await db_session.get(Clinic, actor.clinic_id)
    visits = await service.visits_around(db_session, patient_id=patient.id, now=utcnow())  # type: ignore[arg-type]
    reviewer = await db_session.get(StaffUser, review.reviewed_by) if review.reviewed_by else None
    return Template("outcomes/review.html", context={
        "head": HEAD, "review": review, "m": measure, "p": patient, "inst": INSTRUMENTS["phq9"], "score": service.score_of(measure),
        "tz": clinic.timezone, "visits": visits, "reviewer": reviewer, "can_review": _can(request, "outcomes.review"),  # type: ignore[union-attr]
        "risk_levels": rules.RISK_LEVELS, "next": ""})


@post("/outcomes/safety/{review_id:int}", opt={"permission": "outcomes.review"}, include_in_schema=False)
async def review_submit(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, review_id: int) -> Response:
    form = await read_form(request, ReviewForm)
    await service.record_review(db_session, actor=actor, review_id=review_id, risk_level=form.risk_level, action_taken=form.action_taken,
                                safety_plan={"yes": True, "no": False}.get(form.safety_plan or ""))
    return _back(form.next, f"/outcomes/safety/{review_id}")


@post("/outcomes/appointments/{appointment_id:int}/waiver", opt={"permission": "outcomes.review"}, include_in_schema=False)
async def waiver_submit(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, appointment_id: int) -> Response:
    form = await read_form(request, WaiverForm)
    await service.waive_baseline(db_session, actor=actor, appointment_id=appointment_id, reason=form.reason)
    return _back(form.next, f"/schedule/appointments/{appointment_id}")


# ---- staff: the clinic's outcomes, a protocol's schedule ---------------------------------------------------------------


def outcome_rows(out: rules.ClinicOutcomes) -> dict[str, list[tuple[str, str, dict[str, rules.Cell]]]]:
    """The two tables of /outcomes: (key, label, cells by instrument) per protocol and per diagnosis group."""
    return {
        "protocol": [(k, rules.KIND_LABELS[k], out.by_protocol[k]) for k in rules.DOSING_KINDS],
        "group": [(k, label, out.by_group[k]) for k, label, _ in rules.DIAGNOSIS_GROUPS],
    }


@get("/outcomes", opt={"permission": "outcomes.clinic"}, include_in_schema=False)
async def clinic_page(request: HTMXRequest, db_session: DbSession, actor: CurrentActor) -> Template:
    out = await service.clinic_outcomes(db_session, actor=actor)
    weekly = [{"inst": INSTRUMENTS[i], "by_kind": out.weekly[i], "chart": chart.weekly_chart(i, out.weekly[i], chart_id=f"weekly-{i}"),
               "weeks": sorted({p.week for points in out.weekly[i].values() for p in points})} for i in ORDER if out.weekly[i]]
    return Template("outcomes/clinic.html", context={"head": HEAD, "tables": outcome_rows(out), "weekly": weekly,
                                                     "instruments": INSTRUMENTS, "order": ORDER, "kind_labels": rules.KIND_LABELS,
                                                     "small": rules.SMALL_CELL})


@get("/admin/protocols/{session_type_id:int}/outcomes", opt={"permission": "admin"}, include_in_schema=False)
async def schedule_page(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, session_type_id: int) -> Template:
    st = await db_session.get(SessionType, session_type_id)
    if st is None or st.clinic_id != actor.clinic_id:
        raise NotFound("No such protocol.")
    return Template("outcomes/schedule.html", context={"head": HEAD, "st": st, "s": rules.OutcomeSchedule.of(st.protocol),
                                                       "templates": (st.protocol or {}).get("course_templates") or {},
                                                       "dosing": st.kind in rules.DOSING_KINDS, "done": request.query_params.get("done")})


@post("/admin/protocols/{session_type_id:int}/outcomes", opt={"permission": "admin"}, include_in_schema=False)
async def schedule_save(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, session_type_id: int) -> Response:
    form = await read_form(request, ScheduleForm)
    await service.save_schedule(db_session, actor=actor, session_type_id=session_type_id, data=msgspec.structs.asdict(form))
    return Redirect(path=f"/admin/protocols/{session_type_id}/outcomes?done=saved", status_code=303)


routes = [
    questionnaire_page, questionnaire_open, questionnaire_progress, questionnaire_submit, kiosk_start,
    patient_page, entry_page, entry_submit, measure_page, measure_correct,
    review_page, review_submit, waiver_submit, clinic_page, schedule_page, schedule_save,
]
