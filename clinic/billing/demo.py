"""Demo data for billing: a dated fee schedule, coverages, estimates due and issued, charges and claims."""

from __future__ import annotations

from datetime import date, timedelta

from sqlmodel import select

from clinic.billing import service
from clinic.billing.models import Coverage, FeeScheduleEntry, Payment

# DOMAIN.md's codes with plausible self-pay prices (cents); a clinic sets its own under Admin > Fees
DEFAULT_FEES = (
    ("G2082", "Esketamine nasal session, up to 56 mg, with 2 h observation", 590_00),
    ("G2083", "Esketamine nasal session, over 56 mg, with 2 h observation", 860_00),
    ("J0013", "Esketamine nasal spray, 1 mg", 12_00),
    ("96365", "IV infusion, first hour (16-90 min)", 450_00),
    ("96366", "IV infusion, each additional hour", 120_00),
    ("96374", "IV push, 15 min or less", 180_00),
    ("J3490", "Unclassified drug (ketamine), per vial", 40_00),
    ("0820T", "Psychedelic therapy monitoring, first 60 min", 320_00),
    ("0821T", "Psychedelic therapy monitoring, second physician", 160_00),
    ("0822T", "Psychedelic therapy monitoring, each added 30 min", 140_00),
    ("90832", "Psychotherapy, 16-37 min", 110_00),
    ("90834", "Psychotherapy, 38-52 min", 160_00),
    ("90837", "Psychotherapy, 53 min or more", 210_00),
    ("99212", "Office visit, established, 10+ min", 95_00),
    ("99213", "Office visit, established, 20+ min", 140_00),
    ("99214", "Office visit, established, 30+ min", 200_00),
    ("99215", "Office visit, established, 40+ min", 270_00),
)


def fee_schedule(clinic_id: int, effective_from: date) -> list[FeeScheduleEntry]:
    return [FeeScheduleEntry(clinic_id=clinic_id, code=c, description=d, self_pay_cents=p, effective_from=effective_from)
            for c, d, p in DEFAULT_FEES]


async def _patients(session, ctx) -> list:
    from clinic.patients.models import Patient

    return ctx.shared.get("patients") or list((await session.exec(
        select(Patient).where(Patient.clinic_id == ctx.clinic.id).order_by(Patient.id))).all())


async def seed_prices(session, ctx) -> None:
    """The fee schedule and the patients' coverage, before any session is charted (a discharge charges at once)."""
    clinic = ctx.clinic
    actor = ctx.shared["actor"]
    today = clinic.today()
    # last year's prices end on 1 January, this year's are current: the table keeps both
    year = date(today.year, 1, 1)
    last = fee_schedule(clinic.id, date(today.year - 1, 1, 1))
    for row in last:
        row.self_pay_cents = row.self_pay_cents * 95 // 100
        row.effective_to = year
    session.add_all([*last, *fee_schedule(clinic.id, year)])
    await session.flush()

    patients = await _patients(session, ctx)
    rng = ctx.rng
    payers = ("Blue Harbor Health", "Evergreen Mutual", "Summit Care PPO")
    for i, patient in enumerate(patients):
        if i % 3 == 0:
            continue  # self-pay: no coverage row at all
        insured = i % 3 == 1
        cov = Coverage(
            clinic_id=clinic.id, patient_id=patient.id, kind="insured" if insured or i % 9 == 2 else "self_pay",
            payer=rng.choice(payers) if insured or i % 9 == 2 else "", member_id=f"M{rng.randrange(10**8):08d}" if insured or i % 9 == 2 else "",
            copay_cents=rng.choice((0, 25_00, 40_00)) if insured else 0, coinsurance_pct=rng.choice((10, 20, 30)) if insured else 0,
            deductible_remaining_cents=rng.choice((0, 500_00, 1_500_00)) if insured else 0,
            oop_remaining_cents=rng.choice((1_000_00, 3_000_00, 6_000_00)) if insured else 0,
            allowed_pct=70 if insured else None,
            allowed_amounts={"G2083": 610_00, "G2082": 430_00} if insured else {},
            files_claim=insured,  # i % 9 == 2: insured but paying privately, so self-pay for estimates
            updated_by=actor.user_id,
        )
        session.add(cov)
    await session.flush()
    ctx.progress("coverage", len(patients))


async def seed(session, ctx) -> None:
    """Add billing demo rows inside the seeding transaction (see clinic.seed.SeedContext)."""
    from clinic.patients.models import Patient
    from clinic.scheduling.models import Appointment

    clinic = ctx.clinic
    actor = ctx.shared["actor"]
    today = clinic.today()
    patients = await _patients(session, ctx)
    rng = ctx.rng

    # estimates: each patient with upcoming visits gets a draft; about half are issued already
    for i, patient in enumerate(patients):
        upcoming = await service.upcoming_appointments(session, clinic=clinic, patient_id=patient.id)
        if not upcoming:
            continue
        draft = None
        for appt, _ in upcoming:  # as the booking hook would have done, visit by visit
            draft = await service.on_booked(session, appointment=appt, patient=patient, clinic=clinic) or draft
        if draft is None:
            continue  # everything within 3 business days: no GFE owed
        if i % 4 == 0 and draft.due_on is not None:
            draft.due_on = today - timedelta(days=1)  # a few show as late on the billing page
            session.add(draft)
        elif i % 2 == 1:
            await service.try_issue(session, estimate=draft, clinic=clinic)
    ctx.progress("estimates", len(patients))

    # past sessions: charges (and claims for those who file), a few payments
    past = (await session.exec(select(Appointment).where(
        Appointment.clinic_id == clinic.id, Appointment.status == "fulfilled").order_by(Appointment.starts_at))).all()
    by_id = {p.id: p for p in patients}
    for n, appt in enumerate(past):
        patient = by_id.get(appt.patient_id) or await session.get(Patient, appt.patient_id)
        if not appt.facts:
            appt.facts = {"dose_mg": 84 if n % 2 else 56, "infusion_minutes": 42, "therapy_minutes": 55}
        await service.record_session_charges(session, appointment=appt, patient=patient, clinic=clinic)
        if n % 3 == 0:
            session.add(Payment(clinic_id=clinic.id, patient_id=patient.id, appointment_id=appt.id,
                                amount_cents=rng.choice((50_00, 100_00, 200_00)), recorded_by=actor.user_id))
    # claims at every stage, so the tracking table has something to show
    from clinic.billing.models import Claim

    claims = (await session.exec(select(Claim).where(Claim.clinic_id == clinic.id).order_by(Claim.id))).all()
    stages = ("draft", "submitted", "paid", "partially_paid", "denied", "patient_balance", "closed")
    for n, claim in enumerate(claims):
        claim.status = stages[n % len(stages)]
        if claim.status != "draft":
            claim.submitted_at = claim.updated_at
        if claim.status in ("paid", "partially_paid", "patient_balance", "closed"):
            claim.plan_paid_cents = claim.billed_cents - claim.patient_cents if claim.status == "paid" else claim.billed_cents // 2
        if claim.status == "denied":
            claim.patient_cents = claim.billed_cents
        session.add(claim)
    ctx.progress("charges", len(past))
