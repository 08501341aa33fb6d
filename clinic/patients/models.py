"""Patients: identity, contact, consent, escort, REMS enrollment and medication flags."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import String
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlmodel import Field, SQLModel

from clinic.timeutil import TimestampField

# Sedating / BP-affecting medication flags of the REMS Patient Monitoring Form.
MEDICATION_FLAGS = (
    "benzodiazepines",
    "non_benzodiazepine_sedative_hypnotics",
    "psychostimulants",
    "maois",
    "opioids",
)


class Patient(SQLModel, table=True):
    __tablename__ = "patients"

    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int = Field(foreign_key="clinics.id", index=True)
    first_name: str = Field(sa_type=String(100))
    last_name: str = Field(sa_type=String(100), index=True)
    date_of_birth: date = Field(index=True)
    sex: str = Field(sa_type=String(20))  # female | male | other | unknown
    email: str | None = Field(default=None, sa_type=String(254))
    phone: str | None = Field(default=None, sa_type=String(40), index=True)
    # notices: "email" or "none"; consent recorded with its time
    notice_channel: str = Field(default="email", sa_type=String(10))
    notice_consent_at: datetime | None = TimestampField(nullable=True)
    notices_opted_out: bool = False
    escort_name: str | None = Field(default=None, sa_type=String(200))
    escort_phone: str | None = Field(default=None, sa_type=String(40))
    rems_enrolled_on: date | None = None
    rems_patient_id: str | None = Field(default=None, sa_type=String(40))
    medication_flags: list[str] = Field(default_factory=list, sa_type=ARRAY(String(60)))
    diagnosis_codes: list[str] = Field(default_factory=list, sa_type=ARRAY(String(12)))
    # the IANA zone the patient lives in (questionnaire notices go at 18:00 their time); None: the clinic's
    time_zone: str | None = Field(default=None, sa_type=String(64))
    extra: dict = Field(default_factory=dict, sa_type=JSONB)
    created_at: datetime = TimestampField(default_now=True)

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}"
