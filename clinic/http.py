"""What every route shares: the transactional session, the acting user and their clinic, and the answers to errors (HTML or JSON)."""

from __future__ import annotations

import inspect
import json
import logging
import re
from collections.abc import AsyncGenerator, Callable, Iterable
from typing import Annotated, Any
from urllib.parse import parse_qsl

import asyncpg
import msgspec
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    ValidationException,
)
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Dependency
from litestar.plugins.htmx import HTMXRequest, HTMXTemplate
from litestar.response import Template
from litestar.utils.scope.state import ScopeState
from msgspec import UNSET, Struct, UnsetType
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import Actor
from clinic.clinics import Clinic, clinic_of
from clinic.db import conflict_message, is_bad_value, is_unavailable, sqlstate_of
from clinic.errors import ClinicError
from clinic.security import headers_for

log = logging.getLogger("clinic.http")

INT4_MIN, INT4_MAX = -(2**31), 2**31 - 1  # ids and counts are int4 in the database


# ---- dependencies -----------------------------------------------------------------------


async def provide_db_session(request: Request) -> AsyncGenerator[AsyncSession, None]:
    """The request's unit of work (Database.transaction): commit when the handler returns, then the after-commit jobs."""
    async with request.app.state.db.transaction() as session:
        yield session


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
        credential_id=user.credential_id,
    )


async def provide_clinic(db_session: AsyncSession, actor: Actor) -> Clinic:
    """The actor's clinic, read once per request: its time zone and settings for the handler and the services it calls."""
    clinic = await clinic_of(db_session, actor)
    # detached, so a rollback in the request (a refused booking, a form shown again) leaves it readable
    db_session.expunge(clinic)
    return clinic


DbSession = Annotated[AsyncSession, Dependency(skip_validation=True)]
CurrentActor = Annotated[Actor, Dependency(skip_validation=True)]
CurrentClinic = Annotated[Clinic, Dependency(skip_validation=True)]


def given(body: Struct) -> dict[str, Any]:
    """The fields a PATCH body sent (msgspec leaves the others UNSET)."""
    return {k: v for k, v in msgspec.structs.asdict(body).items() if v is not UNSET}


# ---- error answers --------------------------------------------------------------------------


class ErrorBody(Struct):
    """Every JSON error: a sentence for a person, the field to fix and a stable code when there is one.

    Some answers add what helps to act on them: `blockers` (409 at dosing or discharge), `alternatives` (409 for a
    slot taken), `occurrences` (409 for a course), `errors` (422 from type checks)."""

    status_code: int
    detail: str
    field: str | UnsetType = UNSET
    code: str | UnsetType = UNSET


ERROR_MEANINGS = {
    400: "The request could not be read (not JSON, or not the expected shape); nothing was saved.",
    401: "No valid bearer token or browser session: sign in, or send `Authorization: Bearer <token>`.",
    403: "The role does not allow this (`code`: `role`), a browser form without its CSRF token, or a rule about who may act.",
    404: "No such record in this clinic.",
    409: "The request collides with what is saved (a slot taken, a state already moved on, a repeat); says with what.",
    422: "A value is missing or refused: `field` names it, `code` names the rule; nothing was saved.",
}
# no framework name a handler takes besides what the client sends (path, query, body)
_NOT_INPUT = frozenset({"request", "db_session", "actor", "clinic", "data", "state", "scope", "headers", "cookies", "body"})


def error_answers(*statuses: int) -> dict[int, ResponseSpec]:
    return {s: ResponseSpec(ErrorBody, description=ERROR_MEANINGS[s], generate_examples=False) for s in statuses}


def statuses_of(handler: HTTPRouteHandler) -> list[int]:
    """The error statuses an /api/v1 operation can answer, read from its declaration."""
    path_params = {p.split(":")[0] for path in handler.paths for p in re.findall(r"{([^}]+)}", path)}
    params = set(inspect.signature(handler.fn).parameters)
    statuses = [401, 403]  # every API operation has a permission, and browser sessions need the CSRF token
    if path_params:
        statuses.append(404)
    if handler.http_methods - {"GET", "HEAD"}:
        statuses.append(409)  # a write may meet a constraint or a concurrent change
    if "data" in params or params - _NOT_INPUT:
        statuses.append(400)  # in Litestar's words for any parameter; documented here in ours
    if "data" in params or params - _NOT_INPUT - path_params:
        statuses.append(422)
    return sorted(statuses)


def document_errors(handlers: Iterable[HTTPRouteHandler]) -> list[HTTPRouteHandler]:
    """Put each operation's error answers (with the ErrorBody shape) in /schema/openapi.json; a handler's own win."""
    out = []
    for handler in handlers:
        handler.responses = {**error_answers(*statuses_of(handler)), **(handler.responses or {})}
        out.append(handler)
    return out


def wants_html(request: Request) -> bool:
    path = request.url.path
    return not (path.startswith("/api/") or path.startswith("/schema") or path == "/healthz")


def json_answer(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    # status_code too: ErrorBody, the documented shape, carries it
    return Response(content={"status_code": status, **body}, status_code=status, headers=headers, media_type="application/json")


def swapped(request: HTMXRequest, template_name: str, context: dict[str, Any], *, into: str, status_code: int,
            headers: dict[str, str] | None = None) -> Template:
    """A fragment htmx puts into `into` instead of the form's own target (an error, a conflict, a refreshed plan)."""
    if request.htmx:
        return HTMXTemplate(template_name=template_name, context=context, status_code=status_code, headers=headers, re_target=into,
                            re_swap="innerHTML")
    return Template(template_name=template_name, context=context, status_code=status_code, headers=headers)


def html_answer(request: HTMXRequest, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    if request.htmx:
        # htmx swaps this fragment into the form's error slot
        return swapped(request, "partials/error.html", {"error": body}, into="#flash", status_code=status, headers=headers)
    return Template(template_name="error.html", context={"error": body, "status": status}, status_code=status, headers=headers)


def answer(request: HTMXRequest, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    """An error as a page (or htmx fragment) for people, as JSON for programs."""
    return html_answer(request, status, body, headers) if wants_html(request) else json_answer(status, body, headers)


def clinic_error_handler(request: Request, exc: ClinicError) -> Response:
    return answer(request, exc.status_code, exc.body(), exc.headers or None)


def integrity_error_handler(request: Request, exc: IntegrityError | asyncpg.IntegrityConstraintViolationError) -> Response:
    sentence, name = conflict_message(exc)
    body = {"detail": sentence, "code": name or "conflict"}
    return answer(request, 409, body)


def http_exception_handler(request: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    if status == 403:
        body = {"detail": exc.detail if exc.detail != "Forbidden" else "This is not allowed."}
        if "CSRF" in str(exc.detail):
            body = {"detail": "The form expired or came from another site; reload the page and try again.", "code": "csrf"}
    elif isinstance(exc, ValidationException):
        body = validation_body(exc)
        status = 422 if status == 400 else status
    else:
        body = {"detail": exc.detail}
    return answer(request, status, body, exc.headers)


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
            walk(json.loads(body.decode("utf-8", "replace")), "")
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
    if isinstance(exc, RecursionError):
        # the JSON decoder's answer to a body nested past its depth limit (a thousand [ in a row)
        return answer(request, 400, {"detail": "The request body is nested too deeply.", "code": "too_deep"})
    if isinstance(exc, UnicodeDecodeError):
        # the JSON decoder's answer to bytes that are not UTF-8 inside a string
        body = {"detail": "The request holds text that is not valid UTF-8.", "code": "not_utf8"}
        if field := next((k for k, v in _submitted(request) if k and isinstance(v, str) and "\ufffd" in v), None):
            body["field"] = field
        return answer(request, 400, body)
    if isinstance(exc, OverflowError) or _giant_number(exc) or is_bad_value(exc):
        # a value no date or column can hold (year 1 minus a day, a NUL, a number past int4, text too long): the request's fault
        state = sqlstate_of(exc)
        body = {"detail": "A value in the request is out of range, too long or holds characters that cannot be saved; nothing was saved.",
                "code": "invalid_value"}
        if field := suspect_field(request, state):
            body["field"] = field
        log.warning("value refused on %s %s: %s", request.method, request.url.path, state or type(exc).__name__)
        return answer(request, 422, body)
    if is_unavailable(exc):
        body = {"detail": "The database is not reachable right now; try again in a moment.", "code": "db_unavailable"}
        log.error("database unavailable: %s", type(exc).__name__)
        return answer(request, 503, body, {"Retry-After": "5"})
    # never the exception text: it may carry patient data
    log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path, exc_info=False)
    body = {"detail": "Something went wrong on our side; nothing was saved.", "code": "server_error"}
    return answer(request, 500, body)


def with_security_headers(handler: Callable[[Request, Any], Response]) -> Callable[[Request, Any], Response]:
    """An unknown path or method is answered before any middleware runs; its error page needs the headers too."""

    def handle(request: Request, exc: Any) -> Response:
        response = handler(request, exc)
        for k, v in headers_for(request.url.path).items():
            response.headers.setdefault(k, v)
        return response

    return handle


EXCEPTION_HANDLERS = {
    exc: with_security_headers(handler)
    for exc, handler in {
        ClinicError: clinic_error_handler,
        IntegrityError: integrity_error_handler,
        asyncpg.IntegrityConstraintViolationError: integrity_error_handler,  # statements sent on the driver connection
        HTTPException: http_exception_handler,
        Exception: server_error_handler,
    }.items()
}
