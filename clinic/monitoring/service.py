"""Supervised-session use cases: check-in, entries, dosing, alerts, corrections, discharge, REMS forms; one transaction each.

Every write locks the appointment row first, so two tablets on one patient are serialised
(spacing, two-in-a-row and the discharge decision see each other's entries), and sends
pg_notify('board_<clinic>') inside the transaction so every board hears of it on commit.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text, update
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import Actor, jsonable, record
from clinic.auth.models import StaffUser
from clinic.auth.permissions import allows
from clinic.db import Statements, register_conflicts
from clinic.errors import Conflict, Forbidden, NotFound, RuleBroken
from clinic.monitoring import rules
from clinic.monitoring.models import Alert, ClinicalEntry, DosingEntry, RemsForm
from clinic.monitoring.writer import EntryWrite, EntryWriter, write_entries
from clinic.notices import hooks
from clinic.patients.models import Patient
from clinic.scheduling.models import Appointment, Chair, Clinic, SessionType
from clinic.timeutil import utcnow

register_conflicts(
    {
        "uq_clinical_entries_supersedes_id": "That entry was corrected a moment ago; reload and correct the newest version.",
        "uq_dosing_entries_supersedes_id": "That dosing entry was corrected a moment ago; reload and correct the newest version.",
        "uq_rems_monitoring_forms_appointment_id": "This session already has a REMS monitoring form.",
    }
)

MONITORED_STATES = ("arrived", "in_progress")


class UNSET_TYPE:
    """A field the caller did not send (a correction keeps the old value); None means 'clear it'."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = UNSET_TYPE()


def channel(clinic_id: int) -> str:
    return f"board_{clinic_id}"


async def notify_board(session: AsyncSession, *, clinic_id: int, appointment_id: int, what: str) -> None:
    """Delivered by Postgres when (and only if) the transaction commits."""
    payload = json.dumps({"appointment_id": appointment_id, "what": what})
    await session.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": channel(clinic_id), "payload": payload})


def _local(instant: datetime, tz: str) -> datetime:
    return instant.astimezone(ZoneInfo(tz))


# ---- loading one session ----------------------------------------------------------------------


def dose_order(d: Any) -> tuple[datetime, int]:
    """Doses (rows or the rules' DoseEvent) in the order the rules take them: by time, then device number."""
    return d.taken_at, d.device_number or 0


@dataclass
class SessionData:
    """One appointment with everything charted on it (all rows, superseded ones included)."""

    appointment: Appointment
    session_type: SessionType
    patient: Patient
    clinic: Clinic
    chair: Chair
    entries: list[ClinicalEntry] = field(default_factory=list)
    doses: list[DosingEntry] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    rems: RemsForm | None = None
    staff: dict[int, StaffUser] = field(default_factory=dict)

    @property
    def protocol(self) -> dict[str, Any]:
        return self.session_type.protocol or {}

    @property
    def kind(self) -> str:
        return self.session_type.kind

    @property
    def tz(self) -> str:
        return self.clinic.timezone

    @property
    def requires_rems(self) -> bool:
        return bool(self.session_type.requires_rems)

    def current_entries(self) -> list[ClinicalEntry]:
        superseded = {e.supersedes_id for e in self.entries if e.supersedes_id is not None}
        return [e for e in self.entries if e.id not in superseded and not e.entered_in_error]

    def current_doses(self) -> list[DosingEntry]:
        superseded = {d.supersedes_id for d in self.doses if d.supersedes_id is not None}
        return [d for d in self.doses if d.id not in superseded and not d.entered_in_error]

    def readings(self) -> list[rules.Reading]:
        return [reading_of(e) for e in self.current_entries()]

    def dose_events(self) -> list[rules.DoseEvent]:
        return [dose_event_of(d) for d in sorted(self.current_doses(), key=dose_order)]

    def open_alerts(self) -> list[Alert]:
        return [a for a in self.alerts if a.acknowledged_at is None]

    def planned_dose_mg(self) -> int | None:
        return (self.appointment.facts or {}).get("dose_mg_planned") or self.appointment.planned_dose_mg

    def planned_device_count(self) -> int | None:
        if self.kind != "esketamine":
            return None
        return rules.planned_devices(self.protocol, self.planned_dose_mg())


def reading_of(e: ClinicalEntry) -> rules.Reading:
    return rules.Reading(
        taken_at=e.taken_at,
        id=e.id,
        check_key=e.check_key,
        systolic=e.systolic,
        diastolic=e.diastolic,
        heart_rate=e.heart_rate,
        spo2=e.spo2,
        resp_rate=e.resp_rate,
        moaas=e.moaas,
        dissociation_form=e.dissociation_form,
        dissociation_total=e.dissociation_total,
    )


def dose_event_of(d: DosingEntry) -> rules.DoseEvent:
    return rules.DoseEvent(kind=d.kind, taken_at=d.taken_at, device_number=d.device_number, dose_mg=d.dose_mg, lot_number=d.lot_number)


def open_alert_of(a: Alert) -> rules.OpenAlert:
    return rules.OpenAlert(level=a.level, code=a.code, message=a.message, id=a.id)


async def load_session(
    session: AsyncSession,
    *,
    clinic_id: int,
    appointment_id: int,
    lock: bool = False,
    entries: bool = True,
    doses: bool = True,
    alerts: bool = True,
    staff: bool = False,
) -> SessionData:
    q = (
        select(Appointment, SessionType, Patient, Clinic, Chair)
        .join(SessionType, col(SessionType.id) == Appointment.session_type_id)
        .join(Patient, col(Patient.id) == Appointment.patient_id)
        .join(Clinic, col(Clinic.id) == Appointment.clinic_id)
        .join(Chair, col(Chair.id) == Appointment.chair_id)
        .where(Appointment.id == appointment_id, Appointment.clinic_id == clinic_id)
    )
    if lock:
        # the bump takes the row lock and tells a vitals entry in flight that the chart moved (see record_entry)
        await session.execute(
            update(Appointment).where(col(Appointment.id) == appointment_id, col(Appointment.clinic_id) == clinic_id)
            .values(chart_version=Appointment.chart_version + 1).execution_options(synchronize_session=False)
        )
        q = q.with_for_update(of=Appointment)  # type: ignore[arg-type]
    row = (await session.exec(q)).first()
    if row is None:
        raise NotFound("No such appointment in this clinic.")
    data = SessionData(*row)
    aid = appointment_id
    if entries:
        data.entries = list((await session.exec(select(ClinicalEntry).where(ClinicalEntry.appointment_id == aid).order_by(col(ClinicalEntry.taken_at), col(ClinicalEntry.id)))).all())
    if doses:
        data.doses = list((await session.exec(select(DosingEntry).where(DosingEntry.appointment_id == aid).order_by(col(DosingEntry.taken_at), col(DosingEntry.id)))).all())
    if alerts:
        data.alerts = list((await session.exec(select(Alert).where(Alert.appointment_id == aid).order_by(col(Alert.raised_at), col(Alert.id)))).all())
    if data.requires_rems:
        data.rems = (await session.exec(select(RemsForm).where(RemsForm.appointment_id == aid))).first()
    if staff:
        ids = {e.recorded_by for e in data.entries} | {d.recorded_by for d in data.doses}
        ids |= {a.acknowledged_by for a in data.alerts if a.acknowledged_by}
        ids |= {i for i in (data.appointment.discharged_by, data.rems.submission_recorded_by if data.rems else None) if i}
        if ids:
            data.staff = {u.id: u for u in (await session.exec(select(StaffUser).where(col(StaffUser.id).in_(ids)))).all()}  # type: ignore[misc]
    return data


def _require_monitoring(data: SessionData, *, what: str) -> None:
    appt = data.appointment
    _require_state(status=appt.status, monitored=data.session_type.monitored, type_name=data.session_type.name, discharged_at=appt.discharged_at, tz=data.tz, what=what)


# ---- check-in and escort ------------------------------------------------------------------------


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
    appt, st, patient = data.appointment, data.session_type, data.patient
    if not st.monitored:
        raise Conflict(f"{st.name} sessions are not monitored; there is nothing to check in here.", code="not_monitored")
    if appt.status != "booked":
        if appt.status in MONITORED_STATES and appt.checked_in_at:
            raise Conflict(f"Already checked in at {rules.hm(appt.checked_in_at, data.tz)}.", code="already_checked_in")
        raise Conflict(f"This appointment is {appt.status.replace('_', ' ')}; only a booked appointment can be checked in.", code="not_booked")
    at = taken_at or now
    rules.check_taken_at(at, now)
    if abs(at - appt.starts_at) > rules.BACKCHART_LIMIT:
        day = _local(appt.starts_at, data.tz).strftime("%a %d %b %Y %H:%M")
        raise Conflict(f"This appointment is booked for {day}; check the patient in on the day.", code="not_today")
    if st.requires_rems:
        session_day = _local(at, data.tz).date()
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
    if "dose_mg_per_kg" in data.protocol:
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
    record(
        session,
        actor=actor,
        action="session.check_in",
        entity="appointment",
        entity_id=appt.id,
        patient_id=appt.patient_id,
        changes={"checked_in_at": at, "fasting_confirmed": True, "escort_confirmed": appt.escort_confirmed, "weight_kg": appt.weight_kg},
    )
    await notify_board(session, clinic_id=appt.clinic_id, appointment_id=appt.id, what="check_in")  # type: ignore[arg-type]
    return data


async def confirm_escort(session: AsyncSession, *, actor: Actor, appointment_id: int, escort_name: str | None = None, escort_phone: str | None = None) -> SessionData:
    data = await load_session(session, clinic_id=actor.clinic_id, appointment_id=appointment_id, lock=True, entries=False, doses=False, alerts=False)
    appt = data.appointment
    _require_monitoring(data, what="an escort confirmation")
    name = (escort_name if escort_name is not None else appt.escort_name) or ""
    if not name.strip():
        raise RuleBroken("Enter the escort's name to confirm them.", field="escort_name")
    appt.escort_name = name.strip()[:200]
    if escort_phone is not None:
        appt.escort_phone = escort_phone.strip()[:40] or None
    appt.escort_confirmed = True
    appt.updated_at = utcnow()
    session.add(appt)
    record(session, actor=actor, action="session.escort_confirmed", entity="appointment", entity_id=appt.id, patient_id=appt.patient_id, changes={"escort_confirmed": True})
    await notify_board(session, clinic_id=appt.clinic_id, appointment_id=appt.id, what="escort")  # type: ignore[arg-type]
    return data


# ---- clinical entries ------------------------------------------------------------------------------


@dataclass
class Measurements:
    systolic: int | None = None
    diastolic: int | None = None
    heart_rate: int | None = None
    spo2: int | None = None
    resp_rate: int | None = None
    moaas: int | None = None
    dissociation_form: str | None = None
    dissociation_items: dict[str, Any] | None = None
    note: str | None = None

    def cleaned(self) -> dict[str, Any]:
        """Validated column values; raises RuleBroken naming the field."""
        rules.check_vitals(systolic=self.systolic, diastolic=self.diastolic, heart_rate=self.heart_rate, spo2=self.spo2, resp_rate=self.resp_rate)
        rules.check_moaas(self.moaas)
        items, total = None, None
        if self.dissociation_form is not None or self.dissociation_items:
            if self.dissociation_form is None:
                raise RuleBroken("Say which dissociation form was used (cadss6 or cadss23).", field="dissociation_form")
            items, total = rules.dissociation_score(self.dissociation_form, self.dissociation_items or {})
        note = (self.note or "").strip() or None
        if note and len(note) > 4000:
            raise RuleBroken("The note is longer than 4000 characters.", field="note")
        values = {
            "systolic": self.systolic,
            "diastolic": self.diastolic,
            "heart_rate": self.heart_rate,
            "spo2": self.spo2,
            "resp_rate": self.resp_rate,
            "moaas": self.moaas,
            "dissociation_form": self.dissociation_form if total is not None else None,
            "dissociation_items": items,
            "dissociation_total": total,
            "note": note,
        }
        if all(v is None for v in values.values()):
            raise RuleBroken("Nothing to record: enter at least one value or a note.", field="values")
        return values


@dataclass
class EntryResult:
    entry: Any  # a ClinicalEntry, or the inserted row (same attribute names) on the hot path
    alerts: list[Alert]
    created: bool
    tz: str = "UTC"


async def _entry_by_client_id(session: AsyncSession, *, actor: Actor, appointment_id: int, client_id: uuid.UUID) -> EntryResult | None:
    entry = (await session.exec(select(ClinicalEntry).where(ClinicalEntry.client_id == client_id))).first()
    if entry is None:
        return None
    if entry.clinic_id != actor.clinic_id or entry.appointment_id != appointment_id:
        raise Conflict("This client_id was already used for another entry; generate a new one.", field="client_id", code="client_id_reused")
    raised = list((await session.exec(select(Alert).where(Alert.entry_id == entry.id).order_by(col(Alert.id)))).all())
    clinic = await session.get(Clinic, entry.clinic_id)
    return EntryResult(entry, raised, created=False, tz=clinic.timezone if clinic else "UTC")


def _valid_check_key(protocol: dict[str, Any], key: str | None, keys: frozenset[str] | None = None) -> str | None:
    if key is None or not key.strip():
        return None
    key = key.strip()
    if key in (keys if keys is not None else {p.key for p in rules.planned_checks(protocol)}) or key.startswith("repeat_bp@"):
        return key[:40]
    raise RuleBroken(f"{key!r} is not a check of this protocol.", field="check_key")


async def _insert_entry(session: AsyncSession, values: dict[str, Any]) -> ClinicalEntry | None:
    """INSERT .. ON CONFLICT (client_id) DO NOTHING: None when a concurrent request stored this submission first."""
    stmt = insert(ClinicalEntry).values(**values).on_conflict_do_nothing(index_elements=["client_id"]).returning(ClinicalEntry)
    row = (await session.execute(select(ClinicalEntry).from_statement(stmt))).scalars().first()
    return row


_PREVIOUS_BP = text(
    """
    SELECT e.id, e.taken_at, e.systolic, e.diastolic FROM clinical_entries e
    WHERE e.appointment_id = :appointment_id AND e.systolic IS NOT NULL AND NOT e.entered_in_error
      AND e.id <> :entry_id AND (e.taken_at, e.id) < (:taken_at, :entry_id)
      AND NOT EXISTS (SELECT 1 FROM clinical_entries n WHERE n.supersedes_id = e.id)
    ORDER BY e.taken_at DESC, e.id DESC LIMIT 1
    """
)
_OPEN_ALERT_CODES = text("SELECT code FROM session_alerts WHERE appointment_id = :appointment_id AND acknowledged_at IS NULL")


async def _previous_bp(session: AsyncSession, entry: Any) -> rules.Reading | None:
    """The current BP reading just before `entry` (for the two-in-a-row rule)."""
    row = (await session.execute(_PREVIOUS_BP, {"appointment_id": entry.appointment_id, "entry_id": entry.id, "taken_at": entry.taken_at})).first()
    return rules.Reading(taken_at=row.taken_at, id=row.id, systolic=row.systolic, diastolic=row.diastolic) if row else None


async def _raise_alerts(
    session: AsyncSession, *, protocol: dict[str, Any], clinic_id: int, dosing_started_at: datetime | None, entry: Any, now: datetime, previous: Any = UNSET
) -> list[Alert]:
    """Alerts this entry raises; one still open with the same code is not raised twice. `previous`: the BP before it, if known."""
    reading = reading_of(entry)
    before_dosing = dosing_started_at is None or reading.taken_at < dosing_started_at
    if previous is UNSET:
        previous = await _previous_bp(session, entry) if reading.has("bp") else None
    drafts = rules.evaluate_alerts(protocol, reading, previous_bp=previous, before_dosing=before_dosing)
    if not drafts:
        return []
    already_open = set((await session.execute(_OPEN_ALERT_CODES, {"appointment_id": entry.appointment_id})).scalars())
    raised = []
    for d in drafts:
        if d.code in already_open:  # still open: the board already shows it
            continue
        alert = Alert(clinic_id=clinic_id, appointment_id=entry.appointment_id, entry_id=entry.id, level=d.level, code=d.code, message=d.message, raised_at=now)
        session.add(alert)
        raised.append(alert)
        already_open.add(d.code)
    if raised:
        await session.flush()
    return raised


def _require_state(*, status: str, monitored: bool, type_name: str, discharged_at: datetime | None, tz: str, what: str) -> None:
    if not monitored:
        raise Conflict(f"{type_name} sessions are not monitored.", code="not_monitored")
    if status == "booked":
        raise Conflict(f"Check the patient in before recording {what}.", code="not_checked_in")
    if status == "fulfilled":
        raise Conflict(f"This session was discharged at {rules.hm(discharged_at, tz)}; it takes no new {what}.", code="discharged")  # type: ignore[arg-type]
    if status not in MONITORED_STATES:
        raise Conflict(f"This appointment is {status}; it takes no {what}.", code="not_active")


# ---- the hot path: one vitals / assessment entry --------------------------------------------------
#
# Every tablet, every check: two statements on the driver connection, no ORM. The gate reads the session's
# state, the BP reading before this one (two-in-a-row rule) and a replay of this client_id; the rules run in
# Python; then ONE statement (writer.ENTRY_WRITE) bumps appointments.chart_version (which locks the row), inserts
# the entry, the alerts it raises and the audit event, and notifies the board. The bump only matches the version
# the gate read, so if another write reached the chart in between (a second tablet, a discharge) nothing is
# written and the rules run again on the fresh state: writers of one chart are serialised without holding a lock
# across round trips, and a lone statement needs no BEGIN/COMMIT of its own. On the API, entries of different
# sessions arriving together share that statement and its commit (writer.EntryWriter).

_ENTRY_GATE = """
    SELECT a.id, a.clinic_id, a.patient_id, a.status, a.checked_in_at, a.dosing_started_at, a.discharged_at, a.chart_version,
           st.protocol::text AS protocol, st.monitored, st.name AS type_name, c.timezone,
           (SELECT e.id FROM clinical_entries e WHERE e.client_id = $3) AS replay_id,
           prev.id AS prev_id, prev.taken_at AS prev_taken_at, prev.systolic AS prev_systolic, prev.diastolic AS prev_diastolic,
           (SELECT max(e.taken_at) FROM clinical_entries e WHERE e.appointment_id = a.id AND e.systolic IS NOT NULL) AS last_bp_at
    FROM appointments a
    JOIN session_types st ON st.id = a.session_type_id
    JOIN clinics c ON c.id = a.clinic_id
    LEFT JOIN LATERAL (
        SELECT e.id, e.taken_at, e.systolic, e.diastolic FROM clinical_entries e
        WHERE e.appointment_id = a.id AND e.systolic IS NOT NULL AND NOT e.entered_in_error AND e.taken_at <= $4
          AND NOT EXISTS (SELECT 1 FROM clinical_entries n WHERE n.supersedes_id = e.id)
        ORDER BY e.taken_at DESC, e.id DESC LIMIT 1
    ) prev ON true
    WHERE a.id = $1 AND a.clinic_id = $2
"""
# a chart another write keeps changing (say a storm of retries on one session) is answered with a retry hint
_ENTRY_ATTEMPTS = 5


class ChartMemo:
    """What the gate read for the sessions this process charted lately, each exact as of its chart_version.

    A tablet charts one session every few minutes for an hour or two, so its next entry can skip the gate: the
    write re-checks chart_version (bumped by every other write to the chart, from any process: another
    tablet, a correction, dosing, a discharge) and the status (a cancellation), so a stale memo writes nothing
    and the gate is read again. What the version does not cover (the session type's protocol, the clinic's
    time zone) is read again at least every MAX_AGE seconds. An entry back-charted before the latest BP reading
    reads the gate, which finds the reading before its own time."""

    MAX_AGE = 60.0
    SIZE = 4096

    def __init__(self) -> None:
        self._charts: OrderedDict[tuple[int, int], tuple[float, dict[str, Any]]] = OrderedDict()

    def get(self, clinic_id: int, appointment_id: int, at: datetime) -> tuple[float, dict[str, Any]] | None:
        """(when the gate was read from the database, the gate) for an entry taken `at`, if the memo can stand."""
        item = self._charts.get((clinic_id, appointment_id))
        if item is None:
            return None
        read_at, gate = item
        last_bp = gate["last_bp_at"]
        if time.monotonic() - read_at > self.MAX_AGE or (last_bp is not None and at < last_bp):
            return None
        return item

    def remember(self, clinic_id: int, appointment_id: int, gate: dict[str, Any], read_at: float) -> None:
        self._charts[(clinic_id, appointment_id)] = (read_at, gate)
        self._charts.move_to_end((clinic_id, appointment_id))
        while len(self._charts) > self.SIZE:
            self._charts.popitem(last=False)

    def forget(self, clinic_id: int, appointment_id: int) -> None:
        self._charts.pop((clinic_id, appointment_id), None)


def _after_write(gate: dict[str, Any], entry_id: int, at: datetime, cleaned: dict[str, Any]) -> dict[str, Any] | None:
    """The gate as this entry left the chart, or None when the gate's BP reading was not the latest one
    (it was read for a back-charted time) and so cannot stand for the next entry's."""
    last_bp = gate["last_bp_at"]
    if last_bp is not None and at < last_bp:
        return None
    after = {**gate, "chart_version": gate["chart_version"] + 1, "replay_id": None}
    if cleaned["systolic"] is not None:
        after.update(prev_id=entry_id, prev_taken_at=at, prev_systolic=cleaned["systolic"], prev_diastolic=cleaned["diastolic"], last_bp_at=at)
    return after


async def record_entry(
    conn: Statements,
    *,
    actor: Actor,
    appointment_id: int,
    client_id: uuid.UUID,
    values: Measurements,
    taken_at: datetime | None = None,
    check_key: str | None = None,
    now: datetime | None = None,
    memo: ChartMemo | None = None,
    writer: EntryWriter | None = None,
) -> EntryResult:
    """Vitals, MOAA/S, dissociation and/or a note taken at one moment; a repeated client_id returns the first result.

    `conn` is a driver connection (session_driver for a page's session, Database.raw) or anything with its fetchrow
    and fetch (Database.statements): inside a transaction (a page that already read, the demo seed, a test) the
    write joins it, otherwise it commits on its own. With a `writer` the write goes with the entries of other
    tablets that arrive meanwhile (see EntryWriter; then `conn` must not hold a connection of the writer's pool).
    With a `memo`, a session charted lately from this process skips the gate (see ChartMemo)."""
    now = now or utcnow()
    at = taken_at or now
    for attempt in range(_ENTRY_ATTEMPTS):
        memo_hit = memo.get(actor.clinic_id, appointment_id, at) if memo is not None and attempt == 0 else None
        if memo_hit is not None:
            read_at, gate = memo_hit
        else:
            read_at = time.monotonic()
            row = await conn.fetchrow(_ENTRY_GATE, appointment_id, actor.clinic_id, client_id, at)
            if row is None:
                raise NotFound("No such appointment in this clinic.")
            if row["replay_id"] is not None:
                return await _replay(conn, actor=actor, appointment_id=appointment_id, client_id=client_id)
            gate = dict(row)
        tz = gate["timezone"]
        _require_state(status=gate["status"], monitored=gate["monitored"], type_name=gate["type_name"], discharged_at=gate["discharged_at"], tz=tz, what="entries")
        checked_in = gate["checked_in_at"]
        what = f"check-in ({rules.hm(checked_in, tz)})" if checked_in and at.tzinfo and at < checked_in else "check-in"  # formatted only when said
        rules.check_taken_at(at, now, not_before=checked_in, not_before_what=what)
        cleaned = values.cleaned()
        protocol, check_keys = _protocol_facts(gate["protocol"])
        key = _valid_check_key(protocol, check_key, check_keys)
        reading = rules.Reading(taken_at=at, check_key=key, **{k: cleaned[k] for k in ("systolic", "diastolic", "heart_rate", "spo2", "resp_rate", "moaas", "dissociation_form", "dissociation_total")})
        previous = rules.Reading(taken_at=gate["prev_taken_at"], id=gate["prev_id"], systolic=gate["prev_systolic"], diastolic=gate["prev_diastolic"]) if gate["prev_id"] else None
        dosed = gate["dosing_started_at"]
        drafts = rules.evaluate_alerts(protocol, reading, previous_bp=previous, before_dosing=dosed is None or at < dosed)
        changes = {"appointment_id": gate["id"], "taken_at": at, "check_key": key, **{k: v for k, v in cleaned.items() if v is not None}}
        items = cleaned["dissociation_items"]
        write = EntryWrite(
            gate["id"], gate["clinic_id"], gate["chart_version"], gate["status"], client_id, key, at, actor.user_id, now,
            cleaned["systolic"], cleaned["diastolic"], cleaned["heart_rate"], cleaned["spo2"], cleaned["resp_rate"], cleaned["moaas"],
            cleaned["dissociation_form"], json.dumps(items) if items is not None else None, cleaned["dissociation_total"], cleaned["note"],
            actor.ip, gate["patient_id"], json.dumps(jsonable(changes)), channel(gate["clinic_id"]),
            json.dumps({"appointment_id": gate["id"], "what": "entry"}), tuple((d.level, d.code, d.message) for d in drafts),
        )
        row = await writer.write(write) if writer is not None else (await write_entries(conn, [write]))[0]  # type: ignore[arg-type]
        if not row["gated"] or row["id"] is None:
            if memo is not None:
                memo.forget(actor.clinic_id, appointment_id)
            if not row["gated"]:
                continue  # the chart changed since the gate read it: evaluate again
            # the same submission was stored a moment ago
            return await _replay(conn, actor=actor, appointment_id=appointment_id, client_id=client_id)
        if memo is not None and (after := _after_write(gate, row["id"], at, cleaned)) is not None:
            memo.remember(actor.clinic_id, appointment_id, after, read_at)
        # the stored row is what was sent: only its id is new
        entry = SimpleNamespace(
            id=row["id"], clinic_id=gate["clinic_id"], appointment_id=gate["id"], client_id=client_id, check_key=key, taken_at=at,
            recorded_by=actor.user_id, recorded_at=now, supersedes_id=None, correction_reason=None, entered_in_error=False, **cleaned,
        )
        by_code = {d.code: d for d in drafts}
        raised = [
            Alert(id=i, clinic_id=entry.clinic_id, appointment_id=entry.appointment_id, entry_id=entry.id, level=by_code[c].level, code=c, message=by_code[c].message, raised_at=now)
            for i, c in zip(row["alert_ids"] or (), row["alert_codes"] or ())
        ]  # few entries raise any
        return EntryResult(entry, raised, created=True, tz=tz)
    raise Conflict("This session's chart is changing too fast to record this entry; send it again.", code="busy")


@functools.lru_cache(maxsize=64)
def _protocol_facts(text: str | None) -> tuple[dict[str, Any], frozenset[str]]:
    """A protocol as the gate reads it (JSON text) -> (the protocol, its check keys); a clinic has a handful,
    so each is parsed once per process. Callers only read the dict."""
    protocol = json.loads(text) if text else {}
    return protocol, frozenset(p.key for p in rules.planned_checks(protocol))


def _row_entry(row: Any) -> SimpleNamespace:
    """The stored row with a ClinicalEntry's attribute names (building the ORM object costs more than the insert)."""
    return SimpleNamespace(**{c: row[c] for c in _ENTRY_COLUMNS})


_ENTRY_COLUMNS = tuple(c.name for c in ClinicalEntry.__table__.c)  # type: ignore[attr-defined]


_REPLAY_ENTRY = "SELECT e.*, c.timezone FROM clinical_entries e JOIN clinics c ON c.id = e.clinic_id WHERE e.client_id = $1"
_REPLAY_ALERTS = "SELECT * FROM session_alerts WHERE entry_id = $1 ORDER BY id"


async def _replay(conn: Statements, *, actor: Actor, appointment_id: int, client_id: uuid.UUID) -> EntryResult:
    """The first result of a repeated submission (what _entry_by_client_id answers, on the driver connection)."""
    row = await conn.fetchrow(_REPLAY_ENTRY, client_id)
    assert row is not None  # only called once the client_id is known to be stored
    if row["clinic_id"] != actor.clinic_id or row["appointment_id"] != appointment_id:
        raise Conflict("This client_id was already used for another entry; generate a new one.", field="client_id", code="client_id_reused")
    alerts = [SimpleNamespace(**dict(a)) for a in await conn.fetch(_REPLAY_ALERTS, row["id"])]
    return EntryResult(_row_entry(row), alerts, created=False, tz=row["timezone"])  # type: ignore[arg-type]


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
    """A new row superseding `entry_id`: the old values with `changes` applied (or withdrawn as entered in error)."""
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
    entry = await _insert_entry(
        session,
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
    record(
        session,
        actor=actor,
        action="session.entry_corrected",
        entity="clinical_entry",
        entity_id=entry.id,
        patient_id=appt.patient_id,
        changes={"supersedes_id": old.id, "reason": reason, "entered_in_error": entered_in_error, "taken_at": at, **{k: v for k, v in cleaned.items() if v is not None}},
    )
    await notify_board(session, clinic_id=appt.clinic_id, appointment_id=appt.id, what="correction")  # type: ignore[arg-type]
    return EntryResult(entry, raised, created=True, tz=data.tz)


# ---- dosing ----------------------------------------------------------------------------------------


@dataclass
class DoseResult:
    dose: DosingEntry
    created: bool


async def _dose_by_client_id(session: AsyncSession, *, actor: Actor, appointment_id: int, client_id: uuid.UUID) -> DoseResult | None:
    dose = (await session.exec(select(DosingEntry).where(DosingEntry.client_id == client_id))).first()
    if dose is None:
        return None
    if dose.clinic_id != actor.clinic_id or dose.appointment_id != appointment_id:
        raise Conflict("This client_id was already used for another entry; generate a new one.", field="client_id", code="client_id_reused")
    return DoseResult(dose, created=False)


async def _insert_dose(session: AsyncSession, values: dict[str, Any]) -> DosingEntry | None:
    stmt = insert(DosingEntry).values(**values).on_conflict_do_nothing(index_elements=["client_id"]).returning(DosingEntry)
    return (await session.execute(select(DosingEntry).from_statement(stmt))).scalars().first()


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
    _require_monitoring(data, what="dosing")
    at = taken_at or now
    rules.check_taken_at(at, now, not_before=appt.checked_in_at, not_before_what=f"check-in ({rules.hm(appt.checked_in_at, data.tz)})")  # type: ignore[arg-type]
    blockers = rules.pre_dose_blockers(data.protocol, dose_time=at, readings=data.readings(), open_alerts=[open_alert_of(a) for a in data.open_alerts()])
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
        per_device = int(data.protocol.get("mg_per_device", 28))
        values |= dict(kind="device", device_number=1, dose_mg=Decimal(per_device), lot_number=_lot(lot_number))
        facts["dose_mg_planned"] = planned
    elif "dose_mg_per_kg" in data.protocol:
        per_kg, mg = rules.iv_dose_mg(data.protocol, mg_per_kg=mg_per_kg, weight_kg=appt.weight_kg)  # type: ignore[arg-type]
        values |= dict(kind="infusion_start", dose_mg=mg, mg_per_kg=per_kg, weight_kg=Decimal(str(appt.weight_kg)).quantize(Decimal("0.1")), lot_number=(lot_number or "").strip()[:40] or None)
    else:
        if dose_mg is None or Decimal(str(dose_mg)) <= 0:
            raise RuleBroken("Enter the dose given, in mg.", field="dose_mg")
        values |= dict(kind="dose", dose_mg=Decimal(str(dose_mg)).quantize(Decimal("0.1")), lot_number=(lot_number or "").strip()[:40] or None)
    dose = await _insert_dose(session, values)
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
        day = _local(at, data.tz).date()
        due_days = int((data.clinic.settings or {}).get("rems_form_due_days", 7))
        await session.execute(
            insert(RemsForm)
            .values(clinic_id=appt.clinic_id, appointment_id=appt.id, patient_id=appt.patient_id, session_date=day, due_on=day + timedelta(days=due_days), created_at=now)
            .on_conflict_do_nothing(index_elements=["appointment_id"])
        )
    record(
        session,
        actor=actor,
        action="session.dosing_started",
        entity="dosing_entry",
        entity_id=dose.id,
        patient_id=appt.patient_id,
        changes={"appointment_id": appt.id, "kind": dose.kind, "taken_at": at, "dose_mg": str(dose.dose_mg), "lot_number": dose.lot_number, "mg_per_kg": str(dose.mg_per_kg) if dose.mg_per_kg else None},
    )
    await notify_board(session, clinic_id=appt.clinic_id, appointment_id=appt.id, what="dosing")  # type: ignore[arg-type]
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
    _require_monitoring(data, what="dosing entries")
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
        problem = rules.device_spacing_problem([d.taken_at for d in devices] + [at], int(data.protocol.get("minutes_between_devices", 5)), data.tz)
        if problem:
            raise problem
        values |= dict(kind="device", device_number=len(devices) + 1, dose_mg=Decimal(int(data.protocol.get("mg_per_device", 28))), lot_number=_lot(lot_number))
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
    dose = await _insert_dose(session, values)
    if dose is None:
        replay = await _dose_by_client_id(session, actor=actor, appointment_id=appointment_id, client_id=client_id)
        assert replay is not None
        return replay
    record(
        session,
        actor=actor,
        action="session.dose",
        entity="dosing_entry",
        entity_id=dose.id,
        patient_id=appt.patient_id,
        changes={"appointment_id": appt.id, "kind": dose.kind, "taken_at": at, "device_number": dose.device_number, "lot_number": dose.lot_number},
    )
    await notify_board(session, clinic_id=appt.clinic_id, appointment_id=appt.id, what="dosing")  # type: ignore[arg-type]
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
        problem = rules.device_spacing_problem(times, int(data.protocol.get("minutes_between_devices", 5)), data.tz)
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
    dose = await _insert_dose(
        session,
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
    record(
        session,
        actor=actor,
        action="session.dose_corrected",
        entity="dosing_entry",
        entity_id=dose.id,
        patient_id=appt.patient_id,
        changes={"supersedes_id": old.id, "reason": reason, "taken_at": at, "lot_number": lot, "entered_in_error": entered_in_error},
    )
    await notify_board(session, clinic_id=appt.clinic_id, appointment_id=appt.id, what="correction")  # type: ignore[arg-type]
    return DoseResult(dose, created=True)


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
    record(
        session,
        actor=actor,
        action="session.alert_acknowledged",
        entity="session_alert",
        entity_id=alert.id,
        patient_id=appt.patient_id,
        changes={"appointment_id": appt.id, "level": alert.level, "code": alert.code, "note": note},
    )
    await notify_board(session, clinic_id=appt.clinic_id, appointment_id=appt.id, what="alert")  # type: ignore[arg-type]
    return alert


# ---- views: one session, blockers, discharge ----------------------------------------------------------


@dataclass
class SessionState:
    """What the rules say about one session at `now`."""

    data: SessionData
    now: datetime
    schedule: list[rules.CheckState]
    next_check: rules.CheckState | None
    blockers: list[rules.Blocker]
    pre_dose: list[rules.Blocker]
    phase: str

    @property
    def minutes_since_dosing(self) -> int | None:
        started = self.data.appointment.dosing_started_at
        if started is None:
            return None
        end = self.data.appointment.discharged_at or self.now
        return rules.minutes(end - started)

    @property
    def overdue(self) -> list[rules.CheckState]:
        return [s for s in self.schedule if s.status == "overdue"]


def evaluate(data: SessionData, now: datetime) -> SessionState:
    return evaluate_current(data, now, readings=data.readings(), doses=data.dose_events(), open_alerts=[open_alert_of(a) for a in data.open_alerts()])


def evaluate_current(
    data: SessionData, now: datetime, *, readings: list[rules.Reading], doses: list[rules.DoseEvent], open_alerts: list[rules.OpenAlert]
) -> SessionState:
    """evaluate() for a caller that already holds the session's current readings, doses (in dose_events() order) and
    open alerts in the rules' form (the board reads them so); `data` then only gives the appointment and protocol."""
    appt = data.appointment
    as_of = appt.discharged_at or now
    schedule = rules.check_schedule(data.protocol, now=as_of, dosing_started_at=appt.dosing_started_at, readings=readings) if appt.status != "booked" else []
    blockers: list[rules.Blocker] = []
    pre_dose: list[rules.Blocker] = []
    if appt.status == "in_progress":
        blockers = rules.discharge_blockers(
            data.protocol,
            kind=data.kind,
            now=now,
            tz=data.tz,
            dosing_started_at=appt.dosing_started_at,
            doses=doses,
            readings=readings,
            open_alerts=open_alerts,
            escort_confirmed=appt.escort_confirmed,
            requires_rems=data.requires_rems,
            schedule=schedule if as_of == now else None,
        )
    elif appt.status == "arrived":
        pre_dose = rules.pre_dose_blockers(data.protocol, dose_time=now, readings=readings, open_alerts=open_alerts)
    phase = rules.session_phase(status=appt.status, doses=doses, planned_device_count=data.planned_device_count(), blockers=blockers)
    return SessionState(data, now, schedule, rules.next_check(schedule) if appt.status in MONITORED_STATES else None, blockers, pre_dose, phase)


async def session_state(session: AsyncSession, *, actor: Actor, appointment_id: int, audit: bool = True, now: datetime | None = None) -> SessionState:
    """A chart read: the session with its schedule, blockers and phase (audited)."""
    data = await load_session(session, clinic_id=actor.clinic_id, appointment_id=appointment_id, staff=True)
    if audit:
        record(session, actor=actor, action="session.view", entity="appointment", entity_id=appointment_id, patient_id=data.appointment.patient_id)
    return evaluate(data, now or utcnow())


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
    _require_monitoring(data, what="a discharge")
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
    record(
        session,
        actor=actor,
        action="session.discharged",
        entity="appointment",
        entity_id=appt.id,
        patient_id=appt.patient_id,
        changes={"discharged_at": now, "facts": facts},
    )
    await hooks.session_discharged(session, queue=queue, appointment=appt, patient=data.patient, clinic=data.clinic)
    await notify_board(session, clinic_id=appt.clinic_id, appointment_id=appt.id, what="discharge")  # type: ignore[arg-type]
    return evaluate(data, now)


# ---- REMS monitoring forms ---------------------------------------------------------------------------------


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
    add("Session", "Date of session", _local(started, tz).strftime("%m/%d/%Y") if started else None)
    add("Session", "First treatment", _yes_no(earlier == 0) if started else None)
    add("Session", "Dose", f"{28 * len(devices)} mg ({len(devices)} device{'s' if len(devices) != 1 else ''})" if devices else None)
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
    caution = (protocol.get("pre_dose_caution") or {"systolic_above": 140, "diastolic_above": 90})
    pre_bp = rules.latest(pre, "bp")
    pre_ok = None
    if pre_bp is not None:
        pre_ok = pre_bp.systolic <= caution["systolic_above"] and pre_bp.diastolic <= caution["diastolic_above"]  # type: ignore[operator]
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
        end_ok = rules.bp_acceptable(protocol, end_bp) and end_spo2.spo2 >= rules._discharge_limits(protocol)["spo2_min"]  # type: ignore[operator]
    add("Vital signs", "Vital signs acceptable at the end of monitoring", _yes_no(end_ok), "" if end_ok is not None else "filled at discharge")
    add("Vital signs", "BP before dosing", f"{pre_bp.bp} mmHg at {rules.hm(pre_bp.taken_at, tz)}" if pre_bp else None)
    bp40 = rules.rems_bp_at_40(protocol, started, readings) if started else None
    add("Vital signs", "BP about 40 minutes after dosing", f"{bp40.bp} mmHg at {rules.hm(bp40.taken_at, tz)}" if bp40 else None)
    discharge_check = next((p for p in rules.planned_checks(protocol) if p.phase == "discharge"), None)
    end_from = started + timedelta(minutes=(discharge_check.at_minutes - discharge_check.window_minutes) if discharge_check else 0) if started else None
    bp_end = rules.latest(post, "bp", since=end_from) if end_from else None
    add("Vital signs", "BP before the end of monitoring", f"{bp_end.bp} mmHg at {rules.hm(bp_end.taken_at, tz)}" if bp_end else None)
    moaas_values = [r.moaas for r in post if r.moaas is not None]
    diss_values = [r.dissociation_total for r in post if r.dissociation_total is not None]
    limits = rules._discharge_limits(protocol)
    thresholds = rules._thresholds(protocol)["urgent"]
    resp = [r for r in post if (r.spo2 is not None and r.spo2 < limits["spo2_min"]) or (r.resp_rate is not None and r.resp_rate < thresholds["rr_below"])]
    add("Adverse events", "Sedation occurred", _yes_no(any(v < 5 for v in moaas_values)) if moaas_values else None, "from MOAA/S below 5 after dosing" if moaas_values else "")
    add("Adverse events", "Dissociation occurred", _yes_no(any(v > 0 for v in diss_values)) if diss_values else None, "from a dissociation score above 0 after dosing" if diss_values else "")
    add(
        "Adverse events",
        "Respiratory depression occurred",
        _yes_no(bool(resp)) if post else None,
        f"from SpO2 below {limits['spo2_min']}% or RR below {thresholds['rr_below']}/min after dosing" if post else "",
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
    today = today or _local(utcnow(), tz).date()
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
    form = (
        await session.exec(select(RemsForm).where(RemsForm.appointment_id == appointment_id, RemsForm.clinic_id == actor.clinic_id).with_for_update())
    ).first()
    if form is None:
        raise NotFound("This session has no REMS monitoring form (esketamine sessions get one when dosing starts).")
    appt_status = (await session.exec(select(Appointment.status).where(Appointment.id == appointment_id))).one()
    if appt_status in MONITORED_STATES:
        raise Conflict("The session is still in progress; the form is sent after discharge.", code="session_open")
    clinic = await session.get(Clinic, actor.clinic_id)
    today = _local(now, clinic.timezone if clinic else "UTC").date()
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
