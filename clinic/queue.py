"""The arq queue as the web process sees it: connected lazily, and never a reason for clinical work to fail."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import default_queue_name, health_check_key_suffix

log = logging.getLogger("clinic.queue")

# the worker's heartbeat: arq's health-check key, renewed every WORKER_HEARTBEAT_SECONDS, lapsing a second later
WORKER_HEARTBEAT_KEY = default_queue_name + health_check_key_suffix
WORKER_HEARTBEAT_SECONDS = 10


def redis_settings(url: str) -> RedisSettings:
    s = RedisSettings.from_dsn(url)
    s.conn_timeout = 2
    s.conn_retries = 0
    return s


class Queue:
    def __init__(self, url: str | None, *, pool: ArqRedis | None = None) -> None:
        """`pool`: an arq connection someone else owns (a worker's own), used as is and never closed here."""
        self.url = url
        self._pool: ArqRedis | None = pool
        self._owned = pool is None
        self._lock = asyncio.Lock()

    async def pool(self) -> ArqRedis:
        if self._pool is None:
            if not self.url:
                raise ConnectionError("no REDIS_URL")
            async with self._lock:
                if self._pool is None:
                    self._pool = await create_pool(redis_settings(self.url), retry=0)
        return self._pool

    async def worker_alive(self) -> bool:
        """True when a worker has beaten lately; raises when Redis does not answer."""
        pool = await self.pool()
        return bool(await pool.exists(WORKER_HEARTBEAT_KEY))

    async def enqueue(self, function: str, *args: Any, job_id: str | None = None, **kwargs: Any) -> bool:
        """True when queued; False when Redis is away (the outbox sweep will pick the work up later)."""
        try:
            pool = await self.pool()
            await asyncio.wait_for(pool.enqueue_job(function, *args, _job_id=job_id, **kwargs), timeout=2)
            return True
        except Exception as exc:
            log.warning("queue unavailable, %s left for the sweep: %s", function, type(exc).__name__)
            await self._reset()
            return False

    async def _reset(self) -> None:
        if not self._owned:
            return
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await pool.aclose()
            except Exception:
                pass

    async def close(self) -> None:
        await self._reset()
