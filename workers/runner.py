"""Running the arq worker for as long as its process lives: a worker that stops (Redis went away) is replaced after a backoff."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

from arq.worker import Worker
from redis.exceptions import RedisError

log = logging.getLogger("clinic.worker")

FIRST_DELAY = 1.0
MAX_DELAY = 10.0
REDIS_AWAY = (RedisError, OSError, asyncio.TimeoutError)
# jobs in flight when a worker stops are let finish: a send cut off after the relay took it would go out twice
FINISH_SECONDS = 8.0


class Outages:
    """The servers the worker cannot reach now: each outage is logged once as it starts and once as it ends."""

    def __init__(self) -> None:
        self.since: dict[str, float] = {}

    def down(self, server: str, exc: BaseException) -> None:
        if server not in self.since:
            self.since[server] = time.monotonic()
            log.warning("%s unavailable (%s): notices wait in the outbox; the worker retries with backoff", server, type(exc).__name__)

    def up(self, server: str) -> None:
        since = self.since.pop(server, None)
        if since is not None:
            log.warning("%s is back after %.0f s: the worker resumes", server, time.monotonic() - since)


def outages_of(ctx: dict[str, Any]) -> Outages:
    return ctx.setdefault("outages", Outages())


async def run_worker(ws: dict[str, Any], *, stop: asyncio.Event) -> None:
    """Run arq workers built from `ws` (worker_settings) one after another until `stop` is set.

    A Redis outage ends arq's worker; a new one starts after a backoff (1 s doubling to 10 s) and runs the outbox
    sweep at once, so whatever Redis lost is queued again. The worker's ctx outlives each worker."""
    outages = outages_of(ws.setdefault("ctx", {}))
    delay = FIRST_DELAY
    while not stop.is_set():
        ended, started = await _run_once(ws, stop, outages)
        if stop.is_set() or ended is None:
            return
        if isinstance(ended, REDIS_AWAY):
            outages.down("Redis", ended)
        else:
            log.error("the worker stopped on an error; a new one starts in %.0f s", delay, exc_info=ended)
        delay = FIRST_DELAY if started else min(delay * 2, MAX_DELAY)
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except asyncio.TimeoutError:
            pass


async def _run_once(ws: dict[str, Any], stop: asyncio.Event, outages: Outages) -> tuple[BaseException | None, bool]:
    """One arq worker until it ends or `stop` is set: (why it ended, whether it got as far as starting up)."""
    started = False
    startup = ws.get("on_startup")

    async def on_startup(ctx: dict[str, Any]) -> None:
        nonlocal started
        started = True
        outages.up("Redis")
        if startup is not None:
            await startup(ctx)

    # a fresh schedule per worker: its sweep runs at start-up instead of catching up on every slot missed
    crons = [dataclasses.replace(c, next_run=None) for c in ws.get("cron_jobs") or ()]
    worker = Worker(**(ws | {"on_startup": on_startup, "cron_jobs": crons}))
    run = asyncio.create_task(worker.main())
    halt = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({run, halt}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        halt.cancel()
        run.cancel()
        (ended,) = await asyncio.gather(run, return_exceptions=True)
        await _retire(worker, started=started)
    return (None if isinstance(ended, asyncio.CancelledError) else ended), started


async def _retire(worker: Worker, *, started: bool) -> None:
    """Let the jobs in flight finish, then let go of the worker's connections; nothing here may need Redis."""
    tasks = list(worker.tasks.values())
    if tasks:
        _, late = await asyncio.wait(tasks, timeout=FINISH_SECONDS)
        for t in late:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if started and worker.on_shutdown is not None:
        await worker.on_shutdown(worker.ctx)
    pool = worker.pool  # None when Redis refused the first connection
    if pool is not None:
        try:
            # a worker stopped on purpose is stale at once, not a heartbeat later
            await asyncio.wait_for(pool.delete(worker.health_check_key), timeout=1)
        except REDIS_AWAY:
            pass
        try:
            await pool.aclose()
        except REDIS_AWAY:
            pass
