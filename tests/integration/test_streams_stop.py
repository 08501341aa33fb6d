"""An open live stream stops within seconds when its sign-in ends (sign-out, deactivation, password reset, token
revocation, idle logoff), not at the stream's five-minute end: a nurse who leaves stops receiving names and vitals."""

from __future__ import annotations

import asyncio
import time

import httpx
from litestar.middleware.csrf import generate_csrf_token
from sqlalchemy import text

from clinic.app import create_app
from clinic.auth.models import WebSession
from clinic.auth.rules import new_token
from clinic.auth.streams import RECHECK_SECONDS
from clinic.monitoring.service import channel
from tests.factories import Factory, bearer
from tests.integration.test_board_live import events, next_event, served

NOTICE_SECONDS = 3.0  # a change announced by the database reaches the stream within this


async def _world(engine_db):
    f = Factory(engine_db)
    clinic = await f.clinic()
    nurse = await f.user(clinic, "nurse")
    admin = await f.user(clinic, "admin")
    raw, hashed = new_token()
    await f.add(WebSession(token_hash=hashed, user_id=nurse.id))
    return f, clinic, nurse, {"Cookie": f"clinic_session={raw}"}, bearer(await f.token(nurse)), bearer(await f.token(admin))


async def _stopped_within(url: str, credential: dict[str, str], action) -> float:
    """Open the board stream with `credential`, wait for the board, run `action`; seconds until the stream ended."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        async with c.stream("GET", "/board/stream", headers={**credential, "Accept": "text/event-stream"}) as r:
            assert r.status_code == 200
            stream = events(r)
            await next_event(stream, "board", timeout=10)
            await action(c)
            start = time.monotonic()
            async with asyncio.timeout(60):
                async for name, _ in stream:
                    assert name == "board", name
            return time.monotonic() - start


async def test_streams_stop_on_sign_out_deactivation_password_reset_revocation_and_idle(settings, engine_db, queue):
    app = create_app(settings, db=engine_db, queue=queue)
    csrf = generate_csrf_token(secret=settings.secret_key)
    async with served(app) as url:
        f, clinic, nurse, session, token, admin = await _world(engine_db)

        async def sign_out(c: httpx.AsyncClient) -> None:
            r = await c.post("/logout", headers={**session, "Cookie": session["Cookie"] + f"; csrftoken={csrf}", "x-csrftoken": csrf})
            assert r.status_code == 303

        assert await _stopped_within(url, session, sign_out) < NOTICE_SECONDS

        for credential in ("session", "token"):
            f, clinic, nurse, session, token, admin = await _world(engine_db)

            async def deactivate(c: httpx.AsyncClient) -> None:
                assert (await c.post(f"/api/v1/staff/{nurse.id}/deactivate", headers=admin)).status_code == 200

            assert await _stopped_within(url, session if credential == "session" else token, deactivate) < NOTICE_SECONDS, credential

            f, clinic, nurse, session, token, admin = await _world(engine_db)

            async def reset(c: httpx.AsyncClient) -> None:
                r = await c.post(f"/api/v1/staff/{nurse.id}/reset-password", json={"password": "a-fresh-passphrase-1"}, headers=admin)
                assert r.status_code == 200

            assert await _stopped_within(url, session if credential == "session" else token, reset) < NOTICE_SECONDS, credential

        f, clinic, nurse, session, token, admin = await _world(engine_db)

        async def revoke(c: httpx.AsyncClient) -> None:
            (token_id,) = (await c.get(f"/api/v1/tokens?user_id={nurse.id}", headers=admin)).json()
            assert (await c.post(f"/api/v1/tokens/{token_id['id']}/revoke", headers=admin)).status_code == 200

        assert await _stopped_within(url, token, revoke) < NOTICE_SECONDS

        f, clinic, nurse, session, token, admin = await _world(engine_db)

        async def fall_idle(c: httpx.AsyncClient) -> None:
            # nothing announces idleness: the periodic re-check finds it
            async with engine_db.engine.begin() as conn:
                await conn.execute(text("UPDATE web_sessions SET last_seen_at = now() - interval '20 minutes' WHERE user_id = :u"), {"u": nurse.id})

        assert await _stopped_within(url, session, fall_idle) < RECHECK_SECONDS + NOTICE_SECONDS


async def test_a_stream_whose_sign_in_holds_keeps_going(settings, engine_db, queue):
    app = create_app(settings, db=engine_db, queue=queue)
    async with served(app) as url:
        f, clinic, nurse, session, token, admin = await _world(engine_db)
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            async with c.stream("GET", "/board/stream", headers={**token, "Accept": "text/event-stream"}) as r:
                stream = events(r)
                await next_event(stream, "board", timeout=10)
                # another person's change is announced too: this stream re-checks, finds its token good, and stays
                other = await f.user(clinic, "nurse")
                assert (await c.post(f"/api/v1/staff/{other.id}/deactivate", headers=admin)).status_code == 200
                await asyncio.sleep(RECHECK_SECONDS + 1)
                async with engine_db.engine.begin() as conn:  # any change on the board: the open stream draws it
                    await conn.execute(text("SELECT pg_notify(:ch, '{}')"), {"ch": channel(clinic.id)})
                await next_event(stream, "board", timeout=NOTICE_SECONDS)
