"""Supervised-session use cases, one transaction each, around the session aggregate (session.py): check-in,
entries and alerts, dosing, discharge, REMS paperwork. Vitals entries take the fast path in clinic.monitoring.vitals."""

from clinic.monitoring.service.checkin import check_in, confirm_escort
from clinic.monitoring.service.discharge import discharge
from clinic.monitoring.service.dosing import DoseResult, correct_dose, record_dose, start_dosing
from clinic.monitoring.service.entries import EntryResult, Measurements, acknowledge_alert, correct_entry
from clinic.monitoring.service.rems import RemsField, RemsRow, record_rems_submission, rems_form, rems_tracker
from clinic.monitoring.service.session import (
    MONITORED_STATES,
    SessionData,
    SessionState,
    channel,
    evaluate,
    load_session,
    reading_of,
    session_state,
)

__all__ = [
    "MONITORED_STATES",
    "DoseResult",
    "EntryResult",
    "Measurements",
    "RemsField",
    "RemsRow",
    "SessionData",
    "SessionState",
    "acknowledge_alert",
    "channel",
    "check_in",
    "confirm_escort",
    "correct_dose",
    "correct_entry",
    "discharge",
    "evaluate",
    "load_session",
    "reading_of",
    "record_dose",
    "record_rems_submission",
    "rems_form",
    "rems_tracker",
    "session_state",
    "start_dosing",
]
