"""The fee schedule: a code's self-pay price over a span of dates."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import Actor, record
from clinic.billing import rules
from clinic.billing.models import FeeScheduleEntry
from clinic.billing.service.lookups import real_id
from clinic.db import register_conflicts
from clinic.errors import Conflict, NotFound, RuleBroken

register_conflicts({"uq_fee_schedule_clinic_code_from": "That code already has a price starting on that date; end it or pick another date."})


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
