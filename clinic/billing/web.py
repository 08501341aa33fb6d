"""Billing pages: what is due and late, estimates and GFEs, coverage, superbills, balances, claims; the fee schedule admin."""

from __future__ import annotations

from collections import Counter
from datetime import date

from litestar import Request, get, post
from litestar.response import Redirect, Template
from msgspec import UNSET, Struct, UnsetType
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import record, record_read
from clinic.auth.models import StaffUser
from clinic.auth.permissions import allows
from clinic.billing import rules, service
from clinic.billing.models import Charge, Claim, ClaimStatus, Estimate, Payment
from clinic.errors import NotFound
from clinic.forms import read_form
from clinic.http import CurrentActor, CurrentClinic, DbSession, given
from clinic.pages import notices_banner
from clinic.patients.models import Patient
from clinic.scheduling.models import Appointment, SessionType

HEAD = '<link rel="stylesheet" href="/static/css/billing.css">'
DONE = {
    "issued": "Estimate issued; the patient gets an email with a secure link.",
    "coverage": "Coverage saved.",
    "requested": "GFE requested: it is on the due list with its deadline.",
    "payment": "Payment recorded.",
    "claim": "Claim updated.",
    "fee": "Fee schedule saved.",
}


# ---- forms: amounts are dollars as typed (the rules read "1,250.00"); a field left out takes the service's default


class CoverageForm(Struct):
    kind: str | UnsetType = UNSET
    payer: str | UnsetType = UNSET
    member_id: str | UnsetType = UNSET
    copay_cents: str | UnsetType = UNSET
    coinsurance_pct: str | UnsetType = UNSET
    deductible_remaining_cents: str | UnsetType = UNSET
    oop_remaining_cents: str | UnsetType = UNSET
    allowed_amounts: str | UnsetType = UNSET
    allowed_pct: str | UnsetType = UNSET
    not_covered: str | UnsetType = UNSET
    files_claim: bool = False
    in_network: bool = False


class GfeRequestForm(Struct):
    session_type_id: int | None = None
    visits: int | None = None


class PaymentForm(Struct):
    amount: str | UnsetType = UNSET
    method: str | UnsetType = UNSET
    appointment_id: int | None = None


class ClaimForm(Struct):
    status: str | UnsetType = UNSET
    plan_paid: str | UnsetType = UNSET
    patient_owes: str | UnsetType = UNSET
    payer_reference: str | UnsetType = UNSET
    note: str | UnsetType = UNSET
    back: str = ""  # "patient": return to the patient's page


class FeeForm(Struct):
    code: str | UnsetType = UNSET
    description: str | UnsetType = UNSET
    self_pay: str | UnsetType = UNSET
    effective_from: str | UnsetType = UNSET
    effective_to: str | UnsetType = UNSET


class FeeEndForm(Struct):
    effective_to: str | None = None


async def patient_names(session: AsyncSession, clinic_id: int, ids: set[int]) -> dict[int, Patient]:
    if not ids:
        return {}
    rows = await session.exec(select(Patient).where(Patient.clinic_id == clinic_id, col(Patient.id).in_(ids)))
    return {p.id: p for p in rows.all()}


@get("/billing", opt={"permission": "billing.read"}, include_in_schema=False)
async def dashboard(db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, done: str | None = None) -> Template:
    today = clinic.today()
    drafts = await service.list_estimates(db_session, actor=actor, status="draft")
    issued = await service.list_estimates(db_session, actor=actor, status="issued", limit=15)
    replaced = await service.superseded_ids(db_session, [e.id for e in issued])
    overages = await service.gfe_overages(db_session, clinic_id=clinic.id)
    owed = sorted((b for b in (await service.read_balances(db_session, actor=actor)).values() if b.owed_cents > 0),
                  key=lambda b: -b.owed_cents)[:20]
    claims = list((await db_session.exec(
        select(Claim).where(Claim.clinic_id == clinic.id, Claim.status != "closed").order_by(col(Claim.updated_at).desc()).limit(30)
    )).all())
    claim_counts = Counter((await db_session.exec(select(Claim.status).where(Claim.clinic_id == clinic.id))).all())
    sessions = (await db_session.exec(
        select(Charge.appointment_id, Charge.patient_id, Charge.service_date).where(Charge.clinic_id == clinic.id)
        .distinct().order_by(col(Charge.service_date).desc(), col(Charge.appointment_id).desc()).limit(15)
    )).all()
    ids = {e.patient_id for e in drafts + issued} | {b.patient_id for b in owed} | {c.patient_id for c in claims} \
        | {s[1] for s in sessions} | {o["estimate"].patient_id for o in overages}
    record_read(db_session, actor=actor, what="billing_dashboard", query={}, rows=len(ids), patient_ids=ids)
    return Template("billing/dashboard.html", context={
        "head": HEAD, "clinic": clinic, "today": today, "drafts": drafts, "issued": issued, "replaced": replaced,
        "overages": overages, "owed": owed, "claims": claims, "claim_counts": claim_counts, "claim_states": ClaimStatus,
        "claim_next": rules.CLAIM_NEXT, "sessions": sessions, "patients": await patient_names(db_session, clinic.id, ids),
        "deadline_state": rules.deadline_state, "done": DONE.get(done or ""), **await notices_banner(db_session, clinic),
    })


@get("/billing/estimates/{estimate_id:int}", opt={"permission": "billing.read"}, include_in_schema=False)
async def estimate_page(db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, estimate_id: int) -> Template:
    estimate = await service.get_estimate(db_session, actor=actor, estimate_id=estimate_id)
    patient = (await patient_names(db_session, clinic.id, {estimate.patient_id}))[estimate.patient_id]
    newer = (await db_session.exec(select(Estimate.id).where(Estimate.supersedes_id == estimate.id))).first()
    record(db_session, actor=actor, action="billing.estimate.read", entity="estimate", entity_id=estimate.id, patient_id=patient.id)
    return Template("billing/estimate.html", context={
        "head": HEAD, "clinic": clinic, "e": estimate, "c": estimate.content, "patient": patient, "newer": newer,
        "today": clinic.today(), "deadline_state": rules.deadline_state, "public": False,
    })


@post("/billing/estimates/{estimate_id:int}/issue", opt={"permission": "billing.write"}, include_in_schema=False)
async def issue_estimate(request: Request, db_session: DbSession, actor: CurrentActor, estimate_id: int) -> Redirect:
    e = await service.issue(db_session, actor=actor, estimate_id=estimate_id, queue=request.app.state.queue)
    return Redirect(path=f"/billing/estimates/{e.id}?done=issued")


@get("/billing/patients/{patient_id:int}", opt={"permission": "billing.read"}, include_in_schema=False)
async def patient_page(db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, patient_id: int, done: str | None = None) -> Template:
    patient = await service.get_patient(db_session, clinic.id, patient_id)
    coverage = await service.coverage_of(db_session, clinic.id, patient_id)
    estimates = await service.list_estimates(db_session, actor=actor, patient_id=patient_id)
    replaced = await service.superseded_ids(db_session, [e.id for e in estimates])
    charges = list((await db_session.exec(select(Charge).where(Charge.patient_id == patient_id, Charge.clinic_id == clinic.id)
                                          .order_by(col(Charge.service_date).desc(), Charge.id))).all())
    claims = {c.appointment_id: c for c in (await db_session.exec(select(Claim).where(Claim.patient_id == patient_id))).all()}
    payments = list((await db_session.exec(select(Payment).where(Payment.patient_id == patient_id).order_by(col(Payment.received_at).desc()))).all())
    balance = (await service.balances(db_session, clinic_id=clinic.id, patient_ids=[patient_id])).get(patient_id)
    session_types = list((await db_session.exec(select(SessionType).where(SessionType.clinic_id == clinic.id, SessionType.active == True))).all())  # noqa: E712
    record(db_session, actor=actor, action="billing.patient.read", entity="patient", entity_id=patient_id, patient_id=patient_id)
    by_visit: dict[int, list[Charge]] = {}
    for c in charges:
        by_visit.setdefault(c.appointment_id, []).append(c)
    return Template("billing/patient.html", context={
        "head": HEAD, "clinic": clinic, "patient": patient, "coverage": coverage, "kind": service.estimate_kind(coverage),
        "estimates": estimates, "replaced": replaced, "by_visit": by_visit, "claims": claims, "payments": payments,
        "balance": balance, "session_types": session_types, "today": clinic.today(),
        "deadline_state": rules.deadline_state, "claim_next": rules.CLAIM_NEXT, "done": DONE.get(done or ""),
    })


@get("/billing/patients/{patient_id:int}/coverage", opt={"permission": "coverage.write"}, include_in_schema=False)
async def coverage_page(db_session: DbSession, actor: CurrentActor, patient_id: int, done: str | None = None) -> Template:
    patient = await service.get_patient(db_session, actor.clinic_id, patient_id)
    coverage = await service.coverage_of(db_session, actor.clinic_id, patient_id)
    return Template("billing/coverage.html", context={"head": HEAD, "patient": patient, "coverage": coverage,
                                                       "done": DONE.get(done or ""), "form": None})


@post("/billing/patients/{patient_id:int}/coverage", opt={"permission": "coverage.write"}, include_in_schema=False)
async def coverage_save(request: Request, db_session: DbSession, actor: CurrentActor, patient_id: int) -> Redirect:
    form = await read_form(request, CoverageForm)
    await service.set_coverage(db_session, actor=actor, patient_id=patient_id, data=given(form), queue=request.app.state.queue)
    target = f"/billing/patients/{patient_id}" if allows("billing.read", actor.roles) else f"/billing/patients/{patient_id}/coverage"
    return Redirect(path=f"{target}?done=coverage")


@post("/billing/patients/{patient_id:int}/gfe-request", opt={"permission": "billing.write"}, include_in_schema=False)
async def gfe_request(request: Request, db_session: DbSession, actor: CurrentActor, patient_id: int) -> Redirect:
    form = await read_form(request, GfeRequestForm)
    await service.request_gfe(db_session, actor=actor, patient_id=patient_id, session_type_id=form.session_type_id, visits=form.visits)
    return Redirect(path=f"/billing/patients/{patient_id}?done=requested")


@post("/billing/patients/{patient_id:int}/payments", opt={"permission": "billing.write"}, include_in_schema=False)
async def payment_add(request: Request, db_session: DbSession, actor: CurrentActor, patient_id: int) -> Redirect:
    form = await read_form(request, PaymentForm)
    await service.add_payment(db_session, actor=actor, patient_id=patient_id, data=given(form))
    return Redirect(path=f"/billing/patients/{patient_id}?done=payment")


@post("/billing/claims/{claim_id:int}", opt={"permission": "billing.write"}, include_in_schema=False)
async def claim_move(request: Request, db_session: DbSession, actor: CurrentActor, claim_id: int) -> Redirect:
    form = await read_form(request, ClaimForm)
    claim = await service.move_claim(db_session, actor=actor, claim_id=claim_id, data=given(form))
    target = f"/billing/patients/{claim.patient_id}" if form.back == "patient" else "/billing"
    return Redirect(path=f"{target}?done=claim")


@get("/billing/sessions/{appointment_id:int}/superbill", opt={"permission": "billing.read"}, include_in_schema=False)
async def superbill(db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, appointment_id: int) -> Template:
    appt = None
    if service.real_id(appointment_id):
        appt = (await db_session.exec(select(Appointment).where(Appointment.id == appointment_id, Appointment.clinic_id == actor.clinic_id))).first()
    if appt is None:
        raise NotFound("No such session.")
    patient = await service.get_patient(db_session, clinic.id, appt.patient_id)
    charges = list((await db_session.exec(select(Charge).where(Charge.appointment_id == appt.id).order_by(Charge.id))).all())
    coverage = await service.coverage_of(db_session, clinic.id, patient.id)
    claim = (await db_session.exec(select(Claim).where(Claim.appointment_id == appt.id))).first()
    paid = sum((await db_session.exec(select(Payment.amount_cents).where(Payment.appointment_id == appt.id))).all())
    provider_ids = {c.provider_id for c in charges if c.provider_id}
    providers = {u.id: u for u in (await db_session.exec(select(StaffUser).where(col(StaffUser.id).in_(provider_ids)))).all()} if provider_ids else {}
    record(db_session, actor=actor, action="billing.superbill.read", entity="appointment", entity_id=appt.id, patient_id=patient.id)
    return Template("billing/superbill.html", context={
        "head": HEAD, "clinic": clinic, "patient": patient, "appt": appt, "charges": charges, "coverage": coverage,
        "claim": claim, "paid": paid, "providers": providers, "total": sum(c.amount_cents for c in charges),
        "plan_paid": claim.plan_paid_cents if claim else 0,
    })


# ---- fee schedule (admin) --------------------------------------------------------------------------


@get("/admin/fees", opt={"permission": "admin"}, include_in_schema=False)
async def fees_page(db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, done: str | None = None, on: str | None = None) -> Template:
    today = clinic.today()
    try:
        day = date.fromisoformat(on) if on else today
    except ValueError:
        day = today
    rows = await service.fee_rows(db_session, clinic.id)
    current = {r.code: r for r in rows if r.effective_from <= day and (r.effective_to is None or day < r.effective_to)}
    return Template("billing/fees.html", context={"head": HEAD, "rows": rows, "current": current, "day": day, "today": today,
                                                   "done": DONE.get(done or "")})


@post("/admin/fees", opt={"permission": "admin"}, include_in_schema=False)
async def fees_add(request: Request, db_session: DbSession, actor: CurrentActor) -> Redirect:
    await service.add_fee(db_session, actor=actor, data=given(await read_form(request, FeeForm)))
    return Redirect(path="/admin/fees?done=fee")


@post("/admin/fees/{fee_id:int}/end", opt={"permission": "admin"}, include_in_schema=False)
async def fees_end(request: Request, db_session: DbSession, actor: CurrentActor, fee_id: int) -> Redirect:
    form = await read_form(request, FeeEndForm)
    await service.end_fee(db_session, actor=actor, fee_id=fee_id, effective_to=form.effective_to)
    return Redirect(path="/admin/fees?done=fee")


routes: list = [
    dashboard, estimate_page, issue_estimate, patient_page, coverage_page, coverage_save, gfe_request, payment_add,
    claim_move, superbill, fees_page, fees_add, fees_end,
]
