"""Demo data for scheduling: chairs, the five protocols, staff shifts, patients, a week of history and two weeks of bookings with courses."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from clinic.patients.models import MEDICATION_FLAGS, Patient
from clinic.scheduling import rules
from clinic.scheduling.models import Appointment, Chair, Course, SessionType, Shift
from clinic.scheduling.protocols import Protocol, default_protocols
from clinic.scheduling.rules import Booked, ClinicCalendar, OnShift, Place
from clinic.timeutil import utcnow

FIRST = ("Maya", "James", "Olivia", "Daniel", "Sofia", "Marcus", "Hannah", "Luis", "Grace", "Ethan", "Priya", "Noah", "Chloe",
         "Samuel", "Aisha", "Benjamin", "Elena", "Tyler", "Naomi", "Isaac", "Rosa", "Kevin", "Leah", "Omar", "Julia", "Andre",
         "Megan", "Victor", "Tessa", "Harold", "Ingrid", "Desmond", "Yuki", "Patrick", "Fatima", "Colin")
LAST = ("Okafor", "Brennan", "Nguyen", "Kowalski", "Ramirez", "Whitfield", "Lindqvist", "Castillo", "Osei", "Harrington",
        "Raman", "Fitzgerald", "Moreau", "Abernathy", "Haddad", "Sorensen", "Petrova", "Delgado", "Achebe", "Kaplan", "Duarte",
        "Mbeki", "Chen", "Farouk", "Novak", "Jefferson", "Albright", "Ivanova", "Quinn", "Stroud", "Halvorsen", "Pryce",
        "Tanaka", "Gallagher", "Rahman", "MacLeod")
ESCORTS = ("Sam", "Alex", "Jordan", "Taylor", "Chris", "Pat", "Robin", "Jamie", "Morgan", "Casey")
DIAGNOSES = (["F33.2"], ["F33.1"], ["F32.2"], ["F33.2", "F41.1"], ["F43.10"], ["F32.1", "F41.1"], ["F33.1", "F43.10"])
CANCEL_REASONS = ("Patient request", "Patient unwell", "Transport or escort unavailable", "Clinical decision")
HISTORY_DAYS = 7
# courses need staff on shift for their whole span, beyond the two weeks of single bookings
COURSE_HORIZON_DAYS = 35


async def seed(session, ctx) -> None:
    """Add scheduling demo rows inside the seeding transaction (see clinic.seed.SeedContext)."""
    clinic = ctx.clinic
    rng = ctx.rng
    tz = clinic.timezone
    zone = ZoneInfo(tz)
    now = utcnow()
    today = now.astimezone(zone).date()

    chairs = [Chair(clinic_id=clinic.id, name=f"Chair {i}", kind="chair", sort_order=i) for i in range(1, 7)]
    chairs.append(Chair(clinic_id=clinic.id, name="Therapy room", kind="room", sort_order=20))
    types = {p["kind"]: SessionType(clinic_id=clinic.id, **p) for p in default_protocols()}
    session.add_all([*chairs, *types.values()])
    await session.flush()
    ctx.progress("chairs and protocols", len(chairs) + len(types))

    cal = ClinicCalendar.build(tz=tz, opening_hours=clinic.opening_hours, settings=clinic.settings)
    first_day = today - timedelta(days=HISTORY_DAYS)
    last_day = today + timedelta(days=max(ctx.days, COURSE_HORIZON_DAYS))
    shifts: list[Shift] = []
    roster = (
        ("nurse", "nurse", time(8), time(18)),
        ("nurse2", "nurse", time(8), time(16, 30)),
        ("prescriber", "prescriber", time(8), time(18)),
        ("therapist", "therapist", time(9), time(17)),
    )
    for day in rules.local_days(first_day, last_day):
        spans = cal.hours.get(day.weekday(), ())
        if not spans or not cal.is_open_day(day):
            continue
        open_at, close_at = spans[0][0], spans[-1][1]
        for key, role, start, end in roster:
            user = ctx.staff.get(key)
            if user is None:
                continue
            s, e = max(start, open_at), min(end, close_at)
            if e <= s or (key == "nurse2" and day.weekday() == 5):
                continue
            shifts.append(Shift(clinic_id=clinic.id, user_id=user.id, role=role, starts_at=rules.wall_to_utc(day, s, tz), ends_at=rules.wall_to_utc(day, e, tz)))
    session.add_all(shifts)
    await session.flush()
    ctx.progress("staff shifts", len(shifts))

    patients = _patients(ctx, clinic, today)
    session.add_all(patients)
    await session.flush()
    ctx.progress("patients", len(patients))

    on_shift = [OnShift(role=s.role, start=s.starts_at, end=s.ends_at, user_id=s.user_id) for s in shifts]
    places = [Place(c.id, c.kind, c.sort_order) for c in chairs]
    booked: list[Booked] = []
    appts: list[Appointment] = []
    timings = {k: Protocol.of(st) for k, st in types.items()}
    live_chairs = chairs[:5]
    monitoring_chairs = {c.id for c in live_chairs}
    # chairs 1-5 stay free from four and a half hours before the seed runs to four hours after, so the monitoring
    # demo can seat its sessions in every phase (discharged hours ago ... booked for later) at any time of day
    live = (now - timedelta(hours=4, minutes=30), now + timedelta(hours=4))

    def keeps_today_free(c: rules.Candidate) -> bool:
        return not (c.chair_id in monitoring_chairs and rules.overlaps(c.start, c.end, *live))

    def place(patient: Patient, kind: str, day: date, *, want: time | None = None, dose: int | None = None,
              course: Course | None = None, history_ok: bool = False) -> Appointment | None:
        t = timings[kind]
        cands = rules.availability(timing=t, cal=cal, days=[day], places=places, booked=booked, shifts=on_shift,
                                   now=now - timedelta(days=HISTORY_DAYS + 1) if history_ok else now, dose_mg=dose, patient_id=patient.id)
        cands = [c for c in cands if keeps_today_free(c)]
        if not cands:
            return None
        if want is not None:
            target = rules.wall_to_utc(day, want, tz)
            pick = rules.nearest(cands, target, limit=1)[0]
        else:
            pick = rng.choice(cands)
        w = t.windows(pick.start, dose)
        escort = (patient.escort_name, patient.escort_phone) if t.monitored and rng.random() < 0.85 else (None, None)
        a = Appointment(
            clinic_id=clinic.id, patient_id=patient.id, session_type_id=types[kind].id, chair_id=pick.chair_id,
            course_id=course.id if course else None, starts_at=w.start, ends_at=w.end, status="booked", planned_dose_mg=dose,
            escort_name=escort[0], escort_phone=escort[1], created_by=ctx.staff["frontdesk"].id if "frontdesk" in ctx.staff else None,
            created_at=min(now, w.start - timedelta(days=rng.randint(3, 20))), updated_at=now,
        )
        booked.append(Booked(chair_id=pick.chair_id, patient_id=patient.id, start=w.start, end=w.end, care_end=w.care_end,
                             monitored=t.monitored, needs_therapist=t.needs_therapist))
        appts.append(a)
        return a

    rems = [p for p in patients if p.rems_enrolled_on]
    others = [p for p in patients if not p.rems_enrolled_on]
    open_days = [d for d in rules.local_days(today, today + timedelta(days=6)) if cal.is_open_day(d)]
    courses: list[Course] = []
    course_plan = [
        (rems[0], "esketamine", "induction", 0, time(9), 56),
        (rems[1], "esketamine", "induction", 1, time(13, 30), 84),
        (rems[2], "esketamine", "induction", 2, time(10, 30), 56),
        (others[0] if others else patients[-1], "ketamine_iv", "induction", 0, time(14), None),
        (others[1] if len(others) > 1 else patients[-2], "ketamine_iv", "induction", 1, time(8, 30), None),
    ]
    for patient, kind, template, start_i, at, dose in course_plan:
        if start_i >= len(open_days):
            continue
        course = Course(clinic_id=clinic.id, patient_id=patient.id, session_type_id=types[kind].id, template=template,
                        created_by=ctx.staff["frontdesk"].id if "frontdesk" in ctx.staff else None, created_at=now - timedelta(days=2))
        session.add(course)
        await session.flush()
        courses.append(course)
        tpl = timings[kind].course_templates[template]
        for day in rules.course_days(tpl, open_days[start_i], cal.is_open_day):
            place(patient, kind, day, want=at, dose=dose, course=course)

    # single sessions: a week of history and the coming two weeks
    mix = (("esketamine", 4), ("ketamine_iv", 3), ("kap", 1), ("integration", 2), ("consult", 1))
    kinds = [k for k, n in mix for _ in range(n)]
    for day in rules.local_days(first_day, today + timedelta(days=ctx.days - 1)):
        if not cal.is_open_day(day):
            continue
        target = 6 if day.weekday() == 5 else rng.randint(11, 15)
        have = sum(1 for b in booked if b.start.astimezone(zone).date() == day)
        for _ in range(max(0, target - have) * 3):
            if sum(1 for b in booked if b.start.astimezone(zone).date() == day) >= target:
                break
            kind = rng.choice(kinds)
            pool = rems if kind == "esketamine" else patients
            patient = rng.choice(pool)
            dose = rng.choice((56, 56, 84, 28)) if kind == "esketamine" else None
            place(patient, kind, day, dose=dose, history_ok=day < today)

    for a in appts:
        if a.ends_at <= now:
            _close_history(a, rng, cal, staff=ctx.staff)
    session.add_all(appts)
    await session.flush()
    ctx.progress("appointments", len(appts))

    ctx.shared["session_types"] = types
    ctx.shared["chairs"] = chairs
    ctx.shared["patients"] = patients
    ctx.shared["appointments"] = appts
    ctx.shared["courses"] = courses
    ctx.shared["today"] = today
    # the chairs kept free around now for the monitoring demo's sessions
    ctx.shared["monitoring_chairs"] = live_chairs


def _close_history(a: Appointment, rng, cal: ClinicCalendar, *, staff) -> None:
    """Past sessions end the way real ones do: most discharged, a few no-shows and cancellations."""
    roll = rng.random()
    if roll < 0.08:
        a.status = "noshow"
    elif roll < 0.16:
        a.status = "cancelled"
        a.cancel_reason = rng.choice(CANCEL_REASONS)
        a.cancelled_at = a.starts_at - timedelta(hours=rng.choice((2, 6, 30, 72)))
        a.late_cancel = rules.is_late_cancel(a.starts_at, a.cancelled_at, cal.late_cancel_hours)
        a.cancelled_by = staff["frontdesk"].id if "frontdesk" in staff else None
    else:
        a.status = "fulfilled"
        a.checked_in_at = a.starts_at
        a.escort_confirmed = bool(a.escort_name)
        a.dosing_started_at = a.starts_at + timedelta(minutes=15)
        a.discharged_at = a.ends_at - timedelta(minutes=10)
        a.discharged_by = staff["prescriber"].id if "prescriber" in staff else None


def _patients(ctx, clinic, today: date) -> list[Patient]:
    rng = ctx.rng
    names = [(f, l) for f, l in zip(FIRST, LAST)]
    rng.shuffle(names)
    out = []
    for i in range(ctx.patients):
        first, last = names[i % len(names)]
        if i >= len(names):
            last = f"{last}-{LAST[(i * 7) % len(LAST)]}"
        dob = date(rng.randint(1952, 2002), rng.randint(1, 12), rng.randint(1, 28))
        enrolled = i % 5 != 4 and i % 3 != 2  # about 60 % enrolled in the Spravato REMS
        escort_first = rng.choice(ESCORTS)
        opted_out = i % 11 == 10
        out.append(Patient(
            clinic_id=clinic.id, first_name=first, last_name=last, date_of_birth=dob, sex=rng.choice(("female", "male", "female", "male", "other")),
            email=f"{first.lower()}.{last.lower().replace('-', '.')}@example.org", phone=f"(555) 01{i // 10 % 10}-{1000 + i * 37 % 9000:04d}",
            notice_channel="none" if opted_out else "email", notice_consent_at=None if opted_out else datetime.now(ZoneInfo("UTC")) - timedelta(days=rng.randint(20, 400)),
            notices_opted_out=opted_out, escort_name=f"{escort_first} {last}" if i % 6 else None,
            escort_phone=f"(555) 02{i % 10}-{2000 + i * 53 % 8000:04d}" if i % 6 else None,
            rems_enrolled_on=today - timedelta(days=rng.randint(30, 500)) if enrolled else None,
            rems_patient_id=f"RP-{rng.randint(100000, 999999)}" if enrolled else None,
            medication_flags=rng.sample(list(MEDICATION_FLAGS), k=rng.choice((0, 0, 0, 1, 1, 2))),
            diagnosis_codes=list(rng.choice(DIAGNOSES)),
        ))
    return out
