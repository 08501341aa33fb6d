"""Billing's JSON shapes under /api/v1: coverage, GFE requests, claim moves, payments and fees in; their views out.

JSON money is integer cents; the service's rules check every amount, percentage and code and name the field."""

from __future__ import annotations

from datetime import date
from typing import Any

from msgspec import UNSET, Struct, UnsetType

from clinic.billing.models import ClaimStatus, CoverageKind, EstimateKind, EstimateReason, EstimateStatus
from clinic.timeutil import Instant

# ---- bodies -------------------------------------------------------------------------------------


class CoverageIn(Struct):
    """The whole coverage (PUT): what is left out takes the default shown."""

    kind: str = "self_pay"
    payer: str = ""
    member_id: str = ""
    in_network: bool = True
    copay_cents: int = 0
    coinsurance_pct: int = 0
    deductible_remaining_cents: int = 0
    oop_remaining_cents: int = 0
    # allowed amount per unit of a code, in cents
    allowed_amounts: dict[str, int] = {}
    allowed_pct: int | None = None
    not_covered: list[str] = []
    files_claim: bool = True


class GfeRequest(Struct):
    patient_id: int | None = None
    session_type_id: int | None = None
    visits: int | None = None


class ClaimMove(Struct):
    status: str = ""
    plan_paid_cents: int | None = None
    patient_cents: int | None = None
    payer_reference: str | None = None
    note: str | None = None


class PaymentIn(Struct):
    amount_cents: int | None = None
    method: str | None = None
    appointment_id: int | None = None


class FeeIn(Struct):
    code: str | int = ""
    description: str = ""
    self_pay_cents: int | None = None
    effective_from: date | None = None
    effective_to: date | None = None


# ---- views --------------------------------------------------------------------------------------


class CoverageOut(Struct, kw_only=True):
    patient_id: int
    kind: CoverageKind
    on_file: bool
    estimates_as: EstimateKind
    # the terms, when coverage is on file
    payer: str | UnsetType = UNSET
    member_id: str | UnsetType = UNSET
    in_network: bool | UnsetType = UNSET
    copay_cents: int | UnsetType = UNSET
    coinsurance_pct: int | UnsetType = UNSET
    deductible_remaining_cents: int | UnsetType = UNSET
    oop_remaining_cents: int | UnsetType = UNSET
    allowed_amounts: dict[str, int] | UnsetType = UNSET
    allowed_pct: int | None | UnsetType = UNSET
    not_covered: list[str] | UnsetType = UNSET
    files_claim: bool | UnsetType = UNSET
    updated_at: str | UnsetType = UNSET


class CoverageList(Struct):
    items: list[CoverageOut]


class EstimateOut(Struct):
    id: int
    patient_id: int
    kind: EstimateKind
    reason: EstimateReason
    status: EstimateStatus
    appointment_id: int | None
    service_date: date | None
    scheduled_on: date
    due_on: date | None
    supersedes_id: int | None
    issued_at: Instant | None
    total_cents: int
    patient_cents: int
    # the issued document, frozen at issue (null for a draft)
    content: dict[str, Any] | None


class EstimateList(Struct):
    items: list[EstimateOut]


class ChargeOut(Struct):
    id: int
    appointment_id: int
    patient_id: int
    service_date: date
    code: str
    units: int
    fee_cents: int | None
    amount_cents: int
    diagnosis_codes: list[str]
    place_of_service: str
    provider_id: int | None


class ChargeList(Struct):
    items: list[ChargeOut]


class ClaimOut(Struct):
    id: int
    appointment_id: int
    patient_id: int
    payer: str
    status: ClaimStatus
    billed_cents: int
    plan_paid_cents: int
    patient_cents: int
    payer_reference: str | None
    submitted_at: str | None


class ClaimList(Struct):
    items: list[ClaimOut]


class BalanceOut(Struct):
    patient_id: int
    owed_cents: int
    self_pay_cents: int
    claims_cents: int
    paid_cents: int


class BalanceList(Struct):
    items: list[BalanceOut]


class PaymentOut(Struct):
    id: int
    patient_id: int
    amount_cents: int
    method: str


class FeeOut(Struct):
    id: int
    code: str
    description: str
    self_pay_cents: int
    effective_from: date
    effective_to: date | None


class FeeList(Struct):
    items: list[FeeOut]
