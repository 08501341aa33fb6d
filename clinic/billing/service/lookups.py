"""What every billing use case reads: a patient of this clinic, by an id that may be out of range."""

from __future__ import annotations

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.errors import NotFound
from clinic.patients.models import Patient


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
