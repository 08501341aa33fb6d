"""Which notices a change causes, for whom and when: rows in the caller's transaction; listing and retrying them for staff."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import Actor, record, record_read
from clinic.billing.models import CostLink, Estimate
from clinic.clinics import Clinic, closed_dates
from clinic.db import after_commit
from clinic.errors import Conflict, NotFound
from clinic.events import AppointmentBooked, AppointmentCancelled, AppointmentMoved, BalanceDue, CourseBooked, EstimateIssued
from clinic.notices import links
from clinic.notices.models import Notice
from clinic.notices.outbox import SEND_JOB, add_notice, job_id
from clinic.patients.models import Patient
from clinic.scheduling.models import Appointment
from clinic.timeutil import hm, to_local, utcnow

DEFAULT_REMINDER_HOURS = 48
DEFAULT_LINK_DAYS = 30
DEFAULT_DELAY_MINUTES = 10
MAX_DOB_TRIES = 5
COST_LINK_KINDS = ("visit", "estimate", "balance")


def can_email(patient: Patient) -> bool:
    """Channel preference and opt-out, as recorded with the patient's consent."""
    return patient.notice_channel == "email" and not patient.notices_opted_out and bool(patient.email)


async def add_link(session: AsyncSession, *, clinic: Clinic, patient: Patient, kind: str, estimate_id: int | None = None,
                   appointment_id: int | None = None) -> CostLink:
    link = CostLink(clinic_id=clinic.id, patient_id=patient.id, kind=kind, estimate_id=estimate_id, appointment_id=appointment_id,
                    expires_at=utcnow() + timedelta(days=int(clinic.setting("link_days", DEFAULT_LINK_DAYS))))
    session.add(link)
    await session.flush()
    return link


def link_payload(link: CostLink, purpose: str = "cost") -> dict[str, Any]:
    return {"link_id": link.id, "link_expires": link.expires_at.isoformat(), "link_purpose": purpose}


# ---- the patient's side of a link: signature, expiry, lock, then the date of birth ----------------------------------


async def open_link(session: AsyncSession, secret: str, token: str, *, kinds: tuple[str, ...], purpose: str = "cost"
                    ) -> tuple[CostLink | None, str | None]:
    """The link a token names (locked for this transaction) and what stops it opening: "tampered", "expired", "locked" or None."""
    try:
        link_id = links.verify(secret, token, purpose=purpose)
    except links.LinkProblem as p:
        # a genuine but expired link may say which clinic to call; an altered one says nothing
        expired = await session.get(CostLink, p.link_id) if p.link_id else None
        return (expired if expired is not None and expired.kind in kinds else None), str(p)
    link = (await session.exec(select(CostLink).where(CostLink.id == link_id).with_for_update())).first()
    if link is None or link.kind not in kinds:
        return None, "tampered"
    if link.expires_at <= utcnow():
        return link, "expired"
    if link.locked_at is not None:
        return link, "locked"
    return link, None


def try_date_of_birth(session: AsyncSession, link: CostLink, patient: Patient, dob: date | None) -> int | None:
    """None when the date of birth given matches (the link is marked opened); otherwise the tries left, counted on the
    link, 0 when this one locked it (a date that did not parse counts as wrong). Wrong tries must be committed: the
    caller answers with a page, not an error."""
    now = utcnow()
    if dob == patient.date_of_birth:
        link.opened_at = link.opened_at or now
        session.add(link)
        return None
    link.failed_attempts += 1
    if link.failed_attempts >= MAX_DOB_TRIES:
        link.locked_at = now
    session.add(link)
    return max(MAX_DOB_TRIES - link.failed_attempts, 0)


async def booking_notices(session: AsyncSession, *, queue, appointment: Appointment, patient: Patient, clinic: Clinic,
                          moved: bool = False, now: datetime | None = None, course_visits: list[Appointment] | None = None,
                          confirm: bool = True) -> list[int]:
    """A confirmation now, and a reminder `reminder_hours` before the visit (none if that moment has passed).

    A course is confirmed once: its first visit's confirmation lists `course_visits`, the others pass confirm=False."""
    if not can_email(patient):
        return []
    now = now or utcnow()
    at = appointment.starts_at.isoformat()
    link = await add_link(session, clinic=clinic, patient=patient, kind="visit", appointment_id=appointment.id)
    payload = {"starts_at": at, "moved": moved} | link_payload(link)
    ids = []
    if confirm:
        # a move is its own event (A -> B -> A tells the patient twice); a booking is told once
        key = f"moved:{appointment.id}:{at}:{appointment.updated_at.isoformat()}" if moved else f"booking:{appointment.id}:{at}"
        visits = {"visits": [v.starts_at.isoformat() for v in course_visits]} if course_visits and len(course_visits) > 1 else {}
        ids.append(await add_notice(session, queue=queue, clinic_id=clinic.id, kind="booking_confirmation", dedupe_key=key,
                                    to_address=patient.email, patient_id=patient.id, appointment_id=appointment.id, payload=payload | visits))
    remind_at = appointment.starts_at - timedelta(hours=float(clinic.setting("reminder_hours", DEFAULT_REMINDER_HOURS)))
    if remind_at > now:
        key = f"reminder:{appointment.id}:{at}"
        nid = await add_notice(session, queue=queue, clinic_id=clinic.id, kind="reminder", dedupe_key=key,
                               to_address=patient.email, patient_id=patient.id, appointment_id=appointment.id,
                               send_after=remind_at, payload=payload)
        ids.append(nid or await revive(session, queue=queue, dedupe_key=key, send_after=remind_at, payload=payload))
    return [i for i in ids if i is not None]


async def revive(session: AsyncSession, *, queue, dedupe_key: str, send_after: datetime, payload: dict[str, Any]) -> int | None:
    """A visit moved back to a time it had before: its cancelled reminder for that time goes back in the queue."""
    nid = (await session.execute(
        update(Notice).where(Notice.dedupe_key == dedupe_key, Notice.status == "cancelled")
        .values(status="pending", send_after=send_after, attempts=0, last_error=None, claimed_at=None, payload=payload)
        .returning(Notice.id)
    )).scalar_one_or_none()
    if nid is not None and queue is not None:
        defer = max((send_after - utcnow()).total_seconds(), 0)

        async def enqueue() -> None:
            await queue.enqueue(SEND_JOB, nid, job_id=job_id(nid), _defer_by=defer or None)

        after_commit(session, enqueue)
    return nid


async def cancel_pending(session: AsyncSession, *, appointment_id: int, kinds: tuple[str, ...] = ("reminder", "booking_confirmation"),
                         reason: str) -> int:
    """Pending notices about a visit that no longer stands are cancelled (the sender re-checks at send time too)."""
    result = await session.execute(
        update(Notice)
        .where(Notice.appointment_id == appointment_id, col(Notice.kind).in_(kinds), Notice.status == "pending")
        .values(status="cancelled", last_error=reason)
    )
    return result.rowcount or 0


async def estimate_ready(session: AsyncSession, *, queue, estimate: Estimate, patient: Patient, clinic: Clinic) -> int | None:
    if not can_email(patient):
        return None
    link = await add_link(session, clinic=clinic, patient=patient, kind="estimate", estimate_id=estimate.id)
    kind = "gfe" if estimate.kind == "gfe" else "estimate_ready"
    return await add_notice(session, queue=queue, clinic_id=clinic.id, kind=kind, dedupe_key=f"estimate:{estimate.id}",
                            to_address=patient.email, patient_id=patient.id, appointment_id=estimate.appointment_id,
                            payload=link_payload(link))


async def balance_notice(session: AsyncSession, *, queue, appointment: Appointment, patient: Patient, clinic: Clinic) -> int | None:
    if not can_email(patient):
        return None
    link = await add_link(session, clinic=clinic, patient=patient, kind="balance", appointment_id=appointment.id)
    return await add_notice(session, queue=queue, clinic_id=clinic.id, kind="balance", dedupe_key=f"balance:{appointment.id}",
                            to_address=patient.email, patient_id=patient.id, appointment_id=appointment.id,
                            payload=link_payload(link))


# ---- subscribers (clinic.events): what each event tells the patient ----------------------------------


async def confirm_booking(session: AsyncSession, event: AppointmentBooked, *, queue) -> None:
    await booking_notices(session, queue=queue, appointment=event.appointment, patient=event.patient, clinic=event.clinic)


async def confirm_course(session: AsyncSession, event: CourseBooked, *, queue) -> None:
    """One confirmation listing every visit, and each visit's reminder."""
    visits = sorted(event.appointments, key=lambda a: a.starts_at)
    for n, appt in enumerate(visits):
        await booking_notices(session, queue=queue, appointment=appt, patient=event.patient, clinic=event.clinic,
                              course_visits=visits, confirm=n == 0)


async def confirm_move(session: AsyncSession, event: AppointmentMoved, *, queue) -> None:
    """The old reminder goes, one for the new time comes, and the patient is told."""
    await cancel_pending(session, appointment_id=event.appointment.id, reason="visit moved")
    await booking_notices(session, queue=queue, appointment=event.appointment, patient=event.patient, clinic=event.clinic, moved=True)


async def withdraw_reminders(session: AsyncSession, event: AppointmentCancelled, *, queue) -> None:
    await cancel_pending(session, appointment_id=event.appointment.id, reason="visit cancelled")


async def balance_due(session: AsyncSession, event: BalanceDue, *, queue) -> None:
    await balance_notice(session, queue=queue, appointment=event.appointment, patient=event.patient, clinic=event.clinic)


async def estimate_issued(session: AsyncSession, event: EstimateIssued, *, queue) -> None:
    await estimate_ready(session, queue=queue, estimate=event.estimate, patient=event.patient, clinic=event.clinic)


async def staff_digest(session: AsyncSession, *, queue, clinic: Clinic, today: date) -> list[int]:
    """Items due within 3 business days, one message per person who acts on them: counts only, never a patient's name."""
    from clinic.auth.models import StaffUser
    from clinic.billing.rules import add_business_days
    from clinic.monitoring.models import RemsForm

    horizon = add_business_days(today, 3, await closed_dates(session, clinic.id))
    gfe_rows = (await session.execute(
        select(Estimate.due_on, func.count()).where(
            Estimate.clinic_id == clinic.id, col(Estimate.issued_at).is_(None), col(Estimate.due_on).is_not(None),
            col(Estimate.due_on) <= horizon,
        ).group_by(Estimate.due_on)
    )).all()
    rems_rows = (await session.execute(
        select(RemsForm.due_on, func.count()).where(
            RemsForm.clinic_id == clinic.id, col(RemsForm.submitted_on).is_(None), col(RemsForm.due_on) <= horizon,
        ).group_by(RemsForm.due_on)
    )).all()
    if not gfe_rows and not rems_rows:
        return []
    payload = {
        "today": today.isoformat(),
        "estimates_late": sum(n for d, n in gfe_rows if d < today),
        "estimates_due": sum(n for d, n in gfe_rows if d >= today),
        "rems_late": sum(n for d, n in rems_rows if d < today),
        "rems_due": sum(n for d, n in rems_rows if d >= today),
    }
    staff = (await session.exec(select(StaffUser).where(StaffUser.clinic_id == clinic.id, StaffUser.active == True))).all()  # noqa: E712
    ids = []
    for user in staff:
        wants = {"billing", "admin"} if payload["estimates_due"] + payload["estimates_late"] else set()
        if payload["rems_due"] + payload["rems_late"]:
            wants |= {"prescriber", "nurse", "admin"}
        if not wants.intersection(user.roles):
            continue
        nid = await add_notice(session, queue=queue, clinic_id=clinic.id, kind="staff_digest",
                               dedupe_key=f"digest:{clinic.id}:{today.isoformat()}:{user.id}", to_address=user.email,
                               payload=payload | {"staff_name": user.full_name.split(" ")[0], "roles": list(user.roles)})
        if nid:
            ids.append(nid)
    return ids


# ---- staff view -------------------------------------------------------------------------------------


async def list_notices(session: AsyncSession, *, actor: Actor, status: str | None = None, limit: int = 200) -> list[Notice]:
    q = select(Notice).where(Notice.clinic_id == actor.clinic_id)
    if status:
        q = q.where(Notice.status == status)
    q = q.order_by(col(Notice.id).desc()).limit(min(max(limit, 1), 1000))
    rows = list((await session.exec(q)).all())
    record_read(session, actor=actor, what="notices", query={"status": status, "limit": limit}, rows=len(rows),
                patient_ids=[n.patient_id for n in rows])
    return rows


async def counts(session: AsyncSession, *, clinic_id: int) -> dict[str, int]:
    rows = await session.execute(select(Notice.status, func.count()).where(Notice.clinic_id == clinic_id).group_by(Notice.status))
    return {s: n for s, n in rows.all()}


async def delayed_since(session: AsyncSession, *, clinic: Clinic, now: datetime | None = None) -> str | None:
    """Clinic-local HH:MM (with the day when not today) at which the oldest notice still waiting fell due, when that
    is longer ago than the clinic's `notice_delay_minutes` (default 10): notices have stalled and staff should know."""
    now = now or utcnow()
    oldest = (await session.execute(
        select(func.min(Notice.send_after)).where(
            Notice.clinic_id == clinic.id, col(Notice.status).in_(("pending", "sending")), Notice.send_after <= now)
    )).scalar()
    if oldest is None or now - oldest <= timedelta(minutes=int(clinic.setting("notice_delay_minutes", DEFAULT_DELAY_MINUTES))):
        return None
    local = to_local(oldest, clinic.timezone)
    if local.date() == to_local(now, clinic.timezone).date():
        return hm(oldest, clinic.timezone)
    return f"{local:%a} {local.day} {local:%b} {hm(oldest, clinic.timezone)}"


async def retry(session: AsyncSession, *, actor: Actor, notice_id: int, queue) -> Notice:
    """A failed notice goes back to the queue with fresh tries; the same Message-ID keeps any duplicate folded."""
    if not 0 < notice_id < 2**31:
        raise NotFound("No such notice.")
    notice = (await session.exec(select(Notice).where(Notice.id == notice_id, Notice.clinic_id == actor.clinic_id).with_for_update())).first()
    if notice is None:
        raise NotFound("No such notice.")
    if notice.status != "failed":
        raise Conflict(f"Only a failed notice can be retried; this one is {notice.status}.")
    notice.status, notice.attempts, notice.send_after, notice.claimed_at = "pending", 0, utcnow(), None
    session.add(notice)
    record(session, actor=actor, action="notice.retry", entity="notice", entity_id=notice.id, patient_id=notice.patient_id,
           changes={"kind": notice.kind})
    if queue is not None:
        nid = notice.id

        async def enqueue() -> None:
            await queue.enqueue(SEND_JOB, nid, job_id=job_id(nid))

        after_commit(session, enqueue)
    return notice

