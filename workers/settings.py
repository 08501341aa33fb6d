"""WorkerSettings for arq, built from the same Settings as the web app."""

from __future__ import annotations

from arq import cron

from clinic.config import Settings
from clinic.db import Database
from clinic.queue import redis_settings
from workers import jobs


def worker_settings(settings: Settings, *, db: Database | None = None) -> dict:
    async def startup(ctx) -> None:
        ctx["settings"] = settings
        ctx["db"] = db or Database.connect(settings.database_url, pool_size=5)

    async def shutdown(ctx) -> None:
        if db is None:
            await ctx["db"].dispose()

    rs = redis_settings(settings.redis_url)
    rs.conn_retries = 60  # the worker waits for Redis to come back; the web app does not
    rs.conn_retry_delay = 2
    return dict(
        functions=[jobs.send_notice],
        cron_jobs=[cron(jobs.sweep_outbox, second={0, 30}, run_at_startup=True, unique=True)],
        on_startup=startup,
        on_shutdown=shutdown,
        redis_settings=rs,
        max_jobs=20,
        job_timeout=60,
        max_tries=8,
        keep_result=60,
        handle_signals=False,
    )
