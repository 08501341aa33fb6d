"""Issuing an estimate: the document frozen at issue (45 CFR 149.610), and reading estimates."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import Actor, record, record_read
from clinic.billing import rules
from clinic.billing.models import Coverage, Estimate
from clinic.billing.service.coverage import coverage_of, estimate_kind, terms_of
from clinic.billing.service.drafts import on_coverage_changed, upcoming_appointments
from clinic.billing.service.fees import fee_on, fee_rows
from clinic.billing.service.lookups import get_patient, real_id
from clinic.clinics import Clinic, clinic_of
from clinic.errors import Conflict, NotFound, RuleBroken
from clinic.events import CoverageChanged, EstimateIssued, publish
from clinic.patients.models import Patient
from clinic.scheduling.models import Appointment, SessionType
from clinic.scheduling.protocols import Protocol
from clinic.timeutil import utcnow


def _provider(clinic: Clinic) -> dict[str, str]:
    return {"key": f"clinic:{clinic.id}", "name": clinic.name, "npi": clinic.npi, "tin": clinic.tin,
            "state": clinic.state, "location": clinic.address}


async def build_content(
    session: AsyncSession, *, estimate: Estimate, clinic: Clinic, patient: Patient, coverage: Coverage | None
) -> dict[str, Any]:
    """The document the patient receives: every element 45 CFR 149.610 asks for, frozen at issue."""
    fees = await fee_rows(session, clinic.id)
    visits: list[tuple[int | None, date, SessionType]] = [
        (a.id, clinic.local_date(a.starts_at), st) for a, st in await upcoming_appointments(session, clinic=clinic, patient_id=patient.id)
    ]
    plan_meta = (estimate.content or {}).get("planned")
    planned_dose: dict[int, int | None] = {}
    if not visits and plan_meta:
        st = await session.get(SessionType, plan_meta["session_type_id"])
        start = estimate.service_date or rules.add_business_days(clinic.today(), 3)
        visits = [(None, start + timedelta(days=7 * i), st) for i in range(int(plan_meta["visits"]))]
    if not visits:
        raise RuleBroken("Nothing is booked for this patient in the next 12 months: there is nothing to estimate.")
    ids = [v[0] for v in visits if v[0] is not None]
    if ids:
        doses = await session.exec(select(Appointment.id, Appointment.planned_dose_mg).where(col(Appointment.id).in_(ids)))
        planned_dose = dict(doses.all())
    provider = _provider(clinic)
    dx = list(patient.diagnosis_codes or [])
    out_visits, line_sets = [], []
    for appt_id, day, st in visits:
        lines = []
        for code, units in rules.expected_lines(Protocol.of(st), planned_dose.get(appt_id) if appt_id else None):
            fee = fee_on(fees, code, day)
            if fee is None:
                raise RuleBroken(f"The fee schedule has no price for {code} on {day}: add it under Admin > Fees first.", field="fee_schedule")
            lines.append({"code": code, "description": fee.description, "units": units, "fee_cents": fee.self_pay_cents,
                          "amount_cents": fee.self_pay_cents * units, "diagnosis_codes": dx, "provider": provider["key"]})
        out_visits.append({"appointment_id": appt_id, "date": day.isoformat(), "service": st.name, "lines": lines,
                           "total_cents": sum(ln["amount_cents"] for ln in lines)})
        line_sets.append([rules.Line(ln["code"], ln["units"], ln["fee_cents"]) for ln in lines])
    total = sum(v["total_cents"] for v in out_visits)
    content: dict[str, Any] = {
        "kind": estimate.kind,
        "patient": {"name": patient.full_name, "date_of_birth": patient.date_of_birth.isoformat()},
        "primary_service": {"service": out_visits[0]["service"], "date": out_visits[0]["date"],
                            "codes": [ln["code"] for ln in out_visits[0]["lines"]]},
        "diagnosis_codes": dx,
        "visits": out_visits,
        "appointment_ids": ids,
        "first_date": out_visits[0]["date"],
        "last_date": out_visits[-1]["date"],
        "providers": [provider | {"total_cents": total}],
        "total_cents": total,
    }
    if estimate.kind == "gfe":
        content["scheduled_separately"] = list((clinic.settings or {}).get(
            "gfe_separately_scheduled",
            ["Follow-up visits with your prescriber", "Integration therapy sessions", "Laboratory tests, if ordered"],
        ))
        content["disclaimers"] = list(rules.GFE_DISCLAIMERS)
        content["patient_cents"] = total
    else:
        assert coverage is not None
        shares = rules.course_shares(line_sets, terms_of(coverage))
        for v, s in zip(out_visits, shares):
            v |= {"allowed_cents": s.allowed, "patient_cents": s.patient, "plan_cents": s.plan}
        content["coverage"] = {"payer": coverage.payer, "member_id": coverage.member_id, "in_network": coverage.in_network,
                               "copay_cents": coverage.copay_cents, "coinsurance_pct": coverage.coinsurance_pct,
                               "deductible_remaining_cents": coverage.deductible_remaining_cents,
                               "oop_remaining_cents": coverage.oop_remaining_cents}
        content["patient_cents"] = sum(s.patient for s in shares)
        content["disclaimers"] = ["This is an estimate based on your plan's terms as we know them today; "
                                  "your plan decides what it pays when the claim is processed."]
    return content


async def issue(session: AsyncSession, *, actor: Actor, estimate_id: int, queue=None) -> Estimate:
    """Freeze a draft into the document the patient receives, and tell them it is ready."""
    if not real_id(estimate_id):
        raise NotFound("No such estimate.")
    estimate = (await session.exec(
        select(Estimate).where(Estimate.id == estimate_id, Estimate.clinic_id == actor.clinic_id).with_for_update()
    )).first()
    if estimate is None:
        raise NotFound("No such estimate.")
    return await _issue(session, actor=actor, estimate=estimate, queue=queue)


async def try_issue(session: AsyncSession, *, estimate: Estimate, clinic: Clinic, queue=None) -> Estimate | None:
    """Issue without a person (e.g. after a coverage change); a draft that cannot be computed yet waits for billing staff."""
    actor = Actor(user_id=None, clinic_id=clinic.id, roles=("system",), via="system", name="system")
    try:
        async with session.begin_nested():
            return await _issue(session, actor=actor, estimate=estimate, queue=queue)
    except (RuleBroken, Conflict):
        return None


async def estimate_for_coverage(session: AsyncSession, event: CoverageChanged, *, queue) -> None:
    """Subscriber (clinic.events): a new estimate of the kind the coverage now calls for; an insurance estimate needs
    no review, so it is issued at once when the coverage says enough to compute it."""
    draft = await on_coverage_changed(session, patient=event.patient, clinic=event.clinic)
    if draft is not None and draft.kind == "insurance":
        await try_issue(session, estimate=draft, clinic=event.clinic, queue=queue)


async def _issue(session: AsyncSession, *, actor: Actor, estimate: Estimate, queue) -> Estimate:
    if estimate.issued_at is not None:
        raise Conflict("This estimate was already issued; issued estimates are kept as sent and never edited.")
    clinic = await clinic_of(session, actor)
    patient = await get_patient(session, actor.clinic_id, estimate.patient_id)
    coverage = await coverage_of(session, clinic.id, patient.id)
    if estimate_kind(coverage) != estimate.kind:
        raise Conflict("The patient's coverage changed since this draft was made; make a new estimate.")
    content = await build_content(session, estimate=estimate, clinic=clinic, patient=patient, coverage=coverage)
    estimate.content = content
    estimate.total_cents = content["total_cents"]
    estimate.patient_cents = content["patient_cents"]
    estimate.issued_at = utcnow()
    estimate.issued_by = actor.user_id
    session.add(estimate)
    await session.flush()
    record(session, actor=actor, action="estimate.issue", entity="estimate", entity_id=estimate.id, patient_id=patient.id,
           changes={"kind": estimate.kind, "supersedes_id": estimate.supersedes_id, "due_on": estimate.due_on,
                    "late": bool(estimate.due_on and clinic.today() > estimate.due_on)})
    await publish(session, EstimateIssued(estimate, patient, clinic), queue=queue)
    return estimate


async def get_estimate(session: AsyncSession, *, actor: Actor, estimate_id: int) -> Estimate:
    if not real_id(estimate_id):
        raise NotFound("No such estimate.")
    e = (await session.exec(select(Estimate).where(Estimate.id == estimate_id, Estimate.clinic_id == actor.clinic_id))).first()
    if e is None:
        raise NotFound("No such estimate.")
    return e


async def list_estimates(session: AsyncSession, *, actor: Actor, patient_id: int | None = None, status: str | None = None,
                         limit: int = 200) -> list[Estimate]:
    q = select(Estimate).where(Estimate.clinic_id == actor.clinic_id)
    if patient_id is not None:
        q = q.where(Estimate.patient_id == patient_id)
    if status == "draft":
        q = q.where(col(Estimate.issued_at).is_(None)).order_by(col(Estimate.due_on).asc().nulls_last(), Estimate.id)
    elif status == "issued":
        q = q.where(col(Estimate.issued_at).is_not(None)).order_by(col(Estimate.issued_at).desc())
    else:
        q = q.order_by(col(Estimate.id).desc())
    rows = list((await session.exec(q.limit(limit))).all())
    record_read(session, actor=actor, what="estimates", query={"patient_id": patient_id, "status": status}, rows=len(rows),
                patient_ids=[e.patient_id for e in rows])
    return rows


async def superseded_ids(session: AsyncSession, ids: list[int]) -> set[int]:
    if not ids:
        return set()
    rows = await session.exec(select(Estimate.supersedes_id).where(col(Estimate.supersedes_id).in_(ids), col(Estimate.issued_at).is_not(None)))
    return set(rows.all())
