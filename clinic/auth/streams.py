"""Live streams last only as long as the sign-in that opened them: each re-checks its browser session or token when the
database announces a sign-in change (NOTIFY clinic_sign_ins: sign-out, deactivation, password reset, revocation) and
every few seconds besides (idle logoff, or while that announcement cannot be heard), and ends when it no longer holds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from litestar import Request

from clinic.auth.middleware import CurrentUser, idle_minutes, sign_in_cache
from clinic.auth.permissions import allows
from clinic.auth.rules import is_idle_expired
from clinic.timeutil import utcnow

log = logging.getLogger("clinic.auth")

RECHECK_SECONDS = 5.0
T = TypeVar("T")

_SESSION_HOLDS = """
    SELECT s.last_seen_at AS seen, u.roles, c.settings ->> 'idle_timeout_minutes' AS clinic_idle
    FROM web_sessions s JOIN staff_users u ON u.id = s.user_id JOIN clinics c ON c.id = u.clinic_id
    WHERE s.id = $1 AND s.ended_at IS NULL AND u.active
"""
_TOKEN_HOLDS = """
    SELECT u.roles FROM api_tokens t JOIN staff_users u ON u.id = t.user_id
    WHERE t.id = $1 AND t.revoked_at IS NULL AND u.active
"""


async def still_signed_in(app: Any, user: CurrentUser, permission: str) -> bool:
    """The credential is live, not idle, and its owner's roles still hold `permission`."""
    async with app.state.db.raw() as conn:
        row = await conn.fetchrow(_SESSION_HOLDS if user.via == "session" else _TOKEN_HOLDS, user.credential_id)
    if row is None or not allows(permission, tuple(row["roles"] or ())):
        return False
    if user.via == "session":
        idle = idle_minutes(row["clinic_idle"], app.state.settings.idle_timeout_minutes)
        return not is_idle_expired(row["seen"], utcnow(), idle)
    return True


async def _until_signed_out(app: Any, user: CurrentUser, permission: str, recheck: float) -> None:
    cache = sign_in_cache(app)
    while True:
        if cache is not None:
            await cache.changed(timeout=recheck)
        else:
            await asyncio.sleep(recheck)
        try:
            if not await still_signed_in(app, user, permission):
                return
        except Exception as exc:  # the database cannot say: end the stream, the browser's reconnect asks again
            log.warning("stream sign-in check failed: %s", type(exc).__name__)
            return


async def while_signed_in(request: Request, events: AsyncIterator[T], *, recheck: float = RECHECK_SECONDS) -> AsyncIterator[T]:
    """Pass `events` on until the request's sign-in ends (or no longer allows the route), then stop them."""
    user: CurrentUser = request.scope["user"]
    watcher = asyncio.create_task(_until_signed_out(request.app, user, request.scope["route_handler"].opt["permission"], recheck))
    upcoming = aiter(events)
    try:
        while True:
            step = asyncio.ensure_future(anext(upcoming))
            await asyncio.wait({step, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():  # signed out: the stream stops here
                step.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await step
                return
            try:
                item = step.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        with contextlib.suppress(RuntimeError):
            await upcoming.aclose()  # type: ignore[attr-defined]
