"""The protocol's check schedule: planned checks expanded, each one's window and status counted from the actual dosing time."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

from clinic.monitoring.rules.alerts import bp_at_least, thresholds
from clinic.monitoring.rules.charting import MEASURES, Reading


@dataclass(frozen=True)
class PlannedCheck:
    key: str
    label: str
    phase: str  # pre_dose | monitoring | discharge
    at_minutes: int
    window_minutes: int
    records: tuple[str, ...]


_EXPANDED_BY_ID: dict[int, tuple[Any, tuple[PlannedCheck, ...]]] = {}


def planned_checks(protocol: Mapping[str, Any]) -> tuple[PlannedCheck, ...]:
    """The protocol's checks, repeating ones expanded (e.g. every 10 minutes until 40: 10, 20, 30, 40)."""
    # the board evaluates every session on every redraw: expand each check list once. The list object
    # itself is kept with its expansion, so a recycled id can never return another protocol's checks.
    checks = protocol.get("checks") or []
    hit = _EXPANDED_BY_ID.get(id(checks))
    if hit is not None and hit[0] is checks:
        return hit[1]
    expanded = _expanded(json.dumps(checks, sort_keys=True))
    if len(_EXPANDED_BY_ID) > 512:
        _EXPANDED_BY_ID.clear()
    _EXPANDED_BY_ID[id(checks)] = (checks, expanded)
    return expanded


@lru_cache(maxsize=64)
def _expanded(checks_json: str) -> tuple[PlannedCheck, ...]:
    out: list[PlannedCheck] = []
    for c in json.loads(checks_json):
        records = tuple(r for r in c.get("records", []) if r in MEASURES)
        phase = c.get("phase") or ("pre_dose" if c["at_minutes"] < 0 else "monitoring")
        every = c.get("repeat_every_minutes")
        if every:
            at = int(c["at_minutes"])
            until = int(c.get("until_minutes", at))
            while at <= until:
                out.append(PlannedCheck(f"{c['key']}@{at}", f"{c['label']} ({at} min)", phase, at, int(c.get("window_minutes", 5)), records))
                at += int(every)
        else:
            out.append(PlannedCheck(c["key"], c["label"], phase, int(c["at_minutes"]), int(c.get("window_minutes", 10)), records))
    return tuple(sorted(out, key=lambda p: p.at_minutes))


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
    protocol: Mapping[str, Any],
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
    for p in planned_checks(protocol):
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


def repeat_bp_checks(protocol: Mapping[str, Any], *, now: datetime, readings: Sequence[Reading]) -> list[CheckState]:
    """An 'alert' BP asks for a repeat within N minutes: one check per such reading, done by the next BP."""
    limits = thresholds(protocol)
    alert, urgent = limits["alert"], limits["urgent"]
    within = timedelta(minutes=int(alert.get("repeat_within_minutes", 5)))
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
