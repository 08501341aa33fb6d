"""The live board's content: every chair, who is in it, phase, time since dosing, next check, overdue checks and open alerts.

Two round trips whatever the number of sessions, sent on the session's driver connection: the clinic with its chairs
and session types, then the day's appointments, each live one with its current entries, doses and open alerts. Rows
become small read-only views and the rules' own Reading and DoseEvent (no ORM objects: a redraw touches every entry);
the rules then run in memory per session.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime, time, timedelta
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo

from msgspec import UNSET
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import Actor, record_read
from clinic.auth.permissions import allows
from clinic.db import session_driver
from clinic.monitoring import rules, schemas
from clinic.monitoring.models import AlertLevel
from clinic.monitoring.service.session import CURRENT_DOSE, CURRENT_ENTRY, MONITORED_STATES, SessionData, SessionState, dose_order, evaluate_current, open_alert_of
from clinic.scheduling.protocols import Protocol, protocol_from_json, protocol_json
from clinic.timeutil import both_zones, utcnow

KIND_LABELS = {"esketamine": "Esketamine", "ketamine_iv": "IV ketamine", "kap": "KAP"}


# ---- what the board reads: views of the columns it shows, filled in column order ----------------------------------


@dataclass(slots=True)
class BoardClinic:
    id: int
    timezone: str


@dataclass(slots=True)
class BoardChair:
    id: int
    name: str


@dataclass(slots=True)
class BoardAppointment:
    id: int
    patient_id: int
    session_type_id: int
    chair_id: int
    status: str
    starts_at: datetime
    ends_at: datetime
    checked_in_at: datetime | None
    dosing_started_at: datetime | None
    discharged_at: datetime | None
    escort_confirmed: bool
    planned_dose_mg: int | None
    facts: dict[str, Any]


@dataclass(slots=True)
class BoardAlert:
    id: int
    level: str
    code: str
    message: str
    raised_at: datetime
    acknowledged_at: datetime | None  # always None: only open alerts are read


def _columns(alias: str, view: type) -> str:
    """The view's fields as a column list, so the SQL always selects them in the order the view is filled."""
    return ", ".join(f"{alias}.{f.name}" for f in fields(view))


# the clinic, its chairs in board order, and its session types' protocols, each as JSON text (decoded once per
# process, see protocol_from_json) rather than records (a record holding jsonb decodes with a binary JSON codec only)
_HEAD = f"""
SELECT c.id, c.timezone,
       ARRAY(SELECT ROW({_columns("ch", BoardChair)}) FROM chairs ch
             WHERE ch.clinic_id = c.id AND ch.active AND ch.kind = 'chair' ORDER BY ch.sort_order, ch.name) AS chairs,
       ARRAY(SELECT ROW(st.id, {protocol_json("st")}::text) FROM session_types st WHERE st.clinic_id = c.id) AS types
FROM clinics c WHERE c.id = $1
"""
# the day in every chair; a live session (arrived or in progress, whatever day it began) with only what is current:
# no entry or dose that was corrected or entered in error, no acknowledged alert, in the session page's order
_DAY = f"""
SELECT {_columns("a", BoardAppointment)}, p.first_name, p.last_name, live.entries, live.doses, live.alerts,
       EXISTS (SELECT 1 FROM safety_reviews r WHERE r.patient_id = a.patient_id AND r.reviewed_at IS NULL) AS safety_review
FROM appointments a
JOIN patients p ON p.id = a.patient_id
JOIN chairs ch ON ch.id = a.chair_id
LEFT JOIN LATERAL (
    SELECT ARRAY(SELECT ROW({_columns("e", rules.Reading)}) FROM clinical_entries e
                 WHERE e.appointment_id = a.id AND {CURRENT_ENTRY}
                 ORDER BY e.taken_at, e.id) AS entries,
           ARRAY(SELECT ROW({_columns("d", rules.DoseEvent)}) FROM dosing_entries d
                 WHERE d.appointment_id = a.id AND {CURRENT_DOSE}
                 ORDER BY d.taken_at, d.id) AS doses,
           ARRAY(SELECT ROW({_columns("s", BoardAlert)}) FROM session_alerts s
                 WHERE s.appointment_id = a.id AND s.acknowledged_at IS NULL
                 ORDER BY s.raised_at, s.id) AS alerts
    WHERE a.status = ANY($4::text[])
) live ON true
WHERE a.clinic_id = $1 AND ch.kind = 'chair' AND a.status NOT IN ('cancelled', 'noshow')
  AND ((a.starts_at >= $2 AND a.starts_at < $3) OR a.status = ANY($4::text[]))
ORDER BY a.starts_at, a.id
"""
_APPOINTMENT_FIELDS = len(fields(BoardAppointment))


def worst_level(levels: Iterable[str | None]) -> str | None:
    """The most serious alert level among `levels` (None when there is none)."""
    present = set(levels)
    return next((lvl for lvl in reversed(AlertLevel) if lvl in present), None)


def board_name(first: str, last: str) -> str:
    """First name and last initial: enough for staff, little for a passer-by."""
    initial = (last or "").strip()[:1]
    return f"{(first or '').strip()} {initial}." if initial else (first or "").strip()


@dataclass
class BoardCard:
    appointment: BoardAppointment
    protocol: Protocol
    name: str
    phase: str
    state: SessionState | None = None
    safety_review: bool = False  # a questionnaire answer (PHQ-9 item 9) awaits a prescriber's review: no dosing until then
    open_alerts: list[BoardAlert] = field(init=False)
    worst_alert: str | None = field(init=False)

    def __post_init__(self) -> None:
        self.open_alerts = self.state.data.open_alerts() if self.state else []
        self.worst_alert = worst_level(a.level for a in self.open_alerts)

    @property
    def phase_label(self) -> str:
        return rules.PHASE_LABELS.get(self.phase, self.phase)

    @property
    def kind_label(self) -> str:
        return KIND_LABELS.get(self.protocol.kind, self.protocol.name)


@dataclass
class ChairRow:
    chair: BoardChair
    active: list[BoardCard] = field(default_factory=list)
    later: list[BoardCard] = field(default_factory=list)
    done: list[BoardCard] = field(default_factory=list)

    @property
    def tone(self) -> str:
        """The chair card's colour (a CSS class): its worst open alert, else overdue checks, else none."""
        worst = worst_level([*(c.worst_alert for c in self.active), *("alert" for c in self.active if c.safety_review)])
        if worst is not None:
            return "alerting" if worst == "alert" else worst
        return "overdue" if any(c.state.overdue for c in self.active if c.state) else ""


@dataclass
class Board:
    clinic: BoardClinic
    now: datetime
    chairs: list[ChairRow]

    @property
    def tz(self) -> str:
        return self.clinic.timezone

    @cached_property
    def active(self) -> list[BoardCard]:
        return [c for row in self.chairs for c in row.active]

    @cached_property
    def alert_count(self) -> int:
        return sum(len(c.open_alerts) for c in self.active)

    @cached_property
    def overdue_count(self) -> int:
        return sum(len(c.state.overdue) for c in self.active if c.state)


def day_bounds(now: datetime, tz: str) -> tuple[datetime, datetime]:
    zone = ZoneInfo(tz)
    day = now.astimezone(zone).date()
    start = datetime.combine(day, time(0), zone)
    return start, datetime.combine(day + timedelta(days=1), time(0), zone)


async def load_board(session: AsyncSession, *, clinic_id: int, now: datetime | None = None) -> Board:
    now = now or utcnow()
    conn = await session_driver(session)
    head = await conn.fetchrow(_HEAD, clinic_id)
    if head is None:
        raise LookupError(clinic_id)
    clinic = BoardClinic(head["id"], head["timezone"])
    # the few session types once, rather than their protocol JSON decoded again on every appointment row
    types = {type_id: protocol_from_json(text) for type_id, text in head["types"]}
    by_chair = {c[0]: ChairRow(BoardChair(*c)) for c in head["chairs"]}
    start, end = day_bounds(now, clinic.timezone)
    reading, dose_event = rules.Reading, rules.DoseEvent
    for r in await conn.fetch(_DAY, clinic_id, start, end, MONITORED_STATES):
        appt = BoardAppointment(*r[:_APPOINTMENT_FIELDS])
        row = by_chair.get(appt.chair_id)
        protocol = types.get(appt.session_type_id)
        if row is None or protocol is None:
            continue
        name = board_name(r["first_name"], r["last_name"])
        if appt.status in MONITORED_STATES:
            alerts = [BoardAlert(*a) for a in r["alerts"]]
            # the board never needs the patient record itself, only the name shown; entries and doses go to the rules
            # directly, already current, so the session data carries none of their rows
            data = SessionData(appt, protocol, None, clinic, row.chair, alerts=alerts)  # type: ignore[arg-type]
            state = evaluate_current(
                data,
                now,
                readings=[reading(*e) for e in r["entries"]],
                doses=sorted((dose_event(*d) for d in r["doses"]), key=dose_order),
                open_alerts=[open_alert_of(a) for a in alerts],  # type: ignore[arg-type]
            )
            row.active.append(BoardCard(appt, protocol, name, state.phase, state, r["safety_review"]))
        elif appt.status == "booked":
            row.later.append(BoardCard(appt, protocol, name, "booked", safety_review=r["safety_review"]))
        else:
            row.done.append(BoardCard(appt, protocol, name, "discharged"))
    for row in by_chair.values():
        row.done.sort(key=lambda c: c.appointment.discharged_at or c.appointment.ends_at, reverse=True)
    return Board(clinic, now, list(by_chair.values()))


def shows_clinical_detail(roles: tuple[str, ...] | list[str]) -> bool:
    """Minimum necessary: whoever may not open a session (the front desk) sees who is where and the phase, no vital
    values, doses, checks or alert text."""
    return allows("session.read", roles)


def record_board_read(session: AsyncSession, *, actor: Actor, board: Board, view: str) -> None:
    cards = [c for row in board.chairs for c in (*row.active, *row.later, *row.done)]
    record_read(session, actor=actor, what="board", query={"view": view}, rows=len(cards), patient_ids=[c.appointment.patient_id for c in cards])


def board_json(board: Board, *, clinical: bool) -> schemas.BoardOut:
    tz = board.tz

    def check(s: rules.CheckState | None) -> schemas.BoardCheck | None:
        if s is None:
            return None
        return schemas.BoardCheck(key=s.key, label=s.label, status=s.status, due_at=both_zones(s.due_at, tz), missing=list(s.missing))

    def card(c: BoardCard) -> schemas.BoardCard:
        a = c.appointment
        charted: dict[str, Any] = {"safety_review_open": c.safety_review} if clinical else {}
        if c.state is not None and clinical:
            charted |= dict(
                minutes_since_dosing=c.state.minutes_since_dosing,
                next_check=check(c.state.next_check),
                overdue_checks=[check(s) for s in c.state.overdue],
                open_alerts=[schemas.BoardAlert(id=al.id, level=al.level, code=al.code, message=al.message, raised_at=both_zones(al.raised_at, tz))
                             for al in c.open_alerts],
                discharge_blockers=[schemas.BlockerOut(code=b.code, message=b.message) for b in c.state.blockers],
                escort_confirmed=a.escort_confirmed,
            )
        return schemas.BoardCard(
            appointment_id=a.id,
            patient=c.name,
            kind=c.protocol.kind,
            status=a.status,
            phase=c.phase,
            phase_label=c.phase_label,
            starts_at=both_zones(a.starts_at, tz),
            checked_in_at=both_zones(a.checked_in_at, tz),
            dosing_started_at=both_zones(a.dosing_started_at, tz),
            discharged_at=both_zones(a.discharged_at, tz),
            **charted,
        )

    return schemas.BoardOut(
        clinic_id=board.clinic.id,
        generated_at=both_zones(board.now, tz),
        open_alerts=board.alert_count if clinical else UNSET,
        overdue_checks=board.overdue_count if clinical else UNSET,
        chairs=[
            schemas.BoardChair(
                id=row.chair.id,
                name=row.chair.name,
                current=[card(c) for c in row.active],
                later_today=[card(c) for c in row.later],
                discharged_today=[card(c) for c in row.done],
            )
            for row in board.chairs
        ],
    )
