"""The access matrix: every permission a route can ask for, and the roles that hold it. One place, tested route by route."""

from __future__ import annotations

FRONT_DESK, NURSE, PRESCRIBER, BILLING, ADMIN = "front_desk", "nurse", "prescriber", "billing", "admin"
# a program, not a person: holds API tokens an admin creates for it, reads what an export needs, never signs clinically
INTEGRATION = "integration"
STAFF_ROLES = frozenset({FRONT_DESK, NURSE, PRESCRIBER, BILLING, ADMIN})
ALL_ROLES = STAFF_ROLES | {INTEGRATION}
# roles that never sign in with a browser (no password, no session)
NO_BROWSER = frozenset({INTEGRATION})

PERMISSIONS: dict[str, frozenset[str]] = {
    # anyone signed in: home page, own account and API tokens, logout, "who am I"
    "staff": ALL_ROLES,
    # patients: front desk books and edits; clinical and billing staff (and integrations) read charts
    "patients.read": ALL_ROLES,
    "patients.write": frozenset({FRONT_DESK, ADMIN}),
    # the schedule: everyone sees it; front desk (and admin) change it
    "schedule.read": ALL_ROLES,
    "schedule.write": frozenset({FRONT_DESK, ADMIN}),
    # supervised sessions: nurses and prescribers run them
    "session.read": frozenset({NURSE, PRESCRIBER, ADMIN, INTEGRATION}),
    "session.run": frozenset({NURSE, PRESCRIBER}),
    # only prescribers acknowledge pre-dose cautions and sign discharges
    "session.sign": frozenset({PRESCRIBER}),
    "board.read": frozenset({NURSE, PRESCRIBER, FRONT_DESK, ADMIN}),
    # billing sees billing
    "billing.read": frozenset({BILLING, ADMIN, INTEGRATION}),
    "billing.write": frozenset({BILLING}),
    # coverage (insurance card details): billing, or the front desk entering it at registration
    "coverage.write": frozenset({FRONT_DESK, BILLING, ADMIN}),
    # outcome questionnaires: clinical staff (and integrations, for the FHIR export) read a patient's answers; nurses and
    # prescribers enter them on the patient's behalf; only prescribers record safety reviews and waive a baseline; the
    # clinic's outcomes are for prescribers and admins; the front desk (or a nurse) hands the waiting-room tablet over
    "outcomes.read": frozenset({NURSE, PRESCRIBER, ADMIN, INTEGRATION}),
    "outcomes.record": frozenset({NURSE, PRESCRIBER}),
    "outcomes.review": frozenset({PRESCRIBER}),
    "outcomes.clinic": frozenset({PRESCRIBER, ADMIN}),
    "outcomes.kiosk": frozenset({FRONT_DESK, NURSE, PRESCRIBER}),
    # admin manages staff, chairs, protocols, fee schedule, and reads the audit trail
    "admin": frozenset({ADMIN}),
    "audit.read": frozenset({ADMIN}),
}


def allows(permission: str, roles: list[str] | tuple[str, ...] | frozenset[str]) -> bool:
    allowed = PERMISSIONS.get(permission)
    if allowed is None:  # unknown permission: fail closed
        return False
    return bool(allowed.intersection(roles))
