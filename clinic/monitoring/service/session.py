"""The supervised session as every use case sees it: loaded whole (under the chart's lock for a write), evaluated by the rules, and announced to the board.

Every write locks the appointment row first, so two tablets on one patient are serialised
(spacing, two-in-a-row and the discharge decision see each other's entries), and sends
pg_notify('board_<clinic>') inside the transaction so every board hears of it on commit.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import text, update
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import Actor, record
from clinic.auth.models import StaffUser
from clinic.clinics import Clinic
from clinic.errors import Conflict, NotFound
from clinic.monitoring import rules
from clinic.monitoring.models import Alert, ClinicalEntry, DosingEntry, RemsForm
from clinic.outcomes import service as outcomes  # questionnaires that block dosing: a course's baseline, a safety review
from clinic.patients.models import Patient
from clinic.scheduling.models import Appointment, Chair, SessionType
from clinic.scheduling.protocols import Protocol
from clinic.timeutil import utcnow

MONITORED_STATES = ("arrived", "in_progress")


def channel(clinic_id: int) -> str:
    return f"board_{clinic_id}"


async def notify_board(session: AsyncSession, *, clinic_id: int, appointment_id: int, what: str) -> None:
    """Delivered by Postgres when (and only if) the transaction commits."""
    payload = json.dumps({"appointment_id": appointment_id, "what": what})
    await session.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": channel(clinic_id), "payload": payload})


async def charted(
    session: AsyncSession, *, actor: Actor, appointment: Appointment, what: str, action: str, entity: str, entity_id: int | None, changes: dict[str, Any]
) -> None:
    """What every write to a session's chart ends with: its audit event, and the board's notice."""
    record(session, actor=actor, action=action, entity=entity, entity_id=entity_id, patient_id=appointment.patient_id, changes=changes)
    await notify_board(session, clinic_id=appointment.clinic_id, appointment_id=appointment.id, what=what)  # type: ignore[arg-type]


# ---- what stands: an entry or dose not superseded by a correction, not withdrawn as entered in error ----------


def current_sql(row: str, table: str) -> str:
    """SQL that holds when `row`, a row of `table` (clinical_entries or dosing_entries), is current."""
    return f"NOT {row}.entered_in_error AND NOT EXISTS (SELECT 1 FROM {table} n WHERE n.supersedes_id = {row}.id)"


CURRENT_ENTRY = current_sql("e", "clinical_entries")  # for clinical_entries e
CURRENT_DOSE = current_sql("d", "dosing_entries")  # for dosing_entries d


def current(rows: list[Any]) -> list[Any]:
    """The rows (entries or doses, all of one session) that are current, as current_sql says in SQL."""
    superseded = {r.supersedes_id for r in rows if r.supersedes_id is not None}
    return [r for r in rows if r.id not in superseded and not r.entered_in_error]


# ---- loading one session ----------------------------------------------------------------------


def dose_order(d: Any) -> tuple[datetime, int]:
    """Doses (rows or the rules' DoseEvent) in the order the rules take them: by time, then device number."""
    return d.taken_at, d.device_number or 0


@dataclass
class SessionData:
    """One appointment with everything charted on it (all rows, superseded ones included)."""

    appointment: Appointment
    protocol: Protocol  # of its session type
    patient: Patient
    clinic: Clinic
    chair: Chair
    entries: list[ClinicalEntry] = field(default_factory=list)
    doses: list[DosingEntry] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    rems: RemsForm | None = None
    staff: dict[int, StaffUser] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.protocol.kind

    @property
    def tz(self) -> str:
        return self.clinic.timezone

    @property
    def requires_rems(self) -> bool:
        return self.protocol.requires_rems

    def current_entries(self) -> list[ClinicalEntry]:
        return current(self.entries)

    def current_doses(self) -> list[DosingEntry]:
        return current(self.doses)

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


def reading_of(e: Any) -> rules.Reading:
    """A ClinicalEntry (or a row with its attribute names) as the rules read it."""
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


async def lock_chart(session: AsyncSession, *, clinic_id: int, appointment_id: int) -> None:
    """Every write to a session starts here: the chart_version bump takes the appointment's row lock and tells a
    vitals entry in flight, and every chart memo, that the chart moved (see vitals.record_entry)."""
    await session.execute(
        update(Appointment).where(col(Appointment.id) == appointment_id, col(Appointment.clinic_id) == clinic_id)
        .values(chart_version=Appointment.chart_version + 1).execution_options(synchronize_session=False)
    )


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
        await lock_chart(session, clinic_id=clinic_id, appointment_id=appointment_id)
        q = q.with_for_update(of=Appointment)  # type: ignore[arg-type]
    row = (await session.exec(q)).first()
    if row is None:
        raise NotFound("No such appointment in this clinic.")
    appointment, session_type, patient, clinic, chair = row
    data = SessionData(appointment, Protocol.of(session_type), patient, clinic, chair)
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


Submitted = TypeVar("Submitted", ClinicalEntry, DosingEntry)


async def submitted(session: AsyncSession, model: type[Submitted], *, actor: Actor, appointment_id: int, client_id: uuid.UUID) -> Submitted | None:
    """The row a tablet submission with this client_id stored, if it was stored; a client_id of another session is refused."""
    row = (await session.exec(select(model).where(model.client_id == client_id))).first()
    if row is not None and (row.clinic_id != actor.clinic_id or row.appointment_id != appointment_id):
        raise Conflict("This client_id was already used for another entry; generate a new one.", field="client_id", code="client_id_reused")
    return row


async def insert_once(session: AsyncSession, model: type[Submitted], values: dict[str, Any]) -> Submitted | None:
    """INSERT .. ON CONFLICT (client_id) DO NOTHING: None when a concurrent request stored this submission first."""
    stmt = insert(model).values(**values).on_conflict_do_nothing(index_elements=["client_id"]).returning(model)
    return (await session.execute(select(model).from_statement(stmt))).scalars().first()


def require_state(*, status: str, monitored: bool, type_name: str, discharged_at: datetime | None, tz: str, what: str) -> None:
    """A session takes `what` only while it is monitored: checked in and not yet discharged."""
    if not monitored:
        raise Conflict(f"{type_name} sessions are not monitored.", code="not_monitored")
    if status == "booked":
        raise Conflict(f"Check the patient in before recording {what}.", code="not_checked_in")
    if status == "fulfilled":
        raise Conflict(f"This session was discharged at {rules.hm(discharged_at, tz)}; it takes no new {what}.", code="discharged")  # type: ignore[arg-type]
    if status not in MONITORED_STATES:
        raise Conflict(f"This appointment is {status}; it takes no {what}.", code="not_active")


def require_monitoring(data: SessionData, *, what: str) -> None:
    appt = data.appointment
    require_state(status=appt.status, monitored=data.protocol.monitored, type_name=data.protocol.name, discharged_at=appt.discharged_at, tz=data.tz, what=what)


# ---- what the rules say about it ----------------------------------------------------------------------


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
    state = evaluate(data, now or utcnow())
    if data.appointment.status == "arrived":
        state.pre_dose += await outcomes.dosing_blockers(session, appointment=data.appointment)
    return state
