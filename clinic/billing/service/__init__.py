"""Billing use cases by module, each inside the caller's transaction (the route or the worker decides when it commits):
the fee schedule, coverage, estimate drafts and issuing, charges at discharge, claims, payments and balances."""

from clinic.billing.service.charges import (
    Balance,
    add_payment,
    balances,
    gfe_overages,
    list_charges,
    list_claims,
    move_claim,
    read_balances,
    record_session_charges,
)
from clinic.billing.service.coverage import coverage_of, estimate_kind, list_coverages, set_coverage
from clinic.billing.service.drafts import draft_of, on_booked, request_gfe, upcoming_appointments
from clinic.billing.service.fees import add_fee, end_fee, fee_rows
from clinic.billing.service.issuing import get_estimate, issue, list_estimates, superseded_ids, try_issue
from clinic.billing.service.lookups import get_patient, real_id

__all__ = [
    "Balance",
    "add_fee",
    "add_payment",
    "balances",
    "coverage_of",
    "draft_of",
    "end_fee",
    "estimate_kind",
    "fee_rows",
    "get_estimate",
    "get_patient",
    "gfe_overages",
    "issue",
    "list_charges",
    "list_claims",
    "list_coverages",
    "list_estimates",
    "move_claim",
    "on_booked",
    "read_balances",
    "real_id",
    "record_session_charges",
    "request_gfe",
    "set_coverage",
    "superseded_ids",
    "try_issue",
    "upcoming_appointments",
]
