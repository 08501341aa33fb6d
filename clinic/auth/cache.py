"""A few seconds' memory of whom a bearer token signs in, kept only while this process hears every change.

Every API request looks its token up; for a client sending vitals at a steady rate that lookup is one of the
request's three round trips. The database announces every change that could end or narrow a token's sign-in
(a revoked token, a deactivated user, changed roles or name, an ended browser session) with NOTIFY clinic_sign_ins,
from triggers (migrations 0006 and 0018), so no writer can forget to; live streams wait on the same notices
(clinic.auth.streams). Each web process LISTENs on a connection of its own and forgets
everything it remembered when a notice arrives, while that connection is down (nothing is remembered or
answered from memory then), when it comes back (a notice may have been missed), and TTL seconds after it
learned it whatever happens. A change made in this process also forgets at once, after its commit.

Browser sessions are not remembered: their idle timeout runs on last_seen_at, which every process updates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from dataclasses import dataclass
from typing import Any

import asyncpg

log = logging.getLogger("clinic.auth")

CHANNEL = "clinic_sign_ins"
TTL_SECONDS = 15.0
KEEPALIVE_SECONDS = 10.0  # a half-open connection hears nothing; a ping finds it (and everything is forgotten)
RETRY_SECONDS = 2.0
MAX_ENTRIES = 10_000

_CACHES: weakref.WeakSet[SignInCache] = weakref.WeakSet()


@dataclass(frozen=True)
class Remembered:
    user: Any  # CurrentUser
    seen: Any  # the token's last_used_at as stored (after this lookup's touch)


class SignInCache:
    def __init__(self, dsn: str, *, ttl: float = TTL_SECONDS, keepalive: float = KEEPALIVE_SECONDS) -> None:
        self.dsn = dsn
        self.ttl = ttl
        self.keepalive = keepalive
        # bumped by every forget: a lookup that started before a change must not store what it read
        self.generation = 0
        self._entries: dict[str, tuple[float, Remembered]] = {}
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        # woken by every forget: live streams re-check their sign-in then
        self._changed: asyncio.Event | None = None
        _CACHES.add(self)

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    def get(self, key: str) -> Remembered | None:
        if not self.listening:
            self._start()
            return None
        hit = self._entries.get(key)
        if hit is None:
            return None
        if hit[0] < time.monotonic():
            self._entries.pop(key, None)
            return None
        return hit[1]

    def put(self, key: str, value: Remembered, generation: int) -> None:
        if not self.listening or generation != self.generation:
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + self.ttl, value)

    def forget_all(self, *_: Any) -> None:
        self.generation += 1
        self._entries.clear()
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def changed(self, *, timeout: float) -> None:
        """Return at the next change that could end a sign-in, or after `timeout` seconds, whichever comes first."""
        if not self.listening:
            self._start()
        if self._changed is None:
            self._changed = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout=timeout)

    def _start(self) -> None:
        if self._stopped or (self._task is not None and not self._task.done()):
            return
        self._task = asyncio.get_running_loop().create_task(self._listen(), name="sign-in-listener")

    async def _listen(self) -> None:
        """Connect, LISTEN, ping; after any failure forget everything and try again."""
        while not self._stopped:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.dsn, timeout=5, server_settings={"application_name": "clinic-sign-in-listener"})
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _conn: lost.set())
                await conn.add_listener(CHANNEL, self.forget_all)
                self.forget_all()  # what was remembered before this connection may have missed a notice
                self._conn = conn
                while not conn.is_closed():
                    try:
                        await asyncio.wait_for(lost.wait(), timeout=self.keepalive)
                    except TimeoutError:
                        await asyncio.wait_for(conn.execute("SELECT 1"), timeout=self.keepalive)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away or the connection broke: answer from the database only
                log.warning("sign-in listener: %s; retrying", type(exc).__name__)
            finally:
                self._conn = None
                self.forget_all()
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(RETRY_SECONDS)

    async def stop(self) -> None:
        self._stopped = True
        self._conn = None
        self.forget_all()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


def forget_sign_ins() -> None:
    """Every cache of this process forgets at once (after a commit here that revoked, deactivated or changed)."""
    for cache in list(_CACHES):
        cache.forget_all()


async def forget_sign_ins_after_commit() -> None:
    forget_sign_ins()
