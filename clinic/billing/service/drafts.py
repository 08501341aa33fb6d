"""Estimate drafts: opened or widened when visits are booked, moved or cancelled, coverage changes or a patient asks."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import Actor, record
from clinic.billing import rules
from clinic.billing.models import Estimate
from clinic.billing.service.coverage import coverage_of, estimate_kind
from clinic.billing.service.lookups import get_patient
from clinic.clinics import Clinic, clinic_of, closed_dates
from clinic.db import register_conflicts
from clinic.errors import RuleBroken
from clinic.events import AppointmentBooked, AppointmentCancelled, AppointmentMoved, CourseBooked
from clinic.patients.models import Patient
from clinic.scheduling.models import Appointment, SessionType
from clinic.timeutil import utcnow

register_conflicts(
    {
        "uq_estimates_one_draft": "This patient already has an estimate being prepared; issue or update that one.",
        "uq_estimates_supersedes_id": "That estimate was already replaced by a newer one; reload the page.",
    }
)

# Good practice: a GFE covers up to 12 months of recurring care (45 CFR 149.610(b)(2)(v)).
ESTIMATE_HORIZON_DAYS = 365
LIVE_FOR_ESTIMATES = ("booked", "arrived", "in_progress")


async def latest_issued(session: AsyncSession, patient_id: int, kind: str | None = None) -> Estimate | None:
    q = select(Estimate).where(Estimate.patient_id == patient_id, col(Estimate.issued_at).is_not(None))
    if kind:
        q = q.where(Estimate.kind == kind)
    return (await session.exec(q.order_by(col(Estimate.issued_at).desc(), col(Estimate.id).desc()).limit(1))).first()


async def draft_of(session: AsyncSession, patient_id: int, kind: str) -> Estimate | None:
    q = select(Estimate).where(Estimate.patient_id == patient_id, Estimate.kind == kind, col(Estimate.issued_at).is_(None))
    return (await session.exec(q.with_for_update())).first()


def _covered(estimate: Estimate | None, appointment_id: int) -> bool:
    return estimate is not None and appointment_id in (estimate.content.get("appointment_ids") or [])


async def open_draft(
    session: AsyncSession, *, clinic: Clinic, patient_id: int, kind: str, reason: str,
    service_date: date | None, appointment_id: int | None, now: datetime | None = None, deadline_as: str | None = None,
) -> Estimate:
    """Create the patient's draft of this kind, or widen the one already open; its deadline is the earliest owed."""
    today = clinic.today(now)
    closed = await closed_dates(session, clinic.id)
    if kind == "gfe":
        due = rules.gfe_due(scheduled_on=today, service_on=service_date, reason=deadline_as or reason, closed=closed)
    else:
        # not a legal deadline: the clinic's own promise to send insurance estimates within a business day
        due = rules.add_business_days(today, 1, closed)
    draft = await draft_of(session, patient_id, kind)
    if draft is None:
        previous = await latest_issued(session, patient_id, kind)
        if previous is not None and (await session.exec(select(Estimate.id).where(Estimate.supersedes_id == previous.id))).first():
            previous = None  # already replaced
        draft = Estimate(clinic_id=clinic.id, patient_id=patient_id, kind=kind, reason=reason, appointment_id=appointment_id,
                         service_date=service_date, scheduled_on=today, due_on=due,
                         supersedes_id=previous.id if previous else None)
        try:
            async with session.begin_nested():
                session.add(draft)
                await session.flush()
            return draft
        except IntegrityError:
            # a concurrent booking for the same patient opened the draft first: widen that one (never fail a booking)
            draft = await draft_of(session, patient_id, kind)
            if draft is None:
                raise
    if service_date and (draft.service_date is None or service_date < draft.service_date):
        draft.service_date, draft.appointment_id = service_date, appointment_id
    if due and (draft.due_on is None or due < draft.due_on):
        draft.due_on = due
    if reason == "scope_change" and draft.reason == "scheduled":
        draft.reason = reason
    session.add(draft)
    await session.flush()
    return draft


async def drop_drafts(session: AsyncSession, patient_id: int, *, except_kind: str | None = None) -> None:
    q = delete(Estimate).where(Estimate.patient_id == patient_id, col(Estimate.issued_at).is_(None))
    if except_kind:
        q = q.where(Estimate.kind != except_kind)
    await session.execute(q)


async def on_booked(session: AsyncSession, *, appointment: Appointment, patient: Patient, clinic: Clinic) -> Estimate | None:
    coverage = await coverage_of(session, clinic.id, patient.id)
    kind = estimate_kind(coverage)
    issued = await latest_issued(session, patient.id, kind)
    if _covered(issued, appointment.id):
        return None
    service = clinic.local_date(appointment.starts_at)
    reason = "scope_change" if issued is not None and service <= date.fromisoformat(issued.content.get("last_date", "1900-01-01")) else "scheduled"
    if kind == "gfe" and reason == "scheduled":
        closed = await closed_dates(session, clinic.id)
        if rules.gfe_due(scheduled_on=clinic.today(), service_on=service, reason="scheduled", closed=closed) is None \
                and await draft_of(session, patient.id, kind) is None:
            return None  # under 3 business days ahead: no GFE is owed (staff can still make one on request)
    return await open_draft(session, clinic=clinic, patient_id=patient.id, kind=kind, reason=reason,
                            service_date=service, appointment_id=appointment.id)


async def on_changed(session: AsyncSession, *, appointment: Appointment, patient: Patient, clinic: Clinic) -> Estimate | None:
    """A moved or cancelled visit that an issued estimate covers changes its scope: a new one is owed before the next visit."""
    coverage = await coverage_of(session, clinic.id, patient.id)
    kind = estimate_kind(coverage)
    issued = await latest_issued(session, patient.id, kind)
    upcoming = await upcoming_appointments(session, clinic=clinic, patient_id=patient.id)
    if not upcoming:
        await drop_drafts(session, patient.id)
        return None
    if not _covered(issued, appointment.id) and await draft_of(session, patient.id, kind) is None:
        return None
    first = upcoming[0][0]
    return await open_draft(session, clinic=clinic, patient_id=patient.id, kind=kind, reason="scope_change",
                            service_date=clinic.local_date(first.starts_at), appointment_id=first.id)


async def draft_for_booking(session: AsyncSession, event: AppointmentBooked, *, queue) -> None:
    """Subscriber (clinic.events): the estimate a newly booked visit calls for."""
    await on_booked(session, appointment=event.appointment, patient=event.patient, clinic=event.clinic)


async def draft_for_course(session: AsyncSession, event: CourseBooked, *, queue) -> None:
    for appt in sorted(event.appointments, key=lambda a: a.starts_at):
        await on_booked(session, appointment=appt, patient=event.patient, clinic=event.clinic)


async def draft_for_change(session: AsyncSession, event: AppointmentMoved | AppointmentCancelled, *, queue) -> None:
    await on_changed(session, appointment=event.appointment, patient=event.patient, clinic=event.clinic)


async def on_coverage_changed(session: AsyncSession, *, patient: Patient, clinic: Clinic) -> Estimate | None:
    coverage = await coverage_of(session, clinic.id, patient.id)
    kind = estimate_kind(coverage)
    await drop_drafts(session, patient.id, except_kind=kind)
    upcoming = await upcoming_appointments(session, clinic=clinic, patient_id=patient.id)
    if not upcoming:
        return None
    first = upcoming[0][0]
    # a patient who turns self-pay is owed a GFE as promptly as one who asks for it
    return await open_draft(session, clinic=clinic, patient_id=patient.id, kind=kind, reason="coverage", deadline_as="request",
                            service_date=clinic.local_date(first.starts_at), appointment_id=first.id)


async def request_gfe(session: AsyncSession, *, actor: Actor, patient_id: int, session_type_id: Any = None,
                      visits: Any = None) -> Estimate:
    """A GFE the patient asked for: due within 3 business days, even before anything is booked."""
    session_type_id = rules.whole(session_type_id, field="session_type_id", low=1, high=2**31 - 1, allow_none=True)
    visits = rules.whole(visits, field="visits", low=1, high=52, allow_none=True)
    patient = await get_patient(session, actor.clinic_id, patient_id)
    if estimate_kind(await coverage_of(session, actor.clinic_id, patient_id)) != "gfe":
        raise RuleBroken("This patient's claims go to their plan: they get an insurance estimate, not a Good Faith Estimate.",
                           field="patient_id")
    clinic = await clinic_of(session, actor)
    upcoming = await upcoming_appointments(session, clinic=clinic, patient_id=patient.id)
    if not upcoming and session_type_id is None:
        raise RuleBroken("Nothing is booked: choose the service the patient asked about.", field="session_type_id")
    planned: dict[str, Any] = {}
    if session_type_id is not None:
        st = (await session.exec(select(SessionType).where(SessionType.id == session_type_id, SessionType.clinic_id == clinic.id))).first()
        if st is None:
            raise RuleBroken("No such service in this clinic.", field="session_type_id")
        n = visits or 1
        planned = {"session_type_id": st.id, "visits": n}
    first = upcoming[0][0] if upcoming else None
    draft = await open_draft(session, clinic=clinic, patient_id=patient.id, kind="gfe", reason="request",
                             service_date=clinic.local_date(first.starts_at) if first else None,
                             appointment_id=first.id if first else None)
    if planned:
        draft.content = {"planned": planned}
    session.add(draft)
    record(session, actor=actor, action="estimate.request", entity="estimate", entity_id=draft.id, patient_id=patient.id,
           changes={"kind": "gfe", "due_on": draft.due_on})
    return draft


async def upcoming_appointments(session: AsyncSession, *, clinic: Clinic, patient_id: int,
                                now: datetime | None = None) -> list[tuple[Appointment, SessionType]]:
    now = now or utcnow()
    start = datetime.combine(clinic.today(now), datetime.min.time(), ZoneInfo(clinic.timezone))
    q = (
        select(Appointment, SessionType)
        .join(SessionType, SessionType.id == Appointment.session_type_id)
        .where(
            Appointment.clinic_id == clinic.id,
            Appointment.patient_id == patient_id,
            col(Appointment.status).in_(LIVE_FOR_ESTIMATES),
            Appointment.starts_at >= start,
            Appointment.starts_at < start + timedelta(days=ESTIMATE_HORIZON_DAYS),
        )
        .order_by(Appointment.starts_at)
    )
    return [(a, s) for a, s in (await session.exec(q)).all()]
