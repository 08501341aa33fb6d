"""Billing tables: fee schedule, coverage, estimates (insurance and Good Faith), charges, claims, payments, cost links."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import CheckConstraint, Index, String, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlmodel import Field, SQLModel

from clinic.timeutil import TimestampField


class CoverageKind(StrEnum):
    self_pay = "self_pay"
    insured = "insured"


class EstimateKind(StrEnum):
    gfe = "gfe"
    insurance = "insurance"


class EstimateReason(StrEnum):
    """Why an estimate exists: booked (scheduled), asked for (request), or something it covered changed."""

    scheduled = "scheduled"
    request = "request"
    scope_change = "scope_change"
    coverage = "coverage"


class EstimateStatus(StrEnum):
    draft = "draft"
    issued = "issued"
    superseded = "superseded"


class ClaimStatus(StrEnum):
    draft = "draft"
    submitted = "submitted"
    paid = "paid"
    partially_paid = "partially_paid"
    denied = "denied"
    patient_balance = "patient_balance"
    closed = "closed"


class FeeScheduleEntry(SQLModel, table=True):
    """One code's self-pay price for a dated period; prices change yearly, so rows are dated, never edited in code."""

    __tablename__ = "fee_schedule"
    __table_args__ = (
        CheckConstraint("self_pay_cents >= 0", name="price_not_negative"),
        CheckConstraint("effective_to IS NULL OR effective_to > effective_from", name="period_positive"),
        UniqueConstraint("clinic_id", "code", "effective_from", name="uq_fee_schedule_clinic_code_from"),
    )

    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int = Field(foreign_key="clinics.id", index=True)
    code: str = Field(sa_type=String(10))
    description: str = Field(sa_type=String(200))
    self_pay_cents: int
    effective_from: date
    # exclusive: the first day the price no longer applies
    effective_to: date | None = None
    created_at: datetime = TimestampField(default_now=True)


class Coverage(SQLModel, table=True):
    """How a patient pays: self-pay, or insured with the plan's terms as they stand today."""

    __tablename__ = "coverages"
    __table_args__ = (
        CheckConstraint("kind IN ('self_pay','insured')", name="kind_known"),
        CheckConstraint("copay_cents >= 0", name="copay_not_negative"),
        CheckConstraint("coinsurance_pct BETWEEN 0 AND 100", name="coinsurance_percent"),
        CheckConstraint("deductible_remaining_cents >= 0", name="deductible_not_negative"),
        CheckConstraint("oop_remaining_cents >= 0", name="oop_not_negative"),
        CheckConstraint("allowed_pct IS NULL OR allowed_pct BETWEEN 0 AND 100", name="allowed_percent"),
        CheckConstraint("kind = 'self_pay' OR (length(payer) > 0 AND length(member_id) > 0)", name="insured_identified"),
    )

    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int = Field(foreign_key="clinics.id", index=True)
    patient_id: int = Field(foreign_key="patients.id", unique=True)
    kind: str = Field(default="self_pay", sa_type=String(10))
    payer: str = Field(default="", sa_type=String(120))
    member_id: str = Field(default="", sa_type=String(60))
    in_network: bool = True
    copay_cents: int = 0
    coinsurance_pct: int = 0
    deductible_remaining_cents: int = 0
    oop_remaining_cents: int = 0
    # {"96365": 42000, ...}: the plan's allowed amount per unit of a code
    allowed_amounts: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)
    # otherwise the plan allows this percentage of the clinic's charge
    allowed_pct: int | None = None
    # codes the plan does not cover at all: the patient pays the full charge
    not_covered: list[str] = Field(default_factory=list, sa_type=ARRAY(String(10)))
    # an insured patient who does not file is self-pay for estimates
    files_claim: bool = True
    updated_at: datetime = TimestampField(default_now=True)
    updated_by: int | None = Field(default=None, foreign_key="staff_users.id")


class Estimate(SQLModel, table=True):
    """An insurance estimate or a Good Faith Estimate: a draft until issued, then frozen (trigger in migration 0004)."""

    __tablename__ = "estimates"
    __table_args__ = (
        CheckConstraint("kind IN ('gfe','insurance')", name="kind_known"),
        CheckConstraint("reason IN ('scheduled','request','scope_change','coverage')", name="reason_known"),
        CheckConstraint("total_cents >= 0 AND patient_cents >= 0", name="money_not_negative"),
        CheckConstraint(
            "(issued_at IS NULL AND issued_by IS NULL) OR (issued_at IS NOT NULL AND content <> '{}'::jsonb)",
            name="issued_with_content",
        ),
        # one open draft per patient and kind: later bookings widen it instead of adding another
        Index("uq_estimates_one_draft", "patient_id", "kind", unique=True, postgresql_where=text("issued_at IS NULL")),
        Index("ix_estimates_clinic_due", "clinic_id", "due_on", postgresql_where=text("issued_at IS NULL")),
    )

    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int = Field(foreign_key="clinics.id", index=True)
    patient_id: int = Field(foreign_key="patients.id", index=True)
    kind: str = Field(sa_type=String(10))
    reason: str = Field(default="scheduled", sa_type=String(12))
    # the primary service: the first visit the estimate covers
    appointment_id: int | None = Field(default=None, foreign_key="appointments.id")
    service_date: date | None = None
    scheduled_on: date
    # the legal (GFE) or house (insurance) deadline; None when no GFE is required
    due_on: date | None = None
    supersedes_id: int | None = Field(default=None, foreign_key="estimates.id", unique=True)
    created_at: datetime = TimestampField(default_now=True)
    issued_at: datetime | None = TimestampField(nullable=True)
    issued_by: int | None = Field(default=None, foreign_key="staff_users.id")
    total_cents: int = 0
    patient_cents: int = 0
    # the issued document, as the patient received it (kept at least 6 years)
    content: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)


class Charge(SQLModel, table=True):
    """One billed line of a session, derived from its facts at discharge."""

    __tablename__ = "charges"
    __table_args__ = (
        CheckConstraint("units > 0", name="units_positive"),
        CheckConstraint("fee_cents IS NULL OR fee_cents >= 0", name="fee_not_negative"),
        UniqueConstraint("appointment_id", "code", name="uq_charges_appointment_code"),
    )

    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int = Field(foreign_key="clinics.id", index=True)
    appointment_id: int = Field(foreign_key="appointments.id", index=True)
    patient_id: int = Field(foreign_key="patients.id", index=True)
    provider_id: int | None = Field(default=None, foreign_key="staff_users.id")
    service_date: date
    place_of_service: str = Field(default="11", sa_type=String(2))  # 11 = office
    code: str = Field(sa_type=String(10))
    modifiers: list[str] = Field(default_factory=list, sa_type=ARRAY(String(2)))
    units: int = 1
    # per unit, from the fee schedule on the service date; None = no price on file (billing must set one)
    fee_cents: int | None = None
    diagnosis_codes: list[str] = Field(default_factory=list, sa_type=ARRAY(String(12)))
    created_at: datetime = TimestampField(default_now=True)

    @property
    def amount_cents(self) -> int:
        return (self.fee_cents or 0) * self.units


class Claim(SQLModel, table=True):
    """The insurance claim for one session, tracked from draft to closed."""

    __tablename__ = "claims"
    __table_args__ = (
        CheckConstraint(
            "status IN ('draft','submitted','paid','partially_paid','denied','patient_balance','closed')", name="status_known"
        ),
        CheckConstraint("billed_cents >= 0 AND plan_paid_cents >= 0 AND patient_cents >= 0", name="money_not_negative"),
    )

    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int = Field(foreign_key="clinics.id", index=True)
    appointment_id: int = Field(foreign_key="appointments.id", unique=True)
    patient_id: int = Field(foreign_key="patients.id", index=True)
    payer: str = Field(sa_type=String(120))
    member_id: str = Field(sa_type=String(60))
    status: str = Field(default="draft", sa_type=String(16), index=True)
    billed_cents: int = 0
    plan_paid_cents: int = 0
    # what the patient owes for this session: the estimate until the payer answers
    patient_cents: int = 0
    payer_reference: str | None = Field(default=None, sa_type=String(60))
    note: str | None = Field(default=None, sa_type=Text)
    submitted_at: datetime | None = TimestampField(nullable=True)
    updated_at: datetime = TimestampField(default_now=True)


class Payment(SQLModel, table=True):
    """Money the patient paid the clinic."""

    __tablename__ = "payments"
    __table_args__ = (CheckConstraint("amount_cents > 0", name="amount_positive"),)

    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int = Field(foreign_key="clinics.id", index=True)
    patient_id: int = Field(foreign_key="patients.id", index=True)
    appointment_id: int | None = Field(default=None, foreign_key="appointments.id", index=True)
    amount_cents: int
    method: str = Field(default="card", sa_type=String(20))
    received_at: datetime = TimestampField(default_now=True)
    recorded_by: int | None = Field(default=None, foreign_key="staff_users.id")


class CostLink(SQLModel, table=True):
    """A signed, expiring link from a notice to what the patient may see (their amounts) or answer (their questionnaires,
    kinds questionnaire and kiosk); 5 wrong dates of birth lock it."""

    __tablename__ = "cost_links"
    __table_args__ = (
        CheckConstraint("kind IN ('visit','estimate','balance','questionnaire','kiosk')", name="kind_known"),
        CheckConstraint("failed_attempts >= 0", name="attempts_not_negative"),
    )

    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int = Field(foreign_key="clinics.id", index=True)
    patient_id: int = Field(foreign_key="patients.id", index=True)
    kind: str = Field(sa_type=String(16))
    estimate_id: int | None = Field(default=None, foreign_key="estimates.id")
    appointment_id: int | None = Field(default=None, foreign_key="appointments.id")
    expires_at: datetime = TimestampField()
    failed_attempts: int = 0
    locked_at: datetime | None = TimestampField(nullable=True)
    opened_at: datetime | None = TimestampField(nullable=True)
    created_at: datetime = TimestampField(default_now=True)
