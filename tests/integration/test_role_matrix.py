"""Every registered route x every role against clinic.auth.permissions: 403 exactly where the matrix says deny.

The routes are read from create_app(...) itself, so a route added anywhere later is covered without touching
this file. Each request runs inside a savepoint that is rolled back, so a logout, a deactivation or a deleted row
in one request never changes what the next request sees.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from litestar.middleware.csrf import generate_csrf_token
from litestar.routes import ASGIRoute, HTTPRoute, WebSocketRoute
from sqlalchemy import text
from sqlmodel import SQLModel

from clinic.app import create_app
from clinic.auth.models import ApiToken, WebSession
from clinic.auth.permissions import ALL_ROLES, NO_BROWSER, PERMISSIONS, allows
from clinic.auth.rules import new_token
from clinic.auth.guard import ROLE_DENIED

ROLES = sorted(ALL_ROLES)
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
MISSING_ID = 2_000_000_000  # fits int4, never a real row
# path parameter names whose table is not simply the plural of the name's stem
TABLE_FOR_PARAM = {"user_id": "staff_users", "staff_id": "staff_users", "token_id": "api_tokens"}


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # the route's template, e.g. /api/v1/patients/{patient_id:int}
    params: dict[str, Any]  # name -> PathParameterDefinition
    opt: dict[str, Any]
    name: str

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _is_framework_options(method: str, handler) -> bool:
    # Litestar adds an OPTIONS handler to every path (it answers with the Allow header, no data)
    return method == "OPTIONS" and handler.handler_name == "options_handler" and not handler.opt


def _is_openapi(path: str) -> bool:
    return path == "/schema" or path.startswith("/schema/")


def endpoints(app) -> list[Endpoint]:
    found = []
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            for method, (handler, _) in route.route_handler_map.items():
                if _is_framework_options(method, handler) or _is_openapi(route.path):
                    continue
                found.append(Endpoint(method, route.path, dict(route.path_parameters), dict(handler.opt), handler.handler_name))
        elif isinstance(route, (WebSocketRoute, ASGIRoute)):
            handler = route.route_handler
            found.append(Endpoint("WS" if isinstance(route, WebSocketRoute) else "ASGI", route.path, dict(route.path_parameters), dict(handler.opt), handler.handler_name))
    return found


@pytest.fixture
def app(settings, db, queue):
    return create_app(settings, db=db, queue=queue)


# ---- the declaration check ------------------------------------------------------------------


def test_every_route_declares_a_known_permission_or_public(app):
    eps = endpoints(app)
    assert len(eps) > 20  # the app really was read
    problems = []
    for ep in eps:
        permission, public = ep.opt.get("permission"), ep.opt.get("public")
        if public and permission:
            problems.append(f"{ep}: both public and permission {permission!r}")
        elif not public and not permission:
            problems.append(f"{ep} ({ep.name}): declares neither opt permission nor public")
        elif permission and permission not in PERMISSIONS:
            problems.append(f"{ep}: permission {permission!r} is not in clinic.auth.permissions.PERMISSIONS")
    assert not problems, "\n".join(problems)


def test_http_routes_are_all_that_exist(app):
    # websocket and raw ASGI routes would need their own checks below; none exist today
    assert [str(ep) for ep in endpoints(app) if ep.method in ("WS", "ASGI")] == []


# ---- real requests --------------------------------------------------------------------------


class RawASGI:
    """Calls the app directly and returns as soon as the status is known, so live streams (SSE) cannot hang the test."""

    def __init__(self, app) -> None:
        self.app = app

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver.local", 80),
            "state": {},
        }
        started: asyncio.Future = asyncio.get_running_loop().create_future()
        finished = asyncio.Event()
        chunks: list[bytes] = []
        sent = False

        async def receive() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await finished.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start" and not started.done():
                started.set_result(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    finished.set()

        task = asyncio.create_task(self.app(scope, receive, send))
        try:
            await asyncio.wait({task, started}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
            if task.done() and not started.done():
                task.result()  # re-raise what the app raised
            if not started.done():
                raise AssertionError(f"{method} {path}: no response within 15 s")
            # a normal response finishes at once; a stream keeps going and is cut off here
            await asyncio.wait({task}, timeout=2)
        finally:
            if not task.done():
                finished.set()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        start = started.result()
        response_headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in start.get("headers", [])}
        return start["status"], response_headers, b"".join(chunks)


@dataclass
class World:
    clinic_id: int
    session_cookies: dict[str, str]
    bearer_tokens: dict[str, str]
    csrf: str
    ids: dict[str, int]


async def _row_id(db, table_name: str, clinic_id: int) -> int | None:
    table = SQLModel.metadata.tables.get(table_name)
    if table is None or "id" not in table.c:
        return None
    q = f"SELECT id FROM {table_name}"
    if "clinic_id" in table.c:
        q += " WHERE clinic_id = :c"
    elif "user_id" in table.c:
        q += " WHERE user_id IN (SELECT id FROM staff_users WHERE clinic_id = :c)"
    else:
        return None
    async with db.sessionmaker() as s:
        return (await s.execute(text(q + " ORDER BY id LIMIT 1"), {"c": clinic_id})).scalar()


def _table_for(param: str) -> list[str]:
    if param in TABLE_FOR_PARAM:
        return [TABLE_FOR_PARAM[param]]
    stem = param.removesuffix("_id")
    return [stem + "s", stem + "es", stem]


@pytest.fixture
async def world(factory, db, settings, app) -> World:
    clinic = await factory.clinic()
    await factory.patient(clinic)
    sessions, tokens = {}, {}
    for role in ROLES:
        user = await factory.user(clinic, role)
        raw, hashed = new_token()
        bearer_raw, bearer_hashed = new_token("ct_")
        await factory.add(WebSession(token_hash=hashed, user_id=user.id), ApiToken(token_hash=bearer_hashed, user_id=user.id, name="matrix"))
        sessions[role], tokens[role] = raw, bearer_raw
    # a real row of this clinic for every id-like path parameter that names a table
    ids: dict[str, int] = {}
    for ep in endpoints(app):
        for name, definition in ep.params.items():
            if definition.type is int and name not in ids:
                for table in _table_for(name):
                    found = await _row_id(db, table, clinic.id)
                    if found is not None:
                        ids[name] = found
                        break
    return World(clinic.id, sessions, tokens, generate_csrf_token(secret=settings.secret_key), ids)


def fill_path(ep: Endpoint, ids: dict[str, int]) -> str:
    path = ep.path
    for name, definition in ep.params.items():
        kind = definition.type
        if kind is int:
            value = str(ids.get(name, MISSING_ID))
        elif kind is uuid.UUID:
            value = str(uuid.uuid4())
        elif kind is date:
            value = "2030-01-07"
        elif kind is datetime:
            value = "2030-01-07T10:00:00+00:00"
        elif kind is Path:
            value = "css/app.css"
        else:
            value = "matrix-test"
        path = path.replace("{" + definition.full + "}", value)
    return path


def _request_parts(ep: Endpoint, *, auth: str, world: World, role: str, csrf: bool = True) -> tuple[dict[str, str], bytes]:
    headers = {"host": "testserver.local", "accept": "application/json, text/html"}
    if auth == "session":
        headers["cookie"] = f"clinic_session={world.session_cookies[role]}; csrftoken={world.csrf}"
        if csrf and ep.method in UNSAFE:
            headers["x-csrftoken"] = world.csrf
    else:
        headers["authorization"] = f"Bearer {world.bearer_tokens[role]}"
    body = b""
    if ep.method in UNSAFE:
        if ep.path.startswith("/api/"):
            headers["content-type"], body = "application/json", b"{}"
        else:
            headers["content-type"] = "application/x-www-form-urlencoded"
    return headers, body


def _role_denied(status: int, headers: dict[str, str], body: bytes) -> bool:
    if status != 403:
        return False
    if headers.get("content-type", "").startswith("application/json"):
        return json.loads(body or b"{}").get("code") == "role"
    return ROLE_DENIED in body.decode("utf-8", "replace")


def _csrf_refused(status: int, headers: dict[str, str], body: bytes) -> bool:
    if status != 403:
        return False
    if headers.get("content-type", "").startswith("application/json"):
        return json.loads(body or b"{}").get("code") == "csrf"
    return "The form expired or came from another site" in body.decode("utf-8", "replace")


async def _in_savepoint(db, call):
    """Run one request and undo whatever it wrote."""
    conn = db.sessionmaker.kw["bind"]
    savepoint = await conn.begin_nested()
    try:
        return await call()
    finally:
        if savepoint.is_active:
            await savepoint.rollback()


def _sent_to_sign_in(ep: Endpoint, status: int, headers: dict[str, str]) -> bool:
    if ep.path.startswith("/api/"):
        return status == 401
    return status in (302, 303) and headers.get("location", "").startswith("/login")


def _check(ep: Endpoint, role: str, auth: str, status: int, headers: dict[str, str], body: bytes) -> str | None:
    where = f"{ep} as {role} via {auth}: {status}"
    if status >= 500:
        return f"{where} (server error: {body[:200]!r})"
    if ep.opt.get("public"):  # may still answer 401 on its own terms (e.g. a wrong password at /login)
        return f"{where} (public route refused by role)" if _role_denied(status, headers, body) else None
    if auth == "session" and role in NO_BROWSER:
        # a program's account has no browser sign-in: even a session row in the database signs nobody in
        return None if _sent_to_sign_in(ep, status, headers) else f"{where} (a browserless role was let in with a session)"
    if status == 401:
        return f"{where} (credential not accepted)"
    expected_allow = allows(ep.opt.get("permission", ""), [role])
    denied = _role_denied(status, headers, body)
    if expected_allow and denied:
        return f"{where} (matrix allows {ep.opt['permission']!r}, the permission check refused)"
    if not expected_allow and not denied:
        return f"{where} (matrix denies {ep.opt.get('permission')!r}, expected 403 from the permission check)"
    if auth == "bearer" and _csrf_refused(status, headers, body):
        return f"{where} (bearer request refused for CSRF)"
    return None


@pytest.mark.parametrize("role", ROLES)
async def test_browser_session_every_route_for_role(role, app, db, world):
    client = RawASGI(app)
    problems = []
    checked = 0
    for ep in endpoints(app):
        if ep.method in ("WS", "ASGI"):
            continue
        headers, body = _request_parts(ep, auth="session", world=world, role=role)
        path = fill_path(ep, world.ids)
        status, out_headers, out_body = await _in_savepoint(db, lambda: client.request(ep.method, path, headers, body))
        checked += 1
        if problem := _check(ep, role, "session", status, out_headers, out_body):
            problems.append(problem)
    assert checked > 20
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("role", ROLES)
async def test_bearer_token_every_api_route_for_role(role, app, db, world):
    client = RawASGI(app)
    problems = []
    api = [ep for ep in endpoints(app) if ep.path.startswith("/api/")]
    assert api
    for ep in api:
        headers, body = _request_parts(ep, auth="bearer", world=world, role=role)
        path = fill_path(ep, world.ids)
        status, out_headers, out_body = await _in_savepoint(db, lambda: client.request(ep.method, path, headers, body))
        if problem := _check(ep, role, "bearer", status, out_headers, out_body):
            problems.append(problem)
    assert not problems, "\n".join(problems)


async def test_every_unsafe_route_refuses_a_browser_session_without_csrf_token(app, db, world):
    client = RawASGI(app)
    unsafe = [ep for ep in endpoints(app) if ep.method in UNSAFE]
    assert any(not ep.path.startswith("/api/") for ep in unsafe) and any(ep.path.startswith("/api/") for ep in unsafe)
    problems = []
    for ep in unsafe:
        # admin holds most permissions, but the CSRF check comes before any role check anyway
        headers, body = _request_parts(ep, auth="session", world=world, role="admin", csrf=False)
        path = fill_path(ep, world.ids)
        status, out_headers, out_body = await _in_savepoint(db, lambda: client.request(ep.method, path, headers, body))
        if not _csrf_refused(status, out_headers, out_body):
            problems.append(f"{ep}: {status} without a CSRF token")
    assert not problems, "\n".join(problems)


async def test_anonymous_requests_get_the_login_page_or_401(app, db, world):
    client = RawASGI(app)
    problems = []
    for ep in endpoints(app):
        if ep.opt.get("public") or ep.method in ("WS", "ASGI"):
            continue
        headers = {"host": "testserver.local", "cookie": f"csrftoken={world.csrf}", "x-csrftoken": world.csrf}
        status, out_headers, _ = await _in_savepoint(db, lambda: client.request(ep.method, fill_path(ep, world.ids), headers))
        if not _sent_to_sign_in(ep, status, out_headers):
            problems.append(f"{ep}: {status} for an anonymous request")
    assert not problems, "\n".join(problems)
