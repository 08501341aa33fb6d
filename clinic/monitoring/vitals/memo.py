"""The chart memo: what the entry gate read for the sessions this process charted lately, so the next entry may skip it."""

from __future__ import annotations

import time
from collections import OrderedDict
from datetime import datetime
from typing import Any


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


def after_write(gate: dict[str, Any], entry_id: int, at: datetime, cleaned: dict[str, Any]) -> dict[str, Any] | None:
    """The gate as this entry left the chart, or None when the gate's BP reading was not the latest one
    (it was read for a back-charted time) and so cannot stand for the next entry's."""
    last_bp = gate["last_bp_at"]
    if last_bp is not None and at < last_bp:
        return None
    after = {**gate, "chart_version": gate["chart_version"] + 1, "replay_id": None}
    if cleaned["systolic"] is not None:
        after.update(prev_id=entry_id, prev_taken_at=at, prev_systolic=cleaned["systolic"], prev_diastolic=cleaned["diastolic"], last_bp_at=at)
    return after
