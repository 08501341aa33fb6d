"""The protocol's check schedule: planned checks expanded, each one's window and status counted from the actual dosing time."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from clinic.monitoring.rules.alerts import bp_at_least
from clinic.monitoring.rules.charting import Reading
from clinic.scheduling.protocols import PlannedCheck, Protocol


@dataclass(frozen=True)
class CheckState:
    key: str
    label: str
    phase: str
    records: tuple[str, ...]
    status: str  # pending (dosing not started) | upcoming | due | overdue | done
    due_at: datetime | None = None
    opens_at: datetime | None = None
    closes_at: datetime | None = None
    missing: tuple[str, ...] = ()
    done_at: datetime | None = None
    late: bool = False

    @property
    def open(self) -> bool:
        return self.status in ("due", "overdue")

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "phase": self.phase,
            "records": list(self.records),
            "status": self.status,
            "due_at": self.due_at,
            "window_opens_at": self.opens_at,
            "window_closes_at": self.closes_at,
            "missing": list(self.missing),
            "done_at": self.done_at,
            "late": self.late,
        }


def coverage(records: Sequence[str], readings: Iterable[Reading]) -> tuple[tuple[str, ...], datetime | None]:
    """(measures still missing, when the last missing one was recorded) over the readings given, which are oldest first."""
    missing = list(records)
    done_at = None
    for r in readings:
        hit = [m for m in missing if r.has(m)]
        if hit:
            missing = [m for m in missing if m not in hit]
            done_at = r.taken_at
        if not missing:
            break
    return tuple(missing), (done_at if not missing else None)


def pre_dose_window(p: PlannedCheck, dose_time: datetime) -> tuple[datetime, datetime]:
    return dose_time + timedelta(minutes=p.at_minutes - p.window_minutes), dose_time + timedelta(minutes=min(p.at_minutes + p.window_minutes, 0))


def check_schedule(
    protocol: Protocol,
    *,
    now: datetime,
    dosing_started_at: datetime | None,
    readings: Sequence[Reading],
) -> list[CheckState]:
    """Every check of the protocol with its due time, window and status, counted from the actual dosing time.

    A reading counts toward a check when it falls in the check's window, or when it was
    entered for that check (check_key) once the window had opened (a late check is still done, marked late).
    Before dosing, the pre-dose check is judged as if dosing were now; later checks are pending.
    """
    readings = sorted(readings, key=lambda r: r.taken_at)
    states: list[CheckState] = []
    for p in protocol.planned_checks:
        if p.phase == "pre_dose":
            dose_time = dosing_started_at or now
            opens, closes = pre_dose_window(p, dose_time)
            counted = [r for r in readings if opens <= r.taken_at <= closes]
            missing, done_at = coverage(p.records, counted)
            status = "done" if not missing else ("overdue" if dosing_started_at else "due")
            states.append(CheckState(p.key, p.label, p.phase, p.records, status, None if dosing_started_at is None else closes, opens, closes, missing, done_at))
            continue
        if dosing_started_at is None:
            states.append(CheckState(p.key, p.label, p.phase, p.records, "pending", missing=p.records))
            continue
        due = dosing_started_at + timedelta(minutes=p.at_minutes)
        opens = due - timedelta(minutes=p.window_minutes)
        closes = due + timedelta(minutes=p.window_minutes)
        open_ended = p.phase == "discharge"  # "before discharge": any reading once the window opens
        counted = [r for r in readings if r.taken_at >= opens and (open_ended or r.taken_at < closes or r.check_key == p.key)]
        missing, done_at = coverage(p.records, counted)
        if not missing:
            status = "done"
        elif now < opens:
            status = "upcoming"
        elif now <= closes:
            status = "due"
        else:
            status = "overdue"
        late = done_at is not None and done_at > closes
        states.append(CheckState(p.key, p.label, p.phase, p.records, status, due, opens, closes, missing, done_at, late))
    states.extend(repeat_bp_checks(protocol, now=now, readings=readings))
    return sorted(states, key=_schedule_order)


_LAST = datetime.max.replace(tzinfo=timezone.utc)


def _schedule_order(s: CheckState) -> datetime:
    # a stable sort on time alone keeps the protocol's order among checks not yet timed
    return s.due_at or s.opens_at or _LAST


def repeat_bp_checks(protocol: Protocol, *, now: datetime, readings: Sequence[Reading]) -> list[CheckState]:
    """An 'alert' BP asks for a repeat within N minutes: one check per such reading, done by the next BP."""
    alert, urgent = protocol.thresholds.alert, protocol.thresholds.urgent
    within = timedelta(minutes=alert.repeat_within_minutes)
    bps = sorted((r for r in readings if r.has("bp")), key=lambda r: r.taken_at)
    out = []
    for i, r in enumerate(bps):
        if not bp_at_least(r, alert) or bp_at_least(r, urgent):
            continue
        nxt = bps[i + 1] if i + 1 < len(bps) else None
        due = r.taken_at + within
        if nxt is not None:
            status, done_at = "done", nxt.taken_at
        else:
            status, done_at = ("due" if now <= due else "overdue"), None
        out.append(
            CheckState(
                f"repeat_bp@{r.id if r.id is not None else int(r.taken_at.timestamp())}",
                f"Repeat BP (after {r.bp})",
                "repeat",
                ("bp",),
                status,
                due,
                r.taken_at,
                due,
                () if done_at else ("bp",),
                done_at,
                done_at is not None and done_at > due,
            )
        )
    return out


def next_check(states: Sequence[CheckState]) -> CheckState | None:
    """What the nurse should do next: the oldest overdue check, else the one due, else the next upcoming."""
    for wanted in ("overdue", "due", "upcoming"):
        candidates = [s for s in states if s.status == wanted and (s.due_at is not None or s.phase == "pre_dose")]
        if candidates:
            return candidates[0]
    return None
