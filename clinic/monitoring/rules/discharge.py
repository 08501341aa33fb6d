"""The pre-dose gate, the discharge criteria (DOMAIN.md §2), the REMS form's session fields, and the session's phase."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from clinic.monitoring.rules.charting import MEASURE_LABELS, Blocker, DoseEvent, OpenAlert, Reading, latest, minutes
from clinic.monitoring.rules.schedule import CheckState, check_schedule, coverage, pre_dose_window
from clinic.scheduling.protocols import Protocol
from clinic.timeutil import hm

PHASE_LABELS = {
    "booked": "Booked",
    "checked_in": "Checked in",
    "dosing": "Dosing",
    "monitoring": "Monitoring",
    "ready": "Ready for discharge",
    "discharged": "Discharged",
    "cancelled": "Cancelled",
    "noshow": "No-show",
}


def records_text(records: Iterable[str]) -> str:
    return ", ".join(MEASURE_LABELS[m] for m in records)


def pre_dose_blockers(protocol: Protocol, *, dose_time: datetime, readings: Sequence[Reading], open_alerts: Sequence[OpenAlert]) -> list[Blocker]:
    """What stands between this patient and dosing at `dose_time`."""
    out: list[Blocker] = []
    readings = sorted(readings, key=lambda r: r.taken_at)
    for p in protocol.planned_checks:
        if p.phase != "pre_dose":
            continue
        opens, closes = pre_dose_window(p, dose_time)
        missing, _ = coverage(p.records, [r for r in readings if opens <= r.taken_at <= closes])
        if missing:
            span = minutes(closes - opens)
            out.append(
                Blocker(
                    "pre_dose_check",
                    f"{p.label}: record {records_text(p.records)} in the {span} minutes before dosing (missing: {records_text(missing)}).",
                )
            )
    for a in open_alerts:
        if a.level == "caution":
            out.append(Blocker("pre_dose_caution", f"{a.message} Not yet acknowledged by a prescriber."))
        else:
            out.append(Blocker("open_alert", f"Open {a.level}: {a.message} Acknowledge it with a note first."))
    return out


def rems_missing(protocol: Protocol, *, dosing_started_at: datetime | None, doses: Sequence[DoseEvent], readings: Sequence[Reading]) -> list[str]:
    """Session fields of the REMS Patient Monitoring Form that the chart cannot fill yet."""
    missing: list[str] = []
    devices = [d for d in doses if d.kind == "device"]
    if not devices or dosing_started_at is None:
        return ["dose and device lot numbers"]
    for d in devices:
        if not (d.lot_number or "").strip():
            missing.append(f"lot number of device {d.device_number}")
    if not any(r.has("bp") and r.taken_at <= dosing_started_at for r in readings):
        missing.append("BP before dosing")
    if rems_bp_at_40(protocol, dosing_started_at, readings) is None:
        missing.append("BP at 40 minutes")
    post = [r for r in readings if r.taken_at > dosing_started_at]
    discharge = next((p for p in protocol.planned_checks if p.phase == "discharge"), None)
    end_from = dosing_started_at + timedelta(minutes=(discharge.at_minutes - discharge.window_minutes) if discharge else 0)
    if latest(post, "bp", since=end_from) is None:
        missing.append("BP before the end of monitoring")
    if latest(post, "moaas") is None:
        missing.append("sedation assessment (MOAA/S)")
    if latest(post, "dissociation") is None:
        missing.append("dissociation assessment")
    return missing


def rems_bp_at_40(protocol: Protocol, dosing_started_at: datetime, readings: Sequence[Reading]) -> Reading | None:
    """The BP reading closest to 40 minutes after dosing within that check's window."""
    check = next((p for p in protocol.planned_checks if p.key == "t40"), None)
    at, window = (check.at_minutes, check.window_minutes) if check else (40, 10)
    target, within = dosing_started_at + timedelta(minutes=at), timedelta(minutes=window)
    candidates = [r for r in readings if r.has("bp") and abs(r.taken_at - target) <= within]
    return min(candidates, key=lambda r: abs(r.taken_at - target), default=None)


def bp_acceptable(protocol: Protocol, r: Reading) -> bool:
    d = protocol.discharge
    return r.has("bp") and r.systolic <= d.systolic_max and r.diastolic <= d.diastolic_max  # type: ignore[operator]


def discharge_blockers(
    protocol: Protocol,
    *,
    kind: str,
    now: datetime,
    tz: str,
    dosing_started_at: datetime | None,
    doses: Sequence[DoseEvent],
    readings: Sequence[Reading],
    open_alerts: Sequence[OpenAlert],
    escort_confirmed: bool,
    requires_rems: bool = False,
    schedule: Sequence[CheckState] | None = None,
) -> list[Blocker]:
    """Every discharge criterion of DOMAIN.md §2 that does not hold yet; empty means a prescriber may sign."""
    out: list[Blocker] = []
    if dosing_started_at is None:
        out.append(Blocker("not_dosed", "Dosing has not started."))
    else:
        need = protocol.min_monitoring_minutes
        elapsed = now - dosing_started_at
        if elapsed < timedelta(minutes=need):
            start_word = "the first device" if kind == "esketamine" else "the start of dosing"
            out.append(
                Blocker(
                    "min_monitoring_time",
                    f"Monitoring must last at least {need} minutes from {start_word}: {minutes(elapsed)} so far "
                    f"(discharge possible from {hm(dosing_started_at + timedelta(minutes=need), tz)}).",
                )
            )
        if any(d.kind == "infusion_start" for d in doses):
            end = next((d for d in doses if d.kind == "infusion_end"), None)
            recovery = protocol.recovery_minutes_after_infusion
            if end is None:
                out.append(Blocker("infusion_running", "The end of the infusion is not recorded."))
            elif now - end.taken_at < timedelta(minutes=recovery):
                out.append(
                    Blocker(
                        "recovery_time",
                        f"Recovery must last at least {recovery} minutes after the infusion ends: {minutes(now - end.taken_at)} so far "
                        f"(from {hm(end.taken_at + timedelta(minutes=recovery), tz)}).",
                    )
                )
        if schedule is None:
            schedule = check_schedule(protocol, now=now, dosing_started_at=dosing_started_at, readings=readings)
        for s in schedule:
            if s.phase == "discharge" and s.status != "done":
                out.append(Blocker("discharge_check", f"{s.label}: record {records_text(s.missing)}."))
        limits = protocol.discharge
        post = [r for r in readings if r.taken_at >= dosing_started_at]
        bp = latest(post, "bp")
        if bp is None:
            out.append(Blocker("bp_missing", "No blood pressure recorded since dosing."))
        elif not bp_acceptable(protocol, bp):
            out.append(
                Blocker("bp_out_of_range", f"Last BP {bp.bp} ({hm(bp.taken_at, tz)}) is above the discharge limit {limits.systolic_max}/{limits.diastolic_max}.")
            )
        spo2 = latest(post, "spo2")
        if spo2 is None:
            out.append(Blocker("spo2_missing", "No SpO2 recorded since dosing."))
        elif spo2.spo2 < limits.spo2_min:  # type: ignore[operator]
            out.append(Blocker("spo2_out_of_range", f"Last SpO2 {spo2.spo2}% ({hm(spo2.taken_at, tz)}) is below the discharge minimum {limits.spo2_min}%."))
        moaas = latest(post, "moaas")
        if moaas is None:
            out.append(Blocker("moaas_missing", f"No MOAA/S recorded since dosing; discharge needs {limits.moaas_required}."))
        elif moaas.moaas != limits.moaas_required:
            out.append(Blocker("moaas_not_alert", f"Last MOAA/S is {moaas.moaas} ({hm(moaas.taken_at, tz)}); discharge needs {limits.moaas_required}."))
    for a in open_alerts:
        out.append(Blocker("open_alert", f"Open {a.level}: {a.message} Acknowledge it with a note."))
    if not escort_confirmed:
        out.append(Blocker("escort_not_confirmed", "The escort who takes the patient home is not confirmed."))
    if requires_rems and dosing_started_at is not None:
        missing = rems_missing(protocol, dosing_started_at=dosing_started_at, doses=doses, readings=readings)
        if missing:
            out.append(Blocker("rems_incomplete", f"REMS monitoring form is missing: {', '.join(missing)}."))
    return out


def ready_to_leave_estimate(protocol: Protocol, *, dosing_started_at: datetime | None, readings: Sequence[Reading]) -> datetime | None:
    """When the patient met the clinical discharge criteria for good (BP, SpO2, MOAA/S), leaving the time minimum aside."""
    if dosing_started_at is None:
        return None
    limits = protocol.discharge
    last: dict[str, Reading] = {}
    since: datetime | None = None
    for r in sorted((r for r in readings if r.taken_at > dosing_started_at), key=lambda r: r.taken_at):
        for m in ("bp", "spo2", "moaas"):
            if r.has(m):
                last[m] = r
        ok = (
            len(last) == 3
            and bp_acceptable(protocol, last["bp"])
            and last["spo2"].spo2 >= limits.spo2_min  # type: ignore[operator]
            and last["moaas"].moaas == limits.moaas_required
        )
        if ok and since is None:
            since = r.taken_at
        elif not ok:
            since = None
    return since


# ---- phase ---------------------------------------------------------------------------------------


def session_phase(*, status: str, doses: Sequence[DoseEvent], planned_device_count: int | None, blockers: Sequence[Blocker]) -> str:
    if status == "booked":
        return "booked"
    if status == "arrived":
        return "checked_in"
    if status == "fulfilled":
        return "discharged"
    if status in ("cancelled", "noshow"):
        return status
    devices = sum(1 for d in doses if d.kind == "device")
    if devices and planned_device_count and devices < planned_device_count:
        return "dosing"
    if any(d.kind == "infusion_start" for d in doses) and not any(d.kind == "infusion_end" for d in doses):
        return "dosing"
    return "ready" if not blockers else "monitoring"
