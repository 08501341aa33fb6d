"""The live board's content: every chair, who is in it, phase, time since dosing, next check, overdue checks and open alerts.

Five queries whatever the number of sessions; the rules then run in memory per session.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import or_, text
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.monitoring import rules
from clinic.monitoring.models import Alert
from clinic.monitoring.service import MONITORED_STATES, SessionData, SessionState, evaluate
from clinic.patients.models import Patient
from clinic.scheduling.models import Appointment, Chair, Clinic, SessionType
from clinic.timeutil import both_zones, utcnow

KIND_LABELS = {"esketamine": "Esketamine", "ketamine_iv": "IV ketamine", "kap": "KAP"}


_CURRENT_ENTRIES = text(
    """
    SELECT e.id, e.appointment_id, e.check_key, e.taken_at, e.systolic, e.diastolic, e.heart_rate, e.spo2, e.resp_rate,
           e.moaas, e.dissociation_form, e.dissociation_total, e.supersedes_id, e.entered_in_error
    FROM clinical_entries e
    WHERE e.appointment_id = ANY(:ids) AND NOT e.entered_in_error
      AND NOT EXISTS (SELECT 1 FROM clinical_entries n WHERE n.supersedes_id = e.id)
    """
)
_CURRENT_DOSES = text(
    """
    SELECT d.id, d.appointment_id, d.kind, d.taken_at, d.device_number, d.dose_mg, d.lot_number, d.supersedes_id, d.entered_in_error
    FROM dosing_entries d
    WHERE d.appointment_id = ANY(:ids) AND NOT d.entered_in_error
      AND NOT EXISTS (SELECT 1 FROM dosing_entries n WHERE n.supersedes_id = d.id)
    """
)
_OPEN_ALERTS = text(
    """
    SELECT a.id, a.appointment_id, a.level, a.code, a.message, a.raised_at, a.acknowledged_at
    FROM session_alerts a WHERE a.appointment_id = ANY(:ids) AND a.acknowledged_at IS NULL ORDER BY a.raised_at, a.id
    """
)


def board_name(first: str, last: str) -> str:
    """First name and last initial: enough for staff, little for a passer-by."""
    initial = (last or "").strip()[:1]
    return f"{(first or '').strip()} {initial}." if initial else (first or "").strip()


@dataclass
class BoardCard:
    appointment: Appointment
    session_type: SessionType
    name: str
    phase: str
    state: SessionState | None = None

    @property
    def phase_label(self) -> str:
        return rules.PHASE_LABELS.get(self.phase, self.phase)

    @property
    def kind_label(self) -> str:
        return KIND_LABELS.get(self.session_type.kind, self.session_type.name)

    @property
    def open_alerts(self) -> list[Alert]:
        return self.state.data.open_alerts() if self.state else []

    @property
    def worst_alert(self) -> str | None:
        levels = {a.level for a in self.open_alerts}
        return next((lvl for lvl in ("urgent", "alert", "caution") if lvl in levels), None)


@dataclass
class ChairRow:
    chair: Chair
    active: list[BoardCard] = field(default_factory=list)
    later: list[BoardCard] = field(default_factory=list)
    done: list[BoardCard] = field(default_factory=list)


@dataclass
class Board:
    clinic: Clinic
    now: datetime
    chairs: list[ChairRow]

    @property
    def tz(self) -> str:
        return self.clinic.timezone

    @property
    def active(self) -> list[BoardCard]:
        return [c for row in self.chairs for c in row.active]

    @property
    def alert_count(self) -> int:
        return sum(len(c.open_alerts) for c in self.active)

    @property
    def overdue_count(self) -> int:
        return sum(len(c.state.overdue) for c in self.active if c.state)


def day_bounds(now: datetime, tz: str) -> tuple[datetime, datetime]:
    zone = ZoneInfo(tz)
    day = now.astimezone(zone).date()
    start = datetime.combine(day, time(0), zone)
    return start, datetime.combine(day + timedelta(days=1), time(0), zone)


async def load_board(session: AsyncSession, *, clinic_id: int, now: datetime | None = None) -> Board:
    now = now or utcnow()
    clinic = await session.get(Clinic, clinic_id)
    if clinic is None:
        raise LookupError(clinic_id)
    chairs = list(
        (await session.exec(select(Chair).where(Chair.clinic_id == clinic_id, col(Chair.active).is_(True), Chair.kind == "chair").order_by(col(Chair.sort_order), col(Chair.name)))).all()
    )
    start, end = day_bounds(now, clinic.timezone)
    # the few session types once, rather than their protocol JSON decoded again on every appointment row
    types = {st.id: st for st in (await session.exec(select(SessionType).where(SessionType.clinic_id == clinic_id))).all()}
    rows = (
        await session.exec(
            select(Appointment, Patient.first_name, Patient.last_name)
            .join(Patient, col(Patient.id) == Appointment.patient_id)
            .join(Chair, col(Chair.id) == Appointment.chair_id)
            .where(
                Appointment.clinic_id == clinic_id,
                Chair.kind == "chair",
                col(Appointment.status).not_in(("cancelled", "noshow")),
                or_(
                    (col(Appointment.starts_at) >= start) & (col(Appointment.starts_at) < end),
                    col(Appointment.status).in_(MONITORED_STATES),
                ),
            )
            .order_by(col(Appointment.starts_at))
        )
    ).all()
    active_ids = [a.id for a, _, _ in rows if a.status in MONITORED_STATES]
    entries: dict[int, list[Any]] = {i: [] for i in active_ids}  # type: ignore[misc]
    doses: dict[int, list[Any]] = {i: [] for i in active_ids}  # type: ignore[misc]
    alerts: dict[int, list[Any]] = {i: [] for i in active_ids}  # type: ignore[misc]
    if active_ids:
        # plain rows, not ORM objects: the rules read attributes, and a board redraw touches every entry
        params = {"ids": active_ids}
        for e in (await session.execute(_CURRENT_ENTRIES, params)).all():
            entries[e.appointment_id].append(e)
        for d in (await session.execute(_CURRENT_DOSES, params)).all():
            doses[d.appointment_id].append(d)
        for a in (await session.execute(_OPEN_ALERTS, params)).all():
            alerts[a.appointment_id].append(a)
    by_chair = {c.id: ChairRow(c) for c in chairs}
    for appt, first_name, last_name in rows:
        row = by_chair.get(appt.chair_id)
        st = types.get(appt.session_type_id)
        if row is None or st is None:
            continue
        name = board_name(first_name, last_name)
        if appt.status in MONITORED_STATES:
            # the board never needs the patient record itself, only the name shown
            data = SessionData(appt, st, None, clinic, row.chair, entries[appt.id], doses[appt.id], alerts[appt.id])  # type: ignore[arg-type,index]
            state = evaluate(data, now)
            row.active.append(BoardCard(appt, st, name, state.phase, state))
        elif appt.status == "booked":
            row.later.append(BoardCard(appt, st, name, "booked"))
        else:
            row.done.append(BoardCard(appt, st, name, "discharged"))
    for row in by_chair.values():
        row.done.sort(key=lambda c: c.appointment.discharged_at or c.appointment.ends_at, reverse=True)
    return Board(clinic, now, list(by_chair.values()))


def board_json(board: Board) -> dict[str, Any]:
    tz = board.tz

    def check(s: rules.CheckState | None) -> dict[str, Any] | None:
        if s is None:
            return None
        return {"key": s.key, "label": s.label, "status": s.status, "due_at": both_zones(s.due_at, tz), "missing": list(s.missing)}

    def card(c: BoardCard) -> dict[str, Any]:
        a = c.appointment
        out: dict[str, Any] = {
            "appointment_id": a.id,
            "patient": c.name,
            "kind": c.session_type.kind,
            "status": a.status,
            "phase": c.phase,
            "phase_label": c.phase_label,
            "starts_at": both_zones(a.starts_at, tz),
            "checked_in_at": both_zones(a.checked_in_at, tz),
            "dosing_started_at": both_zones(a.dosing_started_at, tz),
            "discharged_at": both_zones(a.discharged_at, tz),
        }
        if c.state is not None:
            out |= {
                "minutes_since_dosing": c.state.minutes_since_dosing,
                "next_check": check(c.state.next_check),
                "overdue_checks": [check(s) for s in c.state.overdue],
                "open_alerts": [{"id": al.id, "level": al.level, "code": al.code, "message": al.message, "raised_at": both_zones(al.raised_at, tz)} for al in c.open_alerts],
                "discharge_blockers": [b.as_dict() for b in c.state.blockers],
                "escort_confirmed": a.escort_confirmed,
            }
        return out

    return {
        "clinic_id": board.clinic.id,
        "generated_at": both_zones(board.now, tz),
        "open_alerts": board.alert_count,
        "overdue_checks": board.overdue_count,
        "chairs": [
            {
                "id": row.chair.id,
                "name": row.chair.name,
                "current": [card(c) for c in row.active],
                "later_today": [card(c) for c in row.later],
                "discharged_today": [card(c) for c in row.done],
            }
            for row in board.chairs
        ],
    }
