"""Billing use cases: fee schedule, coverage, drafting and issuing estimates, charges at discharge, claims, balances.

Each function works inside the caller's transaction; routes and hooks decide when it commits.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import Actor, record, record_read
from clinic.billing import rules
from clinic.billing.models import Charge, Claim, Coverage, Estimate, FeeScheduleEntry, Payment
from clinic.db import register_conflicts
from clinic.errors import Conflict, NotFound, RuleBroken
from clinic.patients.models import Patient
from clinic.scheduling.models import Appointment, Clinic, ClosedDate, SessionType
from clinic.scheduling.protocols import Protocol
from clinic.timeutil import utcnow

register_conflicts(
    {
        "uq_fee_schedule_clinic_code_from": "That code already has a price starting on that date; end it or pick another date.",
        "uq_estimates_one_draft": "This patient already has an estimate being prepared; issue or update that one.",
        "uq_estimates_supersedes_id": "That estimate was already replaced by a newer one; reload the page.",
        "uq_coverages_patient_id": "This patient already has coverage on file; edit it instead.",
    }
)

# Good practice: a GFE covers up to 12 months of recurring care (45 CFR 149.610(b)(2)(v)).
ESTIMATE_HORIZON_DAYS = 365
LIVE_FOR_ESTIMATES = ("booked", "arrived", "in_progress")


def clinic_today(clinic: Clinic, now: datetime | None = None) -> date:
    return (now or utcnow()).astimezone(ZoneInfo(clinic.timezone)).date()


def local_date(instant: datetime, clinic: Clinic) -> date:
    return instant.astimezone(ZoneInfo(clinic.timezone)).date()


async def closed_dates(session: AsyncSession, clinic_id: int) -> frozenset[date]:
    rows = await session.exec(select(ClosedDate.day).where(ClosedDate.clinic_id == clinic_id))
    return frozenset(rows.all())


# ---- fee schedule ----------------------------------------------------------------------------------


async def fee_rows(session: AsyncSession, clinic_id: int) -> list[FeeScheduleEntry]:
    q = select(FeeScheduleEntry).where(FeeScheduleEntry.clinic_id == clinic_id).order_by(
        FeeScheduleEntry.code, col(FeeScheduleEntry.effective_from).desc()
    )
    return list((await session.exec(q)).all())


def fee_on(rows: list[FeeScheduleEntry], code: str, day: date) -> FeeScheduleEntry | None:
    for r in rows:
        if r.code == code and r.effective_from <= day and (r.effective_to is None or day < r.effective_to):
            return r
    return None


async def add_fee(session: AsyncSession, *, actor: Actor, data: dict[str, Any]) -> FeeScheduleEntry:
    description = str(data.get("description") or "").strip()
    if not description or len(description) > 200:
        raise RuleBroken("Describe the service in up to 200 characters.", field="description")
    code = rules.code(data.get("code"), field="code")
    price = rules.cents(data.get("self_pay_cents", data.get("self_pay")), field="self_pay_cents")
    start = _date(data.get("effective_from"), "effective_from")
    end = _date(data.get("effective_to"), "effective_to", allow_none=True)
    if end is not None and end <= start:
        raise RuleBroken("The end date must be after the start date.", field="effective_to")
    rows = [r for r in await fee_rows(session, actor.clinic_id) if r.code == code]
    for r in rows:
        r_end = r.effective_to or date.max
        if start < r_end and (end or date.max) > r.effective_from:
            if r.effective_from < start and r.effective_to is None:
                # a new price from a later date ends the open one the day before
                r.effective_to = start
                session.add(r)
                continue
            raise Conflict(f"{code} already has a price from {r.effective_from} that overlaps these dates.", field="effective_from")
    entry = FeeScheduleEntry(clinic_id=actor.clinic_id, code=code, description=description, self_pay_cents=price,
                             effective_from=start, effective_to=end)
    session.add(entry)
    await session.flush()
    record(session, actor=actor, action="fee.add", entity="fee_schedule", entity_id=entry.id,
           changes={"code": code, "self_pay_cents": price, "effective_from": start, "effective_to": end})
    return entry


async def end_fee(session: AsyncSession, *, actor: Actor, fee_id: int, effective_to: Any) -> FeeScheduleEntry:
    if not real_id(fee_id):
        raise NotFound("No such fee schedule row.")
    entry = (await session.exec(select(FeeScheduleEntry).where(FeeScheduleEntry.id == fee_id, FeeScheduleEntry.clinic_id == actor.clinic_id))).first()
    if entry is None:
        raise NotFound("No such fee schedule row.")
    end = _date(effective_to, "effective_to")
    if end <= entry.effective_from:
        raise RuleBroken("The end date must be after the start date.", field="effective_to")
    entry.effective_to = end
    session.add(entry)
    record(session, actor=actor, action="fee.end", entity="fee_schedule", entity_id=entry.id, changes={"effective_to": end})
    return entry


def _date(value: Any, field: str, *, allow_none: bool = False) -> date | None:
    if isinstance(value, date):
        return value
    if value in (None, "") and allow_none:
        return None
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise RuleBroken("Enter a date as YYYY-MM-DD.", field=field) from None


# ---- coverage --------------------------------------------------------------------------------------


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
    from clinic.notices import hooks

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
        clinic = await session.get(Clinic, actor.clinic_id)
        await hooks.coverage_changed(session, queue=queue, patient=patient, clinic=clinic)
    return coverage


def real_id(value: int) -> bool:
    """Ids beyond the database's integer range name nothing (and would fail the query instead)."""
    return 0 < value < 2**31


async def get_patient(session: AsyncSession, clinic_id: int, patient_id: int) -> Patient:
    if not real_id(patient_id):
        raise NotFound("No such patient in this clinic.")
    p = (await session.exec(select(Patient).where(Patient.id == patient_id, Patient.clinic_id == clinic_id))).first()
    if p is None:
        raise NotFound("No such patient in this clinic.")
    return p


# ---- estimates: drafts -----------------------------------------------------------------------------


async def latest_issued(session: AsyncSession, patient_id: int, kind: str | None = None) -> Estimate | None:
    q = select(Estimate).where(Estimate.patient_id == patient_id, col(Estimate.issued_at).is_not(None))
    if kind:
        q = q.where(Estimate.kind == kind)
    return (await session.exec(q.order_by(col(Estimate.issued_at).desc(), col(Estimate.id).desc()).limit(1))).first()


async def draft_of(session: AsyncSession, patient_id: int, kind: str) -> Estimate | None:
    q = select(Estimate).where(Estimate.patient_id == patient_id, Estimate.kind == kind, col(Estimate.issued_at).is_(None))
    return (await session.exec(q.with_for_update())).first()


def _covered(estimate: Estimate | None, appointment_id: int) -> bool:
    return estimate is not None and appointment_id in (estimate.content.get("appointment_ids") or [])


async def open_draft(
    session: AsyncSession, *, clinic: Clinic, patient_id: int, kind: str, reason: str,
    service_date: date | None, appointment_id: int | None, now: datetime | None = None, deadline_as: str | None = None,
) -> Estimate:
    """Create the patient's draft of this kind, or widen the one already open; its deadline is the earliest owed."""
    today = clinic_today(clinic, now)
    closed = await closed_dates(session, clinic.id)
    if kind == "gfe":
        due = rules.gfe_due(scheduled_on=today, service_on=service_date, reason=deadline_as or reason, closed=closed)
    else:
        # not a legal deadline: the clinic's own promise to send insurance estimates within a business day
        due = rules.add_business_days(today, 1, closed)
    draft = await draft_of(session, patient_id, kind)
    if draft is None:
        previous = await latest_issued(session, patient_id, kind)
        if previous is not None and (await session.exec(select(Estimate.id).where(Estimate.supersedes_id == previous.id))).first():
            previous = None  # already replaced
        draft = Estimate(clinic_id=clinic.id, patient_id=patient_id, kind=kind, reason=reason, appointment_id=appointment_id,
                         service_date=service_date, scheduled_on=today, due_on=due,
                         supersedes_id=previous.id if previous else None)
        try:
            async with session.begin_nested():
                session.add(draft)
                await session.flush()
            return draft
        except IntegrityError:
            # a concurrent booking for the same patient opened the draft first: widen that one (never fail a booking)
            draft = await draft_of(session, patient_id, kind)
            if draft is None:
                raise
    if service_date and (draft.service_date is None or service_date < draft.service_date):
        draft.service_date, draft.appointment_id = service_date, appointment_id
    if due and (draft.due_on is None or due < draft.due_on):
        draft.due_on = due
    if reason == "scope_change" and draft.reason == "scheduled":
        draft.reason = reason
    session.add(draft)
    await session.flush()
    return draft


async def drop_drafts(session: AsyncSession, patient_id: int, *, except_kind: str | None = None) -> None:
    q = delete(Estimate).where(Estimate.patient_id == patient_id, col(Estimate.issued_at).is_(None))
    if except_kind:
        q = q.where(Estimate.kind != except_kind)
    await session.execute(q)


async def on_booked(session: AsyncSession, *, appointment: Appointment, patient: Patient, clinic: Clinic) -> Estimate | None:
    coverage = await coverage_of(session, clinic.id, patient.id)
    kind = estimate_kind(coverage)
    issued = await latest_issued(session, patient.id, kind)
    if _covered(issued, appointment.id):
        return None
    service = local_date(appointment.starts_at, clinic)
    reason = "scope_change" if issued is not None and service <= date.fromisoformat(issued.content.get("last_date", "1900-01-01")) else "scheduled"
    if kind == "gfe" and reason == "scheduled":
        closed = await closed_dates(session, clinic.id)
        if rules.gfe_due(scheduled_on=clinic_today(clinic), service_on=service, reason="scheduled", closed=closed) is None \
                and await draft_of(session, patient.id, kind) is None:
            return None  # under 3 business days ahead: no GFE is owed (staff can still make one on request)
    return await open_draft(session, clinic=clinic, patient_id=patient.id, kind=kind, reason=reason,
                            service_date=service, appointment_id=appointment.id)


async def on_changed(session: AsyncSession, *, appointment: Appointment, patient: Patient, clinic: Clinic) -> Estimate | None:
    """A moved or cancelled visit that an issued estimate covers changes its scope: a new one is owed before the next visit."""
    coverage = await coverage_of(session, clinic.id, patient.id)
    kind = estimate_kind(coverage)
    issued = await latest_issued(session, patient.id, kind)
    upcoming = await upcoming_appointments(session, clinic=clinic, patient_id=patient.id)
    if not upcoming:
        await drop_drafts(session, patient.id)
        return None
    if not _covered(issued, appointment.id) and await draft_of(session, patient.id, kind) is None:
        return None
    first = upcoming[0][0]
    return await open_draft(session, clinic=clinic, patient_id=patient.id, kind=kind, reason="scope_change",
                            service_date=local_date(first.starts_at, clinic), appointment_id=first.id)


async def on_coverage_changed(session: AsyncSession, *, patient: Patient, clinic: Clinic) -> Estimate | None:
    coverage = await coverage_of(session, clinic.id, patient.id)
    kind = estimate_kind(coverage)
    await drop_drafts(session, patient.id, except_kind=kind)
    upcoming = await upcoming_appointments(session, clinic=clinic, patient_id=patient.id)
    if not upcoming:
        return None
    first = upcoming[0][0]
    # a patient who turns self-pay is owed a GFE as promptly as one who asks for it
    return await open_draft(session, clinic=clinic, patient_id=patient.id, kind=kind, reason="coverage", deadline_as="request",
                            service_date=local_date(first.starts_at, clinic), appointment_id=first.id)


async def request_gfe(session: AsyncSession, *, actor: Actor, patient_id: int, session_type_id: Any = None,
                      visits: Any = None) -> Estimate:
    """A GFE the patient asked for: due within 3 business days, even before anything is booked."""
    session_type_id = rules.whole(session_type_id, field="session_type_id", low=1, high=2**31 - 1, allow_none=True)
    visits = rules.whole(visits, field="visits", low=1, high=52, allow_none=True)
    patient = await get_patient(session, actor.clinic_id, patient_id)
    if estimate_kind(await coverage_of(session, actor.clinic_id, patient_id)) != "gfe":
        raise RuleBroken("This patient's claims go to their plan: they get an insurance estimate, not a Good Faith Estimate.",
                           field="patient_id")
    clinic = await session.get(Clinic, actor.clinic_id)
    upcoming = await upcoming_appointments(session, clinic=clinic, patient_id=patient.id)
    if not upcoming and session_type_id is None:
        raise RuleBroken("Nothing is booked: choose the service the patient asked about.", field="session_type_id")
    planned: dict[str, Any] = {}
    if session_type_id is not None:
        st = (await session.exec(select(SessionType).where(SessionType.id == session_type_id, SessionType.clinic_id == clinic.id))).first()
        if st is None:
            raise RuleBroken("No such service in this clinic.", field="session_type_id")
        n = visits or 1
        planned = {"session_type_id": st.id, "visits": n}
    first = upcoming[0][0] if upcoming else None
    draft = await open_draft(session, clinic=clinic, patient_id=patient.id, kind="gfe", reason="request",
                             service_date=local_date(first.starts_at, clinic) if first else None,
                             appointment_id=first.id if first else None)
    if planned:
        draft.content = {"planned": planned}
    session.add(draft)
    record(session, actor=actor, action="estimate.request", entity="estimate", entity_id=draft.id, patient_id=patient.id,
           changes={"kind": "gfe", "due_on": draft.due_on})
    return draft


async def upcoming_appointments(session: AsyncSession, *, clinic: Clinic, patient_id: int,
                                now: datetime | None = None) -> list[tuple[Appointment, SessionType]]:
    now = now or utcnow()
    start = datetime.combine(clinic_today(clinic, now), datetime.min.time(), ZoneInfo(clinic.timezone))
    q = (
        select(Appointment, SessionType)
        .join(SessionType, SessionType.id == Appointment.session_type_id)
        .where(
            Appointment.clinic_id == clinic.id,
            Appointment.patient_id == patient_id,
            col(Appointment.status).in_(LIVE_FOR_ESTIMATES),
            Appointment.starts_at >= start,
            Appointment.starts_at < start + timedelta(days=ESTIMATE_HORIZON_DAYS),
        )
        .order_by(Appointment.starts_at)
    )
    return [(a, s) for a, s in (await session.exec(q)).all()]


# ---- estimates: issuing ----------------------------------------------------------------------------


def _provider(clinic: Clinic) -> dict[str, str]:
    return {"key": f"clinic:{clinic.id}", "name": clinic.name, "npi": clinic.npi, "tin": clinic.tin,
            "state": clinic.state, "location": clinic.address}


async def build_content(
    session: AsyncSession, *, estimate: Estimate, clinic: Clinic, patient: Patient, coverage: Coverage | None
) -> dict[str, Any]:
    """The document the patient receives: every element 45 CFR 149.610 asks for, frozen at issue."""
    fees = await fee_rows(session, clinic.id)
    visits: list[tuple[int | None, date, SessionType]] = [
        (a.id, local_date(a.starts_at, clinic), st) for a, st in await upcoming_appointments(session, clinic=clinic, patient_id=patient.id)
    ]
    plan_meta = (estimate.content or {}).get("planned")
    planned_dose: dict[int, int | None] = {}
    if not visits and plan_meta:
        st = await session.get(SessionType, plan_meta["session_type_id"])
        start = estimate.service_date or rules.add_business_days(clinic_today(clinic), 3)
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


async def _issue(session: AsyncSession, *, actor: Actor, estimate: Estimate, queue) -> Estimate:
    from clinic.notices import service as notices

    if estimate.issued_at is not None:
        raise Conflict("This estimate was already issued; issued estimates are kept as sent and never edited.")
    clinic = await session.get(Clinic, actor.clinic_id)
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
                    "late": bool(estimate.due_on and clinic_today(clinic) > estimate.due_on)})
    await notices.estimate_ready(session, queue=queue, estimate=estimate, patient=patient, clinic=clinic)
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


# ---- charges, claims, balances ---------------------------------------------------------------------


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
    day = local_date(appointment.dosing_started_at or appointment.starts_at, clinic)
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
