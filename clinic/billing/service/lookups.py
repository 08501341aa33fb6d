"""What every billing use case reads: the clinic's local day, its closed dates, and a patient of this clinic."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.errors import NotFound
from clinic.patients.models import Patient
from clinic.scheduling.models import Clinic, ClosedDate
from clinic.timeutil import utcnow


def clinic_today(clinic: Clinic, now: datetime | None = None) -> date:
    return (now or utcnow()).astimezone(ZoneInfo(clinic.timezone)).date()


def local_date(instant: datetime, clinic: Clinic) -> date:
    return instant.astimezone(ZoneInfo(clinic.timezone)).date()


async def closed_dates(session: AsyncSession, clinic_id: int) -> frozenset[date]:
    rows = await session.exec(select(ClosedDate.day).where(ClosedDate.clinic_id == clinic_id))
    return frozenset(rows.all())


def real_id(value: int) -> bool:
    """Ids beyond the database's integer range name nothing (and would fail the query instead)."""
    return 0 < value < 2**31


async def get_patient(session: AsyncSession, clinic_id: int, patient_id: int) -> Patient:
    if not real_id(patient_id):
        raise NotFound("No such patient in this clinic.")
    p = (await session.exec(select(Patient).where(Patient.id == patient_id, Patient.clinic_id == clinic_id))).first()
    if p is None:
        raise NotFound("No such patient in this clinic.")
    return p
