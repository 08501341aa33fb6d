"""Demo data for monitoring: today's chairs alive with sessions in every phase, for esketamine and IV, charted through the real services.

Times are relative to when the demo is seeded, so the board shows live sessions whenever it
starts. Chairs and patients come from the scheduling seed (ctx.shared) or the database; each
session takes a chair and a patient that are free for its whole hold, so the exclusion
constraints hold.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlmodel import col, select

from clinic.audit.service import Actor
from clinic.db import session_driver
from clinic.monitoring import service, vitals
from clinic.monitoring.service import Measurements
from clinic.patients.models import Patient
from clinic.scheduling.models import Appointment, Chair, SessionType
from clinic.scheduling.protocols import Protocol, default_protocols
from clinic.timeutil import utcnow

CADSS_LOW = {"1": 1, "2": 1, "6": 0, "7": 1, "15": 0, "22": 0}
CADSS_MID = {"1": 2, "2": 2, "6": 1, "7": 1, "15": 1, "22": 1}
CADSS_NONE = {"1": 0, "2": 0, "6": 0, "7": 0, "15": 0, "22": 0}


@dataclass
class Plan:
    kind: str
    label: str
    starts: int  # minutes from now
    run: Callable[[Appointment], Awaitable[None]]
    dose_mg: int | None = None
    # whole-session shifts (minutes) to try when a chair or the patient is taken; none may push a charted time past now
    shifts: tuple[int, ...] = (0, -10, 10, -20)
    # must begin today: the board shows discharged and booked sessions of today only (one still in its chair shows
    # whenever it began)
    today_only: bool = False


# discharged sessions may start later in the small hours, so that they still began today; booked ones may move by
# hours, or earlier in a late evening
LATER_TODAY = (0, -10, 10, -20, 30, 60, 90)
BOOKED = (0, 30, 60, 90, 120, -20, -40, -60)


class Charting:
    """Writes one demo session through the same services a tablet uses, at times relative to `now`."""

    def __init__(self, session, *, nurse: Actor, prescriber: Actor, now: datetime) -> None:
        self.session, self.nurse, self.prescriber, self.now = session, nurse, prescriber, now
        self.offset = 0  # minutes the whole session is moved by to find a free chair

    def at(self, minutes: int) -> datetime:
        return self.now + timedelta(minutes=minutes + self.offset)

    async def check_in(self, appt: Appointment, minutes: int, *, weight: float | None = None, escort: bool = True) -> None:
        await service.check_in(
            self.session, actor=self.nurse, appointment_id=appt.id, fasting_confirmed=True, escort_confirmed=escort,
            escort_name=appt.escort_name or "Family member", weight_kg=weight, taken_at=self.at(minutes), now=self.now,
        )

    async def entry(self, appt: Appointment, minutes: int, check: str | None = None, *, cadss: dict | None = None, **values: Any) -> service.EntryResult:
        m = Measurements(**values)
        if cadss is not None:
            m.dissociation_form, m.dissociation_items = "cadss6", cadss
        return await vitals.record_entry(
            await session_driver(self.session), actor=self.nurse, appointment_id=appt.id, client_id=uuid.uuid4(), values=m, taken_at=self.at(minutes), check_key=check, now=self.now
        )

    async def start(self, appt: Appointment, minutes: int, **kw: Any) -> None:
        await service.start_dosing(self.session, actor=self.nurse, appointment_id=appt.id, client_id=uuid.uuid4(), taken_at=self.at(minutes), now=self.now, **kw)

    async def dose(self, appt: Appointment, minutes: int, kind: str, lot: str | None = None) -> None:
        await service.record_dose(self.session, actor=self.nurse, appointment_id=appt.id, client_id=uuid.uuid4(), kind=kind, taken_at=self.at(minutes), lot_number=lot, now=self.now)

    async def discharge(self, appt: Appointment, minutes: int) -> None:
        await service.discharge(self.session, actor=self.prescriber, appointment_id=appt.id, queue=None, note="Alert and oriented; left with escort.", now=self.at(minutes))

    # ---- esketamine, 56 mg: devices at d and d+5 ----

    async def esk_dosed(self, appt: Appointment, d: int, lot: str) -> None:
        await self.check_in(appt, d - 13)
        await self.entry(appt, d - 2, "pre_dose", systolic=128, diastolic=82, heart_rate=74, spo2=98)
        await self.start(appt, d, lot_number=lot, dose_mg=56)
        await self.dose(appt, d + 5, "device", lot)

    async def esk_checked_in(self, appt: Appointment) -> None:
        await self.check_in(appt, -9)
        # a pre-dose caution waiting for the prescriber
        await self.entry(appt, -3, "pre_dose", systolic=148, diastolic=92, heart_rate=80, spo2=98)

    async def esk_monitoring(self, appt: Appointment) -> None:
        d = -55
        await self.esk_dosed(appt, d, "24K118")
        # 40-minute BP at the alert level: a repeat is asked for within 5 minutes and is now overdue
        await self.entry(appt, d + 41, "t40", systolic=184, diastolic=98, spo2=96, moaas=4, cadss=CADSS_MID)

    async def esk_ready(self, appt: Appointment) -> None:
        d = -135
        await self.esk_dosed(appt, d, "24K117")
        await self.entry(appt, d + 40, "t40", systolic=142, diastolic=86, spo2=97, moaas=4, cadss=CADSS_LOW)
        await self.entry(appt, d + 80, "t80", spo2=98)
        await self.entry(appt, d + 122, "discharge", systolic=124, diastolic=78, spo2=98, moaas=5, cadss=CADSS_NONE)

    async def esk_discharged(self, appt: Appointment) -> None:
        d = -230
        await self.esk_dosed(appt, d, "24K117")
        await self.entry(appt, d + 39, "t40", systolic=136, diastolic=84, spo2=97, moaas=5, cadss=CADSS_LOW)
        await self.entry(appt, d + 81, "t80", spo2=97)
        await self.entry(appt, d + 118, "discharge", systolic=122, diastolic=76, spo2=98, moaas=5, cadss=CADSS_NONE)
        await self.discharge(appt, d + 126)

    # ---- IV: 0.5 mg/kg over 40 minutes ----

    async def iv_dosed(self, appt: Appointment, d: int, weight: float) -> None:
        await self.check_in(appt, d - 12, weight=weight)
        await self.entry(appt, d - 3, "pre_dose", systolic=122, diastolic=78, heart_rate=72, spo2=99)
        await self.start(appt, d)

    async def iv_checked_in(self, appt: Appointment) -> None:
        await self.check_in(appt, -8, weight=78.0)
        await self.entry(appt, -2, "pre_dose", systolic=118, diastolic=74, heart_rate=70, spo2=99)

    async def iv_monitoring(self, appt: Appointment) -> None:
        d = -50
        await self.iv_dosed(appt, d, 92.0)
        await self.entry(appt, d + 10, "infusion@10", systolic=130, diastolic=82, heart_rate=88, spo2=98)
        # heart rate above 120 during the infusion: an open alert on the board
        await self.entry(appt, d + 20, "infusion@20", systolic=138, diastolic=86, heart_rate=126, spo2=97)
        await self.entry(appt, d + 30, "infusion@30", systolic=134, diastolic=84, heart_rate=104, spo2=98)
        await self.entry(appt, d + 40, "infusion@40", systolic=128, diastolic=80, heart_rate=96, spo2=98)
        await self.dose(appt, d + 40, "infusion_end")

    async def iv_ready(self, appt: Appointment) -> None:
        d = -92
        await self.iv_dosed(appt, d, 70.0)
        for minute, (sbp, dbp, hr) in zip((10, 20, 30, 40), ((126, 80, 84), (132, 84, 90), (130, 82, 88), (124, 78, 82))):
            await self.entry(appt, d + minute, f"infusion@{minute}", systolic=sbp, diastolic=dbp, heart_rate=hr, spo2=98)
        await self.dose(appt, d + 40, "infusion_end")
        await self.entry(appt, d + 55, "recovery@55", systolic=122, diastolic=78, heart_rate=76, spo2=98)
        await self.entry(appt, d + 71, "discharge", systolic=120, diastolic=76, heart_rate=72, spo2=99, moaas=5)

    async def iv_discharged(self, appt: Appointment) -> None:
        d = -190
        await self.iv_dosed(appt, d, 84.0)
        for minute in (10, 20, 30, 40):
            await self.entry(appt, d + minute, f"infusion@{minute}", systolic=128, diastolic=80, heart_rate=82, spo2=98)
        await self.dose(appt, d + 40, "infusion_end")
        await self.entry(appt, d + 56, "recovery@55", systolic=124, diastolic=78, heart_rate=76, spo2=98)
        await self.entry(appt, d + 72, "discharge", systolic=122, diastolic=76, heart_rate=72, spo2=98, moaas=5)
        await self.discharge(appt, d + 78)


async def _nothing(appt: Appointment) -> None:
    return None


async def _chairs(session, ctx) -> list[Chair]:
    chairs = [c for c in ctx.shared.get("chairs") or [] if c.kind == "chair" and c.active]
    if not chairs:
        chairs = list((await session.exec(select(Chair).where(Chair.clinic_id == ctx.clinic.id, Chair.kind == "chair", col(Chair.active).is_(True)).order_by(col(Chair.sort_order)))).all())
    if not chairs:  # a database seeded without scheduling data: give the board its chairs
        chairs = [Chair(clinic_id=ctx.clinic.id, name=f"Chair {i}", sort_order=i) for i in range(1, 7)]
        session.add_all(chairs)
        await session.flush()
    preferred = {c.id for c in ctx.shared.get("monitoring_chairs") or []}
    return sorted(chairs, key=lambda c: (c.id not in preferred, c.sort_order))


async def _session_types(session, ctx) -> dict[str, SessionType]:
    types = dict(ctx.shared.get("session_types") or {})
    if not types:
        types = {st.kind: st for st in (await session.exec(select(SessionType).where(SessionType.clinic_id == ctx.clinic.id))).all()}
    for p in default_protocols():
        if p["kind"] not in types and p["kind"] in ("esketamine", "ketamine_iv"):
            types[p["kind"]] = SessionType(clinic_id=ctx.clinic.id, **p)
            session.add(types[p["kind"]])
    await session.flush()
    return types


DEMO_PATIENTS = (
    ("Avery", "Morgan", "female"), ("Jordan", "Ellis", "male"), ("Casey", "Nguyen", "female"), ("Riley", "Okafor", "male"),
    ("Quinn", "Alvarez", "female"), ("Drew", "Kowalski", "male"), ("Harper", "Lindqvist", "female"), ("Rowan", "Mbeki", "male"),
    ("Sasha", "Petrov", "female"), ("Morgan", "Reyes", "male"),
)


async def _patients(session, ctx, today: date) -> list[Patient]:
    patients = list(ctx.shared.get("patients") or [])
    if not patients:
        patients = list((await session.exec(select(Patient).where(Patient.clinic_id == ctx.clinic.id).order_by(col(Patient.id)))).all())
    if len([p for p in patients if p.rems_enrolled_on]) < 5 or len(patients) < 10:
        extra = [
            Patient(
                clinic_id=ctx.clinic.id, first_name=first, last_name=last, sex=sex,
                date_of_birth=date(1970 + i * 3, 1 + i % 12, 3 + i), email=f"{first.lower()}.{last.lower()}@example.org",
                escort_name="Family member", escort_phone="(555) 010-7788",
                rems_enrolled_on=today - timedelta(days=60) if i % 2 == 0 else None, rems_patient_id=f"RP{40010 + i}" if i % 2 == 0 else None,
            )
            for i, (first, last, sex) in enumerate(DEMO_PATIENTS)
        ]
        session.add_all(extra)
        await session.flush()
        patients += extra
    return patients


async def _free(session, *, column, value: int, start: datetime, end: datetime) -> bool:
    q = select(Appointment.id).where(
        column == value,
        col(Appointment.status).not_in(("cancelled", "noshow")),
        col(Appointment.starts_at) < end,
        col(Appointment.ends_at) > start,
    )
    return (await session.exec(q.limit(1))).first() is None


async def _first_free(session, candidates: list, *, column, start: datetime, end: datetime):
    for c in candidates:
        if await _free(session, column=column, value=c.id, start=start, end=end):
            return c
    return None


async def seed(session, ctx) -> None:
    """Add monitoring demo rows inside the seeding transaction (see clinic.seed.SeedContext)."""
    clinic = ctx.clinic
    now = utcnow().replace(second=0, microsecond=0)
    staff = ctx.staff
    if "nurse" not in staff or "prescriber" not in staff:
        return
    nurse = Actor(user_id=staff["nurse"].id, clinic_id=clinic.id, roles=("nurse",), name=staff["nurse"].full_name, via="system")
    prescriber = Actor(user_id=staff["prescriber"].id, clinic_id=clinic.id, roles=("prescriber",), name=staff["prescriber"].full_name, via="system")
    chart = Charting(session, nurse=nurse, prescriber=prescriber, now=now)
    types = await _session_types(session, ctx)
    chairs = await _chairs(session, ctx)
    today = now.astimezone(ZoneInfo(clinic.timezone)).date()
    patients = await _patients(session, ctx, today)
    plans = [
        Plan("esketamine", "discharged", -245, chart.esk_discharged, 56, shifts=LATER_TODAY, today_only=True),
        Plan("esketamine", "ready", -150, chart.esk_ready, 56),
        Plan("esketamine", "monitoring", -70, chart.esk_monitoring, 56, shifts=(0, -4, 4, -8, 8)),
        Plan("esketamine", "checked in", -12, chart.esk_checked_in, 56, shifts=(0, 3, -5, -10, -15, -20, -25)),
        Plan("ketamine_iv", "discharged", -205, chart.iv_discharged, shifts=LATER_TODAY, today_only=True),
        Plan("ketamine_iv", "ready", -106, chart.iv_ready),
        Plan("ketamine_iv", "monitoring", -64, chart.iv_monitoring, shifts=(0, -4, 4, -8, 8)),
        Plan("ketamine_iv", "checked in", -10, chart.iv_checked_in, shifts=(0, 3, -5, -10, -15, -20, -25)),
        Plan("esketamine", "booked", 50, _nothing, 84, shifts=BOOKED, today_only=True),
        Plan("ketamine_iv", "booked", 75, _nothing, shifts=BOOKED, today_only=True),
    ]
    midnight = datetime.combine(today, time(0), tzinfo=ZoneInfo(clinic.timezone))
    day = (midnight, midnight + timedelta(days=1))
    used: set[int] = set()
    seated = 0
    # seated in order of start, each in the first free chair: as few chairs as the overlap of the sessions needs
    for plan in sorted(plans, key=lambda p: p.starts):
        st = types[plan.kind]
        hold = timedelta(minutes=Protocol.of(st).hold_minutes(plan.dose_mg))
        chair = patient = None
        pool = [p for p in patients if p.id not in used and (p.rems_enrolled_on or plan.kind != "esketamine")]
        # a patient with nothing else booked today if there is one: nobody has two ketamine sessions in a day
        free_all_day = await _first_free(session, pool, column=Appointment.patient_id, start=day[0], end=day[1])
        for shift in plan.shifts:
            start = now + timedelta(minutes=plan.starts + shift)
            end = start + hold
            if plan.today_only and not day[0] <= start < day[1]:
                continue
            chair = await _first_free(session, chairs, column=Appointment.chair_id, start=start, end=end)
            patient = free_all_day or await _first_free(session, pool, column=Appointment.patient_id, start=start, end=end)
            if chair is not None and patient is not None:
                chart.offset = shift
                break
        if chair is None or patient is None:
            continue  # the schedule is full around this time; the other phases still show
        used.add(patient.id)  # type: ignore[arg-type]
        appt = Appointment(
            clinic_id=clinic.id, patient_id=patient.id, session_type_id=st.id, chair_id=chair.id,  # type: ignore[arg-type]
            starts_at=start, ends_at=end, status="booked", planned_dose_mg=plan.dose_mg,
            escort_name=patient.escort_name or "Family member", escort_phone=patient.escort_phone,
            created_by=staff["frontdesk"].id if "frontdesk" in staff else None, created_at=now - timedelta(days=3), updated_at=now,
        )
        session.add(appt)
        await session.flush()
        await plan.run(appt)
        seated += 1
    ctx.progress("live monitoring sessions", seated)
