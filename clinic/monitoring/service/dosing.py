"""Dosing: the first dose once the pre-dose gate is clear, further esketamine devices or the end of an infusion, and their corrections."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.dialects.postgresql import insert
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import Actor
from clinic.errors import Conflict, NotFound, RuleBroken
from clinic.monitoring import rules
from clinic.monitoring.models import DosingEntry, RemsForm
from clinic.monitoring.service.session import charted, insert_once, load_session, open_alert_of, require_monitoring, submitted
from clinic.outcomes import service as outcomes  # questionnaires that block dosing: a course's baseline, a safety review
from clinic.timeutil import to_local, utcnow


@dataclass
class DoseResult:
    dose: DosingEntry
    created: bool


async def _dose_by_client_id(session: AsyncSession, *, actor: Actor, appointment_id: int, client_id: uuid.UUID) -> DoseResult | None:
    dose = await submitted(session, DosingEntry, actor=actor, appointment_id=appointment_id, client_id=client_id)
    return DoseResult(dose, created=False) if dose is not None else None


def _lot(lot_number: str | None) -> str:
    lot = (lot_number or "").strip()
    if not lot:
        raise RuleBroken("Enter the device's lot number (printed on the device).", field="lot_number")
    if len(lot) > 40:
        raise RuleBroken("The lot number is longer than 40 characters.", field="lot_number")
    return lot


async def start_dosing(
    session: AsyncSession,
    *,
    actor: Actor,
    appointment_id: int,
    client_id: uuid.UUID,
    taken_at: datetime | None = None,
    lot_number: str | None = None,
    dose_mg: int | Decimal | None = None,
    mg_per_kg: Decimal | float | None = None,
    now: datetime | None = None,
) -> DoseResult:
    """The first dose (esketamine device 1, IV infusion start, or the protocol's single dose), once the pre-dose gate is clear."""
    now = now or utcnow()
    replay = await _dose_by_client_id(session, actor=actor, appointment_id=appointment_id, client_id=client_id)
    if replay:
        return replay
    data = await load_session(session, clinic_id=actor.clinic_id, appointment_id=appointment_id, lock=True)
    appt = data.appointment
    if appt.status == "in_progress":
        raise Conflict(f"Dosing already started at {rules.hm(appt.dosing_started_at, data.tz)}.", code="already_dosing")  # type: ignore[arg-type]
    require_monitoring(data, what="dosing")
    at = taken_at or now
    rules.check_taken_at(at, now, not_before=appt.checked_in_at, not_before_what=f"check-in ({rules.hm(appt.checked_in_at, data.tz)})")  # type: ignore[arg-type]
    blockers = rules.pre_dose_blockers(data.protocol, dose_time=at, readings=data.readings(), open_alerts=[open_alert_of(a) for a in data.open_alerts()])
    blockers += await outcomes.dosing_blockers(session, appointment=appt)
    if blockers:
        raise Conflict(
            "Dosing cannot start yet: " + " ".join(b.message for b in blockers),
            code="pre_dose_blocked",
            extra={"blockers": [b.as_dict() for b in blockers]},
        )
    values: dict[str, Any] = dict(clinic_id=appt.clinic_id, appointment_id=appt.id, client_id=client_id, taken_at=at, recorded_by=actor.user_id, recorded_at=now, entered_in_error=False)
    facts = dict(appt.facts or {})
    if data.kind == "esketamine":
        planned = rules.check_esketamine_dose(data.protocol, int(dose_mg) if dose_mg is not None else appt.planned_dose_mg)
        values |= dict(kind="device", device_number=1, dose_mg=Decimal(data.protocol.mg_per_device), lot_number=_lot(lot_number))
        facts["dose_mg_planned"] = planned
    elif data.protocol.is_iv:
        per_kg, mg = rules.iv_dose_mg(data.protocol, mg_per_kg=mg_per_kg, weight_kg=appt.weight_kg)  # type: ignore[arg-type]
        values |= dict(kind="infusion_start", dose_mg=mg, mg_per_kg=per_kg, weight_kg=Decimal(str(appt.weight_kg)).quantize(Decimal("0.1")), lot_number=(lot_number or "").strip()[:40] or None)
    else:
        if dose_mg is None or Decimal(str(dose_mg)) <= 0:
            raise RuleBroken("Enter the dose given, in mg.", field="dose_mg")
        values |= dict(kind="dose", dose_mg=Decimal(str(dose_mg)).quantize(Decimal("0.1")), lot_number=(lot_number or "").strip()[:40] or None)
    dose = await insert_once(session, DosingEntry, values)
    if dose is None:
        replay = await _dose_by_client_id(session, actor=actor, appointment_id=appointment_id, client_id=client_id)
        assert replay is not None
        return replay
    appt.status = "in_progress"
    appt.dosing_started_at = at
    appt.facts = facts
    appt.updated_at = now
    session.add(appt)
    if data.requires_rems:
        day = to_local(at, data.tz).date()
        due_days = int((data.clinic.settings or {}).get("rems_form_due_days", 7))
        await session.execute(
            insert(RemsForm)
            .values(clinic_id=appt.clinic_id, appointment_id=appt.id, patient_id=appt.patient_id, session_date=day, due_on=day + timedelta(days=due_days), created_at=now)
            .on_conflict_do_nothing(index_elements=["appointment_id"])
        )
    await charted(
        session, actor=actor, appointment=appt, what="dosing", action="session.dosing_started", entity="dosing_entry", entity_id=dose.id,
        changes={"appointment_id": appt.id, "kind": dose.kind, "taken_at": at, "dose_mg": str(dose.dose_mg), "lot_number": dose.lot_number, "mg_per_kg": str(dose.mg_per_kg) if dose.mg_per_kg else None},
    )
    return DoseResult(dose, created=True)


async def record_dose(
    session: AsyncSession,
    *,
    actor: Actor,
    appointment_id: int,
    client_id: uuid.UUID,
    kind: str,
    taken_at: datetime | None = None,
    lot_number: str | None = None,
    now: datetime | None = None,
) -> DoseResult:
    """A further esketamine device (5 minutes' rest after the previous one) or the end of an IV infusion."""
    now = now or utcnow()
    replay = await _dose_by_client_id(session, actor=actor, appointment_id=appointment_id, client_id=client_id)
    if replay:
        return replay
    data = await load_session(session, clinic_id=actor.clinic_id, appointment_id=appointment_id, lock=True, entries=False, alerts=False)
    appt = data.appointment
    if appt.status == "arrived":
        raise Conflict("Start dosing first (it checks the pre-dose BP and any caution).", code="not_dosing")
    require_monitoring(data, what="dosing entries")
    at = taken_at or now
    rules.check_taken_at(at, now, not_before=appt.dosing_started_at, not_before_what=f"the start of dosing ({rules.hm(appt.dosing_started_at, data.tz)})")  # type: ignore[arg-type]
    current = data.current_doses()
    values: dict[str, Any] = dict(clinic_id=appt.clinic_id, appointment_id=appt.id, client_id=client_id, taken_at=at, recorded_by=actor.user_id, recorded_at=now, entered_in_error=False)
    if kind == "device":
        if data.kind != "esketamine":
            raise RuleBroken("Devices are recorded for esketamine sessions only.", field="kind")
        devices = sorted((d for d in current if d.kind == "device"), key=lambda d: d.device_number or 0)
        planned = data.planned_device_count() or 3
        if len(devices) >= planned:
            raise Conflict(f"All {planned} device(s) of the {data.planned_dose_mg()} mg dose are recorded.", field="device_number", code="dose_complete")
        problem = rules.device_spacing_problem([d.taken_at for d in devices] + [at], data.protocol.minutes_between_devices, data.tz)
        if problem:
            raise problem
        values |= dict(kind="device", device_number=len(devices) + 1, dose_mg=Decimal(data.protocol.mg_per_device), lot_number=_lot(lot_number))
    elif kind == "infusion_end":
        start = next((d for d in current if d.kind == "infusion_start"), None)
        if start is None:
            raise RuleBroken("This session has no infusion to end.", field="kind")
        if any(d.kind == "infusion_end" for d in current):
            raise Conflict("The end of the infusion is already recorded; correct it if the time is wrong.", code="infusion_ended")
        if at <= start.taken_at:
            raise RuleBroken(f"The infusion ends before it started ({rules.hm(start.taken_at, data.tz)}).", field="taken_at")
        values |= dict(kind="infusion_end")
    else:
        raise RuleBroken("kind must be 'device' or 'infusion_end'.", field="kind")
    dose = await insert_once(session, DosingEntry, values)
    if dose is None:
        replay = await _dose_by_client_id(session, actor=actor, appointment_id=appointment_id, client_id=client_id)
        assert replay is not None
        return replay
    await charted(
        session, actor=actor, appointment=appt, what="dosing", action="session.dose", entity="dosing_entry", entity_id=dose.id,
        changes={"appointment_id": appt.id, "kind": dose.kind, "taken_at": at, "device_number": dose.device_number, "lot_number": dose.lot_number},
    )
    return DoseResult(dose, created=True)


async def correct_dose(
    session: AsyncSession,
    *,
    actor: Actor,
    appointment_id: int,
    dose_id: int,
    client_id: uuid.UUID,
    reason: str,
    taken_at: datetime | None = None,
    lot_number: str | None = None,
    entered_in_error: bool = False,
    now: datetime | None = None,
) -> DoseResult:
    """A superseding dosing row: a corrected time or lot number, or a later device withdrawn as entered in error."""
    now = now or utcnow()
    replay = await _dose_by_client_id(session, actor=actor, appointment_id=appointment_id, client_id=client_id)
    if replay:
        return replay
    reason = (reason or "").strip()
    if not reason:
        raise RuleBroken("Say why the dosing entry is being corrected.", field="reason")
    data = await load_session(session, clinic_id=actor.clinic_id, appointment_id=appointment_id, lock=True, entries=False, alerts=False)
    appt = data.appointment
    old = next((d for d in data.doses if d.id == dose_id), None)
    if old is None:
        raise NotFound("No such dosing entry on this session.")
    if any(d.supersedes_id == dose_id for d in data.doses) or old.entered_in_error:
        raise Conflict("This dosing entry was already corrected; correct the newest version.", code="already_corrected")
    first = old.kind in ("infusion_start", "dose") or (old.kind == "device" and old.device_number == 1)
    if entered_in_error and first:
        raise Conflict("The first dose cannot be withdrawn; correct its time or lot number instead.", code="first_dose")
    at = taken_at or old.taken_at
    if at != old.taken_at:
        rules.check_taken_at(at, now, not_before=appt.checked_in_at, not_before_what="check-in")
    current = [d for d in data.current_doses() if d.id != old.id]
    if not entered_in_error and old.kind == "device":
        devices = sorted([*(d for d in current if d.kind == "device"), old], key=lambda d: d.device_number or 0)
        times = [at if d.id == old.id else d.taken_at for d in devices]
        problem = rules.device_spacing_problem(times, data.protocol.minutes_between_devices, data.tz)
        if problem:
            raise problem
    if not entered_in_error and old.kind == "infusion_end":
        start = next(d for d in current if d.kind == "infusion_start")
        if at <= start.taken_at:
            raise RuleBroken(f"The infusion ends before it started ({rules.hm(start.taken_at, data.tz)}).", field="taken_at")
    if not entered_in_error and old.kind == "infusion_start":
        end = next((d for d in current if d.kind == "infusion_end"), None)
        if end is not None and at >= end.taken_at:
            raise RuleBroken(f"The infusion starts after it ended ({rules.hm(end.taken_at, data.tz)}).", field="taken_at")
    lot = old.lot_number
    if lot_number is not None:
        lot = _lot(lot_number) if old.kind == "device" else (lot_number.strip()[:40] or None)
    dose = await insert_once(
        session,
        DosingEntry,
        dict(
            clinic_id=appt.clinic_id,
            appointment_id=appt.id,
            client_id=client_id,
            kind=old.kind,
            taken_at=at,
            recorded_by=actor.user_id,
            recorded_at=now,
            device_number=old.device_number,
            dose_mg=old.dose_mg,
            lot_number=lot,
            mg_per_kg=old.mg_per_kg,
            weight_kg=old.weight_kg,
            supersedes_id=old.id,
            correction_reason=reason[:300],
            entered_in_error=entered_in_error,
        ),
    )
    if dose is None:
        replay = await _dose_by_client_id(session, actor=actor, appointment_id=appointment_id, client_id=client_id)
        assert replay is not None
        return replay
    if first and at != old.taken_at:
        appt.dosing_started_at = at  # the schedule counts from the actual first dose
        appt.updated_at = now
        session.add(appt)
    await charted(
        session, actor=actor, appointment=appt, what="correction", action="session.dose_corrected", entity="dosing_entry", entity_id=dose.id,
        changes={"supersedes_id": old.id, "reason": reason, "taken_at": at, "lot_number": lot, "entered_in_error": entered_in_error},
    )
    return DoseResult(dose, created=True)
