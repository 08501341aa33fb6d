"""Check-in (fasting, escort, weight, REMS enrollment) and the escort confirmation that may follow it."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import Actor
from clinic.errors import Conflict, RuleBroken
from clinic.monitoring import rules
from clinic.monitoring.service.session import MONITORED_STATES, SessionData, charted, load_session, require_monitoring
from clinic.timeutil import to_local, utcnow


async def check_in(
    session: AsyncSession,
    *,
    actor: Actor,
    appointment_id: int,
    fasting_confirmed: bool,
    escort_confirmed: bool,
    escort_name: str | None = None,
    escort_phone: str | None = None,
    weight_kg: Decimal | float | None = None,
    taken_at: datetime | None = None,
    now: datetime | None = None,
) -> SessionData:
    now = now or utcnow()
    data = await load_session(session, clinic_id=actor.clinic_id, appointment_id=appointment_id, lock=True, doses=False, alerts=False)
    appt, protocol, patient = data.appointment, data.protocol, data.patient
    if not protocol.monitored:
        raise Conflict(f"{protocol.name} sessions are not monitored; there is nothing to check in here.", code="not_monitored")
    if appt.status != "booked":
        if appt.status in MONITORED_STATES and appt.checked_in_at:
            raise Conflict(f"Already checked in at {rules.hm(appt.checked_in_at, data.tz)}.", code="already_checked_in")
        raise Conflict(f"This appointment is {appt.status.replace('_', ' ')}; only a booked appointment can be checked in.", code="not_booked")
    at = taken_at or now
    rules.check_taken_at(at, now)
    if abs(at - appt.starts_at) > rules.BACKCHART_LIMIT:
        day = to_local(appt.starts_at, data.tz).strftime("%a %d %b %Y %H:%M")
        raise Conflict(f"This appointment is booked for {day}; check the patient in on the day.", code="not_today")
    if protocol.requires_rems:
        session_day = to_local(at, data.tz).date()
        if not patient.rems_enrolled_on or not (patient.rems_patient_id or "").strip():
            raise Conflict(
                "The patient is not enrolled in the Spravato REMS (enrollment date and REMS patient id are required before the first session).",
                field="rems_enrollment",
                code="rems_not_enrolled",
            )
        if patient.rems_enrolled_on > session_day:
            raise Conflict("The REMS enrollment date is after today's session.", field="rems_enrollment", code="rems_not_enrolled")
    if not fasting_confirmed:
        raise RuleBroken("Confirm the patient followed the fasting instructions before check-in.", field="fasting_confirmed")
    weight = None
    if protocol.is_iv:
        weight = rules.check_weight(weight_kg)
    elif weight_kg is not None:
        weight = rules.check_weight(weight_kg)
    name = (escort_name if escort_name is not None else appt.escort_name) or ""
    if escort_confirmed and not name.strip():
        raise RuleBroken("Enter the escort's name to confirm them.", field="escort_name")
    appt.status = "arrived"
    appt.checked_in_at = at
    appt.fasting_confirmed = True
    appt.escort_confirmed = bool(escort_confirmed)
    if escort_name is not None:
        appt.escort_name = escort_name.strip()[:200] or None
    if escort_phone is not None:
        appt.escort_phone = escort_phone.strip()[:40] or None
    if weight is not None:
        appt.weight_kg = float(weight)
    appt.updated_at = now
    session.add(appt)
    await charted(
        session, actor=actor, appointment=appt, what="check_in", action="session.check_in", entity="appointment", entity_id=appt.id,
        changes={"checked_in_at": at, "fasting_confirmed": True, "escort_confirmed": appt.escort_confirmed, "weight_kg": appt.weight_kg},
    )
    return data


async def confirm_escort(session: AsyncSession, *, actor: Actor, appointment_id: int, escort_name: str | None = None, escort_phone: str | None = None) -> SessionData:
    data = await load_session(session, clinic_id=actor.clinic_id, appointment_id=appointment_id, lock=True, entries=False, doses=False, alerts=False)
    appt = data.appointment
    require_monitoring(data, what="an escort confirmation")
    name = (escort_name if escort_name is not None else appt.escort_name) or ""
    if not name.strip():
        raise RuleBroken("Enter the escort's name to confirm them.", field="escort_name")
    appt.escort_name = name.strip()[:200]
    if escort_phone is not None:
        appt.escort_phone = escort_phone.strip()[:40] or None
    appt.escort_confirmed = True
    appt.updated_at = utcnow()
    session.add(appt)
    await charted(
        session, actor=actor, appointment=appt, what="escort", action="session.escort_confirmed", entity="appointment", entity_id=appt.id,
        changes={"escort_confirmed": True},
    )
    return data
