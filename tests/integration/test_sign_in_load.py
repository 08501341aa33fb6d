"""Many sign-ins at once: Argon2 runs in worker threads (a nurse's requests are not stalled behind them), a few at a
time, and a sign-in that cannot get a turn is answered 503 with Retry-After, never 500."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from litestar.middleware.csrf import generate_csrf_token

from clinic.app import create_app
from clinic.auth import hashing, rules
from tests.conftest import app_client


async def _sign_ins(app, n: int) -> list[httpx.Response]:
    """`n` wrong-password sign-ins at once, each for its own account from its own address (so none is throttled)."""
    csrf = generate_csrf_token(secret=app.state.settings.secret_key)

    async def one(i: int) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(f"198.18.{i // 200}.{i % 200 + 1}", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as c:
            return await c.post("/login", data={"email": f"load{i}@example.org", "password": "wrong-password-123", "_csrf_token": csrf},
                                cookies={"csrftoken": csrf})

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def _longest_stall(during) -> tuple[float, list[httpx.Response]]:
    """The longest the event loop went without running a 1 ms timer while `during` ran."""
    stalls: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            t0 = time.perf_counter()
            await asyncio.sleep(0.001)
            stalls.append(time.perf_counter() - t0)

    task = asyncio.create_task(probe())
    try:
        result = await during
    finally:
        done.set()
        await task
    return max(stalls), result


async def test_hashing_never_blocks_the_event_loop(engine_db, settings, queue):
    t0 = time.perf_counter()
    rules.verify_password("wrong-password-123", None)  # one Argon2 verification, measured on this machine now
    one_hash = time.perf_counter() - t0
    async with app_client(create_app(settings, db=engine_db, queue=queue)) as c:
        stall, answers = await _longest_stall(_sign_ins(c._transport.app, 20))
    statuses = [r.status_code for r in answers]
    assert set(statuses) <= {401, 503} and 401 in statuses, statuses  # a busy machine may send some away to retry
    # inline hashing stalls the loop for at least one whole hash; in threads, the loop keeps turning
    assert stall < one_hash / 2, f"the loop stalled {stall * 1000:.0f} ms (one hash takes {one_hash * 1000:.0f} ms)"


@pytest.fixture
def one_slot():
    hashing.configure(slots=1, wait_seconds=0.01)
    yield
    hashing.configure(slots=hashing.SLOTS, wait_seconds=hashing.WAIT_SECONDS)


async def test_a_saturated_hashing_bound_answers_503_with_retry_after(engine_db, settings, queue, one_slot):
    async with app_client(create_app(settings, db=engine_db, queue=queue)) as c:
        answers = await _sign_ins(c._transport.app, 12)
        statuses = [r.status_code for r in answers]
        assert set(statuses) == {401, 503}, statuses
        assert all(r.headers.get("retry-after") == str(hashing.RETRY_AFTER_SECONDS) and "try again" in r.text
                   for r in answers if r.status_code == 503)
