"""Clinical entries outside the vitals fast path: corrections (a new row supersedes the old), the alerts an entry raises, and their acknowledgement."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from msgspec import UNSET
from sqlalchemy import text, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import Actor
from clinic.auth.permissions import allows
from clinic.clinics import Clinic
from clinic.errors import Conflict, Forbidden, NotFound, RuleBroken
from clinic.monitoring import rules
from clinic.monitoring.models import Alert, AlertView, ClinicalEntry, EntryView
from clinic.monitoring.rules import Measurements
from clinic.monitoring.service.session import CURRENT_ENTRY, charted, insert_once, load_session, reading_of, submitted
from clinic.scheduling.protocols import Protocol
from clinic.timeutil import utcnow


@dataclass
class EntryResult:
    """An entry as stored (the ORM row, or its view on the vitals fast path), the alerts it raised, and whether it is new."""

    entry: ClinicalEntry | EntryView
    alerts: Sequence[Alert | AlertView]
    created: bool
    tz: str = "UTC"


async def _entry_by_client_id(session: AsyncSession, *, actor: Actor, appointment_id: int, client_id: uuid.UUID) -> EntryResult | None:
    entry = await submitted(session, ClinicalEntry, actor=actor, appointment_id=appointment_id, client_id=client_id)
    if entry is None:
        return None
    raised = list((await session.exec(select(Alert).where(Alert.entry_id == entry.id).order_by(col(Alert.id)))).all())
    clinic = await session.get(Clinic, entry.clinic_id)
    return EntryResult(entry, raised, created=False, tz=clinic.timezone if clinic else "UTC")


def valid_check_key(protocol: Protocol, key: str | None) -> str | None:
    if key is None or not key.strip():
        return None
    key = key.strip()
    if key in protocol.check_keys or key.startswith("repeat_bp@"):
        return key[:40]
    raise RuleBroken(f"{key!r} is not a check of this protocol.", field="check_key")


_PREVIOUS_BP = text(
    f"""
    SELECT e.id, e.taken_at, e.systolic, e.diastolic FROM clinical_entries e
    WHERE e.appointment_id = :appointment_id AND e.systolic IS NOT NULL
      AND e.id <> :entry_id AND (e.taken_at, e.id) < (:taken_at, :entry_id) AND {CURRENT_ENTRY}
    ORDER BY e.taken_at DESC, e.id DESC LIMIT 1
    """
)


def alert_not_open(appointment: str, code: str) -> str:
    """SQL that holds when the session `appointment` has no alert of `code` still open: an alert the board already
    shows is not raised twice (the vitals write and a correction both raise through this)."""
    return f"NOT EXISTS (SELECT 1 FROM session_alerts o WHERE o.appointment_id = {appointment} AND o.code = {code} AND o.acknowledged_at IS NULL)"


# the rules' drafts for one entry (distinct codes), each raised unless one of its code is still open
_RAISE_ALERTS = text(
    f"""
    INSERT INTO session_alerts (clinic_id, appointment_id, entry_id, level, code, message, raised_at)
    SELECT :clinic_id, :appointment_id, :entry_id, d.level, d.code, d.message, :raised_at
    FROM unnest(CAST(:levels AS text[]), CAST(:codes AS text[]), CAST(:messages AS text[])) WITH ORDINALITY AS d(level, code, message, k)
    WHERE {alert_not_open(":appointment_id", "d.code")}
    ORDER BY d.k
    RETURNING *
    """
)


async def _previous_bp(session: AsyncSession, entry: Any) -> rules.Reading | None:
    """The current BP reading just before `entry` (for the two-in-a-row rule)."""
    row = (await session.execute(_PREVIOUS_BP, {"appointment_id": entry.appointment_id, "entry_id": entry.id, "taken_at": entry.taken_at})).first()
    return rules.Reading(taken_at=row.taken_at, id=row.id, systolic=row.systolic, diastolic=row.diastolic) if row else None


async def _raise_alerts(
    session: AsyncSession, *, protocol: Protocol, clinic_id: int, dosing_started_at: datetime | None, entry: Any, now: datetime
) -> list[Alert]:
    """Alerts this entry raises (see alert_not_open)."""
    reading = reading_of(entry)
    before_dosing = dosing_started_at is None or reading.taken_at < dosing_started_at
    previous = await _previous_bp(session, entry) if reading.has("bp") else None
    drafts = rules.evaluate_alerts(protocol, reading, previous_bp=previous, before_dosing=before_dosing)
    if not drafts:
        return []
    params = {"clinic_id": clinic_id, "appointment_id": entry.appointment_id, "entry_id": entry.id, "raised_at": now,
              "levels": [d.level for d in drafts], "codes": [d.code for d in drafts], "messages": [d.message for d in drafts]}
    raised = (await session.execute(select(Alert).from_statement(_RAISE_ALERTS), params)).scalars().all()
    return sorted(raised, key=lambda a: a.id)  # type: ignore[arg-type,return-value]


async def correct_entry(
    session: AsyncSession,
    *,
    actor: Actor,
    appointment_id: int,
    entry_id: int,
    client_id: uuid.UUID,
    reason: str,
    changes: dict[str, Any] | None = None,
    entered_in_error: bool = False,
    now: datetime | None = None,
) -> EntryResult:
    """A new row superseding `entry_id`: the old values with `changes` applied (or withdrawn as entered in error).
    A change that is msgspec's UNSET (not sent) keeps the old value; None clears it."""
    now = now or utcnow()
    replay = await _entry_by_client_id(session, actor=actor, appointment_id=appointment_id, client_id=client_id)
    if replay:
        return replay
    reason = (reason or "").strip()
    if not reason:
        raise RuleBroken("Say why the entry is being corrected.", field="reason")
    if len(reason) > 300:
        raise RuleBroken("The reason is longer than 300 characters.", field="reason")
    data = await load_session(session, clinic_id=actor.clinic_id, appointment_id=appointment_id, lock=True, doses=False)
    old = next((e for e in data.entries if e.id == entry_id), None)
    if old is None:
        raise NotFound("No such entry on this session.")
    newer = next((e for e in data.entries if e.supersedes_id == entry_id), None)
    if newer is not None:
        raise Conflict(f"This entry was already corrected (entry {newer.id}); correct the newest version.", code="already_corrected")
    if old.entered_in_error:
        raise Conflict("This entry was withdrawn as entered in error; record a new entry instead.", code="withdrawn")
    changes = dict(changes or {})
    appt = data.appointment
    at = changes.pop("taken_at", None) or old.taken_at
    if at != old.taken_at:
        rules.check_taken_at(at, now, not_before=appt.checked_in_at, not_before_what="check-in")
    if entered_in_error:
        cleaned = {k: None for k in ("systolic", "diastolic", "heart_rate", "spo2", "resp_rate", "moaas", "dissociation_form", "dissociation_items", "dissociation_total", "note")}
    else:
        merged = Measurements(
            systolic=old.systolic,
            diastolic=old.diastolic,
            heart_rate=old.heart_rate,
            spo2=old.spo2,
            resp_rate=old.resp_rate,
            moaas=old.moaas,
            dissociation_form=old.dissociation_form,
            dissociation_items=old.dissociation_items,
            note=old.note,
        )
        for k, v in changes.items():
            if v is UNSET:
                continue
            if not hasattr(merged, k):
                raise RuleBroken(f"{k} cannot be corrected here.", field=k)
            setattr(merged, k, v)
        if merged.dissociation_form is None:
            merged.dissociation_items = None
        cleaned = merged.cleaned()
    entry = await insert_once(
        session,
        ClinicalEntry,
        dict(
            clinic_id=appt.clinic_id,
            appointment_id=appt.id,
            client_id=client_id,
            check_key=old.check_key,
            taken_at=at,
            recorded_by=actor.user_id,
            recorded_at=now,
            supersedes_id=old.id,
            correction_reason=reason,
            entered_in_error=entered_in_error,
            **cleaned,
        ),
    )
    if entry is None:
        replay = await _entry_by_client_id(session, actor=actor, appointment_id=appointment_id, client_id=client_id)
        assert replay is not None
        return replay
    raised: list[Alert] = []
    if not entered_in_error:
        raised = await _raise_alerts(session, protocol=data.protocol, clinic_id=appt.clinic_id, dosing_started_at=appt.dosing_started_at, entry=entry, now=now)
    await charted(
        session, actor=actor, appointment=appt, what="correction", action="session.entry_corrected", entity="clinical_entry", entity_id=entry.id,
        changes={"supersedes_id": old.id, "reason": reason, "entered_in_error": entered_in_error, "taken_at": at, **{k: v for k, v in cleaned.items() if v is not None}},
    )
    return EntryResult(entry, raised, created=True, tz=data.tz)


# ---- alerts ------------------------------------------------------------------------------------------


async def acknowledge_alert(session: AsyncSession, *, actor: Actor, appointment_id: int, alert_id: int, note: str, now: datetime | None = None) -> Alert:
    now = now or utcnow()
    note = (note or "").strip()
    if not note:
        raise RuleBroken("Add a note saying what was done or decided.", field="note")
    if len(note) > 500:
        raise RuleBroken("The note is longer than 500 characters.", field="note")
    data = await load_session(session, clinic_id=actor.clinic_id, appointment_id=appointment_id, lock=True, entries=False, doses=False)
    alert = next((a for a in data.alerts if a.id == alert_id), None)
    if alert is None:
        raise NotFound("No such alert on this session.")
    if alert.level == "caution" and not allows("session.sign", actor.roles):
        raise Forbidden("Only a prescriber can acknowledge a pre-dose caution.", code="prescriber_only")
    if alert.acknowledged_at is not None:
        if alert.acknowledged_by == actor.user_id and alert.note == note:
            return alert  # a repeated tap
        raise Conflict(f"Already acknowledged at {rules.hm(alert.acknowledged_at, data.tz)}.", code="already_acknowledged")
    result = await session.execute(
        update(Alert)
        .where(col(Alert.id) == alert_id, col(Alert.acknowledged_at).is_(None))
        .values(acknowledged_by=actor.user_id, acknowledged_at=now, note=note)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict("Someone acknowledged this alert a moment ago; reload.", code="already_acknowledged")
    alert.acknowledged_by, alert.acknowledged_at, alert.note = actor.user_id, now, note
    appt = data.appointment
    await charted(
        session, actor=actor, appointment=appt, what="alert", action="session.alert_acknowledged", entity="session_alert", entity_id=alert.id,
        changes={"appointment_id": appt.id, "level": alert.level, "code": alert.code, "note": note},
    )
    return alert
