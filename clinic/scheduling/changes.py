"""The schedule's outbox: a booking, move or cancellation adds one row in its own transaction, and the worker follows
it up after commit (the patient's estimate draft and notices, subscribers of clinic.events), so a request does only the booking.

The row is the source of truth: it is queued after commit and the cron sweep queues whatever is still pending, so a
Redis outage only delays the follow-up. Following up is idempotent: a change is done once, in the transaction that
drafts and notifies for it, and each patient's changes are followed in the order they were made.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.clinics import Clinic
from clinic.db import after_commit
from clinic.events import AppointmentBooked, AppointmentCancelled, AppointmentMoved, CourseBooked, publish
from clinic.patients.models import Patient
from clinic.scheduling.models import Appointment, ChangeKind, ScheduleChange
from clinic.timeutil import utcnow

FOLLOW_JOB = "follow_schedule_change"
# the newest change per patient this transaction added: its job follows up the earlier ones too
_LATEST = "schedule_changes"


EVENTS = {ChangeKind.BOOKED: AppointmentBooked, ChangeKind.MOVED: AppointmentMoved, ChangeKind.CANCELLED: AppointmentCancelled}


def job_id(change_id: int) -> str:
    """Deterministic: queueing the same change twice makes one arq job."""
    return f"change:{change_id}"


def add(session: AsyncSession, *, queue: Any, kind: ChangeKind, appointment: Appointment, payload: dict[str, Any] | None = None) -> None:
    """Record a change to `appointment` in the caller's transaction; once it commits, queue its follow-up.
    `queue` may be None (the cron sweep then queues it)."""
    change = ScheduleChange(clinic_id=appointment.clinic_id, patient_id=appointment.patient_id, appointment_id=appointment.id,
                            kind=kind, payload=payload or {})
    session.add(change)
    if queue is None:
        return
    latest = session.info.setdefault(_LATEST, {})
    if not latest:

        async def enqueue() -> None:
            for c in session.info.pop(_LATEST, {}).values():
                await queue.enqueue(FOLLOW_JOB, c.id, job_id=job_id(c.id))

        after_commit(session, enqueue)
    latest[change.patient_id] = change


async def pending(session: AsyncSession, limit: int = 5000) -> list[int]:
    """Changes not yet followed up, oldest first (for the sweep)."""
    q = select(ScheduleChange.id).where(col(ScheduleChange.done_at).is_(None)).order_by(ScheduleChange.id).limit(limit)
    return list((await session.exec(q)).all())


async def follow(session: AsyncSession, *, queue: Any, change_id: int) -> int:
    """Follow up this change and the same patient's earlier pending ones, oldest first: the notices and estimate
    work each owes (the subscribers of its event in clinic.events). Returns how many were done (0 when another run did them first)."""
    patient_of = select(ScheduleChange.patient_id).where(ScheduleChange.id == change_id).scalar_subquery()
    # locked in id order: a second run for the same patient waits, then finds them done
    q = (
        select(ScheduleChange)
        .where(ScheduleChange.patient_id == patient_of, col(ScheduleChange.done_at).is_(None), ScheduleChange.id <= change_id)
        .order_by(ScheduleChange.id)
        .with_for_update()
    )
    changes = list((await session.exec(q)).all())
    if not changes:
        return 0
    clinic = await session.get(Clinic, changes[0].clinic_id)
    patient = await session.get(Patient, changes[0].patient_id)
    for change in changes:
        if change.kind == ChangeKind.COURSE_BOOKED:
            ids = change.payload["appointment_ids"]
            visits = (await session.exec(select(Appointment).where(col(Appointment.id).in_(ids)))).all()
            event = CourseBooked(list(visits), patient, clinic)
        else:
            appointment = await session.get(Appointment, change.appointment_id)
            event = EVENTS[change.kind](appointment, patient, clinic)
        await publish(session, event, queue=queue)
        change.done_at = utcnow()
    return len(changes)
