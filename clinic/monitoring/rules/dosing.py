"""Dose rules: the IV dose by weight, esketamine's allowed doses and devices, and the rest between devices."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from clinic.errors import RuleBroken
from clinic.monitoring.rules.charting import check_weight
from clinic.scheduling.protocols import DosePerKg, Protocol
from clinic.timeutil import hm


def iv_dose_mg(protocol: Protocol, *, mg_per_kg: Decimal | float | None, weight_kg: Decimal | float) -> tuple[Decimal, Decimal]:
    """(mg/kg used, dose in mg rounded to 0.1 mg) within the protocol's allowed range."""
    spec = protocol.dose_mg_per_kg or DosePerKg()
    try:
        per_kg = Decimal(str(spec.default if mg_per_kg is None else mg_per_kg)).quantize(Decimal("0.01"), ROUND_HALF_UP)
    except InvalidOperation:
        raise RuleBroken("The dose per kg must be a number.", field="mg_per_kg") from None
    if not per_kg.is_finite():
        raise RuleBroken("The dose per kg must be a number.", field="mg_per_kg")
    low, high = Decimal(str(spec.min)), Decimal(str(spec.max))
    if not low <= per_kg <= high:
        raise RuleBroken(f"{per_kg} mg/kg is outside the protocol's range {low}-{high} mg/kg.", field="mg_per_kg")
    weight = check_weight(weight_kg)
    return per_kg, (per_kg * weight).quantize(Decimal("0.1"), ROUND_HALF_UP)


def planned_devices(protocol: Protocol, dose_mg: int | None) -> int:
    per_device = protocol.mg_per_device
    if dose_mg is None:
        return max(protocol.doses_mg, default=per_device) // per_device
    return max(dose_mg // per_device, 1)


def check_esketamine_dose(protocol: Protocol, dose_mg: int | None) -> int:
    allowed = protocol.doses_mg
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
