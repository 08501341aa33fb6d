"""What one domain tells the others has happened (a visit booked, moved or cancelled, a session discharged, coverage
changed, an estimate issued, a balance due) and who acts on it: the subscribers, listed in one table, each run in the
publisher's transaction, so the outbox rows they add commit (or roll back) with the change itself."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.billing.models import Estimate
from clinic.clinics import Clinic
from clinic.patients.models import Patient
from clinic.scheduling.models import Appointment


@dataclass(frozen=True)
class AppointmentBooked:
    appointment: Appointment
    patient: Patient
    clinic: Clinic


@dataclass(frozen=True)
class CourseBooked:
    appointments: list[Appointment]
    patient: Patient
    clinic: Clinic


@dataclass(frozen=True)
class AppointmentMoved:
    appointment: Appointment
    patient: Patient
    clinic: Clinic


@dataclass(frozen=True)
class AppointmentCancelled:
    appointment: Appointment
    patient: Patient
    clinic: Clinic


@dataclass(frozen=True)
class SessionDischarged:
    appointment: Appointment
    patient: Patient
    clinic: Clinic


@dataclass(frozen=True)
class BalanceDue:
    """A discharged session's charges left the patient owing something."""

    appointment: Appointment
    patient: Patient
    clinic: Clinic


@dataclass(frozen=True)
class CoverageChanged:
    patient: Patient
    clinic: Clinic


@dataclass(frozen=True)
class EstimateIssued:
    estimate: Estimate
    patient: Patient
    clinic: Clinic


Event = (AppointmentBooked | CourseBooked | AppointmentMoved | AppointmentCancelled | SessionDischarged | BalanceDue | CoverageChanged
         | EstimateIssued)
Subscriber = Callable[..., Awaitable[None]]  # (session, event, *, queue)


@cache
def subscribers() -> dict[type, tuple[Subscriber, ...]]:
    """Who acts on each event, in this order."""
    # imported on first use: billing and notices publish events themselves
    from clinic.billing.service import charges, drafts, issuing
    from clinic.notices import service as notices

    return {
        AppointmentBooked: (notices.confirm_booking, drafts.draft_for_booking),
        CourseBooked: (notices.confirm_course, drafts.draft_for_course),
        AppointmentMoved: (notices.confirm_move, drafts.draft_for_change),
        AppointmentCancelled: (notices.withdraw_reminders, drafts.draft_for_change),
        SessionDischarged: (charges.charge_session,),
        BalanceDue: (notices.balance_due,),
        CoverageChanged: (issuing.estimate_for_coverage,),
        EstimateIssued: (notices.estimate_issued,),
    }


async def publish(session: AsyncSession, event: Event, *, queue: Any) -> None:
    """Run the event's subscribers in the caller's transaction; `queue` (may be None) gets their jobs after commit."""
    for subscriber in subscribers()[type(event)]:
        await subscriber(session, event, queue=queue)
