"""Scheduling rules without a database: hours and DST, the grid, holds, staffing, availability, course dates."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from types import SimpleNamespace
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from clinic.scheduling import rules
from clinic.scheduling.protocols import CourseTemplate, Protocol, default_protocols
from clinic.scheduling.rules import Booked, ClinicCalendar, OnShift, Place
from clinic.seed import DEFAULT_SETTINGS, OPENING_HOURS

UTC = timezone.utc
NY = "America/New_York"
PROTOCOLS = {p["kind"]: SimpleNamespace(**{"needs_prescriber": False, "needs_therapist": False, "requires_rems": False, **p}) for p in default_protocols()}
ESK = Protocol.of(PROTOCOLS["esketamine"])
IV = Protocol.of(PROTOCOLS["ketamine_iv"])
KAP = Protocol.of(PROTOCOLS["kap"])
INTEGRATION = Protocol.of(PROTOCOLS["integration"])
CAL = ClinicCalendar.build(tz=NY, opening_hours=OPENING_HOURS, settings=DEFAULT_SETTINGS)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
MONDAY = date(2026, 1, 5)
CHAIRS = [Place(1, "chair", 0), Place(2, "chair", 1), Place(3, "room", 9)]


def at(day: date, hhmm: str, tz: str = NY) -> datetime:
    return rules.wall_to_utc(day, rules.parse_hhmm(hhmm), tz)


def staff(day: date, role: str, start: str = "08:00", end: str = "18:00", user_id: int = 1) -> OnShift:
    return OnShift(role=role, start=at(day, start), end=at(day, end), user_id=user_id)


def booked(day: date, hhmm: str, timing: Protocol, chair: int, patient: int, dose: int | None = None, id: int | None = None) -> Booked:
    w = timing.windows(at(day, hhmm), dose)
    return Booked(chair_id=chair, patient_id=patient, start=w.start, end=w.end, care_end=w.care_end,
                  monitored=timing.monitored, needs_therapist=timing.needs_therapist, id=id)


# ---- holds -------------------------------------------------------------------------------------


def test_esketamine_hold_grows_five_minutes_per_extra_device():
    assert ESK.hold_minutes(28) == 15 + 120 + 10
    assert ESK.hold_minutes(56) == 15 + 5 + 120 + 10
    assert ESK.hold_minutes(84) == 15 + 10 + 120 + 10


def test_iv_hold_is_prep_infusion_recovery_turnover():
    assert IV.hold_minutes() == 15 + 40 + 30 + 10


def test_windows_put_the_prescriber_window_after_prep_and_before_turnover():
    start = at(MONDAY, "10:00")
    w = ESK.windows(start, 56)
    assert w.clinical_start == start + timedelta(minutes=15)
    assert w.care_end == start + timedelta(minutes=140)
    assert w.end == start + timedelta(minutes=150)


def test_dose_rules():
    assert rules.check_dose(ESK, None).code == "dose_required"
    assert rules.check_dose(ESK, 70).code == "dose_not_allowed"
    assert rules.check_dose(ESK, 84) is None
    assert rules.check_dose(IV, None) is None
    assert rules.check_dose(IV, 56).field == "planned_dose_mg"


# ---- calendar and DST ----------------------------------------------------------------------------


def test_ten_oclock_local_stays_ten_oclock_across_the_march_change():
    before = at(date(2026, 3, 2), "10:00")  # EST, UTC-5
    after = at(date(2026, 3, 9), "10:00")  # EDT, UTC-4 (change on 8 March)
    assert before.hour == 15 and after.hour == 14
    assert before.astimezone(ZoneInfo(NY)).time() == after.astimezone(ZoneInfo(NY)).time() == time(10, 0)


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2060, 12, 31)), st.sampled_from([NY, "Europe/Berlin", "Australia/Sydney", "America/Los_Angeles"]))
def test_daytime_wall_times_round_trip_through_utc_on_every_day(day, tz):
    for hhmm in ("08:00", "10:00", "17:45"):
        utc = at(day, hhmm, tz)
        local = utc.astimezone(ZoneInfo(tz))
        assert local.date() == day and local.strftime("%H:%M") == hhmm


def test_local_day_is_23_hours_on_spring_forward():
    start, end = rules.local_day_bounds(date(2026, 3, 8), NY)
    assert end - start == timedelta(hours=23)


def test_spring_forward_gap_time_does_not_exist():
    assert not rules.wall_time_exists(date(2026, 3, 8), time(2, 30), NY)
    assert rules.wall_time_exists(date(2026, 3, 8), time(3, 30), NY)


def test_check_slot_refuses_each_calendar_rule_with_its_code():
    closed = ClinicCalendar.build(tz=NY, opening_hours=OPENING_HOURS, settings=DEFAULT_SETTINGS, closed=[MONDAY])
    tue = MONDAY + timedelta(days=1)
    assert rules.check_slot(at(tue, "10:00"), IV, CAL, now=NOW) is None
    assert rules.check_slot(at(tue, "10:00").replace(tzinfo=None), IV, CAL, now=NOW).code == "timezone_required"
    assert rules.check_slot(at(tue, "10:00"), IV, CAL, now=at(tue, "11:00")).code == "in_past"
    assert rules.check_slot(at(tue, "10:07"), IV, CAL, now=NOW).code == "off_grid"
    assert rules.check_slot(at(MONDAY, "10:00"), IV, closed, now=NOW).code == "closed_date"
    assert rules.check_slot(at(MONDAY + timedelta(days=6), "10:00"), IV, CAL, now=NOW).code == "closed_day"
    assert rules.check_slot(at(tue, "07:45"), IV, CAL, now=NOW).code == "outside_opening_hours"
    # IV stays 85 minutes; 16:45 would end at 18:10, after closing
    assert rules.check_slot(at(tue, "16:45"), IV, CAL, now=NOW).code == "outside_opening_hours"
    assert rules.check_slot(at(tue, "16:30"), IV, CAL, now=NOW) is None


def test_opening_hours_validation():
    assert rules.validate_opening_hours({"0": [["09:00", "17:00"]]}) is None
    assert rules.validate_opening_hours({"0": [["17:00", "09:00"]]}).code == "hours_order"
    assert rules.validate_opening_hours({"0": [["9am", "17:00"]]}).code == "hours_format"
    assert rules.validate_opening_hours({"0": [["08:00", "12:00"], ["11:00", "15:00"]]}).code == "hours_overlap"


# ---- staffing ------------------------------------------------------------------------------------


def test_covered_needs_the_union_of_shifts_without_gaps():
    s, e = at(MONDAY, "10:00"), at(MONDAY, "12:00")
    assert rules.covered(s, e, [staff(MONDAY, "prescriber", "08:00", "11:00"), staff(MONDAY, "prescriber", "11:00", "13:00")])
    assert not rules.covered(s, e, [staff(MONDAY, "prescriber", "08:00", "11:00"), staff(MONDAY, "prescriber", "11:15", "13:00")])
    assert not rules.covered(s, e, [])


def test_nurse_capacity_counts_overlapping_monitored_patients():
    nurse = [staff(MONDAY, "nurse")]
    three = [booked(MONDAY, "10:00", IV, chair=c, patient=c) for c in (1, 2, 3)]
    start = at(MONDAY, "10:30")
    assert rules.booking_problem(start=start, chair_id=4, patient_id=9, timing=IV, cal=CAL, booked=three, shifts=nurse).code == "nurse_capacity"
    # a second nurse doubles the room
    two_nurses = nurse + [staff(MONDAY, "nurse", user_id=2)]
    assert rules.booking_problem(start=start, chair_id=4, patient_id=9, timing=IV, cal=CAL, booked=three, shifts=two_nurses) is None
    # once the three have gone home (turnover does not count), there is room again
    later = at(MONDAY, "11:30")
    assert rules.booking_problem(start=later, chair_id=4, patient_id=9, timing=IV, cal=CAL, booked=three, shifts=nurse) is None


def test_unmonitored_sessions_do_not_use_nurse_capacity():
    three = [booked(MONDAY, "10:00", INTEGRATION, chair=c, patient=c) for c in (1, 2, 3)]
    start = at(MONDAY, "10:00")
    assert rules.booking_problem(start=start, chair_id=4, patient_id=9, timing=IV, cal=CAL, booked=three, shifts=[staff(MONDAY, "nurse")]) is None


def test_esketamine_needs_a_prescriber_through_dosing_and_monitoring():
    nurse = staff(MONDAY, "nurse")
    start = at(MONDAY, "10:00")
    short = staff(MONDAY, "prescriber", "08:00", "12:00")  # leaves before 12:20
    assert rules.booking_problem(start=start, chair_id=1, patient_id=1, timing=ESK, cal=CAL, booked=[], shifts=[nurse, short], dose_mg=56).code == "no_prescriber"
    enough = staff(MONDAY, "prescriber", "10:15", "12:20")  # prep may happen before the prescriber arrives
    assert rules.booking_problem(start=start, chair_id=1, patient_id=1, timing=ESK, cal=CAL, booked=[], shifts=[nurse, enough], dose_mg=56) is None


def test_a_therapist_sits_with_one_kap_patient_at_a_time():
    shifts = [staff(MONDAY, "nurse"), staff(MONDAY, "therapist")]
    first = [booked(MONDAY, "10:00", KAP, chair=1, patient=1)]
    assert rules.booking_problem(start=at(MONDAY, "11:00"), chair_id=2, patient_id=2, timing=KAP, cal=CAL, booked=first, shifts=shifts).code == "no_therapist"
    assert rules.booking_problem(start=at(MONDAY, "11:00"), chair_id=2, patient_id=2, timing=KAP, cal=CAL, booked=first, shifts=shifts + [staff(MONDAY, "therapist", user_id=2)]) is None


def test_chair_and_patient_overlap_are_named():
    shifts = [staff(MONDAY, "nurse")]
    b = [booked(MONDAY, "10:00", IV, chair=1, patient=1)]
    assert rules.booking_problem(start=at(MONDAY, "10:30"), chair_id=1, patient_id=2, timing=IV, cal=CAL, booked=b, shifts=shifts).code == "chair_taken"
    assert rules.booking_problem(start=at(MONDAY, "10:30"), chair_id=2, patient_id=1, timing=IV, cal=CAL, booked=b, shifts=shifts).code == "patient_busy"
    # back to back on one chair is fine: ranges are half-open
    assert rules.booking_problem(start=b[0].end, chair_id=1, patient_id=2, timing=IV, cal=CAL, booked=b, shifts=shifts) is None


def test_late_cancel_is_under_the_notice_period():
    start = at(MONDAY, "10:00")
    assert rules.is_late_cancel(start, start - timedelta(hours=23, minutes=59), 24)
    assert not rules.is_late_cancel(start, start - timedelta(hours=24), 24)


# ---- availability ------------------------------------------------------------------------------


def test_availability_lists_free_chairs_on_the_grid_inside_hours():
    shifts = [staff(MONDAY, "nurse")]
    cands = rules.availability(timing=IV, cal=CAL, days=[MONDAY], places=CHAIRS, booked=[], shifts=shifts, now=NOW)
    local = [c.start.astimezone(ZoneInfo(NY)) for c in cands]
    assert local[0].strftime("%H:%M") == "08:00" and local[-1].strftime("%H:%M") == "16:30"
    assert {c.chair_id for c in cands} == {1, 2}  # the room is not a chair
    assert all(c.end - c.start == timedelta(minutes=IV.hold_minutes()) for c in cands)


def test_availability_for_a_room_protocol_uses_rooms_and_needs_no_nurse():
    shifts = [staff(MONDAY, "therapist")]
    cands = rules.availability(timing=INTEGRATION, cal=CAL, days=[MONDAY], places=CHAIRS, booked=[], shifts=shifts, now=NOW)
    assert cands and {c.chair_id for c in cands} == {3}


def test_availability_skips_taken_chairs_the_patients_own_sessions_and_the_past():
    shifts = [staff(MONDAY, "nurse"), staff(MONDAY, "nurse", user_id=2)]
    b = [booked(MONDAY, "10:00", IV, chair=1, patient=7)]
    now = at(MONDAY, "09:00")
    cands = rules.availability(timing=IV, cal=CAL, days=[MONDAY], places=CHAIRS, booked=b, shifts=shifts, now=now, patient_id=7)
    assert all(c.start > now for c in cands)
    for c in cands:
        assert not rules.overlaps(c.start, c.end, b[0].start, b[0].end)  # patient 7 is busy in every chair then
    other = rules.availability(timing=IV, cal=CAL, days=[MONDAY], places=CHAIRS, booked=b, shifts=shifts, now=now, patient_id=8)
    ten = at(MONDAY, "10:00")
    assert Candidate(ten, ten + timedelta(minutes=95), 2) in other
    assert all(not (c.chair_id == 1 and rules.overlaps(c.start, c.end, b[0].start, b[0].end)) for c in other)


def test_availability_ignores_the_appointment_being_moved():
    shifts = [staff(MONDAY, "nurse")]
    b = [booked(MONDAY, "10:00", IV, chair=1, patient=7, id=42)]
    cands = rules.availability(timing=IV, cal=CAL, days=[MONDAY], places=CHAIRS, booked=b, shifts=shifts, now=NOW, patient_id=7, ignore_id=42, chair_id=1)
    assert at(MONDAY, "10:15") in {c.start for c in cands}


def test_a_page_of_availability_holds_whole_start_times_and_says_where_the_next_begins():
    cands = rules.availability(timing=IV, cal=CAL, days=[MONDAY], places=CHAIRS, booked=[], shifts=[staff(MONDAY, "nurse")], now=NOW)
    assert len(cands) == 70  # 08:00 to 16:30 on the 15-minute grid, two chairs
    first, last = rules.page(cands, after=None, limit=5)
    assert first == cands[:4] and last == at(MONDAY, "08:15")  # a fifth would split 08:30 across pages
    second, last = rules.page(cands, after=last, limit=6)
    assert second == cands[4:10] and last == at(MONDAY, "09:00")
    # the last page, exactly full: nothing follows
    assert rules.page(cands, after=at(MONDAY, "15:45"), limit=6) == (cands[-6:], None)
    assert rules.page(cands, after=at(MONDAY, "15:45"), limit=5) == (cands[-6:-2], at(MONDAY, "16:15"))
    # one start with more free chairs than a page holds is a page of its own
    assert rules.page(cands, after=None, limit=1) == (cands[:2], at(MONDAY, "08:00"))
    walked, after = [], None
    while True:
        shown, after = rules.page(cands, after=after, limit=7)
        walked += shown
        if after is None:
            break
    assert walked == cands


def test_no_availability_on_closed_days_or_without_staff():
    assert rules.availability(timing=IV, cal=CAL, days=[MONDAY], places=CHAIRS, booked=[], shifts=[], now=NOW) == []
    sunday = MONDAY - timedelta(days=1)
    assert rules.availability(timing=IV, cal=CAL, days=[sunday], places=CHAIRS, booked=[], shifts=[staff(sunday, "nurse")], now=NOW) == []


def test_nearest_alternatives_rank_by_time_then_same_chair():
    t = at(MONDAY, "10:00")
    c = [Candidate(t + timedelta(minutes=m), t + timedelta(minutes=m + 95), ch) for m, ch in ((30, 2), (-15, 2), (15, 1), (15, 2), (120, 1))]
    best = rules.nearest(c, t, chair_id=1, limit=3)
    assert [(x.start - t, x.chair_id) for x in best] == [(timedelta(minutes=15), 1), (timedelta(minutes=-15), 2), (timedelta(minutes=15), 2)]
    spread = rules.nearest(c, t, chair_id=1, limit=3, distinct_starts=True)
    assert [(x.start - t, x.chair_id) for x in spread] == [(timedelta(minutes=15), 1), (timedelta(minutes=-15), 2), (timedelta(minutes=30), 2)]


Candidate = rules.Candidate

slot = st.tuples(st.integers(0, 5), st.integers(0, 39), st.integers(1, 4), st.integers(1, 6))


@settings(max_examples=60, deadline=None)
@given(
    existing=st.lists(slot, max_size=14),
    nurses=st.integers(0, 2),
    ratio=st.integers(1, 4),
    kind=st.sampled_from(["esketamine", "ketamine_iv", "kap"]),
    prescriber=st.booleans(),
)
def test_every_candidate_keeps_every_rule(existing, nurses, ratio, kind, prescriber):
    """Whatever is booked, each candidate is on the grid, inside hours, on a free chair, and within staffing."""
    cal = ClinicCalendar.build(tz=NY, opening_hours=OPENING_HOURS, settings={"nurse_ratio": ratio, "grid_minutes": 15})
    timing = {"esketamine": ESK, "ketamine_iv": IV, "kap": KAP}[kind]
    dose = 56 if timing.doses_mg else None
    places = [Place(i, "chair", i) for i in range(1, 5)]
    shifts = [staff(MONDAY + timedelta(days=d), "nurse", user_id=n) for d in range(6) for n in range(nurses)]
    shifts += [staff(MONDAY + timedelta(days=d), "therapist", user_id=9) for d in range(6)]
    if prescriber:
        shifts += [staff(MONDAY + timedelta(days=d), "prescriber", "08:00", "14:00", user_id=8) for d in range(6)]
    # build a consistent schedule by accepting only existing sessions that keep the rules themselves
    book: list[Booked] = []
    for day_i, slot_i, chair, patient in existing:
        day = MONDAY + timedelta(days=day_i)
        start = at(day, "08:00") + timedelta(minutes=15 * slot_i)
        if rules.check_slot(start, IV, cal, now=NOW) is None and rules.booking_problem(
            start=start, chair_id=chair, patient_id=patient, timing=IV, cal=cal, booked=book, shifts=shifts
        ) is None:
            book.append(booked(day, start.astimezone(ZoneInfo(NY)).strftime("%H:%M"), IV, chair, patient))
    days = [MONDAY + timedelta(days=d) for d in range(7)]
    cands = rules.availability(timing=timing, cal=cal, days=days, places=places, booked=book, shifts=shifts, now=NOW, dose_mg=dose, patient_id=1)
    for c in cands:
        assert rules.check_slot(c.start, timing, cal, now=NOW, dose_mg=dose) is None
        assert rules.booking_problem(start=c.start, chair_id=c.chair_id, patient_id=1, timing=timing, cal=cal, booked=book, shifts=shifts, dose_mg=dose) is None
    # and nothing that keeps the rules is missing
    listed = set(cands)
    for day in days:
        for start in rules.grid_starts(day, cal, timing, dose):
            for p in places:
                ok = rules.booking_problem(start=start, chair_id=p.id, patient_id=1, timing=timing, cal=cal, booked=book, shifts=shifts, dose_mg=dose) is None
                assert ok == (Candidate(start, start + timedelta(minutes=timing.hold_minutes(dose)), p.id) in listed)


# ---- courses ---------------------------------------------------------------------------------------


def template(kind: str, name: str) -> CourseTemplate:
    return Protocol.of(PROTOCOLS[kind]).course_templates[name]


def test_esketamine_induction_is_twice_weekly_for_four_weeks():
    days = rules.course_days(template("esketamine", "induction"), MONDAY, CAL.is_open_day)
    assert len(days) == 8
    assert [d.strftime("%a") for d in days] == ["Mon", "Thu"] * 4
    weeks = [d.isocalendar()[1] for d in days]
    assert all(weeks.count(w) == 2 for w in set(weeks))


def test_iv_course_is_six_infusions_in_two_to_three_weeks_a_day_apart():
    days = rules.course_days(template("ketamine_iv", "induction"), MONDAY, CAL.is_open_day)
    assert len(days) == 6
    assert all((b - a).days >= 1 for a, b in zip(days, days[1:]))
    assert 2 <= len({d.isocalendar()[:2] for d in days}) <= 3
    assert [d.strftime("%a") for d in days] == ["Mon", "Wed", "Fri"] * 2


def test_a_closed_date_moves_the_occurrence_but_keeps_the_spacing():
    thursday = MONDAY + timedelta(days=3)
    cal = ClinicCalendar.build(tz=NY, opening_hours=OPENING_HOURS, closed=[thursday])
    tpl = template("esketamine", "induction")
    days = rules.course_days(tpl, MONDAY, cal.is_open_day)
    assert thursday not in days and len(days) == 8
    assert rules.course_span_ok(days, tpl)
    assert all(cal.is_open_day(d) for d in days)


@settings(max_examples=80, deadline=None)
@given(
    first=st.dates(min_value=date(2026, 1, 1), max_value=date(2027, 12, 31)),
    sessions=st.integers(1, 12),
    per_week=st.sampled_from([0.5, 1, 2, 3]),
    closed=st.sets(st.integers(0, 60), max_size=6),
)
def test_course_days_keep_count_order_and_spacing(first, sessions, per_week, closed):
    gap = {0.5: 14, 1: 7, 2: 2, 3: 1}[per_week]
    tpl = CourseTemplate(sessions=sessions, per_week=per_week, min_days_apart=gap)
    closed_days = {first + timedelta(days=i) for i in closed}
    cal = ClinicCalendar.build(tz=NY, opening_hours=OPENING_HOURS, closed=closed_days)
    days = rules.course_days(tpl, first, cal.is_open_day)
    assert len(days) == sessions
    assert days == sorted(days) and days[0] >= first
    assert rules.course_span_ok(days, tpl)
    if not closed_days:
        # only Sundays are closed: every session lands on an open day
        assert all(cal.is_open_day(d) for d in days)


@given(st.dates(min_value=date(2024, 1, 1), max_value=date(2030, 12, 31)))
def test_grid_starts_are_wall_clock_grid_times_on_any_day(day):
    cal = ClinicCalendar.build(tz=NY, opening_hours={str(d): [["08:00", "18:00"]] for d in range(7)})
    starts = rules.grid_starts(day, cal, IV)
    walls = [s.astimezone(ZoneInfo(NY)).strftime("%H:%M") for s in starts]
    assert walls == [f"{m // 60:02d}:{m % 60:02d}" for m in range(8 * 60, 16 * 60 + 31, 15)]


def test_grid_starts_skip_the_hour_that_does_not_exist_on_spring_forward():
    night = ClinicCalendar.build(tz=NY, opening_hours={str(d): [["00:00", "06:00"]] for d in range(7)})
    walls = [s.astimezone(ZoneInfo(NY)).strftime("%H:%M") for s in rules.grid_starts(date(2026, 3, 8), night, INTEGRATION)]
    assert "02:00" not in walls and "01:45" in walls and "03:00" in walls
    assert len(walls) == len(set(walls))
    autumn = [s.astimezone(ZoneInfo(NY)).strftime("%H:%M") for s in rules.grid_starts(date(2026, 11, 1), night, INTEGRATION)]
    assert autumn[:4] == ["00:00", "00:15", "00:30", "00:45"] and "01:30" in autumn
