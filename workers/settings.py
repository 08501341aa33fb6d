"""WorkerSettings for arq, built from the same Settings as the web app."""

from __future__ import annotations

from datetime import timedelta

from arq import cron

from clinic.config import Settings
from sqlalchemy.ext.asyncio import create_async_engine

from clinic.db import Database, make_sessionmaker
from clinic.notices.sender import MAX_ATTEMPTS, RETRY_BASE_SECONDS, SmtpPool
from clinic.queue import WORKER_HEARTBEAT_KEY, WORKER_HEARTBEAT_SECONDS, redis_settings
from workers import jobs
from workers.runner import Outages

MAX_JOBS = 20
JOB_TIMEOUT = 60


def worker_database(url: str, max_jobs: int) -> Database:
    """A connection for every concurrent job, without a ping per checkout: a dropped connection fails one
    claim, the row stays pending, and the sweep re-enqueues it (the ping would double the round trips)."""
    engine = create_async_engine(url, pool_size=max_jobs, max_overflow=0, pool_pre_ping=False, pool_timeout=30,
                                 connect_args={"timeout": 5, "command_timeout": 30, "server_settings": {"application_name": "clinic-worker"}})
    return Database(engine=engine, sessionmaker=make_sessionmaker(engine))


def worker_settings(
    settings: Settings,
    *,
    db: Database | None = None,
    max_jobs: int = MAX_JOBS,
    job_timeout: int = JOB_TIMEOUT,
    retry_base: float = RETRY_BASE_SECONDS,
    max_attempts: int = MAX_ATTEMPTS,
    heartbeat: int = WORKER_HEARTBEAT_SECONDS,
) -> dict:
    # the outbox row counts tries (max_attempts); arq must not give up before it does
    max_tries = max_attempts + 3
    # kept from one arq worker to the next when Redis comes and goes (workers.runner)
    ctx = {
        "settings": settings, "retry_base": retry_base, "max_attempts": max_attempts, "max_tries": max_tries,
        # arq cancels a send at job_timeout, so a claim older than that (plus slack) was abandoned
        "stale_claim": timedelta(seconds=job_timeout + 5),
        "outages": Outages(),
        # notices the relay took while Postgres was away: recorded as sent once it is back, never sent again
        "unrecorded": {},
    }

    async def startup(ctx) -> None:
        ctx["db"] = db or worker_database(settings.database_url, max_jobs)
        # one SMTP connection per concurrent job, reused from notice to notice
        ctx["smtp"] = SmtpPool(settings.smtp_url, size=max_jobs)

    async def shutdown(ctx) -> None:
        if "smtp" in ctx:
            await ctx["smtp"].close()
        if db is None and "db" in ctx:
            await ctx["db"].dispose()

    return dict(
        functions=[jobs.send_notice, jobs.follow_schedule_change],
        cron_jobs=[
            cron(jobs.sweep_outbox, second={0, 30}, run_at_startup=True, unique=True),
            cron(jobs.staff_digests, minute={5}, unique=True),
            cron(jobs.questionnaire_notices, minute={0, 15, 30, 45}, unique=True),
            cron(jobs.prune_sign_ins, minute={35}, unique=True),
        ],
        on_startup=startup,
        on_shutdown=shutdown,
        # no retries of arq's own: workers.runner waits for Redis, with a backoff, and logs the outage once
        redis_settings=redis_settings(settings.redis_url),
        ctx=ctx,
        health_check_key=WORKER_HEARTBEAT_KEY,
        health_check_interval=heartbeat,
        max_jobs=max_jobs,
        job_timeout=job_timeout,
        max_tries=max_tries,
        # a finished job frees its id at once: the outbox row, not Redis, says whether a notice was sent
        keep_result=0,
        handle_signals=False,
    )
