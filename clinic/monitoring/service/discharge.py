"""The discharge a prescriber signs once no blocker is left, with the session's facts for billing and the REMS form."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import Actor
from clinic.auth.permissions import allows
from clinic.errors import Conflict, Forbidden, RuleBroken
from clinic.events import SessionDischarged, publish
from clinic.monitoring import rules
from clinic.monitoring.service.session import SessionState, charted, evaluate, load_session, require_monitoring
from clinic.timeutil import utcnow


async def discharge(
    session: AsyncSession,
    *,
    actor: Actor,
    appointment_id: int,
    queue: Any = None,
    ready_to_leave_at: datetime | None = None,
    note: str | None = None,
    now: datetime | None = None,
) -> SessionState:
    """A prescriber signs the discharge once no blocker is left; refused with the exact blockers otherwise."""
    now = now or utcnow()
    if not allows("session.sign", actor.roles):
        raise Forbidden("Only a prescriber can sign a discharge.", code="prescriber_only")
    data = await load_session(session, clinic_id=actor.clinic_id, appointment_id=appointment_id, lock=True)
    appt = data.appointment
    if appt.status == "fulfilled":
        raise Conflict(f"Already discharged at {rules.hm(appt.discharged_at, data.tz)}.", code="already_discharged")  # type: ignore[arg-type]
    if appt.status == "arrived":
        raise Conflict("Dosing has not started; there is nothing to discharge from.", code="not_dosed", extra={"blockers": [{"code": "not_dosed", "message": "Dosing has not started."}]})
    require_monitoring(data, what="a discharge")
    state = evaluate(data, now)
    if state.blockers:
        raise Conflict(
            "Discharge is blocked: " + " ".join(b.message for b in state.blockers),
            code="discharge_blocked",
            extra={"blockers": [b.as_dict() for b in state.blockers]},
        )
    readings = data.readings()
    estimate = rules.ready_to_leave_estimate(data.protocol, dosing_started_at=appt.dosing_started_at, readings=readings)
    ready = ready_to_leave_at or estimate
    if ready is not None and (ready < appt.dosing_started_at or ready > now + rules.CLOCK_SKEW):  # type: ignore[operator]
        raise RuleBroken("The ready-to-leave time must fall between the start of dosing and now.", field="ready_to_leave_at")
    note = (note or "").strip()[:1000] or None
    doses = data.current_doses()
    devices = [d for d in doses if d.kind == "device"]
    start = next((d for d in doses if d.kind == "infusion_start"), None)
    end = next((d for d in doses if d.kind == "infusion_end"), None)
    given = sum((d.dose_mg or Decimal(0)) for d in doses if d.kind in ("device", "infusion_start", "dose"))
    facts = dict(appt.facts or {})
    facts.update(
        {
            "kind": data.kind,
            "dose_mg": int(given) if given == given.to_integral_value() else float(given),
            "dosing_started_at": appt.dosing_started_at.isoformat(),  # type: ignore[union-attr]
            "discharged_at": now.isoformat(),
            "monitoring_minutes": rules.minutes(now - appt.dosing_started_at),  # type: ignore[operator]
            "ready_to_leave_at": ready.isoformat() if ready else None,
        }
    )
    if devices:
        facts["devices"] = len(devices)
        facts["lot_numbers"] = [d.lot_number for d in sorted(devices, key=lambda d: d.device_number or 0)]
    if start is not None and end is not None:
        facts["infusion_minutes"] = rules.minutes(end.taken_at - start.taken_at)
        facts["mg_per_kg"] = float(start.mg_per_kg) if start.mg_per_kg is not None else None
    if note:
        facts["discharge_note"] = note
    appt.status = "fulfilled"
    appt.discharged_at = now
    appt.discharged_by = actor.user_id
    appt.facts = facts
    appt.updated_at = now
    session.add(appt)
    await charted(
        session, actor=actor, appointment=appt, what="discharge", action="session.discharged", entity="appointment", entity_id=appt.id,
        changes={"discharged_at": now, "facts": facts},
    )
    await publish(session, SessionDischarged(appt, data.patient, data.clinic), queue=queue)
    return evaluate(data, now)
