"""Outcome use cases, one transaction each: questionnaires answered (by the patient through a link or the kiosk, or by staff on
their behalf) and corrected, what is due before a visit, the dosing blockers (baseline, safety review), safety reviews and
baseline waivers, the evening-before notices, a patient's trends and the clinic's outcomes.

Every write is audited and tells the board (pg_notify) about the patient's visits around now; every read of a patient's
answers is audited. Nothing here logs answers, scores or the patient's condition.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exists, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import aliased
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import SYSTEM, Actor, record, record_read
from clinic.auth.models import StaffUser, WebSession
from clinic.auth.permissions import allows
from clinic.billing.models import CostLink
from clinic.clinics import Clinic
from clinic.db import register_conflicts
from clinic.errors import Conflict, Forbidden, NotFound, RuleBroken
from clinic.monitoring.rules import Blocker
from clinic.monitoring.service import session as monitoring
from clinic.notices import service as notices
from clinic.notices.models import Notice
from clinic.notices.outbox import add_notice
from clinic.outcomes import rules
from clinic.outcomes.instruments import INSTRUMENTS, ORDER
from clinic.outcomes.models import (
    BaselineWaiver,
    OutcomeMeasure,
    QuestionnaireDraft,
    SafetyReview,
)
from clinic.patients.models import Patient
from clinic.scheduling.models import Appointment, Course, SessionType, Shift
from clinic.timeutil import utcnow

register_conflicts(
    {
        "uq_outcome_measures_link_instrument": "These answers were already submitted; they cannot be sent twice.",
        "uq_outcome_measures_supersedes_id": "That questionnaire was corrected a moment ago; reload and correct the newest version.",
        "uq_baseline_waivers_appointment_id": "The baseline for this session was already waived.",
    }
)

QUESTIONNAIRE_KINDS = ("questionnaire", "kiosk")
KIOSK_HOURS = 2  # a tablet handed over in the waiting room works for this long at most
NOTICE_LOOKAHEAD = timedelta(hours=48)  # the notice job looks at visits this far ahead
# and writes a visit's notice this long before it goes out, so what is due is judged close to 18:00 (the job runs every 15 min)
NOTICE_WRITTEN_AHEAD = timedelta(hours=1)
# which visits a write tells the board about: the patient's live ones from 12 hours ago to a day ahead
AROUND_NOW = (timedelta(hours=12), timedelta(hours=24))


def _current(model: Any = OutcomeMeasure) -> Any:
    """Answers that still stand: not withdrawn, not superseded by a correction."""
    newer = aliased(OutcomeMeasure)
    return (~col(model.entered_in_error)) & ~exists().where(newer.supersedes_id == model.id)


def taken_of(m: OutcomeMeasure) -> rules.Taken:
    part_a = rules.part_a_positive(m.answers) if m.instrument == "asrs" else None
    return rules.Taken(m.instrument, m.completed_at, m.total, m.id, part_a)


def score_of(m: OutcomeMeasure) -> rules.Score:
    return rules.score(m.instrument, m.answers)


async def _current_measures(session: AsyncSession, *, clinic_id: int, patient_ids: Iterable[int]) -> dict[int, list[OutcomeMeasure]]:
    ids = list(set(patient_ids))
    out: dict[int, list[OutcomeMeasure]] = defaultdict(list)
    if not ids:
        return out
    q = (select(OutcomeMeasure).where(OutcomeMeasure.clinic_id == clinic_id, col(OutcomeMeasure.patient_id).in_(ids), _current())
         .order_by(col(OutcomeMeasure.completed_at), col(OutcomeMeasure.id)))
    for m in (await session.exec(q)).all():
        out[m.patient_id].append(m)
    return out


@dataclass(frozen=True)
class VisitRow:
    visit: rules.Visit
    patient_id: int
    session_type_id: int


async def _dosing_visits(session: AsyncSession, *, clinic_id: int, patient_ids: Iterable[int]) -> dict[int, list[VisitRow]]:
    """Each patient's live dosing sessions (any protocol), oldest first, with their course's template."""
    ids = list(set(patient_ids))
    out: dict[int, list[VisitRow]] = defaultdict(list)
    if not ids:
        return out
    q = (
        select(Appointment.id, Appointment.patient_id, Appointment.starts_at, SessionType.kind, Appointment.course_id, Course.template,
               Appointment.dosing_started_at, Appointment.session_type_id)
        .join(SessionType, col(SessionType.id) == Appointment.session_type_id)
        .outerjoin(Course, col(Course.id) == Appointment.course_id)
        .where(Appointment.clinic_id == clinic_id, col(Appointment.patient_id).in_(ids), col(SessionType.kind).in_(rules.DOSING_KINDS),
               col(Appointment.status).in_(rules.LIVE))
        .order_by(col(Appointment.starts_at), col(Appointment.id))
    )
    for aid, pid, starts, kind, course_id, template, dosed, st_id in (await session.execute(q)).all():
        out[pid].append(VisitRow(rules.Visit(aid, starts, kind, course_id, template, dosed), pid, st_id))
    return out


async def _schedules(session: AsyncSession, clinic_id: int) -> dict[int, rules.OutcomeSchedule]:
    rows = (await session.execute(select(SessionType.id, SessionType.protocol).where(SessionType.clinic_id == clinic_id))).all()
    return {sid: rules.OutcomeSchedule.of(protocol) for sid, protocol in rows}


# ---- what is due before a visit, and what blocks its dosing --------------------------------------------------------------


@dataclass
class VisitOutcomes:
    """What a visit's pages show about questionnaires: what is due, the baseline waiver, the patient's open safety reviews."""

    appointment_id: int
    patient_id: int
    due: rules.Due | None = None  # None: not a dosing session
    waiver: BaselineWaiver | None = None
    open_reviews: list[SafetyReview] = field(default_factory=list)

    @property
    def baseline_blocks(self) -> bool:
        return bool(self.due and self.due.baseline_missing and self.waiver is None)

    @property
    def open_due(self) -> tuple[rules.DueItem, ...]:
        return self.due.open if self.due else ()

    def blockers(self) -> list[Blocker]:
        out = []
        if self.open_reviews:
            out.append(Blocker("safety_review", "A questionnaire answer needs a clinician's safety review: a prescriber records it "
                                                "(risk level, action taken, safety plan) before dosing."))
        if self.baseline_blocks:
            names = ", ".join(i.label for i in self.due.open if i.reason == "baseline")  # type: ignore[union-attr]
            out.append(Blocker("outcome_baseline", f"Baseline questionnaires missing before the course's first dose ({names}): "
                                                   "the patient answers them, or a prescriber waives them with a reason."))
        return out


async def visits_outcomes(session: AsyncSession, *, clinic_id: int, appointments: Sequence[Any]) -> dict[int, VisitOutcomes]:
    """For each appointment (anything with id and patient_id): its due questionnaires and the patient's open reviews."""
    if not appointments:
        return {}
    pids = {a.patient_id for a in appointments}
    visits = await _dosing_visits(session, clinic_id=clinic_id, patient_ids=pids)
    measures = await _current_measures(session, clinic_id=clinic_id, patient_ids=pids)
    codes = dict((await session.execute(select(Patient.id, Patient.diagnosis_codes).where(col(Patient.id).in_(pids)))).all())
    schedules = await _schedules(session, clinic_id)
    ids = [a.id for a in appointments]
    waivers = {w.appointment_id: w for w in (await session.exec(select(BaselineWaiver).where(col(BaselineWaiver.appointment_id).in_(ids)))).all()}
    reviews: dict[int, list[SafetyReview]] = defaultdict(list)
    for r in (await session.exec(select(SafetyReview).where(SafetyReview.clinic_id == clinic_id, col(SafetyReview.patient_id).in_(pids),
                                                            col(SafetyReview.reviewed_at).is_(None)).order_by(col(SafetyReview.raised_at)))).all():
        reviews[r.patient_id].append(r)
    out = {}
    for a in appointments:
        mine = visits.get(a.patient_id, [])
        row = next((v for v in mine if v.visit.id == a.id), None)
        due = None
        if row is not None:
            due = rules.due_for(row.visit, visits=[v.visit for v in mine], taken=[taken_of(m) for m in measures.get(a.patient_id, [])],
                                diagnosis_codes=codes.get(a.patient_id) or (), schedule=schedules.get(row.session_type_id, rules.OutcomeSchedule()))
        out[a.id] = VisitOutcomes(a.id, a.patient_id, due, waivers.get(a.id), reviews.get(a.patient_id, []))
    return out


async def visit_outcomes(session: AsyncSession, *, clinic_id: int, appointment: Any) -> VisitOutcomes:
    return (await visits_outcomes(session, clinic_id=clinic_id, appointments=[appointment]))[appointment.id]


async def appointment_outcomes(session: AsyncSession, *, clinic_id: int, appointment_id: int) -> VisitOutcomes:
    appt = await session.get(Appointment, appointment_id)
    if appt is None or appt.clinic_id != clinic_id:
        raise NotFound("No such appointment in this clinic.")
    return await visit_outcomes(session, clinic_id=clinic_id, appointment=appt)


async def dosing_blockers(session: AsyncSession, *, appointment: Appointment) -> list[Blocker]:
    """What this domain says stands between the patient and dosing: an open safety review (fixed, DOMAIN §5.6), or a course's
    baseline questionnaires missing and not waived. Monitoring adds these to its pre-dose gate."""
    return (await visit_outcomes(session, clinic_id=appointment.clinic_id, appointment=appointment)).blockers()


# ---- recording answers -------------------------------------------------------------------------------------------------


@dataclass
class MeasureResult:
    measure: OutcomeMeasure
    score: rules.Score
    review: SafetyReview | None
    created: bool


async def _insert_measure(session: AsyncSession, values: dict[str, Any]) -> OutcomeMeasure | None:
    """INSERT .. ON CONFLICT (client_id) DO NOTHING: None when this submission was stored before (a double tap)."""
    stmt = insert(OutcomeMeasure).values(**values).on_conflict_do_nothing(index_elements=["client_id"]).returning(OutcomeMeasure)
    return (await session.execute(select(OutcomeMeasure).from_statement(stmt))).scalars().first()


async def _replay(session: AsyncSession, *, client_id: uuid.UUID, patient_id: int) -> MeasureResult | None:
    m = (await session.exec(select(OutcomeMeasure).where(OutcomeMeasure.client_id == client_id))).first()
    if m is None:
        return None
    if m.patient_id != patient_id:
        raise Conflict("This client_id was already used for other answers; generate a new one.", field="client_id", code="client_id_reused")
    review = (await session.exec(select(SafetyReview).where(SafetyReview.measure_id == m.id))).first()
    return MeasureResult(m, score_of(m), review, created=False)


async def visits_around(session: AsyncSession, *, patient_id: int, now: datetime) -> list[Appointment]:
    """The patient's live visits from 12 hours ago to a day ahead (the ones a questionnaire answered now is about)."""
    before, after = AROUND_NOW
    q = select(Appointment).where(Appointment.patient_id == patient_id, col(Appointment.status).in_(("booked", "arrived", "in_progress")),
                                  col(Appointment.starts_at) >= now - before, col(Appointment.starts_at) <= now + after)
    return list((await session.exec(q)).all())


async def _tell_the_board(session: AsyncSession, *, clinic_id: int, patient_id: int, now: datetime, what: str) -> None:
    """Session pages of the patient's visits around now refresh themselves; every board redraws."""
    visits = await visits_around(session, patient_id=patient_id, now=now)
    for a in visits:
        await monitoring.notify_board(session, clinic_id=clinic_id, appointment_id=a.id, what=what)  # type: ignore[arg-type]
    if not visits:
        await monitoring.notify_board(session, clinic_id=clinic_id, appointment_id=0, what=what)


async def _store(session: AsyncSession, *, clinic: Clinic, patient: Patient, values: dict[str, Any], score: rules.Score, actor: Actor,
                 queue: Any, now: datetime, opens_review: bool, action: str, audit: dict[str, Any]) -> MeasureResult:
    measure = await _insert_measure(session, values)
    if measure is None:
        replay = await _replay(session, client_id=values["client_id"], patient_id=patient.id)  # type: ignore[arg-type]
        assert replay is not None
        return replay
    review = None
    if opens_review:
        review = SafetyReview(clinic_id=clinic.id, patient_id=patient.id, measure_id=measure.id, raised_at=now)  # type: ignore[arg-type]
        session.add(review)
        await session.flush()
        await _notify_prescribers(session, queue=queue, clinic=clinic, review=review, now=now)
    record(session, actor=actor, clinic_id=clinic.id, action=action, entity="outcome_measure", entity_id=measure.id, patient_id=patient.id,
           changes={**audit, "instrument": measure.instrument, "via": measure.via, "safety_review_id": review.id if review else None})
    await _tell_the_board(session, clinic_id=clinic.id, patient_id=patient.id, now=now, what="outcome")  # type: ignore[arg-type]
    return MeasureResult(measure, score, review, created=True)


def _measure_values(*, clinic: Clinic, patient: Patient, instrument: str, answers: dict[str, int], score: rules.Score,
                    client_id: uuid.UUID, completed_at: datetime, now: datetime, **kw: Any) -> dict[str, Any]:
    return dict(clinic_id=clinic.id, patient_id=patient.id, instrument=instrument, version=INSTRUMENTS[instrument].version,
                answers=answers, total=score.total, completed_at=completed_at, client_id=client_id, recorded_at=now,
                entered_in_error=False, **kw)


async def record_by_staff(session: AsyncSession, *, actor: Actor, patient_id: int, instrument: str, answers: dict[str, Any],
                          client_id: uuid.UUID, appointment_id: int | None = None, completed_at: datetime | None = None,
                          queue: Any = None, now: datetime | None = None) -> MeasureResult:
    """A nurse or prescriber enters the patient's answers on their behalf (asked aloud, or from paper)."""
    now = now or utcnow()
    patient = await patient_of(session, clinic_id=actor.clinic_id, patient_id=patient_id)
    replay = await _replay(session, client_id=client_id, patient_id=patient.id)  # type: ignore[arg-type]
    if replay:
        return replay
    inst = rules.instrument_or_refuse(instrument)
    checked = rules.check_answers(inst, answers)
    at = completed_at or now
    rules.check_completed_at(at, now)
    if appointment_id is not None:
        appt = await session.get(Appointment, appointment_id)
        if appt is None or appt.clinic_id != actor.clinic_id or appt.patient_id != patient.id:
            raise RuleBroken("That appointment is not one of this patient's.", field="appointment_id")
    clinic = await session.get(Clinic, actor.clinic_id)
    score = rules.score(inst.key, checked)
    values = _measure_values(clinic=clinic, patient=patient, instrument=inst.key, answers=checked, score=score, client_id=client_id,  # type: ignore[arg-type]
                             completed_at=at, now=now, appointment_id=appointment_id, completed_by="staff",
                             completed_by_user_id=actor.user_id, via="staff", recorded_by=actor.user_id)
    return await _store(session, clinic=clinic, patient=patient, values=values, score=score, actor=actor, queue=queue, now=now,  # type: ignore[arg-type]
                        opens_review=score.needs_safety_review, action="outcomes.record", audit={})


async def correct_measure(session: AsyncSession, *, actor: Actor, measure_id: int, client_id: uuid.UUID, reason: str,
                          answers: dict[str, Any] | None = None, entered_in_error: bool = False, queue: Any = None,
                          now: datetime | None = None) -> MeasureResult:
    """A superseding row with corrected answers (only the changed ones need sending), or the answers withdrawn as entered in
    error; who, when and why are the new row's. A correction that newly puts item 9 above 0 opens a safety review."""
    now = now or utcnow()
    old = await session.get(OutcomeMeasure, measure_id)
    if old is None or old.clinic_id != actor.clinic_id:
        raise NotFound("No such questionnaire in this clinic.")
    replay = await _replay(session, client_id=client_id, patient_id=old.patient_id)
    if replay:
        return replay
    why = rules.check_reason(reason, what="Say why the answers are being corrected")
    newer = (await session.exec(select(OutcomeMeasure.id).where(OutcomeMeasure.supersedes_id == old.id))).first()
    if newer is not None or old.entered_in_error:
        raise Conflict("These answers were already corrected; correct the newest version.", code="already_corrected")
    inst = INSTRUMENTS[old.instrument]
    merged = dict(old.answers) if entered_in_error else rules.check_answers(inst, {**old.answers, **(answers or {})})
    score = rules.score(inst.key, merged)
    patient = await patient_of(session, clinic_id=actor.clinic_id, patient_id=old.patient_id)
    clinic = await session.get(Clinic, actor.clinic_id)
    values = _measure_values(clinic=clinic, patient=patient, instrument=inst.key, answers=merged, score=score, client_id=client_id,  # type: ignore[arg-type]
                             completed_at=old.completed_at, now=now, appointment_id=old.appointment_id, completed_by=old.completed_by,
                             completed_by_user_id=old.completed_by_user_id, via=old.via, link_id=old.link_id, recorded_by=actor.user_id)
    values |= dict(version=old.version, supersedes_id=old.id, correction_reason=why, entered_in_error=entered_in_error)
    opens = not entered_in_error and score.needs_safety_review and not score_of(old).needs_safety_review
    return await _store(session, clinic=clinic, patient=patient, values=values, score=score, actor=actor, queue=queue, now=now,  # type: ignore[arg-type]
                        opens_review=opens, action="outcomes.correct",
                        audit={"supersedes_id": old.id, "reason": why, "entered_in_error": entered_in_error})


async def patient_of(session: AsyncSession, *, clinic_id: int, patient_id: int) -> Patient:
    """The patient, if they are this clinic's."""
    p = await session.get(Patient, patient_id)
    if p is None or p.clinic_id != clinic_id:
        raise NotFound("No such patient in this clinic.")
    return p


# ---- safety reviews and baseline waivers -----------------------------------------------------------------------------


async def _notify_prescribers(session: AsyncSession, *, queue: Any, clinic: Clinic, review: SafetyReview, now: datetime) -> list[int]:
    """"A questionnaire needs a clinician's review" and a link, to every prescriber on shift now (every active prescriber
    when nobody is on shift, so the message always reaches someone). No name, no score, no instrument."""
    on_shift = (select(StaffUser).join(Shift, col(Shift.user_id) == StaffUser.id)
                .where(Shift.clinic_id == clinic.id, Shift.role == "prescriber", col(Shift.starts_at) <= now, col(Shift.ends_at) > now))
    everyone = select(StaffUser).where(StaffUser.clinic_id == clinic.id)
    ids = []
    for q in (on_shift, everyone):
        staff = [u for u in (await session.exec(q.where(col(StaffUser.active).is_(True)))).all() if "prescriber" in u.roles]
        for user in {u.id: u for u in staff}.values():
            nid = await add_notice(session, queue=queue, clinic_id=clinic.id, kind="safety_review",  # type: ignore[arg-type]
                                   dedupe_key=f"safety_review:{review.id}:{user.id}", to_address=user.email,
                                   payload={"staff_name": user.full_name.split(" ")[0], "staff_path": f"/outcomes/safety/{review.id}"})
            if nid:
                ids.append(nid)
        if staff:
            break
    return ids


async def get_review(session: AsyncSession, *, actor: Actor, review_id: int, audit: bool = True) -> tuple[SafetyReview, OutcomeMeasure, Patient]:
    review = await session.get(SafetyReview, review_id)
    if review is None or review.clinic_id != actor.clinic_id:
        raise NotFound("No such safety review in this clinic.")
    measure = await session.get(OutcomeMeasure, review.measure_id)
    patient = await session.get(Patient, review.patient_id)
    if audit:
        record(session, actor=actor, action="outcomes.safety_review_view", entity="safety_review", entity_id=review.id, patient_id=review.patient_id)
    return review, measure, patient  # type: ignore[return-value]


async def record_review(session: AsyncSession, *, actor: Actor, review_id: int, risk_level: Any, action_taken: Any, safety_plan: Any,
                        now: datetime | None = None) -> SafetyReview:
    """A prescriber's review of a PHQ-9 item 9 answer above 0: the risk level, the action taken and whether a safety plan is in
    place. Recorded once; it lifts the dosing block."""
    now = now or utcnow()
    if not allows("outcomes.review", actor.roles):
        raise Forbidden("Only a prescriber can record a safety review.", code="prescriber_only")
    level, action, plan = rules.check_review(risk_level, action_taken, safety_plan)
    review = (await session.exec(select(SafetyReview).where(SafetyReview.id == review_id, SafetyReview.clinic_id == actor.clinic_id)
                                 .with_for_update())).first()
    if review is None:
        raise NotFound("No such safety review in this clinic.")
    if review.reviewed_at is not None:
        raise Conflict("This review was already recorded.", code="already_reviewed")
    review.reviewed_by, review.reviewed_at, review.risk_level, review.action_taken, review.safety_plan = actor.user_id, now, level, action, plan
    session.add(review)
    record(session, actor=actor, action="outcomes.safety_review", entity="safety_review", entity_id=review.id, patient_id=review.patient_id,
           changes={"risk_level": level, "action_taken": action, "safety_plan": plan})
    await _tell_the_board(session, clinic_id=actor.clinic_id, patient_id=review.patient_id, now=now, what="safety_review")
    return review


async def _reviews(session: AsyncSession, *, clinic_id: int, open_only: bool, patient_id: int | None = None) -> list[SafetyReview]:
    q = select(SafetyReview).where(SafetyReview.clinic_id == clinic_id)
    if open_only:
        q = q.where(col(SafetyReview.reviewed_at).is_(None))
    if patient_id is not None:
        q = q.where(SafetyReview.patient_id == patient_id)
    return list((await session.exec(q.order_by(col(SafetyReview.raised_at).desc()))).all())


async def reviews(session: AsyncSession, *, actor: Actor, open_only: bool = True, patient_id: int | None = None) -> list[SafetyReview]:
    """Safety reviews of the clinic (a bulk read: audited with the query, the rows and their patients)."""
    rows = await _reviews(session, clinic_id=actor.clinic_id, open_only=open_only, patient_id=patient_id)
    record_read(session, actor=actor, what="safety_reviews", query={"open": open_only, "patient_id": patient_id}, rows=len(rows),
                patient_ids=[r.patient_id for r in rows])
    return rows


async def waive_baseline(session: AsyncSession, *, actor: Actor, appointment_id: int, reason: str, now: datetime | None = None) -> BaselineWaiver:
    """A prescriber lets the course's first dose go ahead without baseline answers; the reason is kept and audited."""
    now = now or utcnow()
    if not allows("outcomes.review", actor.roles):
        raise Forbidden("Only a prescriber can waive the baseline questionnaires.", code="prescriber_only")
    why = rules.check_reason(reason, what="Say why the baseline questionnaires are waived")
    appt = (await session.exec(select(Appointment).where(Appointment.id == appointment_id, Appointment.clinic_id == actor.clinic_id)
                               .with_for_update())).first()
    if appt is None:
        raise NotFound("No such appointment in this clinic.")
    state = await visit_outcomes(session, clinic_id=actor.clinic_id, appointment=appt)
    if state.waiver is not None:
        raise Conflict("The baseline for this session was already waived.", code="already_waived")
    if not (state.due and state.due.baseline_missing):
        raise Conflict("Nothing to waive: this session needs no baseline questionnaires, or they are answered.", code="no_baseline_missing")
    if appt.dosing_started_at is not None:
        raise Conflict("Dosing has started; the baseline can no longer be waived.", code="already_dosing")
    waiver = BaselineWaiver(clinic_id=actor.clinic_id, appointment_id=appt.id, patient_id=appt.patient_id, reason=why,  # type: ignore[arg-type]
                            waived_by=actor.user_id, waived_at=now)  # type: ignore[arg-type]
    session.add(waiver)
    await session.flush()
    record(session, actor=actor, action="outcomes.baseline_waived", entity="appointment", entity_id=appt.id, patient_id=appt.patient_id,
           changes={"reason": why, "instruments": [i.instrument for i in state.open_due if i.reason == "baseline"]})
    await monitoring.notify_board(session, clinic_id=actor.clinic_id, appointment_id=appt.id, what="outcome")  # type: ignore[arg-type]
    return waiver


# ---- the patient's side: a link (emailed, or the kiosk), its drafts and its submissions ----------------------------------


@dataclass
class LinkVisit:
    """What a questionnaire link shows its patient: the visit's questionnaires still to answer, the answers saved so far, and
    whether an answer given through it asked for the crisis resources (they stay on every page of the link)."""

    link: CostLink
    patient: Patient
    clinic: Clinic
    appointment: Appointment
    to_answer: tuple[str, ...]
    answered: tuple[str, ...]
    drafts: dict[str, dict[str, int]]
    crisis: bool

    @property
    def next(self) -> str | None:
        return self.to_answer[0] if self.to_answer else None


async def link_visit(session: AsyncSession, link: CostLink) -> LinkVisit:
    patient = await session.get(Patient, link.patient_id)
    clinic = await session.get(Clinic, link.clinic_id)
    appt = await session.get(Appointment, link.appointment_id)
    state = await visit_outcomes(session, clinic_id=link.clinic_id, appointment=appt)
    answered = list((await session.exec(select(OutcomeMeasure).where(OutcomeMeasure.link_id == link.id))).all())
    done = {m.instrument for m in answered}
    todo = tuple(i for i in state.due.open_instruments if i not in done) if state.due else ()
    drafts = {d.instrument: d.answers for d in (await session.exec(select(QuestionnaireDraft).where(QuestionnaireDraft.link_id == link.id))).all()}
    crisis = any(score_of(m).needs_safety_review for m in answered)
    return LinkVisit(link, patient, clinic, appt, todo, tuple(m.instrument for m in answered), drafts, crisis)  # type: ignore[arg-type]


def _refuse_unless_asked(visit: LinkVisit, instrument: str) -> None:
    rules.instrument_or_refuse(instrument)
    if instrument not in visit.to_answer:
        raise Conflict("These questions are already answered, or not asked before this visit.", field="instrument", code="not_due")


async def save_draft(session: AsyncSession, *, link: CostLink, instrument: str, answers: dict[str, Any], now: datetime | None = None) -> None:
    """Answers so far, kept on the server for this link (checked like a submission, but incomplete is fine)."""
    visit = await link_visit(session, link)
    _refuse_unless_asked(visit, instrument)
    checked = rules.check_answers(INSTRUMENTS[instrument], answers, partial=True)
    stmt = insert(QuestionnaireDraft).values(link_id=link.id, instrument=instrument, answers=checked, updated_at=now or utcnow())
    await session.execute(stmt.on_conflict_do_update(index_elements=["link_id", "instrument"],
                                                     set_={"answers": stmt.excluded.answers, "updated_at": stmt.excluded.updated_at}))


async def submit_from_link(session: AsyncSession, *, link: CostLink, instrument: str, answers: dict[str, Any], client_id: uuid.UUID,
                           queue: Any = None, now: datetime | None = None) -> MeasureResult:
    """The patient's own answers, once per instrument and link: item 9 above 0 opens a safety review at once."""
    now = now or utcnow()
    replay = await _replay(session, client_id=client_id, patient_id=link.patient_id)
    if replay:
        return replay
    visit = await link_visit(session, link)
    _refuse_unless_asked(visit, instrument)
    checked = rules.check_answers(INSTRUMENTS[instrument], answers)
    score = rules.score(instrument, checked)
    values = _measure_values(clinic=visit.clinic, patient=visit.patient, instrument=instrument, answers=checked, score=score,
                             client_id=client_id, completed_at=now, now=now, appointment_id=link.appointment_id, completed_by="patient",
                             via="kiosk" if link.kind == "kiosk" else "link", link_id=link.id)
    result = await _store(session, clinic=visit.clinic, patient=visit.patient, values=values, score=score, actor=SYSTEM, queue=queue,
                          now=now, opens_review=score.needs_safety_review, action="outcomes.answered", audit={"link_id": link.id})
    await session.execute(QuestionnaireDraft.__table__.delete().where(  # type: ignore[attr-defined]
        QuestionnaireDraft.link_id == link.id, QuestionnaireDraft.instrument == instrument))
    return result


async def start_kiosk(session: AsyncSession, *, actor: Actor, appointment_id: int, web_session_id: int | None,
                      now: datetime | None = None) -> CostLink:
    """The front desk hands a tablet over: a link limited to this visit's questionnaires, and the staff member's browser
    session on that tablet ends (the tablet goes back to the sign-in page for any staff page)."""
    now = now or utcnow()
    if actor.via != "session" or web_session_id is None:
        raise Conflict("A kiosk is started from a signed-in browser on the tablet itself.", code="browser_only")
    appt = (await session.exec(select(Appointment).where(Appointment.id == appointment_id, Appointment.clinic_id == actor.clinic_id))).first()
    if appt is None:
        raise NotFound("No such appointment in this clinic.")
    if appt.status not in ("booked", "arrived"):
        raise Conflict(f"This visit is {appt.status.replace('_', ' ')}; questionnaires are answered before dosing.", code="not_before_dosing")
    state = await visit_outcomes(session, clinic_id=actor.clinic_id, appointment=appt)
    if not state.open_due:
        raise Conflict("No questionnaire is due before this visit.", code="nothing_due")
    link = CostLink(clinic_id=actor.clinic_id, patient_id=appt.patient_id, kind="kiosk", appointment_id=appt.id,
                    expires_at=now + timedelta(hours=KIOSK_HOURS), opened_at=now)
    session.add(link)
    await session.execute(update(WebSession).where(col(WebSession.id) == web_session_id, col(WebSession.ended_at).is_(None)).values(ended_at=now))
    await session.flush()
    record(session, actor=actor, action="outcomes.kiosk_started", entity="appointment", entity_id=appt.id, patient_id=appt.patient_id,
           changes={"link_id": link.id, "web_session_ended": web_session_id})
    return link


async def queue_questionnaire_notices(session: AsyncSession, *, now: datetime | None = None, queue: Any = None) -> list[int]:
    """The worker's job: for every booked dosing visit in the next two days with questionnaires due, a notice to go out at
    18:00 the day before in the patient's zone (at once when that has passed), with a link that lasts until the visit ends.
    A visit already noticed for its current time is skipped; a moved visit gets a new one (the sender drops the old)."""
    now = now or utcnow()
    q = (select(Appointment, Patient, Clinic)
         .join(Patient, col(Patient.id) == Appointment.patient_id).join(Clinic, col(Clinic.id) == Appointment.clinic_id)
         .join(SessionType, col(SessionType.id) == Appointment.session_type_id)
         .where(Appointment.status == "booked", col(SessionType.kind).in_(rules.DOSING_KINDS),
                col(Appointment.starts_at) >= now + rules.NOTICE_MIN_LEAD, col(Appointment.starts_at) < now + NOTICE_LOOKAHEAD))
    rows = [(a, p, c) for a, p, c in (await session.exec(q)).all() if notices.can_email(p)]
    keys = {a.id: f"questionnaire:{a.id}:{a.starts_at.isoformat()}" for a, _, _ in rows}
    sent = set((await session.exec(select(Notice.dedupe_key).where(col(Notice.dedupe_key).in_(list(keys.values()))))).all())
    by_clinic: dict[int, list[Appointment]] = defaultdict(list)
    for a, _, c in rows:
        if keys[a.id] not in sent:
            by_clinic[c.id].append(a)
    ids = []
    for clinic_id, appts in by_clinic.items():
        states = await visits_outcomes(session, clinic_id=clinic_id, appointments=appts)
        for a, p, c in rows:
            if a.clinic_id != clinic_id or a.id not in states or not states[a.id].open_due:
                continue
            send_after = rules.notice_send_after(a.starts_at, p.time_zone or c.timezone, now)
            if send_after is None or send_after > now + NOTICE_WRITTEN_AHEAD:
                continue
            link = CostLink(clinic_id=c.id, patient_id=p.id, kind="questionnaire", appointment_id=a.id, expires_at=a.ends_at)  # type: ignore[arg-type]
            session.add(link)
            await session.flush()
            nid = await add_notice(session, queue=queue, clinic_id=c.id, kind="questionnaire", dedupe_key=keys[a.id],  # type: ignore[arg-type]
                                   to_address=p.email, patient_id=p.id, appointment_id=a.id, send_after=send_after,  # type: ignore[arg-type]
                                   payload={"starts_at": a.starts_at.isoformat()} | notices.link_payload(link, "questionnaire"))
            if nid:
                ids.append(nid)
    return ids


# ---- a patient's trends -----------------------------------------------------------------------------------------------


@dataclass
class Trend:
    instrument: str
    measures: list[OutcomeMeasure]  # current answers, oldest first
    baseline: rules.Taken | None
    change: rules.Change | None

    @property
    def label(self) -> str:
        return INSTRUMENTS[self.instrument].short

    @property
    def latest(self) -> OutcomeMeasure | None:
        return self.measures[-1] if self.measures else None

    @property
    def latest_score(self) -> rules.Score | None:
        return score_of(self.measures[-1]) if self.measures else None


@dataclass
class PatientOutcomes:
    patient: Patient
    clinic: Clinic
    trends: list[Trend]
    visits: list[rules.Visit]  # dosing sessions, oldest first
    history: list[OutcomeMeasure]  # every row, corrections and withdrawn ones included, newest first
    reviews: list[SafetyReview]
    staff: dict[int, StaffUser]
    first_dose: dict[str, datetime]  # protocol kind -> first dose
    track_kind: str | None  # the protocol the baseline is taken from

    @property
    def superseded(self) -> dict[int, int]:
        return {m.supersedes_id: m.id for m in self.history if m.supersedes_id}  # type: ignore[misc]

    def who(self, user_id: int | None) -> str:
        u = self.staff.get(user_id) if user_id else None
        return f"{u.full_name}{', ' + u.credentials if u.credentials else ''}" if u else ""


def first_doses(visits: Sequence[rules.Visit]) -> dict[str, datetime]:
    """The first dose given under each protocol (sessions that began dosing)."""
    out: dict[str, datetime] = {}
    for v in visits:
        if v.dosing_started_at is not None and (v.kind not in out or v.dosing_started_at < out[v.kind]):
            out[v.kind] = v.dosing_started_at
    return out


async def patient_outcomes(session: AsyncSession, *, actor: Actor, patient_id: int, kind: str | None = None, audit: bool = True,
                           action: str = "outcomes.view") -> PatientOutcomes:
    """The patient's answers over time with the baseline of one protocol (`kind`, else the first one they were dosed under)."""
    patient = await patient_of(session, clinic_id=actor.clinic_id, patient_id=patient_id)
    clinic = await session.get(Clinic, actor.clinic_id)
    history = list((await session.exec(select(OutcomeMeasure).where(OutcomeMeasure.patient_id == patient.id)
                                        .order_by(col(OutcomeMeasure.completed_at).desc(), col(OutcomeMeasure.id).desc()))).all())
    current = (await _current_measures(session, clinic_id=actor.clinic_id, patient_ids=[patient.id])).get(patient.id, [])  # type: ignore[arg-type]
    visits = [v.visit for v in (await _dosing_visits(session, clinic_id=actor.clinic_id, patient_ids=[patient.id])).get(patient.id, [])]  # type: ignore[arg-type]
    doses = first_doses(visits)
    track = kind if kind in doses else (min(doses, key=doses.__getitem__) if doses else None)
    taken = [taken_of(m) for m in current]
    trends = []
    for inst in ORDER:
        mine = [m for m in current if m.instrument == inst]
        if not mine and inst not in rules.instruments_for(patient.diagnosis_codes):
            continue
        base = rules.baseline_of(taken, inst, doses[track]) if track else None
        change = rules.change_of(taken, inst, doses[track]) if track else None
        trends.append(Trend(inst, mine, base, change))
    all_reviews = await _reviews(session, clinic_id=actor.clinic_id, open_only=False, patient_id=patient.id)
    ids = {m.recorded_by for m in history} | {m.completed_by_user_id for m in history} | {r.reviewed_by for r in all_reviews}
    ids.discard(None)
    staff = {u.id: u for u in (await session.exec(select(StaffUser).where(col(StaffUser.id).in_(ids)))).all()} if ids else {}
    if audit:
        record(session, actor=actor, action=action, entity="patient", entity_id=patient.id, patient_id=patient.id)
    return PatientOutcomes(patient, clinic, trends, visits, history, all_reviews, staff, doses, track)  # type: ignore[arg-type]


async def get_measure(session: AsyncSession, *, actor: Actor, measure_id: int) -> OutcomeMeasure:
    m = await session.get(OutcomeMeasure, measure_id)
    if m is None or m.clinic_id != actor.clinic_id:
        raise NotFound("No such questionnaire in this clinic.")
    record(session, actor=actor, action="outcomes.measure_view", entity="outcome_measure", entity_id=m.id, patient_id=m.patient_id)
    return m


async def measures_of_visit(session: AsyncSession, *, appointment_id: int) -> list[OutcomeMeasure]:
    """Current answers given for one visit (the session's FHIR bundle carries them)."""
    q = select(OutcomeMeasure).where(OutcomeMeasure.appointment_id == appointment_id, _current()).order_by(col(OutcomeMeasure.completed_at))
    return list((await session.exec(q)).all())


# ---- the clinic's outcomes -------------------------------------------------------------------------------------------------


async def clinic_outcomes(session: AsyncSession, *, actor: Actor) -> rules.ClinicOutcomes:
    """Response and remission per protocol and diagnosis group, from every current answer and every dose given."""
    cid = actor.clinic_id
    doses = (await session.execute(
        select(Appointment.patient_id, SessionType.kind, Appointment.dosing_started_at)
        .join(SessionType, col(SessionType.id) == Appointment.session_type_id)
        .where(Appointment.clinic_id == cid, col(SessionType.kind).in_(rules.DOSING_KINDS), col(Appointment.dosing_started_at).is_not(None),
               col(Appointment.status).in_(("in_progress", "fulfilled")))
    )).all()
    first: dict[tuple[int, str], datetime] = {}
    for pid, kind, at in doses:
        if (pid, kind) not in first or at < first[(pid, kind)]:
            first[(pid, kind)] = at
    pids = {pid for pid, _ in first}
    measures = await _current_measures(session, clinic_id=cid, patient_ids=pids)
    codes = dict((await session.execute(select(Patient.id, Patient.diagnosis_codes).where(col(Patient.id).in_(pids)))).all()) if pids else {}
    tracks = [rules.Track(pid, kind, at, rules.diagnosis_groups(codes.get(pid) or ()), tuple(taken_of(m) for m in measures.get(pid, [])))
              for (pid, kind), at in first.items()]
    # computed from every dosed patient's answers, though it shows none of them: a bulk read
    record_read(session, actor=actor, what="outcomes", query={}, rows=len(tracks), patient_ids=pids)
    return rules.clinic_outcomes(tracks)


# ---- a protocol's schedule (admin) -------------------------------------------------------------------------------------------


async def save_schedule(session: AsyncSession, *, actor: Actor, session_type_id: int, data: dict[str, Any]) -> tuple[SessionType, rules.OutcomeSchedule]:
    st = await session.get(SessionType, session_type_id)
    if st is None or st.clinic_id != actor.clinic_id:
        raise NotFound("No such protocol.")
    before = rules.OutcomeSchedule.of(st.protocol)
    schedule = rules.clean_schedule(data)
    st.protocol = {**(st.protocol or {}), "outcomes": schedule.as_dict()}
    session.add(st)
    record(session, actor=actor, action="protocol.outcome_schedule", entity="session_type", entity_id=st.id,
           changes={"before": before.as_dict(), "after": schedule.as_dict()})
    return st, schedule


@dataclass
class SessionOutcomes:
    """The session page's header and cards: the visit's questionnaires and blocks, and the latest scores of the protocol."""

    visit: VisitOutcomes
    trends: list[Trend]
    track_kind: str | None


async def session_outcomes(session: AsyncSession, *, actor: Actor, appointment: Appointment, kind: str) -> SessionOutcomes:
    """Part of the session page, whose view is audited already."""
    visit = await visit_outcomes(session, clinic_id=actor.clinic_id, appointment=appointment)
    po = await patient_outcomes(session, actor=actor, patient_id=appointment.patient_id, kind=kind, audit=False)
    return SessionOutcomes(visit, [t for t in po.trends if t.measures], po.track_kind)
