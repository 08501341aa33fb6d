"""Seeded protocol defaults (DOMAIN.md §1-2). Protocols are data: an admin edits them per clinic.

Shape of SessionType.protocol (all keys optional except where a rule needs them):
  doses_mg: allowed doses (esketamine), dose_mg_per_kg {default,min,max} (IV)
  min_monitoring_minutes: discharge needs at least this long since dosing started
  checks: list of scheduled checks, each
     {key, label, at_minutes (from dosing start; negative = before), window_minutes,
      records: ["bp","hr","spo2","rr","moaas","dissociation"],
      repeat_every_minutes?, until_minutes?, phase?: "pre_dose"|"monitoring"|"discharge"}
  thresholds: alert thresholds (setting)
  pre_dose_caution: {systolic_above, diastolic_above} (esketamine)
  discharge: {systolic_max, diastolic_max, spo2_min, moaas_required}
  course_templates: {name: {label, sessions, per_week, min_days_apart, weeks}}
  billing: how charges follow from session facts
"""

from __future__ import annotations

import copy

DEFAULT_THRESHOLDS = {
    "urgent": {"systolic_at_least": 200, "diastolic_at_least": 120, "spo2_below": 92, "rr_below": 8, "moaas_at_most": 2},
    "alert": {"systolic_at_least": 180, "diastolic_at_least": 110, "hr_above": 120, "repeat_within_minutes": 5},
}
DEFAULT_DISCHARGE = {"systolic_max": 179, "diastolic_max": 109, "spo2_min": 92, "moaas_required": 5}

ESKETAMINE = {
    "kind": "esketamine",
    "name": "Esketamine nasal spray (Spravato)",
    "needs_chair": True,
    "monitored": True,
    "needs_prescriber": True,
    "requires_rems": True,
    "prep_minutes": 15,
    "dosing_minutes": 0,  # (devices - 1) x 5 added per booking
    "monitoring_minutes": 120,
    "turnover_minutes": 10,
    "protocol": {
        "doses_mg": [28, 56, 84],
        "mg_per_device": 28,
        "minutes_between_devices": 5,
        "min_monitoring_minutes": 120,
        "checks": [
            {"key": "pre_dose", "label": "Pre-dose BP and SpO2", "at_minutes": -10, "window_minutes": 10, "records": ["bp", "spo2"], "phase": "pre_dose"},
            {"key": "t40", "label": "40-minute check", "at_minutes": 40, "window_minutes": 10, "records": ["bp", "spo2", "moaas", "dissociation"], "phase": "monitoring"},
            {"key": "t80", "label": "80-minute SpO2", "at_minutes": 80, "window_minutes": 10, "records": ["spo2"], "phase": "monitoring"},
            {"key": "discharge", "label": "Before discharge", "at_minutes": 120, "window_minutes": 15, "records": ["bp", "spo2", "moaas", "dissociation"], "phase": "discharge"},
        ],
        "thresholds": DEFAULT_THRESHOLDS,
        "pre_dose_caution": {"systolic_above": 140, "diastolic_above": 90},
        "discharge": DEFAULT_DISCHARGE,
        "course_templates": {
            "induction": {"label": "Induction: twice weekly for 4 weeks", "sessions": 8, "per_week": 2, "min_days_apart": 2, "weeks": 4},
            "weeks_5_8": {"label": "Weeks 5-8: weekly", "sessions": 4, "per_week": 1, "min_days_apart": 7, "weeks": 4},
            "maintenance_weekly": {"label": "Maintenance: weekly", "sessions": 4, "per_week": 1, "min_days_apart": 7, "weeks": 4},
            "maintenance_biweekly": {"label": "Maintenance: every 2 weeks", "sessions": 4, "per_week": 0.5, "min_days_apart": 14, "weeks": 8},
        },
        "instructions": [
            "Do not eat for 2 hours before your visit.",
            "Do not drink anything for 30 minutes before your visit.",
            "If you use a nasal steroid or decongestant, use it at least 1 hour before your visit.",
            "Do not drive until the next day after a restful sleep: arrange for someone to take you home.",
        ],
        "billing": {"rule": "esketamine", "up_to_56": "G2082", "over_56": "G2083", "drug": "J0013"},
    },
}

KETAMINE_IV = {
    "kind": "ketamine_iv",
    "name": "IV ketamine infusion",
    "needs_chair": True,
    "monitored": True,
    "prep_minutes": 15,
    "dosing_minutes": 40,
    "monitoring_minutes": 30,
    "turnover_minutes": 10,
    "protocol": {
        "dose_mg_per_kg": {"default": 0.5, "min": 0.1, "max": 1.0},
        "infusion_minutes": 40,
        "min_monitoring_minutes": 70,  # 40 infusion + 30 recovery after it ends
        "recovery_minutes_after_infusion": 30,
        "checks": [
            {"key": "pre_dose", "label": "Baseline vitals", "at_minutes": -10, "window_minutes": 10, "records": ["bp", "hr", "spo2"], "phase": "pre_dose"},
            {"key": "infusion", "label": "Infusion vitals", "at_minutes": 10, "repeat_every_minutes": 10, "until_minutes": 40, "window_minutes": 5, "records": ["bp", "hr", "spo2"], "phase": "monitoring"},
            {"key": "recovery", "label": "Recovery vitals", "at_minutes": 55, "repeat_every_minutes": 15, "until_minutes": 70, "window_minutes": 5, "records": ["bp", "hr", "spo2"], "phase": "monitoring"},
            {"key": "discharge", "label": "Before discharge", "at_minutes": 70, "window_minutes": 15, "records": ["bp", "hr", "spo2", "moaas"], "phase": "discharge"},
        ],
        "thresholds": DEFAULT_THRESHOLDS,
        "discharge": DEFAULT_DISCHARGE,
        "course_templates": {
            "induction": {"label": "6 infusions over 2-3 weeks", "sessions": 6, "per_week": 3, "min_days_apart": 1, "weeks": 3},
        },
        "instructions": [
            "Do not eat for 4 hours before your visit; clear liquids are fine until 2 hours before.",
            "Do not drive for the rest of the day: arrange for someone to take you home.",
        ],
        "billing": {"rule": "infusion", "first": "96365", "additional_hour": "96366", "short_push": "96374", "drug": "J3490"},
    },
}

KAP = {
    "kind": "kap",
    "name": "Ketamine-assisted psychotherapy",
    "needs_chair": True,
    "monitored": True,
    "needs_therapist": True,
    "prep_minutes": 15,
    "dosing_minutes": 0,
    "monitoring_minutes": 120,
    "turnover_minutes": 10,
    "protocol": {
        "min_monitoring_minutes": 90,
        "checks": [
            {"key": "pre_dose", "label": "Baseline vitals", "at_minutes": -10, "window_minutes": 10, "records": ["bp", "hr", "spo2"], "phase": "pre_dose"},
            {"key": "session", "label": "Session vitals", "at_minutes": 15, "repeat_every_minutes": 15, "until_minutes": 90, "window_minutes": 5, "records": ["bp", "hr", "spo2"], "phase": "monitoring"},
            {"key": "discharge", "label": "Before discharge", "at_minutes": 90, "window_minutes": 15, "records": ["bp", "hr", "spo2", "moaas"], "phase": "discharge"},
        ],
        "thresholds": DEFAULT_THRESHOLDS,
        "discharge": DEFAULT_DISCHARGE,
        "course_templates": {"series": {"label": "3 sessions, weekly", "sessions": 3, "per_week": 1, "min_days_apart": 7, "weeks": 3}},
        "billing": {"rule": "kap", "codes": ["0820T", "0821T", "0822T"]},
    },
}

INTEGRATION = {
    "kind": "integration",
    "name": "Integration psychotherapy",
    "needs_chair": False,
    "monitored": False,
    "needs_therapist": True,
    "prep_minutes": 0,
    "dosing_minutes": 0,
    "monitoring_minutes": 55,
    "turnover_minutes": 5,
    "protocol": {
        "checks": [],
        "course_templates": {"weekly": {"label": "Weekly, 4 sessions", "sessions": 4, "per_week": 1, "min_days_apart": 7, "weeks": 4}},
        "billing": {"rule": "therapy_minutes"},
    },
}

CONSULT = {
    "kind": "consult",
    "name": "Consultation",
    "needs_chair": False,
    "monitored": False,
    "needs_prescriber": True,
    "prep_minutes": 0,
    "dosing_minutes": 0,
    "monitoring_minutes": 45,
    "turnover_minutes": 5,
    "protocol": {"checks": [], "course_templates": {}, "billing": {"rule": "em_minutes"}},
}

DEFAULT_PROTOCOLS = (ESKETAMINE, KETAMINE_IV, KAP, INTEGRATION, CONSULT)


def default_protocols() -> list[dict]:
    return copy.deepcopy(list(DEFAULT_PROTOCOLS))
