"""Who is asking: resolves a bearer token or the session cookie to a staff user on every request."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from litestar.config.csrf import CSRFConfig
from litestar.middleware.csrf import CSRFMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from clinic.auth.cache import Remembered, SignInCache
from clinic.auth.rules import is_idle_expired, token_hash
from clinic.timeutil import utcnow

SESSION_COOKIE = "clinic_session"
CSRF_COOKIE = "csrftoken"
# touching last_seen on every request would cost a write per request; a minute is precise enough
TOUCH_EVERY = timedelta(seconds=60)
# requests a page makes on its own (polls, live streams) are not a person at the keyboard
BACKGROUND_HEADER = b"x-clinic-background"
# why a presented credential did not sign anyone in: scope["auth_problem"]
IDLE, ENDED = "idle", "ended"


@dataclass(frozen=True)
class CurrentUser:
    id: int
    clinic_id: int
    email: str
    full_name: str
    roles: tuple[str, ...]
    via: str  # "session" | "bearer"
    credential_id: int

    def has_role(self, *roles: str) -> bool:
        return any(r in self.roles for r in roles)


# sent on the driver connection (see Database.raw): one round trip per request, no ORM machinery
_SESSION_SQL = """
    SELECT s.id AS cid, s.last_seen_at AS seen, u.id, u.clinic_id, u.email, u.full_name, u.roles,
           c.settings ->> 'idle_timeout_minutes' AS clinic_idle
    FROM web_sessions s JOIN staff_users u ON u.id = s.user_id JOIN clinics c ON c.id = u.clinic_id
    WHERE s.token_hash = $1 AND s.ended_at IS NULL AND u.active AND NOT u.roles @> ARRAY['integration']::varchar[]
"""
_TOKEN_SQL = """
    SELECT t.id AS cid, t.last_used_at AS seen, u.id, u.clinic_id, u.email, u.full_name, u.roles
    FROM api_tokens t JOIN staff_users u ON u.id = t.user_id
    WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND u.active
"""
# ending an idle session and recording it, as one statement (so one commit)
_IDLE_LOGOFF_SQL = """
    WITH ended AS (UPDATE web_sessions SET ended_at = $1 WHERE id = $2 AND ended_at IS NULL RETURNING id)
    INSERT INTO audit_events (clinic_id, at, user_id, ip, via, credential_id, action, entity, entity_id, changes)
    SELECT $3, $1, $4, $5, 'session', $2, 'auth.idle_logoff', 'web_session', $2::text, jsonb_build_object('idle_minutes', $6::integer) FROM ended
"""
_TOUCH_SQL = {
    "session": "UPDATE web_sessions SET last_seen_at = $1 WHERE id = $2",
    "bearer": "UPDATE api_tokens SET last_used_at = $1 WHERE id = $2",
}


def _client_ip(scope: Scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


def bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            v = value.decode("latin-1")
            if v[:7].lower() == "bearer ":
                return v[7:].strip()
    return None


class AuthenticationMiddleware:
    """Sets scope["user"] to a CurrentUser or None; the permission check decides what that user may do."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["auth_problem"] = None
        scope["idle_minutes"] = None
        if scope["type"] not in ("http", "websocket") or scope["path"].startswith("/static/"):
            scope["user"] = None
            await self.app(scope, receive, send)
            return
        litestar_app = scope["litestar_app"]
        user = await self.resolve(scope, litestar_app)
        scope["user"] = user
        scope["auth"] = user.via if user else None
        await self.app(scope, receive, send)

    async def resolve(self, scope: Scope, litestar_app) -> CurrentUser | None:
        raw = bearer_token(scope)
        via = "bearer"
        sql = _TOKEN_SQL
        if raw is None:
            raw = _cookie(scope, SESSION_COOKIE)
            via = "session"
            sql = _SESSION_SQL
        if not raw:
            return None
        if len(raw) > 200:
            scope["auth_problem"] = ENDED
            return None
        db = litestar_app.state.db
        settings = litestar_app.state.settings
        now = utcnow()
        key = token_hash(raw)
        cache = sign_in_cache(litestar_app) if via == "bearer" else None
        if cache is not None:
            hit = cache.get(key)
            # a token not used for a minute goes to the database, which records the use
            if hit is not None and (now - hit.seen <= TOUCH_EVERY or _is_background(scope)):
                return hit.user
            generation = cache.generation
        async with db.raw() as conn:
            row = await conn.fetchrow(sql, key)
            if row is None:
                scope["auth_problem"] = ENDED
                return None
            if via == "session":
                idle = idle_minutes(row["clinic_idle"], settings.idle_timeout_minutes)
                scope["idle_minutes"] = idle  # pages use it to leave the screen when the session ends
                if is_idle_expired(row["seen"], now, idle):
                    # automatic logoff is a security event in its own right
                    await conn.execute(_IDLE_LOGOFF_SQL, now, row["cid"], row["clinic_id"], row["id"], _client_ip(scope), idle)
                    scope["auth_problem"] = IDLE
                    return None
            seen = row["seen"]
            if (seen is None or now - seen > TOUCH_EVERY) and not _is_background(scope):
                await conn.execute(_TOUCH_SQL[via], now, row["cid"])
                seen = now
        user = CurrentUser(
            id=row["id"],
            clinic_id=row["clinic_id"],
            email=row["email"],
            full_name=row["full_name"],
            roles=tuple(row["roles"] or ()),
            via=via,
            credential_id=row["cid"],
        )
        if cache is not None and seen is not None:
            cache.put(key, Remembered(user, seen), generation)
        return user


def sign_in_cache(litestar_app: Any) -> SignInCache | None:
    """The process's memory of token sign-ins; none while every session joins a test's outer transaction
    (nothing there is ever committed, so no change would ever be announced)."""
    state = litestar_app.state
    cache = state.get("sign_in_cache")
    if cache is None and state.db.bound is None:
        cache = state["sign_in_cache"] = SignInCache(state.db.dsn)
        state.listeners.append(cache.stop)
    return cache


def idle_minutes(clinic_value: str | None, default: int) -> int:
    """The clinic's own idle limit when it set a sane one, else the server's setting: a clinic may shorten it only."""
    try:
        value = int(clinic_value) if clinic_value is not None else default
    except ValueError:
        return default
    return value if 1 <= value <= default else default


def _is_background(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == BACKGROUND_HEADER:
            return True
        if name == b"accept" and b"text/event-stream" in value:
            return True
    return False


def _cookie(scope: Scope, name: str) -> str | None:
    for header, value in scope.get("headers", []):
        if header == b"cookie":
            for part in value.decode("latin-1").split(";"):
                k, _, v = part.strip().partition("=")
                if k == name:
                    return v
    return None


class BearerAwareCSRFMiddleware(CSRFMiddleware):
    """CSRF for browser sessions; a bearer-token request carries no ambient credential, so it is exempt."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _cookie(scope, SESSION_COOKIE) is None and (
            bearer_token(scope) is not None or scope["path"].startswith("/api/")
        ):
            # no session cookie, nothing a forged request could ride on: the API answers for the credential (401 if none)
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http":
            cookie = _cookie(scope, CSRF_COOKIE)
            if cookie is not None and self._decode_csrf_token(cookie) is None:
                # a forged or damaged cookie would otherwise be echoed into every form, which could then never be sent
                scope["headers"] = _without_cookie(scope["headers"], CSRF_COOKIE)
        await super().__call__(scope, receive, send)

    def _decode_csrf_token(self, token: str) -> str | None:
        try:
            return super()._decode_csrf_token(token)
        except (TypeError, ValueError):  # non-ASCII input makes compare_digest raise
            return None


def _without_cookie(headers: list[tuple[bytes, bytes]], name: str) -> list[tuple[bytes, bytes]]:
    out = []
    for header, value in headers:
        if header == b"cookie":
            parts = [p for p in value.decode("latin-1").split(";") if p.strip().partition("=")[0] != name]
            if not parts:
                continue
            value = ";".join(parts).strip().encode("latin-1")
        out.append((header, value))
    return out


def csrf_config(secret: str, secure: bool) -> CSRFConfig:
    return CSRFConfig(
        secret=secret,
        cookie_name=CSRF_COOKIE,
        header_name="x-csrftoken",
        cookie_secure=secure,
        cookie_samesite="lax",
        exclude=["/healthz", "/static"],
    )
