"""Alerts one reading raises against the protocol's thresholds (urgent, alert, the esketamine pre-dose caution)."""

from __future__ import annotations

from dataclasses import dataclass

from clinic.monitoring.rules.charting import Reading
from clinic.scheduling.protocols import AlertAt, Protocol, UrgentAt


@dataclass(frozen=True)
class AlertDraft:
    level: str  # caution | alert | urgent
    code: str
    message: str


def bp_at_least(r: Reading, limits: UrgentAt | AlertAt) -> bool:
    return r.has("bp") and (r.systolic >= limits.systolic_at_least or r.diastolic >= limits.diastolic_at_least)  # type: ignore[operator]


def evaluate_alerts(protocol: Protocol, reading: Reading, *, previous_bp: Reading | None, before_dosing: bool) -> list[AlertDraft]:
    """Alerts one reading raises (urgent first). `previous_bp` is the BP reading just before it, for the two-in-a-row rule."""
    urgent, alert = protocol.thresholds.urgent, protocol.thresholds.alert
    out: list[AlertDraft] = []
    if reading.has("bp"):
        if bp_at_least(reading, urgent):
            out.append(AlertDraft("urgent", "bp_urgent", f"BP {reading.bp} is at or above {urgent.systolic_at_least}/{urgent.diastolic_at_least}."))
        elif bp_at_least(reading, alert):
            if previous_bp is not None and bp_at_least(previous_bp, alert):
                out.append(
                    AlertDraft(
                        "urgent",
                        "bp_high_repeated",
                        f"BP at or above {alert.systolic_at_least}/{alert.diastolic_at_least} twice in a row ({previous_bp.bp}, then {reading.bp}).",
                    )
                )
            else:
                out.append(
                    AlertDraft(
                        "alert",
                        "bp_high",
                        f"BP {reading.bp} is at or above {alert.systolic_at_least}/{alert.diastolic_at_least}: "
                        f"repeat within {alert.repeat_within_minutes} minutes.",
                    )
                )
    if reading.has("spo2") and reading.spo2 < urgent.spo2_below:  # type: ignore[operator]
        out.append(AlertDraft("urgent", "spo2_low", f"SpO2 {reading.spo2}% is below {urgent.spo2_below}%."))
    if reading.has("rr") and reading.resp_rate < urgent.rr_below:  # type: ignore[operator]
        out.append(AlertDraft("urgent", "rr_low", f"Respiratory rate {reading.resp_rate}/min is below {urgent.rr_below}/min."))
    if reading.has("moaas") and reading.moaas <= urgent.moaas_at_most:  # type: ignore[operator]
        out.append(AlertDraft("urgent", "moaas_low", f"MOAA/S {reading.moaas}: responds only to prodding or less (at or below {urgent.moaas_at_most})."))
    if reading.has("hr") and reading.heart_rate > alert.hr_above:  # type: ignore[operator]
        out.append(AlertDraft("alert", "hr_high", f"Heart rate {reading.heart_rate}/min is above {alert.hr_above}/min."))
    caution = protocol.pre_dose_caution
    if before_dosing and caution and reading.has("bp"):
        if reading.systolic > caution.systolic_above or reading.diastolic > caution.diastolic_above:  # type: ignore[operator]
            out.append(
                AlertDraft(
                    "caution",
                    "pre_dose_bp",
                    f"Pre-dose BP {reading.bp} is above {caution.systolic_above}/{caution.diastolic_above}: "
                    "dosing needs a prescriber's acknowledgement with a reason.",
                )
            )
    order = {"urgent": 0, "alert": 1, "caution": 2}
    return sorted(out, key=lambda a: order[a.level])
