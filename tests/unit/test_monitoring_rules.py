"""The monitoring rules on their own: plausibility, the check schedule, alerts, the pre-dose gate and discharge blockers."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import msgspec
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from clinic.errors import RuleBroken
from clinic.monitoring import rules
from clinic.monitoring.rules import Blocker, DoseEvent, OpenAlert, Reading
from clinic.scheduling.models import SessionType
from clinic.scheduling.protocols import ESKETAMINE, KETAMINE_IV, AlertAt, Protocol, Thresholds

ESK = Protocol.of(SessionType(clinic_id=1, **ESKETAMINE))
IV = Protocol.of(SessionType(clinic_id=1, **KETAMINE_IV))
T0 = datetime(2026, 3, 2, 15, 0, tzinfo=timezone.utc)  # 10:00 in New York
TZ = "America/New_York"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def r(minutes: float, **values) -> Reading:
    return Reading(taken_at=at(minutes), id=int(minutes * 10) + 10_000, **values)


def esk_devices(*minutes: float) -> list[DoseEvent]:
    return [DoseEvent("device", at(m), device_number=i + 1, dose_mg=Decimal(28), lot_number="L1") for i, m in enumerate(minutes)]


def good_esk_readings() -> list[Reading]:
    return [
        r(-5, systolic=128, diastolic=80, spo2=98),
        r(40, systolic=140, diastolic=85, spo2=97, moaas=4, dissociation_total=3, dissociation_form="cadss6"),
        r(80, spo2=98),
        r(118, systolic=124, diastolic=78, spo2=98, moaas=5, dissociation_total=0, dissociation_form="cadss6"),
    ]


def blockers(now_min: float, **kw) -> list[Blocker]:
    args = dict(
        kind="esketamine", now=at(now_min), tz=TZ, dosing_started_at=at(0), doses=esk_devices(0, 5), readings=good_esk_readings(),
        open_alerts=[], escort_confirmed=True, requires_rems=True,
    ) | kw
    return rules.discharge_blockers(ESK, **args)


# ---- plausibility -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"systolic": 49, "diastolic": 30}, "systolic"),
        ({"systolic": 301, "diastolic": 80}, "systolic"),
        ({"systolic": 120, "diastolic": 19}, "diastolic"),
        ({"systolic": 250, "diastolic": 201}, "diastolic"),
        ({"systolic": 120, "diastolic": 120}, "diastolic"),
        ({"systolic": 120}, "diastolic"),
        ({"diastolic": 80}, "systolic"),
        ({"heart_rate": 19}, "heart_rate"),
        ({"heart_rate": 251}, "heart_rate"),
        ({"spo2": 49}, "spo2"),
        ({"spo2": 101}, "spo2"),
        ({"resp_rate": 3}, "resp_rate"),
        ({"resp_rate": 61}, "resp_rate"),
    ],
)
def test_implausible_vitals_name_the_field(values, field):
    with pytest.raises(RuleBroken) as err:
        rules.check_vitals(**values)
    assert err.value.field == field


def test_the_limits_themselves_are_plausible():
    rules.check_vitals(systolic=50, diastolic=20, heart_rate=20, spo2=50, resp_rate=4)
    rules.check_vitals(systolic=300, diastolic=200, heart_rate=250, spo2=100, resp_rate=60)


@given(sbp=st.integers(0, 400), dbp=st.integers(0, 300))
def test_a_bp_is_accepted_exactly_when_within_limits_and_diastolic_below_systolic(sbp, dbp):
    ok = 50 <= sbp <= 300 and 20 <= dbp <= 200 and dbp < sbp
    try:
        rules.check_vitals(systolic=sbp, diastolic=dbp)
        accepted = True
    except RuleBroken:
        accepted = False
    assert accepted == ok


def test_weight_limits_and_iv_dose_arithmetic():
    with pytest.raises(RuleBroken, match="Weight 24.9 kg"):
        rules.check_weight(24.9)
    with pytest.raises(RuleBroken) as err:
        rules.check_weight(None)
    assert err.value.field == "weight_kg"
    assert rules.iv_dose_mg(IV, mg_per_kg=None, weight_kg=82.35) == (Decimal("0.50"), Decimal("41.2"))
    assert rules.iv_dose_mg(IV, mg_per_kg=1.0, weight_kg=350) == (Decimal("1.00"), Decimal("350.0"))
    with pytest.raises(RuleBroken) as err:
        rules.iv_dose_mg(IV, mg_per_kg=0.05, weight_kg=80)
    assert err.value.field == "mg_per_kg"


def test_times_may_be_back_charted_twelve_hours_and_never_lie_in_the_future():
    rules.check_taken_at(T0 - timedelta(hours=12), T0)
    rules.check_taken_at(T0 + timedelta(seconds=59), T0)  # a tablet clock slightly ahead
    for bad in (T0 - timedelta(hours=12, seconds=1), T0 + timedelta(minutes=2), T0.replace(tzinfo=None)):
        with pytest.raises(RuleBroken) as err:
            rules.check_taken_at(bad, T0)
        assert err.value.field == "taken_at"
    with pytest.raises(RuleBroken, match="before check-in"):
        rules.check_taken_at(at(-1), T0, not_before=T0, not_before_what="check-in")


@given(form=st.sampled_from(["cadss6", "cadss23"]), data=st.data())
def test_cadss_totals_are_the_item_sum_within_the_forms_range(form, data):
    items = {str(n): data.draw(st.integers(0, 4)) for n in rules.CADSS_ITEMS[form]}
    cleaned, total = rules.dissociation_score(form, items)
    assert total == sum(items.values()) and cleaned == items
    assert 0 <= total <= (24 if form == "cadss6" else 92)


def test_cadss_refuses_missing_foreign_and_out_of_scale_items():
    full = {str(n): 0 for n in rules.CADSS_ITEMS["cadss6"]}
    with pytest.raises(RuleBroken) as err:
        rules.dissociation_score("cadss6", {k: v for k, v in full.items() if k != "15"})
    assert err.value.field == "item_15"
    with pytest.raises(RuleBroken, match="Item 3 is not part of CADSS-6"):
        rules.dissociation_score("cadss6", full | {"3": 1})
    with pytest.raises(RuleBroken) as err:
        rules.dissociation_score("cadss6", full | {"7": 5})
    assert err.value.field == "item_7"
    with pytest.raises(RuleBroken) as err:
        rules.dissociation_score("phq9", full)
    assert err.value.field == "dissociation_form"


def test_device_spacing():
    assert rules.device_spacing_problem([at(0), at(5), at(10)], 5, TZ) is None
    problem = rules.device_spacing_problem([at(0), at(4.5)], 5, TZ)
    assert problem is not None and problem.field == "taken_at" and "Device 2" in problem.message and "10:05" in problem.message
    assert rules.planned_devices(ESK, 84) == 3 and rules.planned_devices(ESK, 28) == 1 and rules.planned_devices(ESK, None) == 3


# ---- the check schedule -----------------------------------------------------------------------------


def test_repeating_checks_are_expanded_from_the_protocol():
    keys = [p.key for p in IV.planned_checks]
    assert keys == ["pre_dose", "infusion@10", "infusion@20", "infusion@30", "infusion@40", "recovery@55", "recovery@70", "discharge"]


def test_esketamine_schedule_from_the_actual_dosing_time():
    states = {s.key: s for s in rules.check_schedule(ESK, now=at(45), dosing_started_at=at(0), readings=good_esk_readings()[:1])}
    assert states["pre_dose"].status == "done"
    t40 = states["t40"]
    assert t40.due_at == at(40) and t40.opens_at == at(30) and t40.closes_at == at(50)
    assert t40.status == "due" and t40.missing == ("bp", "spo2", "moaas", "dissociation")
    assert states["t80"].status == "upcoming" and states["discharge"].status == "upcoming"
    later = {s.key: s for s in rules.check_schedule(ESK, now=at(51), dosing_started_at=at(0), readings=good_esk_readings()[:1])}
    assert later["t40"].status == "overdue"
    assert rules.next_check(list(later.values())).key == "t40"


def test_a_late_check_entered_for_its_key_is_done_and_marked_late():
    late = r(56, systolic=130, diastolic=80, spo2=97, moaas=5, dissociation_total=0, check_key="t40")
    untagged = r(56, systolic=130, diastolic=80, spo2=97, moaas=5, dissociation_total=0)
    tagged = {s.key: s for s in rules.check_schedule(ESK, now=at(60), dosing_started_at=at(0), readings=[late])}
    assert tagged["t40"].status == "done" and tagged["t40"].late
    plain = {s.key: s for s in rules.check_schedule(ESK, now=at(60), dosing_started_at=at(0), readings=[untagged])}
    assert plain["t40"].status == "overdue"


def test_before_dosing_the_pre_dose_check_must_be_recent_and_later_checks_wait():
    stale = rules.check_schedule(ESK, now=at(0), dosing_started_at=None, readings=[r(-25, systolic=120, diastolic=80, spo2=98)])
    assert stale[0].key == "pre_dose" and stale[0].status == "due"
    assert {s.status for s in stale[1:]} == {"pending"}
    fresh = rules.check_schedule(ESK, now=at(0), dosing_started_at=None, readings=[r(-15, systolic=120, diastolic=80, spo2=98)])
    assert fresh[0].status == "done"


@settings(max_examples=60)
@given(shift=st.integers(-600, 600), now=st.integers(-30, 200), picks=st.lists(st.integers(-20, 190), max_size=8))
def test_the_schedule_moves_with_the_dosing_time(shift, now, picks):
    readings = [r(m, systolic=120, diastolic=80, spo2=98, moaas=5, dissociation_total=0) for m in picks]
    moved = [Reading(**{**x.__dict__, "taken_at": x.taken_at + timedelta(minutes=shift)}) for x in readings]
    a = rules.check_schedule(ESK, now=at(now), dosing_started_at=at(0), readings=readings)
    b = rules.check_schedule(ESK, now=at(now + shift), dosing_started_at=at(shift), readings=moved)
    assert [(s.key, s.status) for s in a] == [(s.key, s.status) for s in b]
    assert all(y.due_at - x.due_at == timedelta(minutes=shift) for x, y in zip(a, b) if x.due_at)


@settings(max_examples=60)
@given(t1=st.integers(0, 200), t2=st.integers(0, 200))
def test_without_readings_a_check_only_moves_forward_upcoming_due_overdue(t1, t2):
    assume(t1 <= t2)
    order = {"upcoming": 0, "due": 1, "overdue": 2}
    a = rules.check_schedule(IV, now=at(t1), dosing_started_at=at(0), readings=[])
    b = rules.check_schedule(IV, now=at(t2), dosing_started_at=at(0), readings=[])
    for x, y in zip(a, b):
        if x.phase != "pre_dose":
            assert order[x.status] <= order[y.status]


# ---- alerts ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"systolic": 200, "diastolic": 90}, [("urgent", "bp_urgent")]),
        ({"systolic": 150, "diastolic": 120}, [("urgent", "bp_urgent")]),
        ({"systolic": 199, "diastolic": 90}, [("alert", "bp_high")]),
        ({"systolic": 150, "diastolic": 110}, [("alert", "bp_high")]),
        ({"systolic": 179, "diastolic": 109}, []),
        ({"spo2": 91}, [("urgent", "spo2_low")]),
        ({"spo2": 92}, []),
        ({"resp_rate": 7}, [("urgent", "rr_low")]),
        ({"resp_rate": 8}, []),
        ({"moaas": 2}, [("urgent", "moaas_low")]),
        ({"moaas": 3}, []),
        ({"heart_rate": 121}, [("alert", "hr_high")]),
        ({"heart_rate": 120}, []),
        ({"spo2": 88, "heart_rate": 130}, [("urgent", "spo2_low"), ("alert", "hr_high")]),
    ],
)
def test_alert_thresholds(values, expected):
    got = rules.evaluate_alerts(ESK, r(30, **values), previous_bp=None, before_dosing=False)
    assert [(a.level, a.code) for a in got] == expected


def test_two_alert_level_bps_in_a_row_are_urgent():
    prev = r(10, systolic=182, diastolic=90)
    got = rules.evaluate_alerts(ESK, r(14, systolic=150, diastolic=112), previous_bp=prev, before_dosing=False)
    assert [(a.level, a.code) for a in got] == [("urgent", "bp_high_repeated")]
    calm = rules.evaluate_alerts(ESK, r(14, systolic=181, diastolic=90), previous_bp=r(10, systolic=150, diastolic=90), before_dosing=False)
    assert [a.code for a in calm] == ["bp_high"]


def test_the_esketamine_pre_dose_caution_applies_before_dosing_only():
    assert [a.code for a in rules.evaluate_alerts(ESK, r(-5, systolic=141, diastolic=80), previous_bp=None, before_dosing=True)] == ["pre_dose_bp"]
    assert [a.code for a in rules.evaluate_alerts(ESK, r(-5, systolic=120, diastolic=91), previous_bp=None, before_dosing=True)] == ["pre_dose_bp"]
    assert rules.evaluate_alerts(ESK, r(-5, systolic=140, diastolic=90), previous_bp=None, before_dosing=True) == []
    assert rules.evaluate_alerts(ESK, r(30, systolic=150, diastolic=95), previous_bp=None, before_dosing=False) == []
    assert rules.evaluate_alerts(IV, r(-5, systolic=150, diastolic=95), previous_bp=None, before_dosing=True) == []
    both = rules.evaluate_alerts(ESK, r(-5, systolic=185, diastolic=95), previous_bp=None, before_dosing=True)
    assert [a.level for a in both] == ["alert", "caution"]


@given(sbp=st.integers(90, 179), dbp=st.integers(50, 109), hr=st.integers(40, 120), spo2=st.integers(92, 100), rr=st.integers(8, 30), moaas=st.integers(3, 5))
def test_readings_inside_every_limit_never_alert_after_dosing(sbp, dbp, hr, spo2, rr, moaas):
    assume(dbp < sbp)
    reading = r(30, systolic=sbp, diastolic=dbp, heart_rate=hr, spo2=spo2, resp_rate=rr, moaas=moaas)
    assert rules.evaluate_alerts(ESK, reading, previous_bp=reading, before_dosing=False) == []


@given(sbp=st.integers(200, 300), dbp=st.integers(20, 199))
def test_a_bp_at_the_urgent_level_is_always_urgent(sbp, dbp):
    levels = [a.level for a in rules.evaluate_alerts(ESK, r(30, systolic=sbp, diastolic=dbp), previous_bp=None, before_dosing=False)]
    assert levels[0] == "urgent"


def test_thresholds_are_protocol_settings():
    strict = msgspec.structs.replace(ESK, thresholds=Thresholds(alert=AlertAt(hr_above=100)))
    assert [a.code for a in rules.evaluate_alerts(strict, r(30, heart_rate=105), previous_bp=None, before_dosing=False)] == ["hr_high"]


def test_an_alert_level_bp_asks_for_a_repeat_within_five_minutes():
    high = r(30, systolic=185, diastolic=95)
    waiting = [s for s in rules.check_schedule(ESK, now=at(33), dosing_started_at=at(0), readings=[high]) if s.phase == "repeat"]
    assert len(waiting) == 1 and waiting[0].status == "due" and waiting[0].due_at == at(35)
    late = [s for s in rules.check_schedule(ESK, now=at(36), dosing_started_at=at(0), readings=[high]) if s.phase == "repeat"]
    assert late[0].status == "overdue"
    done = [s for s in rules.check_schedule(ESK, now=at(36), dosing_started_at=at(0), readings=[high, r(34, systolic=150, diastolic=85)]) if s.phase == "repeat"]
    assert done[0].status == "done" and not done[0].late


# ---- the pre-dose gate ---------------------------------------------------------------------------------


def test_dosing_needs_a_recent_pre_dose_check_and_no_open_caution():
    fine = [r(-10, systolic=130, diastolic=80, spo2=98)]
    assert rules.pre_dose_blockers(ESK, dose_time=at(0), readings=fine, open_alerts=[]) == []
    stale = rules.pre_dose_blockers(ESK, dose_time=at(0), readings=[r(-21, systolic=130, diastolic=80, spo2=98)], open_alerts=[])
    assert [b.code for b in stale] == ["pre_dose_check"] and "20 minutes" in stale[0].message
    partial = rules.pre_dose_blockers(IV, dose_time=at(0), readings=fine, open_alerts=[])
    assert "missing: HR" in partial[0].message
    caution = OpenAlert("caution", "pre_dose_bp", "Pre-dose BP 150/95 is above 140/90.")
    assert [b.code for b in rules.pre_dose_blockers(ESK, dose_time=at(0), readings=fine, open_alerts=[caution])] == ["pre_dose_caution"]


# ---- discharge ---------------------------------------------------------------------------------------------


def test_an_uneventful_esketamine_session_has_no_blockers_at_120_minutes():
    assert blockers(120) == []


def test_esketamine_needs_120_minutes_from_the_first_device():
    got = blockers(119.5)
    assert [b.code for b in got] == ["min_monitoring_time"]
    assert "at least 120 minutes from the first device: 119 so far" in got[0].message and "12:00" in got[0].message


@settings(max_examples=40)
@given(t=st.integers(118, 600), extra=st.integers(0, 600))
def test_more_time_never_brings_back_the_time_blocker(t, extra):
    first = {b.code for b in blockers(t)}
    later = {b.code for b in blockers(t + extra)}
    assert "min_monitoring_time" not in later or "min_monitoring_time" in first


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"escort_confirmed": False}, "escort_not_confirmed"),
        ({"open_alerts": [OpenAlert("alert", "hr_high", "Heart rate 130/min is above 120/min.")]}, "open_alert"),
        ({"readings": good_esk_readings() + [r(119, systolic=182, diastolic=90)]}, "bp_out_of_range"),
        ({"readings": good_esk_readings() + [r(119, spo2=91)]}, "spo2_out_of_range"),
        ({"readings": good_esk_readings() + [r(119, moaas=4)]}, "moaas_not_alert"),
        ({"readings": good_esk_readings()[:3]}, "discharge_check"),
        ({"readings": [x for x in good_esk_readings() if x.taken_at != at(40)]}, "rems_incomplete"),
        ({"dosing_started_at": None}, "not_dosed"),
    ],
)
def test_each_discharge_criterion_is_its_own_blocker(change, code):
    assert code in [b.code for b in blockers(125, **change)]


def test_iv_discharge_waits_for_the_infusion_end_and_recovery():
    doses = [DoseEvent("infusion_start", at(0), dose_mg=Decimal(40))]
    readings = [r(-5, systolic=120, diastolic=80, heart_rate=70, spo2=98), r(60, systolic=120, diastolic=80, heart_rate=70, spo2=98, moaas=5)]
    args = dict(kind="ketamine_iv", tz=TZ, dosing_started_at=at(0), readings=readings, open_alerts=[], escort_confirmed=True)
    running = rules.discharge_blockers(IV, now=at(80), doses=doses, **args)
    assert [b.code for b in running] == ["infusion_running"]
    ended = doses + [DoseEvent("infusion_end", at(60))]
    assert [b.code for b in rules.discharge_blockers(IV, now=at(80), doses=ended, **args)] == ["recovery_time"]
    assert rules.discharge_blockers(IV, now=at(90), doses=ended, **args) == []


def test_ready_to_leave_is_when_the_clinical_criteria_last_started_to_hold():
    readings = [
        r(40, systolic=150, diastolic=90, spo2=97, moaas=4),
        r(60, moaas=5),
        r(70, systolic=185, diastolic=100),
        r(80, systolic=150, diastolic=90),
        r(118, spo2=98, moaas=5),
    ]
    assert rules.ready_to_leave_estimate(ESK, dosing_started_at=at(0), readings=readings) == at(80)
    assert rules.ready_to_leave_estimate(ESK, dosing_started_at=None, readings=readings) is None


def test_phase():
    two = esk_devices(0)
    assert rules.session_phase(status="in_progress", doses=two, planned_device_count=2, blockers=[]) == "dosing"
    assert rules.session_phase(status="in_progress", doses=esk_devices(0, 5), planned_device_count=2, blockers=[Blocker("x", "y")]) == "monitoring"
    assert rules.session_phase(status="in_progress", doses=esk_devices(0, 5), planned_device_count=2, blockers=[]) == "ready"
    assert rules.session_phase(status="in_progress", doses=[DoseEvent("infusion_start", at(0))], planned_device_count=None, blockers=[]) == "dosing"
    assert rules.session_phase(status="arrived", doses=[], planned_device_count=2, blockers=[]) == "checked_in"
