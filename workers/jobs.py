"""Jobs take ids, open their own session, and are safe to run twice."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import or_, select

from clinic.notices.models import Notice
from clinic.notices.outbox import SEND_JOB, job_id
from clinic.timeutil import utcnow

log = logging.getLogger("clinic.worker")

# a claim older than this belongs to a worker that died mid-send
STALE_CLAIM = timedelta(minutes=5)


async def send_notice(ctx, notice_id: int) -> str:
    from clinic.notices.sender import deliver

    return await deliver(ctx["db"], ctx["settings"], notice_id)


async def sweep_outbox(ctx) -> int:
    """Re-enqueue every notice still due: covers a Redis outage at commit time and killed workers."""
    now = utcnow()
    async with ctx["db"].sessionmaker() as session:
        rows = (
            await session.execute(
                select(Notice.id)
                .where(
                    Notice.send_after <= now,
                    or_(
                        Notice.status == "pending",
                        (Notice.status == "sending") & (Notice.claimed_at < now - STALE_CLAIM),
                    ),
                )
                .order_by(Notice.id)
                .limit(5000)
            )
        ).scalars().all()
    redis = ctx["redis"]
    for nid in rows:
        await redis.enqueue_job(SEND_JOB, nid, _job_id=job_id(nid))
    if rows:
        log.info("sweep re-enqueued %d notices", len(rows))
    return len(rows)
