"""Jobs take ids, open their own session, and are safe to run twice."""

from __future__ import annotations

import functools
import logging
from datetime import timedelta
from zoneinfo import ZoneInfo

from arq import Retry
from redis.exceptions import RedisError
from sqlalchemy import delete, or_, select

from clinic import models  # noqa: F401  (every table: a flush must resolve foreign keys to models no job imports)
from clinic.db import is_unavailable
from clinic.notices.models import Notice
from clinic.notices.outbox import SEND_JOB, job_id
from clinic.timeutil import utcnow
from workers.runner import outages_of

log = logging.getLogger("clinic.worker")

# a claim older than this belongs to a worker that died mid-send (a send never outlives job_timeout)
STALE_CLAIM = timedelta(minutes=5)
# while Postgres is away a notice's job tries again after 2, 4, 8 ... seconds, at most a minute apart
DB_RETRY_SECONDS = 2
DB_RETRY_MAX_SECONDS = 60
DIGEST_HOUR = 7  # clinic-local hour of the staff digest (setting: digest_hour)
# sign-in bookkeeping kept after it stops mattering: the throttle looks back 15 minutes; a browser session ends
# after at most 12 hours idle. The audit trail keeps every sign-in, failure and logoff for good.
LOGIN_ATTEMPTS_KEPT = timedelta(days=1)
WEB_SESSIONS_KEPT = timedelta(days=7)


def postgres_away(exc: BaseException) -> bool:
    return is_unavailable(exc) and not isinstance(exc, RedisError)


async def send_notice(ctx, notice_id: int) -> str:
    from clinic.notices import sender

    try:
        outcome = await sender.deliver(
            ctx["db"], ctx["settings"], notice_id, smtp=ctx.get("smtp"),
            max_attempts=ctx.get("max_attempts", sender.MAX_ATTEMPTS),
            retry_base=ctx.get("retry_base", sender.RETRY_BASE_SECONDS),
            stale_claim=ctx.get("stale_claim", STALE_CLAIM).total_seconds(),
            unrecorded=ctx.get("unrecorded"),
        )
    except sender.Retry as exc:
        outages_of(ctx).up("Postgres")  # the row took the retry: Postgres answers
        raise Retry(defer=exc.defer) from None
    except Exception as exc:
        if not postgres_away(exc):
            raise
        # Postgres restarted or a pooled connection died: the row is untouched or stays claimed
        outages_of(ctx).down("Postgres", exc)
        tries = ctx["job_try"]
        if tries >= ctx["max_tries"]:
            return "postgres unavailable: left for the sweep"
        raise Retry(defer=min(DB_RETRY_SECONDS * 2 ** (tries - 1), DB_RETRY_MAX_SECONDS)) from None
    outages_of(ctx).up("Postgres")
    return outcome


def rides_out_postgres(job):
    """A cron job that finds Postgres away notes the outage (logged once) and does nothing: its next run catches up."""

    @functools.wraps(job)
    async def run(ctx) -> int:
        try:
            done = await job(ctx)
        except Exception as exc:
            if not postgres_away(exc):
                raise
            outages_of(ctx).down("Postgres", exc)
            return 0
        outages_of(ctx).up("Postgres")
        return done

    return run


async def follow_schedule_change(ctx, change_id: int) -> int:
    """A booking's, move's or cancellation's follow-up: the estimate draft and the patient's notices (clinic.scheduling.changes)."""
    from clinic.queue import Queue
    from clinic.scheduling import changes

    try:
        async with ctx["db"].transaction() as session:
            done = await changes.follow(session, queue=Queue(None, pool=ctx["redis"]), change_id=change_id)
    except Exception as exc:
        if not postgres_away(exc):
            raise
        # the change stays pending: a retry, or the sweep once Postgres is back, follows it up
        outages_of(ctx).down("Postgres", exc)
        tries = ctx["job_try"]
        if tries >= ctx["max_tries"]:
            return 0
        raise Retry(defer=min(DB_RETRY_SECONDS * 2 ** (tries - 1), DB_RETRY_MAX_SECONDS)) from None
    outages_of(ctx).up("Postgres")
    return done


@rides_out_postgres
async def sweep_outbox(ctx) -> int:
    """Re-enqueue every notice still due and every schedule change not yet followed up: covers a Redis outage at
    commit time and killed workers."""
    from clinic.scheduling import changes

    now = utcnow()
    stale = ctx.get("stale_claim", STALE_CLAIM)
    async with ctx["db"].sessionmaker() as session:
        rows = (
            await session.execute(
                select(Notice.id)
                .where(
                    Notice.send_after <= now,
                    or_(
                        Notice.status == "pending",
                        (Notice.status == "sending") & (Notice.claimed_at < now - stale),
                    ),
                )
                .order_by(Notice.id)
                .limit(5000)
            )
        ).scalars().all()
        followups = await changes.pending(session)
    redis = ctx["redis"]
    for nid in rows:
        await redis.enqueue_job(SEND_JOB, nid, _job_id=job_id(nid))
    for cid in followups:
        await redis.enqueue_job(changes.FOLLOW_JOB, cid, _job_id=changes.job_id(cid))
    if rows or followups:
        log.info("sweep re-enqueued %d notices and %d schedule changes", len(rows), len(followups))
    return len(rows) + len(followups)


@rides_out_postgres
async def staff_digests(ctx) -> int:
    """Once a day per clinic, at its local digest hour: GFEs and REMS forms coming due (deduped per clinic, day and person)."""
    from clinic.clinics import Clinic
    from clinic.notices import service as notices

    now = utcnow()
    sent = 0
    async with ctx["db"].transaction() as session:
        for clinic in (await session.execute(select(Clinic))).scalars().all():
            local = now.astimezone(ZoneInfo(clinic.timezone))
            if local.hour < int((clinic.settings or {}).get("digest_hour", DIGEST_HOUR)) and not ctx.get("digest_any_hour"):
                continue
            sent += len(await notices.staff_digest(session, queue=None, clinic=clinic, today=local.date()))
    if sent:
        # the rows are committed: the sweep would find them too, this only saves it a wait
        await sweep_outbox(ctx)
    return sent


@rides_out_postgres
async def questionnaire_notices(ctx) -> int:
    """Every 15 minutes: the questionnaire notices going out within the hour (18:00 the day before a visit, patient's time)."""
    from clinic.outcomes import service as outcomes

    async with ctx["db"].transaction() as session:
        ids = await outcomes.queue_questionnaire_notices(session)
    if ids:
        await sweep_outbox(ctx)  # a late booking's notice is due at once; the rest wait for their time in the outbox
    return len(ids)


@rides_out_postgres
async def prune_sign_ins(ctx) -> int:
    """Drop login attempts older than a day and browser sessions ended or idle for a week (rows no sign-in can use)."""
    from clinic.auth.models import LoginAttempt, WebSession

    now = utcnow()
    settings = ctx.get("settings")
    idle = timedelta(minutes=2 * settings.idle_timeout_minutes) if settings is not None else timedelta(0)
    sessions_before = now - max(WEB_SESSIONS_KEPT, idle)
    async with ctx["db"].transaction() as session:
        attempts = await session.execute(delete(LoginAttempt).where(LoginAttempt.at < now - LOGIN_ATTEMPTS_KEPT))
        ended = await session.execute(
            delete(WebSession).where(or_(WebSession.ended_at < sessions_before, WebSession.last_seen_at < sessions_before))
        )
    pruned = attempts.rowcount + ended.rowcount
    if pruned:
        log.info("pruned %d login attempts and %d browser sessions", attempts.rowcount, ended.rowcount)
    return pruned
