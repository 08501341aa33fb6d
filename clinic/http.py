"""What every route shares: the transactional session, the acting user, the permission check, and error answers."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import asyncpg
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.params import Dependency
from litestar.response import Redirect, Template
from litestar.types import ASGIApp, Receive, Scope, Send
from litestar.utils.scope.state import ScopeState
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import Actor
from clinic.auth.middleware import IDLE, SESSION_COOKIE
from clinic.auth.permissions import allows
from clinic.db import conflict_message, is_bad_value, is_unavailable, sqlstate_of
from clinic.security import headers_for

log = logging.getLogger("clinic.http")


class ClinicError(Exception):
    """A refusal a person can act on; becomes {"detail", "field"?, "code"?} with its status."""

    status_code = 422

    def __init__(self, detail: str, *, field: str | None = None, code: str | None = None, extra: dict | None = None):
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.code = code
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"detail": self.detail}
        if self.field:
            out["field"] = self.field
        if self.code:
            out["code"] = self.code
        out.update(self.extra)
        return out


class InvalidInput(ClinicError):
    status_code = 422


class NotFound(ClinicError):
    status_code = 404


class Conflict(ClinicError):
    status_code = 409


class Forbidden(ClinicError):
    status_code = 403


# ---- dependencies -----------------------------------------------------------------------


async def provide_db_session(request: Request) -> AsyncGenerator[AsyncSession, None]:
    """One transaction per request: commit when the handler returns, roll back on any error.

    Work registered in session.info["after_commit"] (e.g. enqueueing notices) runs only
    after a successful commit, so nothing is sent for a change that was not saved.
    """
    db = request.app.state.db
    async with db.sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()
            for job in session.info.pop("after_commit", []):
                try:
                    await job()
                except Exception as exc:  # a queue outage must not fail a saved change
                    log.warning("after-commit job failed: %s", type(exc).__name__)


def after_commit(session: AsyncSession, job: Callable[[], Awaitable[Any]]) -> None:
    session.info.setdefault("after_commit", []).append(job)


def provide_actor(request: Request) -> Actor:
    user = request.scope.get("user")
    if user is None:
        raise NotAuthorizedException("Sign in first.")
    client = request.client
    return Actor(
        user_id=user.id,
        clinic_id=user.clinic_id,
        roles=user.roles,
        ip=client.host if client else None,
        name=user.full_name,
        via=user.via,
    )


DbSession = Annotated[AsyncSession, Dependency(skip_validation=True)]
CurrentActor = Annotated[Actor, Dependency(skip_validation=True)]


# ---- the permission check ----------------------------------------------------------------------------


ROLE_DENIED = "Your role does not allow this."
INT4_MIN, INT4_MAX = -(2**31), 2**31 - 1


class RoleDenied(PermissionDeniedException):
    """The permission check's refusal (as opposed to a domain rule's 403); answers carry code "role"."""


def check_permission(scope: Scope) -> None:
    """Every route declares opt={"permission": ...} or opt={"public": True}; anything else is refused."""
    handler = scope["route_handler"]
    if handler.opt.get("public") or scope["path"].startswith("/schema"):
        return
    user = scope.get("user")
    if user is None:
        raise NotAuthorizedException("Sign in first.")
    permission = handler.opt.get("permission")
    if not permission or not allows(permission, user.roles):
        raise RoleDenied(ROLE_DENIED)
    for value in (scope.get("path_params") or {}).values():
        # ids are int4 in the database: a larger one names no record (and must not reach asyncpg as an overflow)
        if isinstance(value, int) and not INT4_MIN <= value <= INT4_MAX:
            raise NotFound("No such record.", code="not_found")


class PermissionMiddleware:
    """The permission check of every route, after sign-in and CSRF. A middleware rather than a Litestar guard:
    Litestar hands each guard a fresh copy of the route handler, on every request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            check_permission(scope)
        await self.app(scope, receive, send)


# ---- error answers --------------------------------------------------------------------------


def wants_html(request: Request) -> bool:
    path = request.url.path
    return not (path.startswith("/api/") or path.startswith("/schema") or path == "/healthz")


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    # status_code too: the OpenAPI schema documents Litestar's error shape, which requires it
    return Response(content={"status_code": status, **body}, status_code=status, headers=headers, media_type="application/json")


def _html_error(request: Request, status: int, body: dict[str, Any]) -> Response:
    if request.headers.get("hx-request"):
        # htmx swaps this fragment into the form's error slot
        return Template(
            template_name="partials/error.html",
            context={"error": body},
            status_code=status,
            headers={"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"},
        )
    return Template(template_name="error.html", context={"error": body, "status": status}, status_code=status)


def clinic_error_handler(request: Request, exc: ClinicError) -> Response:
    body = exc.body()
    return _html_error(request, exc.status_code, body) if wants_html(request) else _json(exc.status_code, body)


def integrity_error_handler(request: Request, exc: IntegrityError | asyncpg.IntegrityConstraintViolationError) -> Response:
    sentence, name = conflict_message(exc)
    body = {"detail": sentence, "code": name or "conflict"}
    return _html_error(request, 409, body) if wants_html(request) else _json(409, body)


def not_authorized_handler(request: Request, exc: NotAuthorizedException) -> Response:
    """No one signed in: the login page for people (back to where they were after), 401 for programs."""
    problem = request.scope.get("auth_problem")
    if not wants_html(request):
        detail = "Authentication required: sign in or send a valid bearer token."
        if problem == IDLE:
            detail = "Your session ended after a period without activity; sign in again."
        elif problem:
            detail = "That session or token is not valid (ended, revoked or unknown)."
        return _json(401, {"detail": detail, "code": "idle" if problem == IDLE else "unauthenticated"})
    login = login_url(request, problem, request.scope.get("idle_minutes"))
    if request.headers.get("hx-request"):
        # an htmx fragment must not land inside the page: the whole page goes to the login form
        response: Response = Response(content="", status_code=401, headers={"HX-Redirect": login})
    else:
        response = Redirect(path=login)
    if SESSION_COOKIE in request.cookies:
        response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def login_url(request: Request, problem: str | None, idle_minutes: int | None) -> str:
    target: str | None = None
    if request.headers.get("hx-request"):
        # the page the person is looking at, not the fragment URL htmx asked for
        current = urlsplit(request.headers.get("hx-current-url") or "")
        if current.path.startswith("/") and (not current.netloc or current.netloc == request.url.netloc):
            target = current.path + ("?" + current.query if current.query else "")
    elif request.method in ("GET", "HEAD"):
        target = request.url.path + ("?" + request.url.query if request.url.query else "")
    params: dict[str, str] = {}
    if target and target not in ("/", "/login") and not target.startswith("//"):
        params["next"] = target
    if problem == IDLE:
        params["reason"] = "idle"
        if idle_minutes:
            params["idle"] = str(idle_minutes)
    return "/login" + ("?" + urlencode(params, safe="/") if params else "")


def http_exception_handler(request: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    if status == 403:
        body = {"detail": exc.detail if exc.detail != "Forbidden" else ROLE_DENIED}
        if isinstance(exc, RoleDenied):
            body["code"] = "role"
        elif "CSRF" in str(exc.detail):
            body = {"detail": "The form expired or came from another site; reload the page and try again.", "code": "csrf"}
    elif isinstance(exc, ValidationException):
        body = validation_body(exc)
        status = 422 if status == 400 else status
    else:
        body = {"detail": exc.detail}
    return _html_error(request, status, body) if wants_html(request) else _json(status, body, exc.headers)


def validation_body(exc: ValidationException) -> dict[str, Any]:
    extra = exc.extra if isinstance(exc.extra, list) else []
    if extra:
        first = extra[0] if isinstance(extra[0], dict) else {}
        key = first.get("key") or ""
        msg = first.get("message") or "is invalid"
        field = str(key).split(".")[-1] if key else None
        # msgspec reports a missing body field against "data"; name the field the person left out
        missing = re.search(r"missing required field `([^`]+)`", msg)
        if missing:
            field = missing.group(1)
            msg = "is required"
        detail = f"{field}: {msg}" if field else msg
        out: dict[str, Any] = {"detail": detail, "errors": extra}
        if field:
            out["field"] = field
        return out
    return {"detail": exc.detail or "The request is not valid."}


def _submitted(request: Request) -> list[tuple[str, Any]]:
    """(field, value) pairs of the form or JSON body this request already read (Litestar caches it per request)."""
    body = ScopeState.from_scope(request.scope).body
    if not isinstance(body, bytes) or not body:
        return []
    ctype = request.headers.get("content-type", "")
    if "x-www-form-urlencoded" in ctype:
        return parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    if "json" in ctype:
        out: list[tuple[str, Any]] = []

        def walk(value: Any, key: str) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(v, str(k))
            elif isinstance(value, list):
                for v in value:
                    walk(v, key)
            else:
                out.append((key, value))

        try:
            walk(json.loads(body), "")
        except ValueError:
            return []
        return out
    return []


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value) < 4000:
        return int(value)
    return None


def suspect_field(request: Request, state: str | None) -> str | None:
    """Best effort: which submitted field holds the value Postgres refused, so the answer can name it."""
    try:
        query = parse_qsl(request.scope.get("query_string", b"").decode("utf-8", "replace"), keep_blank_values=True)
        pairs = [(k, v) for k, v in [*query, *_submitted(request)] if k and not k.startswith("_")]
    except Exception:  # naming the field is a courtesy; the refusal stands without it
        return None
    texts = [(k, v) for k, v in pairs if isinstance(v, str)]
    # a NUL (Postgres text cannot hold one), then a number past int4 (asyncpg refuses it before sending), then
    # for "value too long" the longest text
    found = next((k for k, v in texts if "\x00" in v), None)
    found = found or next((k for k, v in texts if len(v) >= 4000 and v.strip().lstrip("-").isdigit()), None)
    found = found or next((k for k, v in pairs if (n := _as_int(v)) is not None and not INT4_MIN <= n <= INT4_MAX), None)
    # a day at the very edge of the calendar: a clinic's zone or a day's end takes it past year 1 or 9999
    found = found or next((k for k, v in texts if _EDGE_DAY.match(v)), None)
    if not found and state == "22001" and texts:
        found = max(texts, key=lambda kv: len(kv[1]))[0]
    return found


_EDGE_DAY = re.compile(r"\s*(0001|9999)-\d\d-\d\d")


def _giant_number(exc: Exception) -> bool:
    """Python refuses int() of a string past 4300 digits; someone typed (or pasted) that, not a bug of ours."""
    return isinstance(exc, ValueError) and "integer string conversion" in str(exc)


def server_error_handler(request: Request, exc: Exception) -> Response:
    if isinstance(exc, OverflowError) or _giant_number(exc) or is_bad_value(exc):
        # a value no date or column can hold (year 1 minus a day, a NUL, a number past int4, text too long): the request's fault
        state = sqlstate_of(exc)
        body = {"detail": "A value in the request is out of range, too long or holds characters that cannot be saved; nothing was saved.",
                "code": "invalid_value"}
        if field := suspect_field(request, state):
            body["field"] = field
        log.warning("value refused on %s %s: %s", request.method, request.url.path, state or type(exc).__name__)
        return _html_error(request, 422, body) if wants_html(request) else _json(422, body)
    if is_unavailable(exc):
        body = {"detail": "The database is not reachable right now; try again in a moment.", "code": "db_unavailable"}
        log.error("database unavailable: %s", type(exc).__name__)
        return _html_error(request, 503, body) if wants_html(request) else _json(503, body, {"Retry-After": "5"})
    # never the exception text: it may carry patient data
    log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path, exc_info=False)
    body = {"detail": "Something went wrong on our side; nothing was saved.", "code": "server_error"}
    return _html_error(request, 500, body) if wants_html(request) else _json(500, body)


def _with_security_headers(handler: Callable[[Request, Any], Response]) -> Callable[[Request, Any], Response]:
    """An unknown path or method is answered before any middleware runs; its error page needs the headers too."""

    def answer(request: Request, exc: Any) -> Response:
        response = handler(request, exc)
        for k, v in headers_for(request.url.path).items():
            response.headers.setdefault(k, v)
        return response

    return answer


EXCEPTION_HANDLERS = {
    exc: _with_security_headers(handler)
    for exc, handler in {
        ClinicError: clinic_error_handler,
        IntegrityError: integrity_error_handler,
        asyncpg.IntegrityConstraintViolationError: integrity_error_handler,  # statements sent on the driver connection
        NotAuthorizedException: not_authorized_handler,
        HTTPException: http_exception_handler,
        Exception: server_error_handler,
    }.items()
}
