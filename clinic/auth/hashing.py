"""Password hashing off the event loop: Argon2 runs in worker threads, a few at a time; a sign-in that cannot get a
turn within seconds is told to come back (503 with Retry-After) instead of stalling every other request."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from weakref import WeakKeyDictionary

from clinic.auth import rules
from clinic.errors import ClinicError

# Argon2 takes ~64 MB and one core per hash: more at once only queues them in the kernel instead of here
SLOTS = max(2, min(4, os.cpu_count() or 2))
WAIT_SECONDS = 5.0
RETRY_AFTER_SECONDS = 2


class HashingBusy(ClinicError):
    status_code = 503
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}


class _Turns:
    def __init__(self) -> None:
        self.slots = SLOTS
        self.wait_seconds = WAIT_SECONDS
        self._by_loop: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = WeakKeyDictionary()

    def configure(self, *, slots: int, wait_seconds: float) -> None:
        self.slots, self.wait_seconds = slots, wait_seconds
        self._by_loop.clear()

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        slots = self._by_loop.get(loop)
        if slots is None:
            slots = self._by_loop[loop] = asyncio.Semaphore(self.slots)
        try:
            await asyncio.wait_for(slots.acquire(), timeout=self.wait_seconds)
        except TimeoutError:
            raise HashingBusy("Many people are signing in at once; try again in a moment.", code="busy") from None
        try:
            yield
        finally:
            slots.release()


TURNS = _Turns()
turn = TURNS.turn
configure = TURNS.configure


async def verify_in_turn(password: str, password_hash: str | None) -> bool:
    """Verify inside a turn the caller already holds."""
    return await asyncio.to_thread(rules.verify_password, password, password_hash)


async def hash_password(password: str) -> str:
    async with turn():
        return await asyncio.to_thread(rules.hash_password, password)


async def verify_password(password: str, password_hash: str | None) -> bool:
    async with turn():
        return await verify_in_turn(password, password_hash)
