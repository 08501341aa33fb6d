"""Web processes remember token sign-ins for a few seconds: every change that ends or narrows one still takes
effect at once, in this process and in every other, and nothing is remembered while a process cannot hear."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from sqlalchemy import text

from clinic.app import create_app
from clinic.auth.rules import token_hash
from tests.factories import Factory, bearer
from tests.integration.test_board_live import served


@pytest.fixture
async def staff(engine_db):
    """A clinic with an admin and a nurse, each with a token, committed (announcements follow commits)."""
    f = Factory(engine_db)
    clinic = await f.clinic(chairs=1)
    admin, nurse = await f.user(clinic, "admin"), await f.user(clinic, "nurse")
    return {"admin": await f.token(admin), "nurse": await f.token(nurse), "nurse_id": nurse.id}


async def remembered(app, client: httpx.AsyncClient, token: str) -> None:
    """Use the token until this process remembers it (its listener connects on the first lookup)."""
    cache = None
    for _ in range(100):
        assert (await client.get("/api/v1/me", headers=bearer(token))).status_code == 200
        cache = app.state.get("sign_in_cache")
        if cache is not None and cache.get(token_hash(token)) is not None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the sign-in was never remembered")


async def refused_within(client: httpx.AsyncClient, token: str, seconds: float, path: str = "/api/v1/me", status: int = 401) -> float:
    start = time.monotonic()
    while True:
        r = await client.get(path, headers=bearer(token))
        if r.status_code == status:
            return time.monotonic() - start
        assert r.status_code == 200, r.text
        assert time.monotonic() - start < seconds, f"still answered {r.status_code} after {seconds}s"
        await asyncio.sleep(0.02)


async def test_a_token_revoked_in_this_process_is_refused_on_the_very_next_request(settings, engine_db, queue, staff):
    app = create_app(settings, db=engine_db, queue=queue)
    async with served(app) as url, httpx.AsyncClient(base_url=url) as c:
        await remembered(app, c, staff["nurse"])
        tokens = (await c.get("/api/v1/tokens", headers=bearer(staff["admin"]))).json()
        mine = next(t for t in tokens if t["user_id"] == staff["nurse_id"])
        assert (await c.post(f"/api/v1/tokens/{mine['id']}/revoke", headers=bearer(staff["admin"]))).status_code == 200
        assert (await c.get("/api/v1/me", headers=bearer(staff["nurse"]))).status_code == 401


async def test_a_token_revoked_on_another_process_is_refused_here_within_a_second(settings, engine_db, queue, staff):
    here, there = create_app(settings, db=engine_db, queue=queue), create_app(settings, db=engine_db, queue=queue)
    async with served(here) as url_here, served(there) as url_there:
        async with httpx.AsyncClient(base_url=url_here) as tablet, httpx.AsyncClient(base_url=url_there) as admin:
            await remembered(here, tablet, staff["nurse"])
            tokens = (await admin.get("/api/v1/tokens", headers=bearer(staff["admin"]))).json()
            mine = next(t for t in tokens if t["user_id"] == staff["nurse_id"])
            assert (await admin.post(f"/api/v1/tokens/{mine['id']}/revoke", headers=bearer(staff["admin"]))).status_code == 200
            assert await refused_within(tablet, staff["nurse"], 1.0) < 1.0


@pytest.mark.parametrize(
    "change, path, status",
    [
        ("UPDATE api_tokens SET revoked_at = now() WHERE user_id = :u", "/api/v1/me", 401),
        ("UPDATE staff_users SET active = false WHERE id = :u", "/api/v1/me", 401),
        ("DELETE FROM api_tokens WHERE user_id = :u", "/api/v1/me", 401),
        # a nurse made front desk may no longer read clinical records
        ("UPDATE staff_users SET roles = ARRAY['front_desk']::varchar[] WHERE id = :u", "/api/v1/rems-forms", 403),
    ],
)
async def test_a_change_made_straight_in_the_database_takes_effect_within_a_second(settings, engine_db, queue, staff, change, path, status):
    """The database announces it (triggers), so a script, a psql session or another app version is heard too."""
    app = create_app(settings, db=engine_db, queue=queue)
    async with served(app) as url, httpx.AsyncClient(base_url=url) as c:
        await remembered(app, c, staff["nurse"])
        assert (await c.get(path, headers=bearer(staff["nurse"]))).status_code == 200
        async with engine_db.engine.begin() as conn:
            await conn.execute(text(change), {"u": staff["nurse_id"]})
        assert await refused_within(c, staff["nurse"], 1.0, path, status) < 1.0


async def test_nothing_is_remembered_while_the_process_cannot_hear_changes(settings, engine_db, queue, staff):
    """Cut the listener's connection, then revoke: the revocation's notice reaches nobody here, so the
    process must already have forgotten, and must answer from the database until it listens again."""
    app = create_app(settings, db=engine_db, queue=queue)
    async with served(app) as url, httpx.AsyncClient(base_url=url) as c:
        await remembered(app, c, staff["nurse"])
        cache = app.state.sign_in_cache
        async with engine_db.engine.begin() as conn:
            cut = (await conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'clinic-sign-in-listener'"
                " AND datname = current_database()"))).scalar_one()
        assert cut >= 1
        for _ in range(50):
            if not cache.listening:
                break
            await asyncio.sleep(0.02)
        assert not cache.listening and cache.get(token_hash(staff["nurse"])) is None
        async with engine_db.engine.begin() as conn:
            await conn.execute(text("UPDATE api_tokens SET revoked_at = now() WHERE user_id = :u"), {"u": staff["nurse_id"]})
        assert (await c.get("/api/v1/me", headers=bearer(staff["nurse"]))).status_code == 401
        # and it listens again by itself
        await asyncio.sleep(2.5)
        await remembered(app, c, staff["admin"])
