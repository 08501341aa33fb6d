"""Pure monitoring rules (DOMAIN.md §1-2): plausibility, doses, the protocol's check schedule, alerts, the pre-dose gate, discharge blockers.

No I/O here: services pass in what was recorded and the current time, and get decisions back.
"""

from clinic.monitoring.rules.alerts import AlertDraft, evaluate_alerts
from clinic.monitoring.rules.charting import (
    BACKCHART_LIMIT,
    CADSS_ANCHORS,
    CADSS_ITEMS,
    CADSS_LABELS,
    CLOCK_SKEW,
    FIELD_LABELS,
    LIMITS,
    MEASURE_LABELS,
    MOAAS_SCALE,
    WEIGHT_LIMITS,
    Blocker,
    DoseEvent,
    Measurements,
    OpenAlert,
    Reading,
    check_moaas,
    check_taken_at,
    check_vitals,
    check_weight,
    dissociation_score,
    latest,
    minutes,
)
from clinic.monitoring.rules.discharge import (
    PHASE_LABELS,
    bp_acceptable,
    discharge_blockers,
    pre_dose_blockers,
    ready_to_leave_estimate,
    rems_bp_at_40,
    rems_missing,
    session_phase,
)
from clinic.monitoring.rules.dosing import check_esketamine_dose, device_spacing_problem, iv_dose_mg, planned_devices
from clinic.monitoring.rules.schedule import CheckState, check_schedule, next_check, repeat_bp_checks
from clinic.timeutil import hm

__all__ = [
    "BACKCHART_LIMIT", "CADSS_ANCHORS", "CADSS_ITEMS", "CADSS_LABELS", "CLOCK_SKEW", "FIELD_LABELS", "LIMITS",
    "MEASURE_LABELS", "MOAAS_SCALE", "PHASE_LABELS", "WEIGHT_LIMITS", "AlertDraft", "Blocker", "CheckState",
    "DoseEvent", "Measurements", "OpenAlert", "Reading", "bp_acceptable", "check_esketamine_dose", "check_moaas", "check_schedule",
    "check_taken_at", "check_vitals", "check_weight", "device_spacing_problem", "discharge_blockers",
    "dissociation_score", "evaluate_alerts", "hm", "iv_dose_mg", "latest", "minutes", "next_check", "planned_devices",
    "pre_dose_blockers", "ready_to_leave_estimate", "rems_bp_at_40", "rems_missing", "repeat_bp_checks",
    "session_phase",
]
