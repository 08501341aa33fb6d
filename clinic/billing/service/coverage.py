"""A patient's coverage: self-pay or insured, the plan's terms, and which kind of estimate it calls for."""

from __future__ import annotations

from typing import Any

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import Actor, record, record_read
from clinic.billing import rules
from clinic.billing.models import Coverage
from clinic.billing.service.lookups import get_patient
from clinic.clinics import clinic_of
from clinic.db import register_conflicts
from clinic.errors import RuleBroken
from clinic.events import CoverageChanged, publish
from clinic.timeutil import utcnow

register_conflicts({"uq_coverages_patient_id": "This patient already has coverage on file; edit it instead."})


async def coverage_of(session: AsyncSession, clinic_id: int, patient_id: int) -> Coverage | None:
    q = select(Coverage).where(Coverage.patient_id == patient_id, Coverage.clinic_id == clinic_id)
    return (await session.exec(q)).first()


def estimate_kind(coverage: Coverage | None) -> str:
    """An insured patient who does not file a claim is self-pay for estimates."""
    if coverage is not None and coverage.kind == "insured" and coverage.files_claim:
        return "insurance"
    return "gfe"


def terms_of(coverage: Coverage) -> rules.Terms:
    return rules.Terms(
        copay=coverage.copay_cents,
        coinsurance_pct=coverage.coinsurance_pct,
        deductible_remaining=coverage.deductible_remaining_cents,
        oop_remaining=coverage.oop_remaining_cents,
        allowed={k: int(v) for k, v in (coverage.allowed_amounts or {}).items()},
        allowed_pct=coverage.allowed_pct,
        not_covered=frozenset(coverage.not_covered or ()),
    )


def clean_coverage(data: dict[str, Any]) -> dict[str, Any]:
    """Validated coverage fields; raises RuleBroken naming the field."""
    kind = str(data.get("kind") or "self_pay")
    if kind not in ("self_pay", "insured"):
        raise RuleBroken("Coverage is self-pay or insured.", field="kind")
    out: dict[str, Any] = {"kind": kind}
    if kind == "self_pay":
        return out | {"payer": "", "member_id": "", "copay_cents": 0, "coinsurance_pct": 0, "deductible_remaining_cents": 0,
                      "oop_remaining_cents": 0, "allowed_amounts": {}, "allowed_pct": None, "not_covered": [], "files_claim": False,
                      "in_network": True}
    payer = str(data.get("payer") or "").strip()
    member = str(data.get("member_id") or "").strip()
    if not payer:
        raise RuleBroken("Enter the insurance company (payer).", field="payer")
    if not member:
        raise RuleBroken("Enter the member id from the insurance card.", field="member_id")
    out |= {"payer": payer[:120], "member_id": member[:60]}
    for name in ("copay_cents", "deductible_remaining_cents", "oop_remaining_cents"):
        out[name] = rules.cents(data.get(name, 0), field=name)
    out["coinsurance_pct"] = rules.percent(data.get("coinsurance_pct", 0), field="coinsurance_pct")
    out["allowed_pct"] = rules.percent(data.get("allowed_pct"), field="allowed_pct", allow_none=True)
    allowed = data.get("allowed_amounts") or {}
    if isinstance(allowed, str):
        allowed = _parse_pairs(allowed)
    if not isinstance(allowed, dict):
        raise RuleBroken("Allowed amounts are code: amount pairs.", field="allowed_amounts")
    out["allowed_amounts"] = {rules.code(k, field="allowed_amounts"): rules.cents(v, field="allowed_amounts") for k, v in allowed.items()}
    not_covered = data.get("not_covered") or []
    if isinstance(not_covered, str):
        not_covered = [c for c in not_covered.replace(",", " ").split() if c]
    if not isinstance(not_covered, list):
        raise RuleBroken("Codes not covered are a list of codes.", field="not_covered")
    out["not_covered"] = sorted({rules.code(c, field="not_covered") for c in not_covered})
    out["files_claim"] = _bool(data.get("files_claim", True))
    out["in_network"] = _bool(data.get("in_network", True))
    return out


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).lower() in ("1", "true", "on", "yes")


def _parse_pairs(text: str) -> dict[str, str]:
    """'96365: 420.00, G2083: 610' (one per line or comma-separated) -> {code: dollars}."""
    out = {}
    for part in text.replace("\n", ",").split(","):
        if not part.strip():
            continue
        code, sep, amount = part.partition(":") if ":" in part else part.partition("=")
        if not sep:
            raise RuleBroken("Write allowed amounts as CODE: amount, e.g. 96365: 420.00.", field="allowed_amounts")
        out[code.strip()] = amount.strip()
    return out


async def set_coverage(session: AsyncSession, *, actor: Actor, patient_id: int, data: dict[str, Any], queue=None) -> Coverage:
    patient = await get_patient(session, actor.clinic_id, patient_id)
    values = clean_coverage(data)
    coverage = await coverage_of(session, actor.clinic_id, patient_id)
    before = estimate_kind(coverage)
    if coverage is None:
        coverage = Coverage(clinic_id=actor.clinic_id, patient_id=patient_id)
    changed = [k for k, v in values.items() if getattr(coverage, k) != v]
    for k, v in values.items():
        setattr(coverage, k, v)
    coverage.updated_at = utcnow()
    coverage.updated_by = actor.user_id
    session.add(coverage)
    await session.flush()
    # field names only: amounts and member ids stay in the table, not the trail
    record(session, actor=actor, action="coverage.set", entity="coverage", entity_id=coverage.id, patient_id=patient_id,
           changes={"fields": changed, "kind": coverage.kind, "estimates": estimate_kind(coverage)})
    if changed or before != estimate_kind(coverage):
        await publish(session, CoverageChanged(patient, await clinic_of(session, actor)), queue=queue)
    return coverage


async def list_coverages(session: AsyncSession, *, actor: Actor, patient_id: int | None = None) -> list[Coverage]:
    q = select(Coverage).where(Coverage.clinic_id == actor.clinic_id)
    if patient_id is not None:
        q = q.where(Coverage.patient_id == patient_id)
    rows = list((await session.exec(q.order_by(Coverage.patient_id))).all())
    record_read(session, actor=actor, what="coverage", query={"patient_id": patient_id}, rows=len(rows), patient_ids=[c.patient_id for c in rows])
    return rows
