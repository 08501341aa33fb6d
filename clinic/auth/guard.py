"""The permission check every route passes, and the answers when nobody is signed in or the role does not allow it."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit

from litestar import Request, Response
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.plugins.htmx import ClientRedirect, HTMXRequest
from litestar.response import Redirect
from litestar.types import ASGIApp, Receive, Scope, Send

from clinic.auth.middleware import IDLE, SESSION_COOKIE
from clinic.auth.permissions import allows
from clinic.errors import NotFound
from clinic.http import (
    INT4_MAX,
    INT4_MIN,
    answer,
    json_answer,
    wants_html,
    with_security_headers,
)

ROLE_DENIED = "Your role does not allow this."


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


def role_denied_handler(request: Request, exc: RoleDenied) -> Response:
    return answer(request, 403, {"detail": ROLE_DENIED, "code": "role"})


def not_authorized_handler(request: HTMXRequest, exc: NotAuthorizedException) -> Response:
    """No one signed in: the login page for people (back to where they were after), 401 for programs."""
    problem = request.scope.get("auth_problem")
    if not wants_html(request):
        detail = "Authentication required: sign in or send a valid bearer token."
        if problem == IDLE:
            detail = "Your session ended after a period without activity; sign in again."
        elif problem:
            detail = "That session or token is not valid (ended, revoked or unknown)."
        return json_answer(401, {"detail": detail, "code": "idle" if problem == IDLE else "unauthenticated"})
    login = login_url(request, problem, request.scope.get("idle_minutes"))
    if request.htmx:
        # an htmx fragment must not land inside the page: the whole page goes to the login form
        response: Response = ClientRedirect(login)
        response.status_code = 401
    else:
        response = Redirect(path=login)
    if SESSION_COOKIE in request.cookies:
        response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def login_url(request: HTMXRequest, problem: str | None, idle_minutes: int | None) -> str:
    target: str | None = None
    if request.htmx:
        # the page the person is looking at, not the fragment URL htmx asked for
        current = urlsplit(request.htmx.current_url or "")
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


EXCEPTION_HANDLERS: dict[Any, Any] = {
    NotAuthorizedException: with_security_headers(not_authorized_handler),
    RoleDenied: with_security_headers(role_denied_handler),
}
