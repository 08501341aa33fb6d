"""billing JSON routes: coverage, estimates (issue, request a GFE), charges, claims, balances, fee schedule."""

from __future__ import annotations

import msgspec
from litestar import Request, get, post, put

from clinic.billing import service
from clinic.billing.models import Charge, Claim, Coverage, Estimate, EstimateStatus, FeeScheduleEntry
from clinic.billing.schemas import (
    BalanceList,
    BalanceOut,
    ChargeList,
    ChargeOut,
    ClaimList,
    ClaimMove,
    ClaimOut,
    CoverageIn,
    CoverageList,
    CoverageOut,
    EstimateList,
    EstimateOut,
    FeeIn,
    FeeList,
    FeeOut,
    GfeRequest,
    PaymentIn,
    PaymentOut,
)
from clinic.clinics import Clinic
from clinic.errors import RuleBroken
from clinic.http import CurrentActor, CurrentClinic, DbSession
from clinic.timeutil import both_zones

TAGS = ["billing"]


def coverage_json(c: Coverage | None, patient_id: int) -> CoverageOut:
    if c is None:
        return CoverageOut(patient_id=patient_id, kind="self_pay", on_file=False, estimates_as="gfe")
    return CoverageOut(
        patient_id=c.patient_id, kind=c.kind, on_file=True, payer=c.payer, member_id=c.member_id,
        in_network=c.in_network, copay_cents=c.copay_cents, coinsurance_pct=c.coinsurance_pct,
        deductible_remaining_cents=c.deductible_remaining_cents, oop_remaining_cents=c.oop_remaining_cents,
        allowed_amounts=c.allowed_amounts, allowed_pct=c.allowed_pct, not_covered=c.not_covered,
        files_claim=c.files_claim, estimates_as=service.estimate_kind(c), updated_at=c.updated_at.isoformat(),
    )


def estimate_status(e: Estimate, replaced: set[int] | None) -> EstimateStatus:
    if e.issued_at is None:
        return EstimateStatus.draft
    return EstimateStatus.superseded if replaced and e.id in replaced else EstimateStatus.issued


def estimate_json(e: Estimate, tz: str, replaced: set[int] | None = None) -> EstimateOut:
    return EstimateOut(
        id=e.id, patient_id=e.patient_id, kind=e.kind, reason=e.reason, status=estimate_status(e, replaced),
        appointment_id=e.appointment_id, service_date=e.service_date, scheduled_on=e.scheduled_on, due_on=e.due_on,
        supersedes_id=e.supersedes_id, issued_at=both_zones(e.issued_at, tz), total_cents=e.total_cents,
        patient_cents=e.patient_cents, content=e.content if e.issued_at else None,
    )


def claim_json(c: Claim) -> ClaimOut:
    return ClaimOut(id=c.id, appointment_id=c.appointment_id, patient_id=c.patient_id, payer=c.payer, status=c.status,
                    billed_cents=c.billed_cents, plan_paid_cents=c.plan_paid_cents, patient_cents=c.patient_cents,
                    payer_reference=c.payer_reference, submitted_at=c.submitted_at and c.submitted_at.isoformat())


def charge_json(c: Charge) -> ChargeOut:
    return ChargeOut(id=c.id, appointment_id=c.appointment_id, patient_id=c.patient_id, service_date=c.service_date,
                     code=c.code, units=c.units, fee_cents=c.fee_cents, amount_cents=c.amount_cents,
                     diagnosis_codes=c.diagnosis_codes, place_of_service=c.place_of_service, provider_id=c.provider_id)


def fee_json(f: FeeScheduleEntry) -> FeeOut:
    return FeeOut(id=f.id, code=f.code, description=f.description, self_pay_cents=f.self_pay_cents,
                  effective_from=f.effective_from, effective_to=f.effective_to)


async def _tz(session, clinic_id: int) -> str:
    return (await session.get(Clinic, clinic_id)).timezone


@get("/coverage", opt={"permission": "billing.read"}, tags=TAGS, summary="Coverage of one patient, or every coverage on file")
async def coverage_list(db_session: DbSession, actor: CurrentActor, patient_id: int | None = None) -> CoverageList:
    if patient_id is not None:
        await service.get_patient(db_session, actor.clinic_id, patient_id)
        rows = await service.list_coverages(db_session, actor=actor, patient_id=patient_id)
        return CoverageList(items=[coverage_json(rows[0] if rows else None, patient_id)])
    return CoverageList(items=[coverage_json(c, c.patient_id) for c in await service.list_coverages(db_session, actor=actor)])


@put("/coverage/{patient_id:int}", opt={"permission": "coverage.write"}, tags=TAGS,
     summary="Set a patient's coverage (money in integer cents; coinsurance 0-100)")
async def coverage_put(request: Request, db_session: DbSession, actor: CurrentActor, patient_id: int, data: CoverageIn) -> CoverageOut:
    c = await service.set_coverage(db_session, actor=actor, patient_id=patient_id, data=msgspec.structs.asdict(data), queue=request.app.state.queue)
    return coverage_json(c, patient_id)


@get("/estimates", opt={"permission": "billing.read"}, tags=TAGS, summary="Estimates and GFEs (status=draft|issued)")
async def estimate_list(db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, patient_id: int | None = None, status: str | None = None) -> EstimateList:
    if status not in (None, "draft", "issued"):
        raise RuleBroken("status is draft or issued.", field="status")
    rows = await service.list_estimates(db_session, actor=actor, patient_id=patient_id, status=status)
    replaced = await service.superseded_ids(db_session, [e.id for e in rows])
    tz = clinic.timezone
    return EstimateList(items=[estimate_json(e, tz, replaced) for e in rows])


@get("/estimates/{estimate_id:int}", opt={"permission": "billing.read"}, tags=TAGS, summary="One estimate, with its issued document")
async def estimate_get(db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, estimate_id: int) -> EstimateOut:
    e = await service.get_estimate(db_session, actor=actor, estimate_id=estimate_id)
    return estimate_json(e, clinic.timezone, await service.superseded_ids(db_session, [e.id]))


@post("/estimates", opt={"permission": "billing.write"}, tags=TAGS, status_code=201,
      summary="A GFE the patient asked for (due within 3 business days)")
async def estimate_request(db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, data: GfeRequest) -> EstimateOut:
    if data.patient_id is None:
        raise RuleBroken("patient_id is required.", field="patient_id")
    e = await service.request_gfe(db_session, actor=actor, patient_id=data.patient_id, session_type_id=data.session_type_id, visits=data.visits)
    return estimate_json(e, clinic.timezone)


@post("/estimates/{estimate_id:int}/issue", opt={"permission": "billing.write"}, tags=TAGS, status_code=200,
      summary="Issue a draft: freeze it and email the patient a link")
async def estimate_issue(request: Request, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, estimate_id: int) -> EstimateOut:
    e = await service.issue(db_session, actor=actor, estimate_id=estimate_id, queue=request.app.state.queue)
    return estimate_json(e, clinic.timezone)


@get("/charges", opt={"permission": "billing.read"}, tags=TAGS, summary="Charges by session or patient")
async def charge_list(db_session: DbSession, actor: CurrentActor, appointment_id: int | None = None,
                       patient_id: int | None = None) -> ChargeList:
    rows = await service.list_charges(db_session, actor=actor, appointment_id=appointment_id, patient_id=patient_id)
    return ChargeList(items=[charge_json(c) for c in rows])


@get("/claims", opt={"permission": "billing.read"}, tags=TAGS, summary="Claims, filterable by status and patient")
async def claim_list(db_session: DbSession, actor: CurrentActor, status: str | None = None, patient_id: int | None = None) -> ClaimList:
    return ClaimList(items=[claim_json(c) for c in await service.list_claims(db_session, actor=actor, status=status, patient_id=patient_id)])


@post("/claims/{claim_id:int}/status", opt={"permission": "billing.write"}, tags=TAGS, status_code=200,
      summary="Move a claim: draft -> submitted -> paid | partially_paid | denied -> patient_balance -> closed")
async def claim_status(db_session: DbSession, actor: CurrentActor, claim_id: int, data: ClaimMove) -> ClaimOut:
    return claim_json(await service.move_claim(db_session, actor=actor, claim_id=claim_id, data=msgspec.structs.asdict(data)))


@get("/balances", opt={"permission": "billing.read"}, tags=TAGS, summary="What patients owe (charges and claims less payments)")
async def balance_list(db_session: DbSession, actor: CurrentActor, patient_id: int | None = None) -> BalanceList:
    rows = await service.read_balances(db_session, actor=actor, patient_id=patient_id)
    return BalanceList(items=[BalanceOut(patient_id=b.patient_id, owed_cents=b.owed_cents, self_pay_cents=b.self_pay_cents,
                                         claims_cents=b.claims_cents, paid_cents=b.paid_cents) for b in rows.values()])


@post("/patients/{patient_id:int}/payments", opt={"permission": "billing.write"}, tags=TAGS, status_code=201,
      summary="Record a patient payment (amount_cents)")
async def payment_add(db_session: DbSession, actor: CurrentActor, patient_id: int, data: PaymentIn) -> PaymentOut:
    p = await service.add_payment(db_session, actor=actor, patient_id=patient_id, data=msgspec.structs.asdict(data))
    return PaymentOut(id=p.id, patient_id=p.patient_id, amount_cents=p.amount_cents, method=p.method)


@get("/fees", opt={"permission": "billing.read"}, tags=TAGS, summary="The fee schedule, every dated row")
async def fee_list(db_session: DbSession, actor: CurrentActor) -> FeeList:
    return FeeList(items=[fee_json(f) for f in await service.fee_rows(db_session, actor.clinic_id)])


@post("/fees", opt={"permission": "admin"}, tags=TAGS, status_code=201, summary="Add a dated self-pay price for a code")
async def fee_add(db_session: DbSession, actor: CurrentActor, data: FeeIn) -> FeeOut:
    return fee_json(await service.add_fee(db_session, actor=actor, data=msgspec.structs.asdict(data)))


routes: list = [
    coverage_list, coverage_put, estimate_list, estimate_get, estimate_request, estimate_issue, charge_list, claim_list,
    claim_status, balance_list, payment_add, fee_list, fee_add,
]
