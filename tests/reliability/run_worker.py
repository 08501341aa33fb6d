"""A real arq worker process for fault tests: the production WorkerSettings and runner, with timings sized for a test run.

Only the knobs change (job timeout, retry base, heartbeat, how often the outbox sweep runs); the jobs, the claim,
the SMTP code and the runner that waits out Redis outages are the production ones.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from arq import cron

from clinic.cli import stop_on_signals
from clinic.config import Settings
from workers import jobs
from workers.runner import run_worker
from workers.settings import worker_settings


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--database-url", required=True)
    p.add_argument("--redis-url", required=True)
    p.add_argument("--smtp-url", required=True)
    p.add_argument("--base-url", default="http://testserver.local")
    p.add_argument("--max-jobs", type=int, default=4)
    p.add_argument("--job-timeout", type=int, default=2)
    p.add_argument("--retry-base", type=float, default=0.2)
    p.add_argument("--max-attempts", type=int, default=5)
    p.add_argument("--sweep-every", type=int, default=1)
    p.add_argument("--heartbeat", type=int, default=2)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = Settings(database_url=a.database_url, redis_url=a.redis_url, smtp_url=a.smtp_url,
                        secret_key="reliability-secret-key-" + "x" * 16, base_url=a.base_url)
    ws = worker_settings(settings, max_jobs=a.max_jobs, job_timeout=a.job_timeout, retry_base=a.retry_base,
                         max_attempts=a.max_attempts, heartbeat=a.heartbeat)
    # production sweeps at :00 and :30; a test cannot wait half a minute
    ws["cron_jobs"] = [cron(jobs.sweep_outbox, second=set(range(0, 60, a.sweep_every)), run_at_startup=True, unique=True)]
    ws["poll_delay"] = 0.05

    async def run() -> None:
        await run_worker(ws, stop=stop_on_signals())

    asyncio.run(run())


if __name__ == "__main__":
    main()
