"""What every route shares: the transactional session, the acting user, the permission guard, and error answers."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Annotated, Any

from litestar import Request, Response
from litestar.connection import ASGIConnection
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.handlers.base import BaseRouteHandler
from litestar.params import Dependency
from litestar.response import Redirect, Template
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import Actor
from clinic.auth.permissions import allows
from clinic.db import conflict_message, is_unavailable

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


# ---- the guard ----------------------------------------------------------------------------


def permission_guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """Every route declares opt={"permission": ...} or opt={"public": True}; anything else is refused."""
    if handler.opt.get("public") or connection.scope["path"].startswith("/schema"):
        return
    user = connection.scope.get("user")
    if user is None:
        raise NotAuthorizedException("Sign in first.")
    permission = handler.opt.get("permission")
    if not permission or not allows(permission, user.roles):
        raise PermissionDeniedException("Your role does not allow this.")


# ---- error answers --------------------------------------------------------------------------


def wants_html(request: Request) -> bool:
    path = request.url.path
    return not (path.startswith("/api/") or path.startswith("/schema") or path == "/healthz")


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(content=body, status_code=status, headers=headers, media_type="application/json")


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


def integrity_error_handler(request: Request, exc: IntegrityError) -> Response:
    sentence, name = conflict_message(exc)
    body = {"detail": sentence, "code": name or "conflict"}
    return _html_error(request, 409, body) if wants_html(request) else _json(409, body)


def not_authorized_handler(request: Request, exc: NotAuthorizedException) -> Response:
    if wants_html(request):
        target = request.url.path
        if request.url.query:
            target += "?" + request.url.query
        from urllib.parse import quote

        login = f"/login?next={quote(target, safe='/')}"
        if request.headers.get("hx-request"):
            return Response(content="", status_code=401, headers={"HX-Redirect": login})
        return Redirect(path=login)
    return _json(401, {"detail": "Authentication required: sign in or send a valid bearer token."})


def http_exception_handler(request: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    if status == 403:
        body = {"detail": exc.detail if exc.detail != "Forbidden" else "Your role does not allow this."}
        if "CSRF" in str(exc.detail):
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
        detail = f"{field}: {msg}" if field else msg
        out: dict[str, Any] = {"detail": detail, "errors": extra}
        if field:
            out["field"] = field
        return out
    return {"detail": exc.detail or "The request is not valid."}


def server_error_handler(request: Request, exc: Exception) -> Response:
    if is_unavailable(exc):
        body = {"detail": "The database is not reachable right now; try again in a moment.", "code": "db_unavailable"}
        log.error("database unavailable: %s", type(exc).__name__)
        return _html_error(request, 503, body) if wants_html(request) else _json(503, body, {"Retry-After": "5"})
    # never the exception text: it may carry patient data
    log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path, exc_info=False)
    body = {"detail": "Something went wrong on our side; nothing was saved.", "code": "server_error"}
    return _html_error(request, 500, body) if wants_html(request) else _json(500, body)


EXCEPTION_HANDLERS = {
    ClinicError: clinic_error_handler,
    IntegrityError: integrity_error_handler,
    NotAuthorizedException: not_authorized_handler,
    HTTPException: http_exception_handler,
    Exception: server_error_handler,
}
