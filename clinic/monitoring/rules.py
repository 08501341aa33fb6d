"""Pure monitoring rules (DOMAIN.md §1-2): plausibility, the protocol's check schedule, alerts, the pre-dose gate, discharge blockers.

No I/O here: services pass in what was recorded and the current time, and get decisions back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from clinic.errors import RuleBroken
from clinic.scheduling.protocols import DEFAULT_DISCHARGE, DEFAULT_THRESHOLDS
from clinic.timeutil import hm

MEASURES = ("bp", "hr", "spo2", "rr", "moaas", "dissociation")
MEASURE_LABELS = {"bp": "BP", "hr": "HR", "spo2": "SpO2", "rr": "RR", "moaas": "MOAA/S", "dissociation": "dissociation"}
LIMITS = {
    "systolic": (50, 300),
    "diastolic": (20, 200),
    "heart_rate": (20, 250),
    "spo2": (50, 100),
    "resp_rate": (4, 60),
}
FIELD_LABELS = {
    "systolic": "Systolic BP",
    "diastolic": "Diastolic BP",
    "heart_rate": "Heart rate",
    "spo2": "SpO2",
    "resp_rate": "Respiratory rate",
    "moaas": "MOAA/S",
    "weight_kg": "Weight",
}
WEIGHT_LIMITS = (Decimal(25), Decimal(350))
BACKCHART_LIMIT = timedelta(hours=12)
# a tablet's clock may run a little ahead of the server's; more than this is a wrong time, not skew
CLOCK_SKEW = timedelta(seconds=60)
MOAAS_SCALE = {
    5: "Responds readily to name in normal tone",
    4: "Lethargic response to name in normal tone",
    3: "Responds only after name is called loudly or repeatedly",
    2: "Responds only after mild prodding or shaking",
    1: "Responds only after painful trapezius squeeze",
    0: "No response after painful trapezius squeeze",
}
CADSS_ITEMS = {"cadss6": (1, 2, 6, 7, 15, 22), "cadss23": tuple(range(1, 24))}
CADSS_LABELS = {"cadss6": "CADSS-6", "cadss23": "CADSS (23 items)"}
CADSS_ANCHORS = ("Not at all", "Slightly", "Moderately", "Considerably", "Extremely")
PHASE_LABELS = {
    "booked": "Booked",
    "checked_in": "Checked in",
    "dosing": "Dosing",
    "monitoring": "Monitoring",
    "ready": "Ready for discharge",
    "discharged": "Discharged",
    "cancelled": "Cancelled",
    "noshow": "No-show",
}


def minutes(delta: timedelta) -> int:
    """Whole minutes, rounded down (a check is not done 'at 40' until 40 full minutes have passed)."""
    return int(delta.total_seconds() // 60)


# ---- plausibility -------------------------------------------------------------------------


def check_taken_at(taken_at: datetime, now: datetime, *, field: str = "taken_at", not_before: datetime | None = None, not_before_what: str = "") -> None:
    """Never in the future; back-charting up to 12 hours; never before the event it follows."""
    if taken_at.tzinfo is None:
        raise RuleBroken("The time needs a UTC offset (e.g. 2026-03-02T10:15:00-05:00).", field=field)
    if taken_at > now + CLOCK_SKEW:
        raise RuleBroken("The time is in the future; enter when it was actually taken.", field=field)
    if taken_at < now - BACKCHART_LIMIT:
        raise RuleBroken("The time is more than 12 hours ago; back-charting is limited to 12 hours.", field=field)
    if not_before is not None and taken_at < not_before:
        raise RuleBroken(f"The time is before {not_before_what}.", field=field)


def check_vitals(
    *,
    systolic: int | None = None,
    diastolic: int | None = None,
    heart_rate: int | None = None,
    spo2: int | None = None,
    resp_rate: int | None = None,
) -> None:
    values = {"systolic": systolic, "diastolic": diastolic, "heart_rate": heart_rate, "spo2": spo2, "resp_rate": resp_rate}
    if (systolic is None) != (diastolic is None):
        missing = "diastolic" if diastolic is None else "systolic"
        raise RuleBroken("Blood pressure needs both systolic and diastolic values.", field=missing)
    for name, value in values.items():
        if value is None:
            continue
        low, high = LIMITS[name]
        if not low <= value <= high:
            raise RuleBroken(f"{FIELD_LABELS[name]} {value} is outside the plausible range {low}-{high}.", field=name)
    if systolic is not None and diastolic is not None and diastolic >= systolic:
        raise RuleBroken(f"Diastolic BP {diastolic} must be below systolic {systolic}.", field="diastolic")


def check_moaas(value: int | None) -> None:
    if value is not None and value not in MOAAS_SCALE:
        raise RuleBroken(f"MOAA/S {value} is not on the scale 0-5.", field="moaas")


def dissociation_score(form: str, items: Mapping[Any, Any]) -> tuple[dict[str, int], int]:
    """Validate a CADSS answer set; returns the items keyed by item number (as text) and the total."""
    if form not in CADSS_ITEMS:
        raise RuleBroken("The dissociation form must be 'cadss6' (items 1, 2, 6, 7, 15, 22) or 'cadss23'.", field="dissociation_form")
    expected = CADSS_ITEMS[form]
    cleaned: dict[str, int] = {}
    for key, value in items.items():
        try:
            number = int(str(key).removeprefix("item_"))
        except ValueError:
            raise RuleBroken(f"Dissociation item {key!r} is not an item number.", field="dissociation_items") from None
        if number not in expected:
            raise RuleBroken(f"Item {number} is not part of {CADSS_LABELS[form]}.", field="dissociation_items")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 4:
            raise RuleBroken(f"Dissociation item {number} must be scored 0-4.", field=f"item_{number}")
        cleaned[str(number)] = value
    missing = [n for n in expected if str(n) not in cleaned]
    if missing:
        raise RuleBroken(f"{CADSS_LABELS[form]} needs every item scored; missing item {', '.join(map(str, missing))}.", field=f"item_{missing[0]}")
    return cleaned, sum(cleaned.values())


def check_weight(weight_kg: Decimal | float | int | None) -> Decimal:
    if weight_kg is None:
        raise RuleBroken("Weight is needed to calculate an IV dose.", field="weight_kg")
    try:
        w = Decimal(str(weight_kg)).quantize(Decimal("0.1"), ROUND_HALF_UP)
    except InvalidOperation:
        raise RuleBroken("Weight must be a number of kilograms.", field="weight_kg") from None
    if not w.is_finite():  # a NaN would make the range comparison below raise instead of refuse
        raise RuleBroken("Weight must be a number of kilograms.", field="weight_kg")
    low, high = WEIGHT_LIMITS
    if not low <= w <= high:
        raise RuleBroken(f"Weight {w} kg is outside the plausible range {low}-{high} kg.", field="weight_kg")
    return w


def iv_dose_mg(protocol: Mapping[str, Any], *, mg_per_kg: Decimal | float | None, weight_kg: Decimal | float) -> tuple[Decimal, Decimal]:
    """(mg/kg used, dose in mg rounded to 0.1 mg) within the protocol's allowed range."""
    spec = protocol.get("dose_mg_per_kg") or {"default": 0.5, "min": 0.1, "max": 1.0}
    try:
        per_kg = Decimal(str(spec["default"] if mg_per_kg is None else mg_per_kg)).quantize(Decimal("0.01"), ROUND_HALF_UP)
    except InvalidOperation:
        raise RuleBroken("The dose per kg must be a number.", field="mg_per_kg") from None
    if not per_kg.is_finite():
        raise RuleBroken("The dose per kg must be a number.", field="mg_per_kg")
    low, high = Decimal(str(spec["min"])), Decimal(str(spec["max"]))
    if not low <= per_kg <= high:
        raise RuleBroken(f"{per_kg} mg/kg is outside the protocol's range {low}-{high} mg/kg.", field="mg_per_kg")
    weight = check_weight(weight_kg)
    return per_kg, (per_kg * weight).quantize(Decimal("0.1"), ROUND_HALF_UP)


def planned_devices(protocol: Mapping[str, Any], dose_mg: int | None) -> int:
    per_device = int(protocol.get("mg_per_device", 28))
    if dose_mg is None:
        return max(int(d) for d in protocol.get("doses_mg", [84])) // per_device
    return max(dose_mg // per_device, 1)


def check_esketamine_dose(protocol: Mapping[str, Any], dose_mg: int | None) -> int:
    allowed = [int(d) for d in protocol.get("doses_mg", [28, 56, 84])]
    if dose_mg is None:
        raise RuleBroken(f"Choose the dose for this session ({', '.join(f'{d} mg' for d in allowed)}).", field="dose_mg")
    if dose_mg not in allowed:
        raise RuleBroken(f"{dose_mg} mg is not an allowed dose; allowed: {', '.join(f'{d} mg' for d in allowed)}.", field="dose_mg")
    return dose_mg


def device_spacing_problem(times: Sequence[datetime], spacing_minutes: int, tz: str) -> RuleBroken | None:
    """Devices in the order given (device 1, 2, ...) must each follow the previous one by the rest interval."""
    for n in range(1, len(times)):
        earliest = times[n - 1] + timedelta(minutes=spacing_minutes)
        if times[n] < earliest:
            return RuleBroken(f"Device {n + 1} must be given at least {spacing_minutes} minutes after device {n} "
                f"({hm(times[n - 1], tz)}): not before {hm(earliest, tz)}.", field="taken_at")
    return None


# ---- what was recorded, as the rules see it -------------------------------------------------


# the field whose value means a reading recorded the measure
_MEASURE_FIELD = {"bp": "systolic", "hr": "heart_rate", "spo2": "spo2", "rr": "resp_rate", "moaas": "moaas", "dissociation": "dissociation_total"}


@dataclass(frozen=True)
class Reading:
    """One current (not superseded) clinical entry."""

    taken_at: datetime
    id: int | None = None
    check_key: str | None = None
    systolic: int | None = None
    diastolic: int | None = None
    heart_rate: int | None = None
    spo2: int | None = None
    resp_rate: int | None = None
    moaas: int | None = None
    dissociation_form: str | None = None
    dissociation_total: int | None = None

    def has(self, measure: str) -> bool:
        return getattr(self, _MEASURE_FIELD[measure]) is not None

    @property
    def bp(self) -> str:
        return f"{self.systolic}/{self.diastolic}"


@dataclass(frozen=True)
class DoseEvent:
    kind: str  # device | infusion_start | infusion_end
    taken_at: datetime
    device_number: int | None = None
    dose_mg: Decimal | None = None
    lot_number: str | None = None


@dataclass(frozen=True)
class OpenAlert:
    level: str
    code: str
    message: str
    id: int | None = None


@dataclass(frozen=True)
class Blocker:
    """One unmet condition, in words a nurse or prescriber can act on."""

    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


def latest(readings: Iterable[Reading], measure: str, *, since: datetime | None = None) -> Reading | None:
    best = None
    for r in readings:
        if r.has(measure) and (since is None or r.taken_at >= since) and (best is None or r.taken_at >= best.taken_at):
            best = r
    return best


# ---- the check schedule ------------------------------------------------------------------------


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


def _coverage(records: Sequence[str], readings: Iterable[Reading]) -> tuple[tuple[str, ...], datetime | None]:
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


def _pre_dose_window(p: PlannedCheck, dose_time: datetime) -> tuple[datetime, datetime]:
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
            opens, closes = _pre_dose_window(p, dose_time)
            counted = [r for r in readings if opens <= r.taken_at <= closes]
            missing, done_at = _coverage(p.records, counted)
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
        missing, done_at = _coverage(p.records, counted)
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
    limits = _thresholds(protocol)
    alert, urgent = limits["alert"], limits["urgent"]
    within = timedelta(minutes=int(alert.get("repeat_within_minutes", 5)))
    bps = sorted((r for r in readings if r.has("bp")), key=lambda r: r.taken_at)
    out = []
    for i, r in enumerate(bps):
        if not _bp_at_least(r, alert) or _bp_at_least(r, urgent):
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


# ---- alerts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertDraft:
    level: str  # caution | alert | urgent
    code: str
    message: str


def _thresholds(protocol: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    t = protocol.get("thresholds") or {}
    return {"urgent": {**DEFAULT_THRESHOLDS["urgent"], **t.get("urgent", {})}, "alert": {**DEFAULT_THRESHOLDS["alert"], **t.get("alert", {})}}


def _bp_at_least(r: Reading, limits: Mapping[str, Any]) -> bool:
    return r.has("bp") and (r.systolic >= limits["systolic_at_least"] or r.diastolic >= limits["diastolic_at_least"])  # type: ignore[operator]


def evaluate_alerts(protocol: Mapping[str, Any], reading: Reading, *, previous_bp: Reading | None, before_dosing: bool) -> list[AlertDraft]:
    """Alerts one reading raises (urgent first). `previous_bp` is the BP reading just before it, for the two-in-a-row rule."""
    limits = _thresholds(protocol)
    urgent, alert = limits["urgent"], limits["alert"]
    out: list[AlertDraft] = []
    if reading.has("bp"):
        if _bp_at_least(reading, urgent):
            out.append(AlertDraft("urgent", "bp_urgent", f"BP {reading.bp} is at or above {urgent['systolic_at_least']}/{urgent['diastolic_at_least']}."))
        elif _bp_at_least(reading, alert):
            if previous_bp is not None and _bp_at_least(previous_bp, alert):
                out.append(
                    AlertDraft(
                        "urgent",
                        "bp_high_repeated",
                        f"BP at or above {alert['systolic_at_least']}/{alert['diastolic_at_least']} twice in a row ({previous_bp.bp}, then {reading.bp}).",
                    )
                )
            else:
                out.append(
                    AlertDraft(
                        "alert",
                        "bp_high",
                        f"BP {reading.bp} is at or above {alert['systolic_at_least']}/{alert['diastolic_at_least']}: "
                        f"repeat within {alert.get('repeat_within_minutes', 5)} minutes.",
                    )
                )
    if reading.has("spo2") and reading.spo2 < urgent["spo2_below"]:  # type: ignore[operator]
        out.append(AlertDraft("urgent", "spo2_low", f"SpO2 {reading.spo2}% is below {urgent['spo2_below']}%."))
    if reading.has("rr") and reading.resp_rate < urgent["rr_below"]:  # type: ignore[operator]
        out.append(AlertDraft("urgent", "rr_low", f"Respiratory rate {reading.resp_rate}/min is below {urgent['rr_below']}/min."))
    if reading.has("moaas") and reading.moaas <= urgent["moaas_at_most"]:  # type: ignore[operator]
        out.append(AlertDraft("urgent", "moaas_low", f"MOAA/S {reading.moaas}: responds only to prodding or less (at or below {urgent['moaas_at_most']})."))
    if reading.has("hr") and reading.heart_rate > alert["hr_above"]:  # type: ignore[operator]
        out.append(AlertDraft("alert", "hr_high", f"Heart rate {reading.heart_rate}/min is above {alert['hr_above']}/min."))
    caution = protocol.get("pre_dose_caution")
    if before_dosing and caution and reading.has("bp"):
        if reading.systolic > caution["systolic_above"] or reading.diastolic > caution["diastolic_above"]:  # type: ignore[operator]
            out.append(
                AlertDraft(
                    "caution",
                    "pre_dose_bp",
                    f"Pre-dose BP {reading.bp} is above {caution['systolic_above']}/{caution['diastolic_above']}: "
                    "dosing needs a prescriber's acknowledgement with a reason.",
                )
            )
    order = {"urgent": 0, "alert": 1, "caution": 2}
    return sorted(out, key=lambda a: order[a.level])


# ---- the pre-dose gate and discharge ------------------------------------------------------------


def _records_text(records: Iterable[str]) -> str:
    return ", ".join(MEASURE_LABELS[m] for m in records)


def pre_dose_blockers(protocol: Mapping[str, Any], *, dose_time: datetime, readings: Sequence[Reading], open_alerts: Sequence[OpenAlert]) -> list[Blocker]:
    """What stands between this patient and dosing at `dose_time`."""
    out: list[Blocker] = []
    readings = sorted(readings, key=lambda r: r.taken_at)
    for p in planned_checks(protocol):
        if p.phase != "pre_dose":
            continue
        opens, closes = _pre_dose_window(p, dose_time)
        missing, _ = _coverage(p.records, [r for r in readings if opens <= r.taken_at <= closes])
        if missing:
            span = minutes(closes - opens)
            out.append(
                Blocker(
                    "pre_dose_check",
                    f"{p.label}: record {_records_text(p.records)} in the {span} minutes before dosing (missing: {_records_text(missing)}).",
                )
            )
    for a in open_alerts:
        if a.level == "caution":
            out.append(Blocker("pre_dose_caution", f"{a.message} Not yet acknowledged by a prescriber."))
        else:
            out.append(Blocker("open_alert", f"Open {a.level}: {a.message} Acknowledge it with a note first."))
    return out


def rems_missing(protocol: Mapping[str, Any], *, dosing_started_at: datetime | None, doses: Sequence[DoseEvent], readings: Sequence[Reading]) -> list[str]:
    """Session fields of the REMS Patient Monitoring Form that the chart cannot fill yet."""
    missing: list[str] = []
    devices = [d for d in doses if d.kind == "device"]
    if not devices or dosing_started_at is None:
        return ["dose and device lot numbers"]
    for d in devices:
        if not (d.lot_number or "").strip():
            missing.append(f"lot number of device {d.device_number}")
    if not any(r.has("bp") and r.taken_at <= dosing_started_at for r in readings):
        missing.append("BP before dosing")
    if rems_bp_at_40(protocol, dosing_started_at, readings) is None:
        missing.append("BP at 40 minutes")
    post = [r for r in readings if r.taken_at > dosing_started_at]
    discharge = next((p for p in planned_checks(protocol) if p.phase == "discharge"), None)
    end_from = dosing_started_at + timedelta(minutes=(discharge.at_minutes - discharge.window_minutes) if discharge else 0)
    if latest(post, "bp", since=end_from) is None:
        missing.append("BP before the end of monitoring")
    if latest(post, "moaas") is None:
        missing.append("sedation assessment (MOAA/S)")
    if latest(post, "dissociation") is None:
        missing.append("dissociation assessment")
    return missing


def rems_bp_at_40(protocol: Mapping[str, Any], dosing_started_at: datetime, readings: Sequence[Reading]) -> Reading | None:
    """The BP reading closest to 40 minutes after dosing within that check's window."""
    check = next((p for p in planned_checks(protocol) if p.key == "t40"), None)
    at, window = (check.at_minutes, check.window_minutes) if check else (40, 10)
    target, within = dosing_started_at + timedelta(minutes=at), timedelta(minutes=window)
    candidates = [r for r in readings if r.has("bp") and abs(r.taken_at - target) <= within]
    return min(candidates, key=lambda r: abs(r.taken_at - target), default=None)


def _discharge_limits(protocol: Mapping[str, Any]) -> dict[str, Any]:
    return {**DEFAULT_DISCHARGE, **(protocol.get("discharge") or {})}


def bp_acceptable(protocol: Mapping[str, Any], r: Reading) -> bool:
    d = _discharge_limits(protocol)
    return r.has("bp") and r.systolic <= d["systolic_max"] and r.diastolic <= d["diastolic_max"]  # type: ignore[operator]


def discharge_blockers(
    protocol: Mapping[str, Any],
    *,
    kind: str,
    now: datetime,
    tz: str,
    dosing_started_at: datetime | None,
    doses: Sequence[DoseEvent],
    readings: Sequence[Reading],
    open_alerts: Sequence[OpenAlert],
    escort_confirmed: bool,
    requires_rems: bool = False,
    schedule: Sequence[CheckState] | None = None,
) -> list[Blocker]:
    """Every discharge criterion of DOMAIN.md §2 that does not hold yet; empty means a prescriber may sign."""
    out: list[Blocker] = []
    if dosing_started_at is None:
        out.append(Blocker("not_dosed", "Dosing has not started."))
    else:
        need = int(protocol.get("min_monitoring_minutes", 0))
        elapsed = now - dosing_started_at
        if elapsed < timedelta(minutes=need):
            start_word = "the first device" if kind == "esketamine" else "the start of dosing"
            out.append(
                Blocker(
                    "min_monitoring_time",
                    f"Monitoring must last at least {need} minutes from {start_word}: {minutes(elapsed)} so far "
                    f"(discharge possible from {hm(dosing_started_at + timedelta(minutes=need), tz)}).",
                )
            )
        if any(d.kind == "infusion_start" for d in doses):
            end = next((d for d in doses if d.kind == "infusion_end"), None)
            recovery = int(protocol.get("recovery_minutes_after_infusion", 0))
            if end is None:
                out.append(Blocker("infusion_running", "The end of the infusion is not recorded."))
            elif now - end.taken_at < timedelta(minutes=recovery):
                out.append(
                    Blocker(
                        "recovery_time",
                        f"Recovery must last at least {recovery} minutes after the infusion ends: {minutes(now - end.taken_at)} so far "
                        f"(from {hm(end.taken_at + timedelta(minutes=recovery), tz)}).",
                    )
                )
        if schedule is None:
            schedule = check_schedule(protocol, now=now, dosing_started_at=dosing_started_at, readings=readings)
        for s in schedule:
            if s.phase == "discharge" and s.status != "done":
                out.append(Blocker("discharge_check", f"{s.label}: record {_records_text(s.missing)}."))
        limits = _discharge_limits(protocol)
        post = [r for r in readings if r.taken_at >= dosing_started_at]
        bp = latest(post, "bp")
        if bp is None:
            out.append(Blocker("bp_missing", "No blood pressure recorded since dosing."))
        elif not bp_acceptable(protocol, bp):
            out.append(
                Blocker("bp_out_of_range", f"Last BP {bp.bp} ({hm(bp.taken_at, tz)}) is above the discharge limit {limits['systolic_max']}/{limits['diastolic_max']}.")
            )
        spo2 = latest(post, "spo2")
        if spo2 is None:
            out.append(Blocker("spo2_missing", "No SpO2 recorded since dosing."))
        elif spo2.spo2 < limits["spo2_min"]:  # type: ignore[operator]
            out.append(Blocker("spo2_out_of_range", f"Last SpO2 {spo2.spo2}% ({hm(spo2.taken_at, tz)}) is below the discharge minimum {limits['spo2_min']}%."))
        moaas = latest(post, "moaas")
        if moaas is None:
            out.append(Blocker("moaas_missing", f"No MOAA/S recorded since dosing; discharge needs {limits['moaas_required']}."))
        elif moaas.moaas != limits["moaas_required"]:
            out.append(Blocker("moaas_not_alert", f"Last MOAA/S is {moaas.moaas} ({hm(moaas.taken_at, tz)}); discharge needs {limits['moaas_required']}."))
    for a in open_alerts:
        out.append(Blocker("open_alert", f"Open {a.level}: {a.message} Acknowledge it with a note."))
    if not escort_confirmed:
        out.append(Blocker("escort_not_confirmed", "The escort who takes the patient home is not confirmed."))
    if requires_rems and dosing_started_at is not None:
        missing = rems_missing(protocol, dosing_started_at=dosing_started_at, doses=doses, readings=readings)
        if missing:
            out.append(Blocker("rems_incomplete", f"REMS monitoring form is missing: {', '.join(missing)}."))
    return out


def ready_to_leave_estimate(protocol: Mapping[str, Any], *, dosing_started_at: datetime | None, readings: Sequence[Reading]) -> datetime | None:
    """When the patient met the clinical discharge criteria for good (BP, SpO2, MOAA/S), leaving the time minimum aside."""
    if dosing_started_at is None:
        return None
    limits = _discharge_limits(protocol)
    last: dict[str, Reading] = {}
    since: datetime | None = None
    for r in sorted((r for r in readings if r.taken_at > dosing_started_at), key=lambda r: r.taken_at):
        for m in ("bp", "spo2", "moaas"):
            if r.has(m):
                last[m] = r
        ok = (
            len(last) == 3
            and bp_acceptable(protocol, last["bp"])
            and last["spo2"].spo2 >= limits["spo2_min"]  # type: ignore[operator]
            and last["moaas"].moaas == limits["moaas_required"]
        )
        if ok and since is None:
            since = r.taken_at
        elif not ok:
            since = None
    return since


# ---- phase ---------------------------------------------------------------------------------------


def session_phase(*, status: str, doses: Sequence[DoseEvent], planned_device_count: int | None, blockers: Sequence[Blocker]) -> str:
    if status == "booked":
        return "booked"
    if status == "arrived":
        return "checked_in"
    if status == "fulfilled":
        return "discharged"
    if status in ("cancelled", "noshow"):
        return status
    devices = sum(1 for d in doses if d.kind == "device")
    if devices and planned_device_count and devices < planned_device_count:
        return "dosing"
    if any(d.kind == "infusion_start" for d in doses) and not any(d.kind == "infusion_end" for d in doses):
        return "dosing"
    return "ready" if not blockers else "monitoring"
