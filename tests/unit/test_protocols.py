"""The protocol as one typed object: the seeded ones decode, a value left out takes its one default, an edit that does not fit names its field."""

from __future__ import annotations

import pytest

from clinic.errors import RuleBroken
from clinic.scheduling.models import SessionType
from clinic.scheduling.protocols import COLUMNS, Check, Protocol, default_protocols

IV_COLUMNS = {c: getattr(SessionType(clinic_id=1, **default_protocols()[1]), c) for c in COLUMNS}


def test_every_seeded_protocol_decodes_with_its_columns():
    for seed in default_protocols():
        protocol = Protocol.of(SessionType(clinic_id=1, **seed))
        assert (protocol.kind, protocol.prep_minutes, protocol.turnover_minutes) == (seed["kind"], seed["prep_minutes"], seed["turnover_minutes"])
        assert protocol.billing.rule == seed["protocol"]["billing"]["rule"]
        assert set(protocol.course_templates) == set(seed["protocol"]["course_templates"])


def test_a_value_left_out_takes_its_default():
    bare = Protocol.from_parts({}, IV_COLUMNS)
    urgent, alert, limits = bare.thresholds.urgent, bare.thresholds.alert, bare.discharge
    assert (urgent.systolic_at_least, urgent.diastolic_at_least, urgent.spo2_below, urgent.rr_below, urgent.moaas_at_most) == (200, 120, 92, 8, 2)
    assert (alert.systolic_at_least, alert.diastolic_at_least, alert.hr_above, alert.repeat_within_minutes) == (180, 110, 120, 5)
    assert (limits.systolic_max, limits.diastolic_max, limits.spo2_min, limits.moaas_required) == (179, 109, 92, 5)
    assert (bare.mg_per_device, bare.minutes_between_devices, bare.doses_mg, bare.infusion_minutes, bare.session_minutes) == (28, 5, (), 40, 55)
    assert bare.pre_dose_caution is None and bare.dose_mg_per_kg is None and not bare.is_iv
    assert (bare.billing.up_to_56, bare.billing.over_56, bare.billing.first, bare.billing.additional_hour, bare.billing.short_push) == (
        "G2082", "G2083", "96365", "96366", "96374")


def test_a_partial_threshold_keeps_the_other_defaults():
    stricter = Protocol.from_parts({"thresholds": {"urgent": {"spo2_below": 90}}, "discharge": {"spo2_min": 94}}, IV_COLUMNS)
    assert stricter.thresholds.urgent.spo2_below == 90 and stricter.thresholds.urgent.rr_below == 8
    assert stricter.thresholds.alert.systolic_at_least == 180
    assert stricter.discharge.spo2_min == 94 and stricter.discharge.systolic_max == 179


def test_a_check_window_is_five_minutes_when_it_repeats_and_ten_otherwise():
    assert Check(key="a", label="A", at_minutes=10, repeat_every_minutes=10).window == 5
    assert Check(key="b", label="B", at_minutes=10).window == 10
    assert Check(key="c", label="C", at_minutes=10, window_minutes=3, repeat_every_minutes=10).window == 3


@pytest.mark.parametrize(
    ("protocol", "field"),
    [
        ({"thresholds": {"urgent": {"spo2_below": "low"}}}, "thresholds.urgent.spo2_below"),
        ({"course_templates": {"weekly": {"sessions": 0}}}, "course_templates.weekly.sessions"),
        ({"course_templates": {"weekly": {"per_week": 0}}}, "course_templates.weekly.per_week"),
        ({"checks": [{"key": "t40", "label": "40 min", "at_minutes": 40, "phase": "later"}]}, "checks[0].phase"),
        ({"mg_per_device": 0}, "mg_per_device"),
    ],
)
def test_an_edit_the_protocol_cannot_hold_is_refused_naming_its_field(protocol, field):
    with pytest.raises(RuleBroken) as refused:
        Protocol.checked(protocol, IV_COLUMNS)
    assert refused.value.field == field and refused.value.code == "invalid_protocol"
