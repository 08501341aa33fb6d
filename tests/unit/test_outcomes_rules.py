"""Outcome rules against worked examples: every band edge, the ASRS Part A shaded boxes item by item, the item 9 flag, the
schedule of a course, the evening-before notice across daylight-saving changes, response and remission, and small cells."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from clinic.errors import RuleBroken
from clinic.outcomes import rules
from clinic.outcomes.instruments import ASRS, GAD7, INSTRUMENTS, PHQ9

UTC = timezone.utc
NY = ZoneInfo("America/New_York")


def answers_totalling(key: str, total: int, *, fixed: dict[str, int] | None = None) -> dict[str, int]:
    """A complete answer set of `key` adding up to `total` (highest answers first), with `fixed` items set as given."""
    inst = INSTRUMENTS[key]
    fixed = dict(fixed or {})
    out = dict(fixed)
    left = total - sum(fixed.values())
    top = max(inst.scored_items[0].values)
    for item in inst.scored_items:
        if item.key in fixed:
            continue
        out[item.key] = min(top, left)
        left -= out[item.key]
    assert left == 0, "the total cannot be reached"
    return out


# ---- bands --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("total,band", [(0, "minimal"), (4, "minimal"), (5, "mild"), (9, "mild"), (10, "moderate"), (14, "moderate"),
                                        (15, "moderately severe"), (19, "moderately severe"), (20, "severe"), (27, "severe")])
def test_phq9_band_edges(total, band):
    s = rules.score("phq9", answers_totalling("phq9", total))
    assert (s.total, s.band) == (total, band)


@pytest.mark.parametrize("total,band", [(0, "minimal"), (4, "minimal"), (5, "mild"), (9, "mild"), (10, "moderate"), (14, "moderate"),
                                        (15, "severe"), (21, "severe")])
def test_gad7_cut_points_5_10_15(total, band):
    s = rules.score("gad7", answers_totalling("gad7", total))
    assert (s.total, s.band) == (total, band)


def test_the_difficulty_question_is_never_added_to_the_total():
    answers = answers_totalling("phq9", 6) | {"difficulty": 3}
    assert rules.score("phq9", answers).total == 6
    assert rules.score("gad7", answers_totalling("gad7", 0) | {"difficulty": 2}).total == 0


# ---- PHQ-9 item 9 --------------------------------------------------------------------------------------------------------


def test_item_9_at_1_with_a_total_of_1_is_flagged():
    answers = {f"q{n}": 0 for n in range(1, 10)} | {"q9": 1}
    s = rules.score("phq9", rules.check_answers(PHQ9, answers))
    assert (s.total, s.band, s.safety_item, s.needs_safety_review) == (1, "minimal", 1, True)


def test_a_high_total_with_item_9_at_0_is_not_flagged():
    s = rules.score("phq9", answers_totalling("phq9", 24, fixed={"q9": 0}))
    assert (s.total, s.band, s.needs_safety_review) == (24, "severe", False)


@pytest.mark.parametrize("value", [1, 2, 3])
def test_every_answer_above_0_on_item_9_is_flagged(value):
    assert rules.score("phq9", answers_totalling("phq9", value, fixed={"q9": value})).needs_safety_review


# ---- ASRS ----------------------------------------------------------------------------------------------------------------


def _asrs(**answers: int) -> dict[str, int]:
    return {f"q{n}": 0 for n in range(1, 19)} | {k: v for k, v in answers.items()}


@pytest.mark.parametrize("n", [1, 2, 3])
def test_asrs_items_1_to_3_are_shaded_from_sometimes(n):
    assert rules.part_a_positive(_asrs(**{f"q{n}": 1})) == 0  # Rarely
    assert rules.part_a_positive(_asrs(**{f"q{n}": 2})) == 1  # Sometimes
    assert rules.part_a_positive(_asrs(**{f"q{n}": 4})) == 1  # Very Often


@pytest.mark.parametrize("n", [4, 5, 6])
def test_asrs_items_4_to_6_are_shaded_from_often(n):
    assert rules.part_a_positive(_asrs(**{f"q{n}": 2})) == 0  # Sometimes
    assert rules.part_a_positive(_asrs(**{f"q{n}": 3})) == 1  # Often
    assert rules.part_a_positive(_asrs(**{f"q{n}": 4})) == 1  # Very Often


def test_asrs_part_b_never_counts_towards_the_screen():
    assert rules.part_a_positive(_asrs(**{f"q{n}": 4 for n in range(7, 19)})) == 0


def test_asrs_screen_is_positive_at_four_shaded_answers():
    three = rules.score("asrs", _asrs(q1=2, q2=2, q3=2, q4=2, q5=2, q6=2))  # 4-6 at Sometimes: not shaded
    assert (three.part_a_positive, three.screen_positive) == (3, False)
    four = rules.score("asrs", _asrs(q1=2, q2=2, q3=2, q4=3))
    assert (four.part_a_positive, four.screen_positive) == (4, True)


def test_asrs_total_and_subscales():
    every = rules.score("asrs", _asrs(**{f"q{n}": 4 for n in range(1, 19)}))
    assert (every.total, every.inattentive, every.hyperactive) == (72, 36, 36)
    # inattentive 1-4 and 7-11, hyperactive/impulsive 5-6 and 12-18
    s = rules.score("asrs", _asrs(q1=1, q4=2, q5=3, q7=4, q11=1, q12=2, q18=3))
    assert (s.total, s.inattentive, s.hyperactive) == (16, 8, 8)
    assert ASRS.bands == () and s.band is None


# ---- answers that are refused ------------------------------------------------------------------------------------------------


def _field(fn, *args, **kw) -> str | None:
    with pytest.raises(RuleBroken) as e:
        fn(*args, **kw)
    return e.value.field


def test_a_missing_item_is_named():
    answers = answers_totalling("phq9", 3)
    del answers["q7"]
    assert _field(rules.check_answers, PHQ9, answers) == "q7"


@pytest.mark.parametrize("bad", [4, -1, "4", "x", True, 1.5, None])
def test_an_answer_outside_the_options_is_named(bad):
    answers = answers_totalling("gad7", 3) | {"q2": bad}
    field = _field(rules.check_answers, GAD7, answers)
    assert field == "q2"


def test_an_unknown_item_is_named_and_asrs_accepts_very_often():
    assert _field(rules.check_answers, GAD7, answers_totalling("gad7", 0) | {"q8": 0}) == "q8"
    assert rules.check_answers(ASRS, _asrs(q1=4))["q1"] == 4
    assert _field(rules.check_answers, ASRS, _asrs(q1=5)) == "q1"


def test_progress_may_be_partial_and_the_difficulty_question_optional():
    assert rules.check_answers(PHQ9, {"q1": "2", "q9": 0}, partial=True) == {"q1": 2, "q9": 0}
    assert "difficulty" not in rules.check_answers(PHQ9, answers_totalling("phq9", 0))


def test_an_unknown_instrument_is_named():
    assert _field(rules.instrument_or_refuse, "beck") == "instrument"


def test_a_safety_review_needs_every_part():
    assert rules.check_review("moderate", " Called, plan agreed ", True) == ("moderate", "Called, plan agreed", True)
    assert _field(rules.check_review, "medium", "x", True) == "risk_level"
    assert _field(rules.check_review, "low", "  ", True) == "action_taken"
    assert _field(rules.check_review, "low", "called", None) == "safety_plan"


# ---- which instruments, and when -----------------------------------------------------------------------------------------------


def test_instruments_follow_the_diagnosis_codes():
    assert rules.instruments_for(["F33.2"]) == ("phq9",)
    assert rules.instruments_for(["F33.2", "f41.1"]) == ("phq9", "gad7")
    assert rules.instruments_for(["F90.0"]) == ("phq9", "asrs")
    assert rules.instruments_for([]) == ("phq9",)
    assert rules.diagnosis_groups(["F32.1", "F90.2", "F43.10"]) == ("depression", "adhd")


DAY0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
SCHEDULE = rules.OutcomeSchedule()


def course(n: int, template: str = "induction", kind: str = "esketamine", every_days: int = 3, course_id: int = 1) -> list[rules.Visit]:
    return [rules.Visit(100 + i, DAY0 + timedelta(days=every_days * i), kind, course_id, template) for i in range(n)]


def due_reasons(visits, index, codes=("F33.2", "F41.1", "F90.0"), taken=()):
    due = rules.due_for(visits[index], visits=visits, taken=taken, diagnosis_codes=codes, schedule=SCHEDULE)
    return {i.instrument: i.reason for i in due.items}


def test_an_esketamine_induction_asks_at_sessions_1_3_5_7_and_8():
    visits = course(8)
    everything = {"phq9", "gad7", "asrs"}
    assert due_reasons(visits, 0) == {i: "baseline" for i in everything}
    for n in (2, 4, 6):
        assert due_reasons(visits, n - 1) == {}, n
    for n in (3, 5, 7):
        # the ASRS asks about six months: not again during induction
        assert due_reasons(visits, n - 1) == {"phq9": "induction", "gad7": "induction"}, n
    assert due_reasons(visits, 7) == {i: "end_of_course" for i in everything}


def test_an_iv_course_of_six_asks_at_sessions_1_3_5_and_6():
    visits = course(6, kind="ketamine_iv", every_days=2)
    asked = [n for n in range(1, 7) if due_reasons(visits, n - 1, codes=("F33.1",))]
    assert asked == [1, 3, 5, 6]


def test_the_schedule_is_a_setting_per_protocol():
    schedule = rules.OutcomeSchedule.of({"outcomes": {"induction_every": 3, "end_of_course": False}})
    visits = course(8)
    asked = [n for n in range(1, 9) if rules.due_for(visits[n - 1], visits=visits, taken=(), diagnosis_codes=(), schedule=schedule).items]
    assert asked == [1, 4, 7]
    assert rules.OutcomeSchedule.of({}) == SCHEDULE


def test_only_the_first_session_of_a_course_needs_a_baseline():
    visits = course(3)
    first = rules.due_for(visits[0], visits=visits, taken=(), diagnosis_codes=(), schedule=SCHEDULE)
    assert first.baseline and first.baseline_missing
    second = rules.due_for(visits[1], visits=visits, taken=(), diagnosis_codes=(), schedule=SCHEDULE)
    assert not second.baseline and not second.baseline_missing


def test_baseline_answers_count_from_14_days_before_the_visit():
    visits = course(1)
    start = visits[0].starts_at
    on_the_edge = rules.Taken("phq9", start - timedelta(days=14))
    inside = rules.Taken("phq9", start - timedelta(days=14) + timedelta(seconds=1))
    assert rules.due_for(visits[0], visits=visits, taken=[on_the_edge], diagnosis_codes=(), schedule=SCHEDULE).baseline_missing
    done = rules.due_for(visits[0], visits=visits, taken=[inside], diagnosis_codes=(), schedule=SCHEDULE)
    assert not done.baseline_missing and done.items[0].done_at == inside.completed_at


def test_answers_count_for_a_visit_only_after_the_previous_session_and_before_this_dosing():
    visits = course(3)
    before_second = rules.Taken("phq9", visits[1].starts_at - timedelta(minutes=1))
    third = rules.due_for(visits[2], visits=visits, taken=[before_second], diagnosis_codes=(), schedule=SCHEDULE)
    assert not third.items[0].done
    after_second = rules.Taken("phq9", visits[1].starts_at + timedelta(minutes=1))
    assert rules.due_for(visits[2], visits=visits, taken=[after_second], diagnosis_codes=(), schedule=SCHEDULE).items[0].done
    dosed = rules.Visit(visits[2].id, visits[2].starts_at, "esketamine", 1, "induction", visits[2].starts_at + timedelta(minutes=20))
    visits = [*visits[:2], dosed]
    late = rules.Taken("phq9", dosed.starts_at + timedelta(minutes=21))
    assert not rules.due_for(dosed, visits=visits, taken=[late], diagnosis_codes=(), schedule=SCHEDULE).items[0].done


def test_maintenance_and_single_sessions_ask_once_a_month():
    visits = course(4, template="maintenance_weekly", every_days=7)
    recent = rules.Taken("phq9", visits[0].starts_at - timedelta(days=29))
    assert due_reasons(visits, 0, codes=(), taken=[recent]) == {}
    old = rules.Taken("phq9", visits[0].starts_at - timedelta(days=31))
    assert due_reasons(visits, 0, codes=(), taken=[old]) == {"phq9": "monthly"}
    single = [rules.Visit(7, DAY0, "ketamine_iv")]
    first = rules.due_for(single[0], visits=single, taken=(), diagnosis_codes=("F41.9",), schedule=SCHEDULE)
    assert {i.instrument: i.reason for i in first.items} == {"phq9": "monthly", "gad7": "monthly"}
    assert not first.baseline_missing  # a single session is not a course: nothing blocks its dose


# ---- the evening-before notice -------------------------------------------------------------------------------------------------


def test_the_notice_goes_at_18_00_the_day_before_across_daylight_saving():
    spring = datetime(2026, 3, 9, 10, 0, tzinfo=NY)  # DST began on Sunday 8 March at 02:00
    assert rules.notice_at(spring, "America/New_York") == datetime(2026, 3, 8, 22, 0, tzinfo=UTC)  # 18:00 EDT
    before = datetime(2026, 3, 2, 10, 0, tzinfo=NY)
    assert rules.notice_at(before, "America/New_York") == datetime(2026, 3, 1, 23, 0, tzinfo=UTC)  # 18:00 EST
    autumn = datetime(2026, 11, 2, 9, 30, tzinfo=NY)  # DST ended on Sunday 1 November
    assert rules.notice_at(autumn, "America/New_York") == datetime(2026, 11, 1, 23, 0, tzinfo=UTC)
    assert rules.notice_at(autumn, "America/New_York").astimezone(NY).hour == 18


def test_the_notice_follows_the_patients_own_zone_and_calendar():
    visit = datetime(2026, 6, 10, 9, 0, tzinfo=NY)  # 06:00 in Los Angeles, the same date there
    assert rules.notice_at(visit, "America/Los_Angeles") == datetime(2026, 6, 10, 1, 0, tzinfo=UTC)  # 9 June 18:00 PDT
    early = datetime(2026, 6, 10, 0, 30, tzinfo=NY)  # still 9 June in Los Angeles: the evening before is 8 June
    assert rules.notice_at(early, "America/Los_Angeles").astimezone(ZoneInfo("America/Los_Angeles")).date().isoformat() == "2026-06-08"


def test_a_visit_under_two_hours_away_gets_no_notice_and_a_late_booking_one_at_once():
    visit = datetime(2026, 6, 10, 15, 0, tzinfo=UTC)
    assert rules.notice_send_after(visit, "UTC", visit - timedelta(hours=2)) == visit - timedelta(hours=2)
    assert rules.notice_send_after(visit, "UTC", visit - timedelta(hours=2) + timedelta(seconds=1)) is None
    assert rules.notice_send_after(visit, "UTC", visit - timedelta(days=3)) == datetime(2026, 6, 9, 18, 0, tzinfo=UTC)


# ---- response, remission, clinic rates -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("baseline,latest,response", [(20, 10, True), (20, 11, False), (9, 4, True), (9, 5, False), (0, 0, False), (1, 0, True)])
def test_response_is_a_drop_of_at_least_half(baseline, latest, response):
    assert rules.is_response(baseline, latest) is response


def test_remission_is_a_total_under_5():
    assert rules.is_remission(4) and not rules.is_remission(5)


def test_weeks_of_course_count_from_the_first_dose():
    first = DAY0
    assert rules.week_of_course(first, first) == 0
    assert rules.week_of_course(first + timedelta(seconds=1), first) == 1
    assert rules.week_of_course(first + timedelta(days=7) - timedelta(seconds=1), first) == 1
    assert rules.week_of_course(first + timedelta(days=7), first) == 2


def _track(pid, kind, baseline, latest, *, groups=("depression",), instrument="phq9"):
    taken = (rules.Taken(instrument, DAY0 - timedelta(days=1), baseline), rules.Taken(instrument, DAY0 + timedelta(days=20), latest))
    return rules.Track(pid, kind, DAY0, groups, taken)


def test_clinic_rates_with_small_cells_withheld():
    # IV: 7 patients, 5 respond (2 * latest <= baseline), 2 remit (latest < 5): the remitters are withheld
    iv = [_track(i, "ketamine_iv", b, l) for i, (b, l) in enumerate([(20, 10), (18, 9), (16, 8), (14, 7), (12, 6), (10, 6), (22, 20)])]
    # esketamine: 4 patients only: everything withheld
    esk = [_track(10 + i, "esketamine", 20, 2) for i in range(4)]
    out = rules.clinic_outcomes(iv + esk)
    cell = out.by_protocol["ketamine_iv"]["phq9"]
    assert (cell.patients, cell.responders, cell.response_rate) == (7, 5, round(5 / 7, 3))
    assert (cell.remitters, cell.remission_rate, cell.withheld) == (None, None, ["remitters"])
    assert cell.mean_change == round(sum(l - b for b, l in [(20, 10), (18, 9), (16, 8), (14, 7), (12, 6), (10, 6), (22, 20)]) / 7, 1)
    small = out.by_protocol["esketamine"]["phq9"]
    assert (small.patients, small.responders, small.withheld) == (None, None, ["patients", "responders", "remitters"])
    assert out.by_group["depression"]["phq9"].patients == 11
