"""Pure rule modules under hostile input: every function that reads what a person typed either accepts it or refuses
it with the module's own error naming the field; nothing else ever escapes (no TypeError, OverflowError, ...)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clinic.auth import rules as auth_rules
from clinic.billing import rules as billing_rules
from clinic.errors import RuleBroken
from clinic.monitoring import rules as monitoring_rules
from clinic.patients import rules as patient_rules
from clinic.scheduling import rules as scheduling_rules

fuzz = settings(max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))

HOSTILE = ["", " ", "0", "-1", "1e309", "NaN", "inf", "99999999999999999999999999", "\x00", "\u202e", "😀" * 50, "9" * 5000,
           "1,234.567", "$-5", "12:60", "24:00", "-01:00", "0001-01-01", "9999-12-31", "2026-02-30", "<script>", "' OR 1=1"]
text = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=60))
anything = st.one_of(st.none(), st.booleans(), text, st.integers(min_value=-(10**30), max_value=10**30),
                     st.floats(allow_nan=True, allow_infinity=True), st.decimals(allow_nan=True, allow_infinity=True),
                     st.lists(text, max_size=3), st.dictionaries(text, text, max_size=3))
big_ints = st.one_of(st.none(), st.integers(min_value=-(10**20), max_value=10**20))


# ---- auth: what staff type on the admin pages ---------------------------------------------------------------


@fuzz
@given(value=text)
def test_auth_field_checks_pass_or_refuse_in_words(value):
    for check in (auth_rules.check_password, auth_rules.check_npi, auth_rules.check_email):
        try:
            check(value)
        except RuleBroken as exc:
            assert exc.detail and exc.field


# ---- billing: money and percentages as typed --------------------------------------------------------------------


@fuzz
@given(value=anything, allow_none=st.booleans())
def test_money_and_percent_parse_or_name_the_field(value, allow_none):
    for parse in (billing_rules.cents, billing_rules.percent):
        try:
            out = parse(value, field="amount", allow_none=allow_none)
        except RuleBroken as exc:
            assert exc.field == "amount" and exc.message
        else:
            assert out is None and allow_none or isinstance(out, int) and out >= 0
            if parse is billing_rules.percent and out is not None:
                assert 0 <= out <= 100


@fuzz
@given(current=text, new=text)
def test_claim_moves_are_allowed_or_refused_in_words(current, new):
    try:
        billing_rules.check_claim_move(current, new)
    except RuleBroken as exc:
        assert exc.message


@fuzz
@given(lines=st.lists(text, max_size=5))
def test_plain_instructions_take_any_text(lines):
    assert all(isinstance(x, str) for x in billing_rules.plain_instructions(lines))


# ---- monitoring: what a nurse enters on the tablet ------------------------------------------------------------


@fuzz
@given(systolic=big_ints, diastolic=big_ints, heart_rate=big_ints, spo2=big_ints, resp_rate=big_ints, moaas=big_ints)
def test_vitals_are_plausible_or_the_field_is_named(systolic, diastolic, heart_rate, spo2, resp_rate, moaas):
    sent = {"systolic": systolic, "diastolic": diastolic, "heart_rate": heart_rate, "spo2": spo2, "resp_rate": resp_rate}
    try:
        monitoring_rules.check_vitals(**sent)
    except RuleBroken as exc:
        assert exc.field in sent and exc.message
    else:
        for name, value in sent.items():
            if value is not None:
                low, high = monitoring_rules.LIMITS[name]
                assert low <= value <= high, name
    try:
        monitoring_rules.check_moaas(moaas)
    except RuleBroken as exc:
        assert exc.field == "moaas"


@fuzz
@given(form=st.one_of(st.sampled_from(["cadss6", "cadss23"]), text),
       items=st.dictionaries(st.one_of(text, st.integers(-5, 40)), st.one_of(st.integers(-10**9, 10**9), text, st.none(), st.booleans()), max_size=25))
def test_dissociation_scores_are_whole_or_name_the_item(form, items):
    try:
        cleaned, total = monitoring_rules.dissociation_score(form, items)
    except RuleBroken as exc:
        assert exc.field and (exc.field.startswith("item_") or exc.field.startswith("dissociation")), exc.field
    else:
        assert total == sum(cleaned.values()) and all(0 <= v <= 4 for v in cleaned.values())


@fuzz
@given(weight=st.one_of(st.none(), st.integers(-(10**30), 10**30), st.floats(allow_nan=True, allow_infinity=True),
                        st.decimals(allow_nan=True, allow_infinity=True), text))
def test_weight_is_plausible_or_refused(weight):
    try:
        w = monitoring_rules.check_weight(weight)
    except RuleBroken as exc:
        assert exc.field == "weight_kg"
    else:
        low, high = monitoring_rules.WEIGHT_LIMITS
        assert isinstance(w, Decimal) and low <= w <= high


@fuzz
@given(offset_minutes=st.integers(-(10**7), 10**7), naive=st.booleans())
def test_entry_times_far_in_the_past_or_future_are_refused(offset_minutes, naive):
    now = datetime(2026, 3, 2, 15, 0, tzinfo=timezone.utc)
    try:
        taken = now + timedelta(minutes=offset_minutes)
    except OverflowError:
        return
    if naive:
        taken = taken.replace(tzinfo=None)
    try:
        monitoring_rules.check_taken_at(taken, now)
    except RuleBroken as exc:
        assert exc.field == "taken_at"
    else:
        assert not naive and now - monitoring_rules.BACKCHART_LIMIT <= taken <= now + timedelta(minutes=5)


# ---- patients: the registration form ---------------------------------------------------------------------------


patient_form = st.fixed_dictionaries({}, optional={k: anything for k in patient_rules.EDITABLE})


@fuzz
@given(data=patient_form, partial=st.booleans())
def test_patient_input_is_cleaned_or_the_first_bad_field_is_named(data, partial):
    try:
        out = patient_rules.clean_patient(dict(data), today=date(2026, 3, 2), partial=partial)
    except RuleBroken as exc:
        assert exc.field and exc.message and exc.code
        assert exc.field in patient_rules.EDITABLE or exc.field in ("rems_enrollment", "notice_consent"), exc.field
    else:
        for key in ("first_name", "last_name"):
            if key in out:
                assert out[key] and len(out[key]) <= 100
        if out.get("date_of_birth") is not None:
            assert out["date_of_birth"] <= date(2026, 3, 2)


@fuzz
@given(q=text)
def test_patient_search_reads_any_text(q):
    assert isinstance(patient_rules.parse_search(q), dict)


# ---- scheduling: setup forms -----------------------------------------------------------------------------------------


@fuzz
@given(value=text)
def test_clock_times_parse_or_raise_value_error(value):
    try:
        out = scheduling_rules.parse_hhmm(value)
    except ValueError:
        return
    assert isinstance(out, time)


hours = st.dictionaries(st.one_of(st.sampled_from([str(d) for d in range(7)]), text),
                        st.one_of(st.none(), text, st.lists(st.one_of(st.lists(st.one_of(text, st.integers()), max_size=3), text, st.none()), max_size=3)),
                        max_size=8)


@fuzz
@given(raw=hours)
def test_opening_hours_are_valid_or_the_problem_is_named(raw):
    problem = scheduling_rules.validate_opening_hours(raw)
    if problem is None:
        scheduling_rules.parse_opening_hours(raw)  # what validation let through, the calendar can read
    else:
        assert problem.field == "opening_hours" and problem.message


@pytest.mark.parametrize("tz", ["America/New_York", "Pacific/Chatham", "Asia/Kathmandu", "UTC"])
@fuzz
@given(day=st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 12, 31)), at=st.times())
def test_wall_times_convert_in_every_zone(tz, day, at):
    instant = scheduling_rules.wall_to_utc(day, at, tz)
    assert instant.tzinfo is not None
    lo, hi = scheduling_rules.local_day_bounds(day, tz)
    assert lo < hi


# ---- outcomes: a questionnaire's answers, a protocol's schedule ---------------------------------------------------


item_keys = st.sampled_from([f"q{n}" for n in range(0, 20)] + ["difficulty", "", "q9 ", "Q1"])


@fuzz
@given(instrument=st.sampled_from(["phq9", "gad7", "asrs"]), answers=st.dictionaries(item_keys, anything, max_size=22), partial=st.booleans())
def test_questionnaire_answers_are_scored_or_the_first_bad_item_is_named(instrument, answers, partial):
    from clinic.outcomes import rules as outcome_rules
    from clinic.outcomes.instruments import INSTRUMENTS

    inst = INSTRUMENTS[instrument]
    try:
        out = outcome_rules.check_answers(inst, answers, partial=partial)
    except RuleBroken as exc:
        assert exc.field and exc.detail and exc.code
    else:
        assert all(v in inst.item(k).values for k, v in out.items())
        if not partial:
            assert 0 <= outcome_rules.score(instrument, out).total <= inst.total_max


@fuzz
@given(data=st.fixed_dictionaries({}, optional={k: anything for k in ("induction_every", "end_of_course", "maintenance_days",
                                                                        "baseline_valid_days", "maintenance_templates")}))
def test_an_outcome_schedule_is_cleaned_or_the_field_is_named(data):
    from clinic.outcomes import rules as outcome_rules

    try:
        schedule = outcome_rules.clean_schedule(data)
    except RuleBroken as exc:
        assert exc.field in data or exc.field in ("induction_every", "maintenance_days", "baseline_valid_days")
    else:
        assert 0 <= schedule.induction_every <= 12 and 7 <= schedule.maintenance_days <= 180
