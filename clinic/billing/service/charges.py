"""Charges from a discharged session's facts, claims, payments, balances and GFE overages."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import Actor, record, record_read
from clinic.billing import rules
from clinic.billing.models import Charge, Claim, Coverage, Estimate, Payment
from clinic.billing.service.coverage import coverage_of, estimate_kind, terms_of
from clinic.billing.service.fees import fee_on, fee_rows
from clinic.billing.service.issuing import superseded_ids
from clinic.billing.service.lookups import get_patient, real_id
from clinic.clinics import Clinic
from clinic.errors import NotFound, RuleBroken
from clinic.events import BalanceDue, SessionDischarged, publish
from clinic.patients.models import Patient
from clinic.scheduling.models import Appointment, SessionType
from clinic.scheduling.protocols import Protocol
from clinic.timeutil import utcnow


def effective(entries: list[Any]) -> list[Any]:
    """Entries that stand: not replaced by a correction, not marked entered in error."""
    replaced = {e.supersedes_id for e in entries if e.supersedes_id}
    return [e for e in entries if e.id not in replaced and not e.entered_in_error]


def facts_of(appointment: Appointment, session_type: SessionType, dosing: list[Any]) -> rules.SessionFacts:
    facts = appointment.facts or {}
    entries = effective(dosing)
    dose = facts.get("dose_mg") or facts.get("total_dose_mg")
    if dose is None:
        devices = [e for e in entries if e.kind == "device" and e.dose_mg is not None]
        dose = sum((Decimal(e.dose_mg) for e in devices), Decimal(0)) if devices else None
    infusion = facts.get("infusion_minutes")
    if infusion is None:
        starts = [e.taken_at for e in entries if e.kind == "infusion_start"]
        ends = [e.taken_at for e in entries if e.kind == "infusion_end"]
        if starts and ends:
            infusion = int((max(ends) - min(starts)).total_seconds() // 60)
    therapy = facts.get("therapy_minutes") or facts.get("session_minutes")
    if therapy is None and session_type.kind in ("integration", "consult", "kap"):
        begin = appointment.dosing_started_at or appointment.checked_in_at or appointment.starts_at
        end = appointment.discharged_at or appointment.ends_at - timedelta(minutes=session_type.turnover_minutes)
        therapy = max(int((end - begin).total_seconds() // 60), 0)
    return rules.SessionFacts(dose_mg=float(dose) if dose is not None else None,
                              infusion_minutes=int(infusion) if infusion is not None else None,
                              therapy_minutes=int(therapy) if therapy is not None else None)


async def record_session_charges(session: AsyncSession, *, appointment: Appointment, patient: Patient, clinic: Clinic) -> int:
    """Charges from a discharged session's facts (idempotent), a draft claim when the patient files; returns what the patient owes for it."""
    from clinic.monitoring.models import DosingEntry

    st = await session.get(SessionType, appointment.session_type_id)
    dosing = list((await session.exec(select(DosingEntry).where(DosingEntry.appointment_id == appointment.id))).all())
    facts = facts_of(appointment, st, dosing)
    day = clinic.local_date(appointment.dosing_started_at or appointment.starts_at)
    fees = await fee_rows(session, clinic.id)
    existing = {c.code: c for c in (await session.exec(select(Charge).where(Charge.appointment_id == appointment.id))).all()}
    charges = list(existing.values())
    for code, units in rules.charge_lines(Protocol.of(st).billing, facts):
        if code in existing:
            continue
        fee = fee_on(fees, code, day)
        c = Charge(clinic_id=clinic.id, appointment_id=appointment.id, patient_id=patient.id,
                   provider_id=appointment.discharged_by, service_date=day, code=code, units=units,
                   fee_cents=fee.self_pay_cents if fee else None, diagnosis_codes=list(patient.diagnosis_codes or []))
        session.add(c)
        charges.append(c)
    await session.flush()
    billed = sum(c.amount_cents for c in charges)
    coverage = await coverage_of(session, clinic.id, patient.id)
    if estimate_kind(coverage) != "insurance":
        return billed
    claim = (await session.exec(select(Claim).where(Claim.appointment_id == appointment.id))).first()
    if claim is None:
        try:
            share = rules.visit_share([rules.Line(c.code, c.units, c.fee_cents or 0) for c in charges], terms_of(coverage)).patient
        except RuleBroken:
            share = 0  # billing staff complete the allowed amounts; the claim still starts as a draft
        share = min(share, billed)  # a code with no price yet bills nothing, and nobody owes more than was billed
        claim = Claim(clinic_id=clinic.id, appointment_id=appointment.id, patient_id=patient.id, payer=coverage.payer,
                      member_id=coverage.member_id, billed_cents=billed, patient_cents=share)
        session.add(claim)
        await session.flush()
    return claim.patient_cents


async def charge_session(session: AsyncSession, event: SessionDischarged, *, queue) -> None:
    """Subscriber (clinic.events): a discharged session's charges; a balance is due when the patient owes for it."""
    if await record_session_charges(session, appointment=event.appointment, patient=event.patient, clinic=event.clinic) > 0:
        await publish(session, BalanceDue(event.appointment, event.patient, event.clinic), queue=queue)


async def move_claim(session: AsyncSession, *, actor: Actor, claim_id: int, data: dict[str, Any]) -> Claim:
    if not real_id(claim_id):
        raise NotFound("No such claim.")
    claim = (await session.exec(select(Claim).where(Claim.id == claim_id, Claim.clinic_id == actor.clinic_id).with_for_update())).first()
    if claim is None:
        raise NotFound("No such claim.")
    new = str(data.get("status") or "")
    rules.check_claim_move(claim.status, new)
    # integers are cents (API); text is dollars as typed in a form
    plan_paid = rules.cents(data.get("plan_paid_cents", data.get("plan_paid")), field="plan_paid_cents", allow_none=True)
    patient_part = rules.cents(data.get("patient_cents", data.get("patient_owes")), field="patient_cents", allow_none=True)
    if new in ("paid", "partially_paid") and plan_paid is None:
        raise RuleBroken("Enter what the plan paid.", field="plan_paid_cents")
    old = claim.status
    claim.status = new
    if plan_paid is not None:
        claim.plan_paid_cents = plan_paid
    if patient_part is not None:
        claim.patient_cents = patient_part
    elif new == "denied":
        claim.patient_cents = claim.billed_cents
    if new == "submitted" and claim.submitted_at is None:
        claim.submitted_at = utcnow()
    if data.get("payer_reference"):
        claim.payer_reference = str(data["payer_reference"])[:60]
    if data.get("note"):
        claim.note = str(data["note"])[:2000]
    claim.updated_at = utcnow()
    session.add(claim)
    record(session, actor=actor, action="claim.move", entity="claim", entity_id=claim.id, patient_id=claim.patient_id,
           changes={"from": old, "to": new})
    return claim


async def add_payment(session: AsyncSession, *, actor: Actor, patient_id: int, data: dict[str, Any]) -> Payment:
    await get_patient(session, actor.clinic_id, patient_id)
    amount = rules.cents(data.get("amount_cents", data.get("amount")), field="amount_cents")
    if amount == 0:
        raise RuleBroken("A payment is more than $0.00.", field="amount_cents")
    appt_id = rules.whole(data.get("appointment_id"), field="appointment_id", low=1, high=2**31 - 1, allow_none=True)
    if appt_id is not None and (await session.exec(select(Appointment.id).where(
            Appointment.id == appt_id, Appointment.patient_id == patient_id, Appointment.clinic_id == actor.clinic_id))).first() is None:
        raise RuleBroken("That session is not this patient's.", field="appointment_id")
    pay = Payment(clinic_id=actor.clinic_id, patient_id=patient_id, appointment_id=appt_id,
                  amount_cents=amount, method=str(data.get("method") or "card")[:20], recorded_by=actor.user_id)
    session.add(pay)
    await session.flush()
    record(session, actor=actor, action="payment.add", entity="payment", entity_id=pay.id, patient_id=patient_id,
           changes={"amount_cents": amount})
    return pay


@dataclass
class Balance:
    patient_id: int
    self_pay_cents: int
    claims_cents: int
    paid_cents: int

    @property
    def owed_cents(self) -> int:
        return self.self_pay_cents + self.claims_cents - self.paid_cents


async def balances(session: AsyncSession, *, clinic_id: int, patient_ids: list[int] | None = None) -> dict[int, Balance]:
    """Per patient: self-pay charges (sessions without a claim) + the patient's part of claims - payments."""
    out: dict[int, Balance] = defaultdict(lambda: Balance(0, 0, 0, 0))
    no_claim = ~select(Claim.id).where(Claim.appointment_id == Charge.appointment_id).exists()
    q1 = select(Charge.patient_id, func.sum(func.coalesce(Charge.fee_cents, 0) * Charge.units)).where(
        Charge.clinic_id == clinic_id, no_claim).group_by(Charge.patient_id)
    q2 = select(Claim.patient_id, func.sum(Claim.patient_cents)).where(Claim.clinic_id == clinic_id).group_by(Claim.patient_id)
    q3 = select(Payment.patient_id, func.sum(Payment.amount_cents)).where(Payment.clinic_id == clinic_id).group_by(Payment.patient_id)
    if patient_ids is not None:
        q1 = q1.where(col(Charge.patient_id).in_(patient_ids))
        q2 = q2.where(col(Claim.patient_id).in_(patient_ids))
        q3 = q3.where(col(Payment.patient_id).in_(patient_ids))
    for q, attr in ((q1, "self_pay_cents"), (q2, "claims_cents"), (q3, "paid_cents")):
        for pid, total in (await session.execute(q)).all():
            b = out[pid]
            b.patient_id = pid
            setattr(b, attr, int(total or 0))
    return dict(out)


async def read_balances(session: AsyncSession, *, actor: Actor, patient_id: int | None = None) -> dict[int, Balance]:
    """What patients owe, as staff read it (audited)."""
    rows = await balances(session, clinic_id=actor.clinic_id, patient_ids=[patient_id] if patient_id is not None else None)
    record_read(session, actor=actor, what="balances", query={"patient_id": patient_id}, rows=len(rows), patient_ids=rows)
    return rows


async def list_coverages(session: AsyncSession, *, actor: Actor, patient_id: int | None = None) -> list[Coverage]:
    q = select(Coverage).where(Coverage.clinic_id == actor.clinic_id)
    if patient_id is not None:
        q = q.where(Coverage.patient_id == patient_id)
    rows = list((await session.exec(q.order_by(Coverage.patient_id))).all())
    record_read(session, actor=actor, what="coverage", query={"patient_id": patient_id}, rows=len(rows), patient_ids=[c.patient_id for c in rows])
    return rows


async def list_charges(session: AsyncSession, *, actor: Actor, appointment_id: int | None = None, patient_id: int | None = None) -> list[Charge]:
    q = select(Charge).where(Charge.clinic_id == actor.clinic_id)
    if appointment_id is not None:
        q = q.where(Charge.appointment_id == appointment_id)
    if patient_id is not None:
        q = q.where(Charge.patient_id == patient_id)
    rows = list((await session.exec(q.order_by(col(Charge.service_date).desc(), Charge.id).limit(1000))).all())
    record_read(session, actor=actor, what="charges", query={"appointment_id": appointment_id, "patient_id": patient_id}, rows=len(rows),
                patient_ids=[c.patient_id for c in rows])
    return rows


async def list_claims(session: AsyncSession, *, actor: Actor, status: str | None = None, patient_id: int | None = None) -> list[Claim]:
    q = select(Claim).where(Claim.clinic_id == actor.clinic_id)
    if status:
        q = q.where(Claim.status == status)
    if patient_id is not None:
        q = q.where(Claim.patient_id == patient_id)
    rows = list((await session.exec(q.order_by(col(Claim.id).desc()).limit(1000))).all())
    record_read(session, actor=actor, what="claims", query={"status": status, "patient_id": patient_id}, rows=len(rows),
                patient_ids=[c.patient_id for c in rows])
    return rows


async def gfe_overages(session: AsyncSession, *, clinic_id: int) -> list[dict[str, Any]]:
    """Issued, current GFEs whose provider's billed total is $400 or more above the estimate."""
    issued = list((await session.exec(select(Estimate).where(
        Estimate.clinic_id == clinic_id, Estimate.kind == "gfe", col(Estimate.issued_at).is_not(None))
    )).all())
    replaced = await superseded_ids(session, [e.id for e in issued])
    current = [e for e in issued if e.id not in replaced]
    ids = {a for e in current for a in e.content.get("appointment_ids", [])}
    if not ids:
        return []
    billed_by_appt: dict[int, int] = defaultdict(int)
    for c in (await session.exec(select(Charge).where(col(Charge.appointment_id).in_(ids)))).all():
        billed_by_appt[c.appointment_id] += c.amount_cents
    out = []
    for e in current:
        key = e.content["providers"][0]["key"]
        estimated = {p["key"]: p["total_cents"] for p in e.content["providers"]}
        billed = {key: sum(billed_by_appt.get(a, 0) for a in e.content.get("appointment_ids", []))}
        for provider, over in rules.overage(estimated, billed).items():
            out.append({"estimate": e, "provider": provider, "estimated_cents": estimated.get(provider, 0),
                        "billed_cents": billed[provider], "over_cents": over})
    return out
