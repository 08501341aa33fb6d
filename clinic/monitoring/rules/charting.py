"""What a nurse charts, as the rules see it and check it: plausible values and times, the scales, readings and doses."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import msgspec

from clinic.errors import RuleBroken

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


class Measurements(msgspec.Struct, kw_only=True):
    """What one check records, declared once: the API's submissions, the tablet's form and the service are made of it."""

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
        check_vitals(systolic=self.systolic, diastolic=self.diastolic, heart_rate=self.heart_rate, spo2=self.spo2, resp_rate=self.resp_rate)
        check_moaas(self.moaas)
        items, total = None, None
        if self.dissociation_form is not None or self.dissociation_items:
            if self.dissociation_form is None:
                raise RuleBroken("Say which dissociation form was used (cadss6 or cadss23).", field="dissociation_form")
            items, total = dissociation_score(self.dissociation_form, self.dissociation_items or {})
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
