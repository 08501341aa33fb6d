"""REMS paperwork: the Patient Monitoring Form filled from the chart, the tracker of forms to send, and the record of a submission."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import Actor, record
from clinic.clinics import Clinic
from clinic.errors import Conflict, NotFound, RuleBroken
from clinic.monitoring import rules
from clinic.monitoring.models import RemsForm
from clinic.monitoring.service.session import MONITORED_STATES, SessionState, evaluate, load_session, lock_chart
from clinic.patients.models import Patient
from clinic.scheduling.models import Appointment, SessionType
from clinic.scheduling.protocols import PreDoseCaution
from clinic.timeutil import to_local, utcnow


MEDICATION_LABELS = {
    "benzodiazepines": "Benzodiazepines",
    "non_benzodiazepine_sedative_hypnotics": "Non-benzodiazepine sedative hypnotics",
    "psychostimulants": "Psychostimulants",
    "maois": "Monoamine oxidase inhibitors (MAOIs)",
    "opioids": "Opioids",
}


@dataclass
class RemsField:
    section: str
    label: str
    value: str
    missing: bool = False
    note: str = ""


def _yes_no(flag: bool | None) -> str:
    return "" if flag is None else ("Yes" if flag else "No")


async def rems_form(session: AsyncSession, *, actor: Actor, appointment_id: int, now: datetime | None = None) -> tuple[SessionState, list[RemsField]]:
    """Every field of the REMS Patient Monitoring Form, filled from the chart; what the chart lacks is marked missing."""
    from clinic.patients.models import MEDICATION_FLAGS

    now = now or utcnow()
    data = await load_session(session, clinic_id=actor.clinic_id, appointment_id=appointment_id, staff=True)
    if not data.requires_rems:
        raise NotFound("Only esketamine sessions have a REMS Patient Monitoring Form.")
    record(session, actor=actor, action="session.rems_form_view", entity="appointment", entity_id=appointment_id, patient_id=data.appointment.patient_id)
    state = evaluate(data, now)
    appt, patient, clinic, tz, protocol = data.appointment, data.patient, data.clinic, data.tz, data.protocol
    readings = data.readings()
    started = appt.dosing_started_at
    post = [r for r in readings if started and r.taken_at > started]
    pre = [r for r in readings if started is None or r.taken_at <= started]
    devices = [d for d in data.current_doses() if d.kind == "device"]
    earlier = 0
    if started is not None:
        q = (
            select(Appointment.id)
            .join(SessionType, col(SessionType.id) == Appointment.session_type_id)
            .where(
                Appointment.patient_id == appt.patient_id,
                Appointment.clinic_id == appt.clinic_id,
                SessionType.kind == "esketamine",
                col(Appointment.dosing_started_at) < started,
            )
            .limit(1)
        )
        earlier = len((await session.exec(q)).all())
    prescriber = data.staff.get(appt.discharged_by) if appt.discharged_by else None
    f: list[RemsField] = []

    def add(section: str, label: str, value: Any, note: str = "") -> None:
        text_value = "" if value is None else str(value)
        f.append(RemsField(section, label, text_value, missing=not text_value.strip(), note=note))

    add("Patient", "Patient name", patient.full_name)
    add("Patient", "Date of birth", patient.date_of_birth.strftime("%m/%d/%Y") if patient.date_of_birth else None)
    add("Patient", "Sex", (patient.sex or "").capitalize() or None)
    flags = set(patient.medication_flags or [])
    for flag in MEDICATION_FLAGS:
        add("Concomitant medications (sedating or BP-affecting)", MEDICATION_LABELS.get(flag, flag), _yes_no(flag in flags))
    add("Monitoring provider", "Name", prescriber.full_name if prescriber else None, "" if prescriber else "filled when a prescriber signs the discharge")
    add("Monitoring provider", "Phone", clinic.phone or None)
    add("Monitoring provider", "Email", prescriber.email if prescriber else None)
    add("Healthcare setting", "Name", clinic.name)
    add("Healthcare setting", "Address", clinic.address or None)
    add("Session", "Date of session", to_local(started, tz).strftime("%m/%d/%Y") if started else None)
    add("Session", "First treatment", _yes_no(earlier == 0) if started else None)
    add("Session", "Dose", f"{protocol.mg_per_device * len(devices)} mg ({len(devices)} device{'s' if len(devices) != 1 else ''})" if devices else None)
    add("Session", "Device lot number(s)", ", ".join(d.lot_number or "?" for d in sorted(devices, key=lambda d: d.device_number or 0)) or None)
    total = rules.minutes(appt.discharged_at - started) if appt.discharged_at and started else None
    add("Session", "Total minutes from first device to end of monitoring", total, "" if total is not None else "filled at discharge")
    ready_text = (appt.facts or {}).get("ready_to_leave_at")
    ready = datetime.fromisoformat(ready_text) if ready_text else rules.ready_to_leave_estimate(protocol, dosing_started_at=started, readings=readings)
    add(
        "Session",
        "When the patient would have been ready to leave without the 2-hour minimum",
        f"{rules.hm(ready, tz)} ({rules.minutes(ready - started)} min after the first device)" if ready and started else None,
        "" if ready_text else ("estimated from the chart: BP, SpO2 and MOAA/S at discharge values" if ready else ""),
    )
    caution = protocol.pre_dose_caution or PreDoseCaution()
    pre_bp = rules.latest(pre, "bp")
    pre_ok = None
    if pre_bp is not None:
        pre_ok = pre_bp.systolic <= caution.systolic_above and pre_bp.diastolic <= caution.diastolic_above  # type: ignore[operator]
    acked = [a for a in data.alerts if a.code == "pre_dose_bp" and a.acknowledged_at]
    add(
        "Vital signs",
        "Vital signs acceptable before dosing",
        _yes_no(pre_ok) if pre_ok is not None else None,
        f"caution acknowledged by a prescriber: {acked[-1].note}" if pre_ok is False and acked else "",
    )
    end_bp = rules.latest(post, "bp")
    end_spo2 = rules.latest(post, "spo2")
    end_ok = None
    if appt.discharged_at and end_bp and end_spo2:
        end_ok = rules.bp_acceptable(protocol, end_bp) and end_spo2.spo2 >= protocol.discharge.spo2_min  # type: ignore[operator]
    add("Vital signs", "Vital signs acceptable at the end of monitoring", _yes_no(end_ok), "" if end_ok is not None else "filled at discharge")
    add("Vital signs", "BP before dosing", f"{pre_bp.bp} mmHg at {rules.hm(pre_bp.taken_at, tz)}" if pre_bp else None)
    bp40 = rules.rems_bp_at_40(protocol, started, readings) if started else None
    add("Vital signs", "BP about 40 minutes after dosing", f"{bp40.bp} mmHg at {rules.hm(bp40.taken_at, tz)}" if bp40 else None)
    discharge_check = next((p for p in protocol.planned_checks if p.phase == "discharge"), None)
    end_from = started + timedelta(minutes=(discharge_check.at_minutes - discharge_check.window_minutes) if discharge_check else 0) if started else None
    bp_end = rules.latest(post, "bp", since=end_from) if end_from else None
    add("Vital signs", "BP before the end of monitoring", f"{bp_end.bp} mmHg at {rules.hm(bp_end.taken_at, tz)}" if bp_end else None)
    moaas_values = [r.moaas for r in post if r.moaas is not None]
    diss_values = [r.dissociation_total for r in post if r.dissociation_total is not None]
    limits, urgent = protocol.discharge, protocol.thresholds.urgent
    resp = [r for r in post if (r.spo2 is not None and r.spo2 < limits.spo2_min) or (r.resp_rate is not None and r.resp_rate < urgent.rr_below)]
    add("Adverse events", "Sedation occurred", _yes_no(any(v < 5 for v in moaas_values)) if moaas_values else None, "from MOAA/S below 5 after dosing" if moaas_values else "")
    add("Adverse events", "Dissociation occurred", _yes_no(any(v > 0 for v in diss_values)) if diss_values else None, "from a dissociation score above 0 after dosing" if diss_values else "")
    add(
        "Adverse events",
        "Respiratory depression occurred",
        _yes_no(bool(resp)) if post else None,
        f"from SpO2 below {limits.spo2_min}% or RR below {urgent.rr_below}/min after dosing" if post else "",
    )
    return state, f


@dataclass
class RemsRow:
    form: RemsForm
    patient_name: str
    appointment_id: int
    session_open: bool = False  # still in the chair: the form can be sent only after discharge


async def rems_tracker(session: AsyncSession, *, actor: Actor, today: date | None = None, submitted_days: int = 30) -> tuple[list[RemsRow], list[RemsRow], date]:
    """(forms still to submit, oldest due first; forms submitted in the last `submitted_days` days, newest first; today)."""
    clinic = await session.get(Clinic, actor.clinic_id)
    tz = clinic.timezone if clinic else "UTC"
    today = today or to_local(utcnow(), tz).date()
    base = (
        select(RemsForm, Patient.first_name, Patient.last_name, Appointment.status)
        .join(Patient, col(Patient.id) == RemsForm.patient_id)
        .join(Appointment, col(Appointment.id) == RemsForm.appointment_id)
        .where(RemsForm.clinic_id == actor.clinic_id)
    )
    pending = (await session.exec(base.where(col(RemsForm.submitted_on).is_(None)).order_by(col(RemsForm.due_on), col(RemsForm.id)))).all()
    done = (
        await session.exec(base.where(col(RemsForm.submitted_on) >= today - timedelta(days=submitted_days)).order_by(col(RemsForm.submitted_on).desc(), col(RemsForm.id).desc()))
    ).all()
    record(session, actor=actor, action="session.rems_tracker_view", entity="rems_monitoring_form")
    return (
        [RemsRow(f, f"{first} {last}", f.appointment_id, status in MONITORED_STATES) for f, first, last, status in pending],
        [RemsRow(f, f"{first} {last}", f.appointment_id) for f, first, last, _ in done],
        today,
    )


async def record_rems_submission(session: AsyncSession, *, actor: Actor, appointment_id: int, submitted_on: date, confirmation: str, now: datetime | None = None) -> RemsForm:
    now = now or utcnow()
    confirmation = (confirmation or "").strip()
    if not confirmation:
        raise RuleBroken("Enter the confirmation the REMS gave for the submission.", field="confirmation")
    if len(confirmation) > 80:
        raise RuleBroken("The confirmation is longer than 80 characters.", field="confirmation")
    await lock_chart(session, clinic_id=actor.clinic_id, appointment_id=appointment_id)
    form = (
        await session.exec(select(RemsForm).where(RemsForm.appointment_id == appointment_id, RemsForm.clinic_id == actor.clinic_id).with_for_update())
    ).first()
    if form is None:
        raise NotFound("This session has no REMS monitoring form (esketamine sessions get one when dosing starts).")
    appt_status = (await session.exec(select(Appointment.status).where(Appointment.id == appointment_id))).one()
    if appt_status in MONITORED_STATES:
        raise Conflict("The session is still in progress; the form is sent after discharge.", code="session_open")
    clinic = await session.get(Clinic, actor.clinic_id)
    today = to_local(now, clinic.timezone if clinic else "UTC").date()
    if submitted_on > today:
        raise RuleBroken("The submission date is in the future.", field="submitted_on")
    if submitted_on < form.session_date:
        raise RuleBroken("The submission date is before the session.", field="submitted_on")
    if form.submitted_on is not None:
        if form.submitted_on == submitted_on and form.confirmation == confirmation:
            return form
        raise Conflict(f"Already recorded as submitted on {form.submitted_on.isoformat()} (confirmation {form.confirmation}).", code="already_submitted")
    form.submitted_on = submitted_on
    form.confirmation = confirmation
    form.submission_recorded_by = actor.user_id
    form.submission_recorded_at = now
    session.add(form)
    record(
        session,
        actor=actor,
        action="session.rems_form_submitted",
        entity="rems_monitoring_form",
        entity_id=form.id,
        patient_id=form.patient_id,
        changes={"appointment_id": appointment_id, "submitted_on": submitted_on, "confirmation": confirmation},
    )
    return form
