"""What the clinic tells patients when something happens: called by services inside their transaction.

Each hook adds outbox rows (clinic.notices.outbox.add_notice) in the caller's transaction,
so a notice exists exactly when the change it reports was committed. `queue` may be None.
"""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession


async def appointment_booked(session: AsyncSession, *, queue, appointment, patient, clinic) -> None:
    """Booking confirmation; reminder before the visit; GFE due for self-pay patients."""


async def appointment_moved(session: AsyncSession, *, queue, appointment, patient, clinic, old_starts_at) -> None:
    """Cancel the old reminder, schedule one for the new time, tell the patient."""


async def appointment_cancelled(session: AsyncSession, *, queue, appointment, patient, clinic) -> None:
    """No reminder for a cancelled appointment."""


async def session_discharged(session: AsyncSession, *, queue, appointment, patient, clinic) -> None:
    """Charges from the session's facts, and the balance notice."""


async def coverage_changed(session: AsyncSession, *, queue, patient, clinic) -> None:
    """A new estimate (and its 'estimate ready' notice)."""
