"""Demo data for outcomes: finished courses from the weeks before the schedule's history (IV, intranasal and KAP) with score
trajectories (responders and not, some with anxiety or ADHD), one PHQ-9 item 9 answer with its recorded review, recent answers
for patients dosed lately, and baselines (one missing) for the courses starting now, so the charts and /outcomes are alive.

Runs last in the demo seed; writes rows directly (answers months old could not be entered through the service, which takes
answers up to 30 days back)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlmodel import col, select

from clinic.billing.models import CostLink
from clinic.outcomes import rules
from clinic.outcomes.instruments import INSTRUMENTS, SAFETY_ITEM
from clinic.outcomes.models import OutcomeMeasure, SafetyReview
from clinic.patients.models import Patient
from clinic.scheduling.models import Appointment, Chair, Course, SessionType
from clinic.scheduling.protocols import Protocol
from clinic.timeutil import utcnow

# (protocol, template, session day offsets, PHQ-9 at baseline and at the end): responders, partial responders, non-responders
COURSES = (
    ("ketamine_iv", "induction", (0, 2, 4, 7, 9, 11), ((21, 6), (18, 4), (16, 7), (23, 11), (14, 3), (19, 15), (17, 13), (20, 9))),
    ("esketamine", "induction", (0, 3, 7, 10, 14, 17, 21, 24), ((22, 5), (19, 3), (24, 10), (17, 12), (16, 4), (21, 19), (18, 8), (15, 2))),
    ("kap", "series", (0, 7, 14), ((18, 8), (15, 12), (20, 6))),
)
SLOTS = (time(8, 0), time(10, 45), time(13, 30), time(16, 15))  # a chair holds these four 150-minute holds a day without overlap
FIRST_DAY = 62  # days before today the oldest course starts; all end before the schedule's week of history
REVIEW_NOTE = ("Called the patient the same evening: passive thoughts, no plan or intent; safety plan reviewed and crisis line "
               "given; follow-up call before the next session.")


@dataclass
class Seeded:
    measures: list[tuple[OutcomeMeasure, CostLink | None]]  # the link's id is known after the flush
    links: list[CostLink]
    reviewed: list[OutcomeMeasure]  # item 9 above 0, reviewed by the prescriber


def _answers(rng, instrument: str, total: int, *, safety: int = 0) -> dict[str, int]:
    """A plausible complete answer set adding up to `total` (item 9 as given): spread evenly, the remainder on random items."""
    inst = INSTRUMENTS[instrument]
    top = max(inst.scored_items[0].values)
    keys = [i.key for i in inst.scored_items if not (instrument == "phq9" and i.key == SAFETY_ITEM)]
    left = min(max(total - safety, 0), top * len(keys))
    each, extra = divmod(left, len(keys))
    out = {k: each for k in keys}
    for k in rng.sample([k for k in keys if out[k] < top], extra):
        out[k] += 1
    if instrument == "phq9":
        out[SAFETY_ITEM] = safety
    out = {i.key: out[i.key] for i in inst.scored_items}
    if any(i.key == "difficulty" for i in inst.items):
        out["difficulty"] = min(3, total // 6)
    return out


class Writer:
    """Answers and the links they came through, stamped at given times."""

    def __init__(self, ctx, rng) -> None:
        self.ctx, self.rng = ctx, rng
        self.clinic = ctx.clinic
        self.nurse = ctx.staff.get("nurse")
        self.seeded = Seeded([], [], [])

    def link(self, patient: Patient, appt: Appointment | None, at: datetime, kind: str) -> CostLink:
        link = CostLink(clinic_id=self.clinic.id, patient_id=patient.id, kind=kind, appointment_id=appt.id if appt else None,
                        expires_at=(appt.ends_at if appt else at + timedelta(days=1)), opened_at=at, created_at=at - timedelta(hours=1))
        self.seeded.links.append(link)
        return link

    def measure(self, patient: Patient, instrument: str, total: int, at: datetime, appt: Appointment | None, *, link: CostLink | None,
                safety: int = 0) -> OutcomeMeasure:
        answers = _answers(self.rng, instrument, total, safety=safety)
        via = "staff" if link is None else ("kiosk" if link.kind == "kiosk" else "link")
        staff = via == "staff" and self.nurse is not None
        m = OutcomeMeasure(
            clinic_id=self.clinic.id, patient_id=patient.id, appointment_id=appt.id if appt else None, instrument=instrument,
            version=INSTRUMENTS[instrument].version, answers=answers, total=rules.score(instrument, answers).total, completed_at=at,
            completed_by="staff" if staff else "patient", completed_by_user_id=self.nurse.id if staff else None, via=via,
            link_id=None, client_id=uuid.uuid4(), recorded_by=self.nurse.id if staff else None, recorded_at=at,
        )
        self.seeded.measures.append((m, link))
        if safety:
            self.seeded.reviewed.append(m)
        return m

    def asked(self, patient: Patient, appt: Appointment, totals: dict[str, int], *, evening_before: bool, tz: str, safety: int = 0) -> None:
        """The answers given before one visit: through the emailed link the evening before, or on the waiting-room tablet."""
        if evening_before:
            local = appt.starts_at.astimezone(ZoneInfo(tz))
            at = datetime.combine(local.date() - timedelta(days=1), time(19, self.rng.randint(0, 50)), ZoneInfo(tz))
            link = self.link(patient, appt, at, "questionnaire")
        else:
            at = appt.starts_at - timedelta(minutes=self.rng.randint(10, 25))
            link = self.link(patient, appt, at, "kiosk")
        for n, (i, total) in enumerate(totals.items()):
            self.measure(patient, i, total, at + timedelta(minutes=3 * n), appt, link=link, safety=safety if i == "phq9" else 0)


def _course_totals(rng, baseline: int, end: int, n: int, instrument_max: int) -> list[int]:
    """Totals from baseline to end over n asks, most of the change early (as in ketamine cohorts), with a little noise."""
    out = []
    for k in range(n):
        frac = 1 - (1 - k / max(n - 1, 1)) ** 1.6
        v = round(baseline + (end - baseline) * frac) + (rng.choice((-1, 0, 0, 1)) if 0 < k < n - 1 else 0)
        out.append(max(0, min(instrument_max, v)))
    return out


async def seed(session, ctx) -> None:
    """Add outcome demo rows inside the seeding transaction (see clinic.seed.SeedContext)."""
    clinic, rng = ctx.clinic, ctx.rng
    tz = clinic.timezone
    zone = ZoneInfo(tz)
    now = utcnow()
    today = now.astimezone(zone).date()
    types = ctx.shared.get("session_types") or {st.kind: st for st in (await session.exec(select(SessionType).where(SessionType.clinic_id == clinic.id))).all()}
    chairs = [c for c in ctx.shared.get("chairs") or (await session.exec(select(Chair).where(Chair.clinic_id == clinic.id))).all() if c.kind == "chair"]
    patients = list(ctx.shared.get("patients") or (await session.exec(select(Patient).where(Patient.clinic_id == clinic.id).order_by(col(Patient.id)))).all())
    if not chairs or not patients or not all(k in types for k in rules.DOSING_KINDS):
        return
    write = Writer(ctx, rng)
    current = {c.patient_id for c in ctx.shared.get("courses") or ()}
    rems = [p for p in patients if p.rems_enrolled_on and p.id not in current]
    others = [p for p in patients if not p.rems_enrolled_on and p.id not in current]
    prescriber = ctx.staff.get("prescriber")
    appts: list[Appointment] = []
    courses: list[tuple[Patient, str, list[Appointment], tuple[int, int]]] = []
    slot = 0
    for kind, template, offsets, outcomes in COURSES:
        pool = rems if kind == "esketamine" else (others + rems)
        for n, trajectory in enumerate(outcomes):
            if not pool:
                break
            patient = pool.pop(0)
            if patient in rems:
                rems.remove(patient)
            if patient in others:
                others.remove(patient)
            chair, at = chairs[slot % len(chairs)], SLOTS[(slot // len(chairs)) % len(SLOTS)]
            slot += 1
            start_day = today - timedelta(days=FIRST_DAY - 3 * n - (0 if kind == "esketamine" else 14))
            course = Course(clinic_id=clinic.id, patient_id=patient.id, session_type_id=types[kind].id, template=template,
                            created_at=datetime.combine(start_day - timedelta(days=7), time(10), zone))
            session.add(course)
            await session.flush()
            st = types[kind]
            hold = timedelta(minutes=Protocol.of(st).hold_minutes(56 if kind == "esketamine" else None))
            mine = []
            for d in offsets:
                start = datetime.combine(start_day + timedelta(days=d), at, zone)
                end = start + hold
                mine.append(Appointment(
                    clinic_id=clinic.id, patient_id=patient.id, session_type_id=st.id, chair_id=chair.id, course_id=course.id,
                    starts_at=start, ends_at=end, status="fulfilled", planned_dose_mg=56 if kind == "esketamine" else None,
                    escort_name=patient.escort_name or "Family member", escort_phone=patient.escort_phone, escort_confirmed=True,
                    checked_in_at=start, dosing_started_at=start + timedelta(minutes=15), discharged_at=end - timedelta(minutes=10),
                    discharged_by=prescriber.id if prescriber else None, created_at=course.created_at, updated_at=end,
                    facts={"kind": kind, "dose_mg": 56 if kind == "esketamine" else 35},
                ))
            appts += mine
            courses.append((patient, kind, mine, trajectory))
    session.add_all(appts)
    await session.flush()

    # the article's question: some of these patients have ADHD, some anxiety
    for i, (patient, kind, _, _) in enumerate(courses):
        codes = [c for c in patient.diagnosis_codes or [] if not c.startswith(("F90", "F41"))] or ["F33.1"]
        if i % 3 == 0:
            codes.append("F90.0")
        if i % 2 == 1:
            codes.append("F41.1")
        patient.diagnosis_codes = codes
        session.add(patient)

    flagged = next((c for c in courses if c[1] == "esketamine"), None)
    for patient, kind, visits, (phq_base, phq_end) in courses:
        wanted = rules.instruments_for(patient.diagnosis_codes)
        rv = [rules.Visit(a.id, a.starts_at, kind, a.course_id, "induction" if kind != "kap" else "series") for a in visits]
        asks = [(a, rules.due_for(v, visits=rv, taken=(), diagnosis_codes=patient.diagnosis_codes, schedule=rules.OutcomeSchedule()))
                for a, v in zip(visits, rv)]
        asks = [(a, due) for a, due in asks if due.items]
        phq = _course_totals(rng, phq_base, phq_end, len(asks) + 1, 27)
        gad = _course_totals(rng, max(phq_base - 4, 8), max(phq_end - 3, 1), len(asks) + 1, 21)
        asrs_base = rng.randint(40, 54)  # ADHD symptoms ease with the mood, less so for those whose mood does not
        asrs = _course_totals(rng, asrs_base, asrs_base - (rng.randint(10, 18) if rules.is_response(phq_base, phq_end) else rng.randint(0, 6)),
                              len(asks) + 1, 72)
        for k, (a, due) in enumerate(asks):
            totals = {i.instrument: {"phq9": phq, "gad7": gad, "asrs": asrs}[i.instrument][k] for i in due.items}
            item9 = 1 if flagged and patient is flagged[0] and k == 2 else 0
            write.asked(patient, a, totals, evening_before=k % 2 == 0, tz=tz, safety=item9)
        # a month on: how they are doing after the course
        follow = visits[-1].starts_at + timedelta(days=rng.randint(20, 28))
        if follow < now - timedelta(days=8):
            for n, i in enumerate(wanted):
                total = {"phq9": phq, "gad7": gad, "asrs": asrs}[i][-1]
                write.measure(patient, i, total, follow + timedelta(minutes=3 * n), None, link=None)

    # patients dosed lately without a course: one set of answers at their first such visit this month
    recent = [a for a in ctx.shared.get("appointments") or () if a.status == "fulfilled" and a.dosing_started_at and a.course_id is None]
    by_kind = {st.id: st.kind for st in types.values()}
    done: set[int] = {p.id for p, *_ in courses} | current  # a course starting now gets its baseline below
    by_patient = {p.id: p for p in patients}
    for a in sorted(recent, key=lambda a: a.starts_at):
        if by_kind.get(a.session_type_id) not in rules.DOSING_KINDS or a.patient_id in done:
            continue
        done.add(a.patient_id)
        patient = by_patient[a.patient_id]
        base = rng.randint(6, 19)
        write.asked(patient, a, {i: base if i == "phq9" else rng.randint(4, 15) for i in rules.instruments_for(patient.diagnosis_codes)},
                    evening_before=False, tz=tz)

    # courses starting now: a baseline for all but one (the front desk sees "forms due", the first dose waits)
    starting = sorted(ctx.shared.get("courses") or (), key=lambda c: c.id)
    firsts = {}
    for a in ctx.shared.get("appointments") or ():
        if a.course_id is not None and a.status in rules.LIVE and (a.course_id not in firsts or a.starts_at < firsts[a.course_id].starts_at):
            firsts[a.course_id] = a
    for n, c in enumerate(starting):
        first = firsts.get(c.id)
        if first is None or n == 1:
            continue  # the second course starting keeps its baseline missing
        patient = by_patient[c.patient_id]
        at = min(now - timedelta(minutes=30), first.starts_at - timedelta(hours=14))
        link = write.link(patient, first, at, "questionnaire")
        for k, i in enumerate(rules.instruments_for(patient.diagnosis_codes)):
            write.measure(patient, i, {"phq9": rng.randint(14, 22), "gad7": rng.randint(9, 16), "asrs": rng.randint(38, 52)}[i],
                          at + timedelta(minutes=3 * k), first, link=link)

    session.add_all(write.seeded.links)
    await session.flush()
    for m, link in write.seeded.measures:
        m.link_id = link.id if link else None
        session.add(m)
    await session.flush()
    for m in write.seeded.reviewed:
        if prescriber is not None:
            session.add(SafetyReview(clinic_id=clinic.id, patient_id=m.patient_id, measure_id=m.id, raised_at=m.completed_at,
                                     reviewed_by=prescriber.id, reviewed_at=m.completed_at + timedelta(hours=2), risk_level="low",
                                     action_taken=REVIEW_NOTE, safety_plan=True))
    await session.flush()
    ctx.progress("outcome questionnaires", len(write.seeded.measures))
