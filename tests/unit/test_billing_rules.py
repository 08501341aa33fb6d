"""Billing rules without a database: patient share, course carry-forward, GFE deadlines, charges from facts."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clinic.billing import rules
from clinic.billing.rules import Line, Terms
from clinic.errors import RuleBroken
from clinic.scheduling.protocols import Billing

# ---- DOMAIN.md's worked example -------------------------------------------------------------------


def test_worked_example_patient_340_plan_160():
    terms = Terms(copay=0, coinsurance_pct=20, deductible_remaining=300_00, oop_remaining=2_000_00)
    s = rules.share_of_allowed(500_00, terms)
    assert (s.patient, s.plan) == (340_00, 160_00)
    assert (s.deductible, s.coinsurance) == (300_00, 40_00)


def test_worked_example_capped_at_oop_remaining_250():
    terms = Terms(copay=0, coinsurance_pct=20, deductible_remaining=300_00, oop_remaining=250_00)
    s = rules.share_of_allowed(500_00, terms)
    assert (s.patient, s.plan) == (250_00, 250_00)


def test_copay_comes_first_then_deductible_then_coinsurance():
    terms = Terms(copay=30_00, coinsurance_pct=10, deductible_remaining=100_00, oop_remaining=5_000_00)
    s = rules.share_of_allowed(400_00, terms)
    # 30 copay, 100 deductible, 10 % of the remaining 270
    assert s.patient == 30_00 + 100_00 + 27_00


def test_not_covered_line_is_paid_in_full_and_outside_oop():
    terms = Terms(coinsurance_pct=20, oop_remaining=0, allowed={"96365": 300_00}, not_covered=frozenset({"J3490"}))
    s = rules.visit_share([Line("96365", 1, 450_00), Line("J3490", 1, 80_00)], terms)
    assert s.patient == 80_00 and s.plan == 300_00


def test_allowed_percent_of_charge():
    terms = Terms(coinsurance_pct=0, deductible_remaining=0, oop_remaining=10_000_00, allowed_pct=80)
    assert rules.visit_share([Line("G2083", 1, 1_000_00)], terms).allowed == 800_00


def test_missing_allowed_amount_is_a_clear_refusal():
    with pytest.raises(RuleBroken, match="no allowed amount for 90837") as e:
        rules.visit_share([Line("90837", 1, 200_00)], Terms(allowed={"96365": 1}))
    assert e.value.field == "allowed_amounts"


def test_course_carries_deductible_and_oop_forward():
    terms = Terms(coinsurance_pct=20, deductible_remaining=300_00, oop_remaining=600_00, allowed={"G2083": 500_00})
    visits = [[Line("G2083", 1, 900_00)]] * 4
    shares = [s.patient for s in rules.course_shares(visits, terms)]
    # 1st: 300 deductible + 40; 2nd: 20 % of 500 = 100; 3rd: 100; 4th: only 60 left of the 600 maximum
    assert shares == [340_00, 100_00, 100_00, 60_00]
    assert sum(shares) == 600_00


money = st.integers(min_value=0, max_value=50_000_00)


@given(allowed=money, copay=money, ded=money, oop=money, pct=st.integers(0, 100))
def test_share_never_negative_never_above_allowed_or_oop(allowed, copay, ded, oop, pct):
    s = rules.share_of_allowed(allowed, Terms(copay=copay, coinsurance_pct=pct, deductible_remaining=ded, oop_remaining=oop))
    assert 0 <= s.patient <= allowed
    assert s.patient <= oop
    assert s.plan == allowed - s.patient >= 0


@given(allowed=money, copay=money, ded=money, oop=money, p1=st.integers(0, 100), p2=st.integers(0, 100))
def test_share_is_monotone_in_coinsurance(allowed, copay, ded, oop, p1, p2):
    lo, hi = sorted((p1, p2))
    base = Terms(copay=copay, deductible_remaining=ded, oop_remaining=oop)
    assert rules.share_of_allowed(allowed, replace_pct(base, lo)).patient <= rules.share_of_allowed(allowed, replace_pct(base, hi)).patient


@given(alloweds=st.lists(money, min_size=1, max_size=8), ded=money, oop=money, pct=st.integers(0, 100))
def test_course_total_never_exceeds_oop_remaining(alloweds, ded, oop, pct):
    terms = Terms(coinsurance_pct=pct, deductible_remaining=ded, oop_remaining=oop, allowed={"X": 1})
    visits = [[Line("X", a, 0)] for a in alloweds if a > 0]
    assert sum(s.patient for s in rules.course_shares(visits, terms)) <= oop


def replace_pct(t: Terms, pct: int) -> Terms:
    from dataclasses import replace

    return replace(t, coinsurance_pct=pct)


# ---- money input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("raw,expected", [("1,234.50", 123450), ("$12", 1200), (500, 500), ("0.5", 50)])
def test_cents_accepts_dollars_or_integer_cents(raw, expected):
    assert rules.cents(raw, field="x") == expected


@pytest.mark.parametrize("raw", ["-3", -1, "1.234", "abc", 12.5, True])
def test_cents_refuses_negative_or_fractional_money(raw):
    with pytest.raises(RuleBroken):
        rules.cents(raw, field="copay")


@pytest.mark.parametrize("raw", [-1, 101, "12.5", "x"])
def test_percent_outside_0_100_is_refused(raw):
    with pytest.raises(RuleBroken, match="0 and 100|0 to 100"):
        rules.percent(raw, field="coinsurance_pct")


# ---- GFE deadlines in business days ----------------------------------------------------------------

THANKSGIVING_WED = date(2026, 11, 25)  # Thanksgiving is Thursday 2026-11-26


def test_thanksgiving_weekend_one_business_day_skips_the_holiday():
    # 4 business days ahead (Fri 27, Mon 30, Tue 1, Wed 2): within 1 business day -> Friday, not Thursday
    assert rules.gfe_due(scheduled_on=THANKSGIVING_WED, service_on=date(2026, 12, 2), reason="scheduled") == date(2026, 11, 27)


def test_thanksgiving_weekend_ten_business_days_gives_three():
    # Fri 27, Mon 30, Tue 1 December
    assert rules.gfe_due(scheduled_on=THANKSGIVING_WED, service_on=date(2026, 12, 14), reason="scheduled") == date(2026, 12, 1)


def test_under_three_business_days_across_the_holiday_needs_no_gfe():
    # Wed -> Mon is 5 calendar days but only 2 business days (Thursday is Thanksgiving)
    assert rules.business_days_between(THANKSGIVING_WED, date(2026, 11, 30)) == 2
    assert rules.gfe_due(scheduled_on=THANKSGIVING_WED, service_on=date(2026, 11, 30), reason="scheduled") is None


def test_clinic_closed_date_counts_like_a_holiday():
    closed = {date(2026, 11, 27)}  # the clinic also closes the day after Thanksgiving
    assert rules.gfe_due(scheduled_on=THANKSGIVING_WED, service_on=date(2026, 12, 3), reason="scheduled", closed=closed) == date(2026, 11, 30)


def test_july_fourth_observed_on_friday():
    # 2026-07-04 is a Saturday: observed Friday 3 July
    assert not rules.is_business_day(date(2026, 7, 3))
    assert rules.add_business_days(date(2026, 7, 2), 1) == date(2026, 7, 6)


def test_on_request_three_business_days_and_scope_change_one_before_service():
    assert rules.gfe_due(scheduled_on=THANKSGIVING_WED, service_on=None, reason="request") == date(2026, 12, 1)
    # service Monday 30 Nov: the business day before is Friday 27
    assert rules.gfe_due(scheduled_on=date(2026, 11, 20), service_on=date(2026, 11, 30), reason="scope_change") == date(2026, 11, 27)


def test_deadline_state():
    assert rules.deadline_state(date(2026, 11, 27), date(2026, 11, 30)) == "late"
    assert rules.deadline_state(date(2026, 11, 30), date(2026, 11, 30)) == "due_today"
    assert rules.deadline_state(None, date(2026, 11, 30)) == "none"


# ---- charges from session facts --------------------------------------------------------------------

ESK = Billing(rule="esketamine")
IV = Billing(rule="infusion")


@pytest.mark.parametrize("dose,code", [(28, "G2082"), (56, "G2082"), (84, "G2083")])
def test_esketamine_dose_picks_g_code(dose, code):
    assert rules.charge_lines(ESK, rules.SessionFacts(dose_mg=dose)) == [(code, 1)]


@pytest.mark.parametrize(
    "minutes,lines",
    [
        (10, [("96374", 1)]),
        (15, [("96374", 1)]),
        (16, [("96365", 1)]),
        (40, [("96365", 1)]),
        (90, [("96365", 1)]),
        (91, [("96365", 1), ("96366", 1)]),
        (150, [("96365", 1), ("96366", 1)]),
        (151, [("96365", 1), ("96366", 2)]),
    ],
)
def test_infusion_minutes_to_codes(minutes, lines):
    assert rules.charge_lines(IV, rules.SessionFacts(infusion_minutes=minutes)) == lines


@pytest.mark.parametrize("minutes,code", [(15, None), (16, "90832"), (37, "90832"), (38, "90834"), (52, "90834"), (53, "90837")])
def test_therapy_minutes_to_codes(minutes, code):
    got = rules.charge_lines(Billing(rule="therapy_minutes"), rules.SessionFacts(therapy_minutes=minutes))
    assert got == ([(code, 1)] if code else [])


def test_no_dose_recorded_means_no_charge_rather_than_a_guess():
    assert rules.charge_lines(ESK, rules.SessionFacts()) == []


# ---- overage, claims, message text -----------------------------------------------------------------


def test_overage_flag_at_400_dollars():
    assert rules.overage({"clinic": 1_000_00}, {"clinic": 1_399_99}) == {}
    assert rules.overage({"clinic": 1_000_00}, {"clinic": 1_400_00}) == {"clinic": 400_00}


def test_claim_moves_follow_the_states():
    rules.check_claim_move("draft", "submitted")
    rules.check_claim_move("submitted", "partially_paid")
    with pytest.raises(RuleBroken, match="closed"):
        rules.check_claim_move("closed", "submitted")
    with pytest.raises(RuleBroken, match="draft can move to submitted, closed"):
        rules.check_claim_move("draft", "paid")


def test_instructions_naming_a_drug_or_dose_are_left_out():
    lines = ["Do not eat for 2 hours before your visit.", "Bring your Spravato card.", "Dose is 56 mg.", "Ketamine day"]
    assert rules.plain_instructions(lines) == ["Do not eat for 2 hours before your visit."]
