"""What the clinic tells patients when something happens, and the estimate work it owes them.

The booking hooks run in the worker's follow-up of a schedule change (clinic.scheduling.changes); discharge
and coverage hooks run inside the service's own transaction. Each hook adds outbox rows
(clinic.notices.outbox.add_notice) in the caller's transaction, queued once it commits. `queue` may be None.
"""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.billing import service as billing
from clinic.notices import service as notices


async def appointment_booked(session: AsyncSession, *, queue, appointment, patient, clinic) -> None:
    """Booking confirmation; reminder before the visit; GFE due for self-pay patients."""
    await notices.booking_notices(session, queue=queue, appointment=appointment, patient=patient, clinic=clinic)
    await billing.on_booked(session, appointment=appointment, patient=patient, clinic=clinic)


async def course_booked(session: AsyncSession, *, queue, appointments, patient, clinic) -> None:
    """A course booked in one go: one confirmation listing every visit, then each visit's reminder and estimate."""
    visits = sorted(appointments, key=lambda a: a.starts_at)
    for n, appt in enumerate(visits):
        await notices.booking_notices(session, queue=queue, appointment=appt, patient=patient, clinic=clinic,
                                      course_visits=visits, confirm=n == 0)
        await billing.on_booked(session, appointment=appt, patient=patient, clinic=clinic)


async def appointment_moved(session: AsyncSession, *, queue, appointment, patient, clinic) -> None:
    """Cancel the old reminder, schedule one for the new time, tell the patient."""
    await notices.cancel_pending(session, appointment_id=appointment.id, reason="visit moved")
    await notices.booking_notices(session, queue=queue, appointment=appointment, patient=patient, clinic=clinic, moved=True)
    await billing.on_changed(session, appointment=appointment, patient=patient, clinic=clinic)


async def appointment_cancelled(session: AsyncSession, *, queue, appointment, patient, clinic) -> None:
    """No reminder for a cancelled appointment."""
    await notices.cancel_pending(session, appointment_id=appointment.id, reason="visit cancelled")
    await billing.on_changed(session, appointment=appointment, patient=patient, clinic=clinic)


async def session_discharged(session: AsyncSession, *, queue, appointment, patient, clinic) -> None:
    """Charges from the session's facts, and the balance notice."""
    owed = await billing.record_session_charges(session, appointment=appointment, patient=patient, clinic=clinic)
    if owed > 0:
        await notices.balance_notice(session, queue=queue, appointment=appointment, patient=patient, clinic=clinic)


async def coverage_changed(session: AsyncSession, *, queue, patient, clinic) -> None:
    """A new estimate (and its 'estimate ready' notice)."""
    draft = await billing.on_coverage_changed(session, patient=patient, clinic=clinic)
    if draft is not None and draft.kind == "insurance":
        # an insurance estimate needs no review: issue it now when the coverage says enough to compute it
        await billing.try_issue(session, estimate=draft, clinic=clinic, queue=queue)
