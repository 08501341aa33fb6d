"""Adding a notice to the outbox inside the caller's transaction, and queueing it once that commits."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.dialects.postgresql import insert
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.db import after_commit
from clinic.notices.models import Notice
from clinic.timeutil import utcnow

SEND_JOB = "send_notice"


def job_id(notice_id: int) -> str:
    """Deterministic: enqueueing the same notice twice makes one arq job."""
    return f"notice:{notice_id}"


async def add_notice(
    session: AsyncSession,
    *,
    queue,
    clinic_id: int,
    kind: str,
    dedupe_key: str,
    to_address: str,
    patient_id: int | None = None,
    appointment_id: int | None = None,
    send_after: datetime | None = None,
    payload: dict[str, Any] | None = None,
) -> int | None:
    """Insert one outbox row (a repeat of the same dedupe_key is a no-op) and queue it after commit.

    `queue` may be None (e.g. in the worker's own transactions); the cron sweep sends it then.
    Returns the new notice id, or None when that notice already existed.
    """
    send_after = send_after or utcnow()
    stmt = (
        insert(Notice)
        .values(
            clinic_id=clinic_id,
            kind=kind,
            dedupe_key=dedupe_key,
            to_address=to_address,
            patient_id=patient_id,
            appointment_id=appointment_id,
            send_after=send_after,
            payload=payload or {},
            status="pending",
            attempts=0,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(Notice.id)
    )
    notice_id = (await session.execute(stmt)).scalar_one_or_none()
    if notice_id is not None and queue is not None:
        defer = max((send_after - utcnow()).total_seconds(), 0)

        async def enqueue() -> None:
            await queue.enqueue(SEND_JOB, notice_id, job_id=job_id(notice_id), _defer_by=defer or None)

        after_commit(session, enqueue)
    return notice_id
