"""Security headers on every response (a CSP with no inline script, no framing, no sniffing, no referrer leaks),
and request lines in the access log stripped of what patients typed into search boxes."""

from __future__ import annotations

import logging
import re

from litestar.types import ASGIApp, Message, Receive, Scope, Send

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'"
)
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}


def headers_for(path: str) -> dict[str, str]:
    """The headers a response to `path` carries (error answers made outside the middleware add them themselves)."""
    out = dict(HEADERS)
    if not path.startswith("/static/"):
        # PHI must not linger in shared caches or the back-button cache of a shared tablet
        out["cache-control"] = "no-store"
    return out


REDACTED = "[redacted]"
_PATIENT_LINK = re.compile(r"^/([eq])/[^/?]+")  # a cost link (/e/) or a questionnaire link (/q/)


def redact_path(path: str) -> str:
    """A request target fit for a log: no query string (search boxes send names, dates of birth, phone numbers)
    and no patient-link token (it opens a patient's amounts or questionnaire to whoever also knows the date of birth)."""
    path, query_mark, _ = path.partition("?")
    path = _PATIENT_LINK.sub(r"/\1/" + REDACTED, path)
    return path + ("?" + REDACTED if query_mark else "")


class AccessLogRedaction(logging.Filter):
    """uvicorn's access log line is '%s - "%s %s HTTP/%s" %d' with the full path third; redact that argument."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_path(args[2]), *args[3:])
        return True


def redact_access_log(logger_name: str = "uvicorn.access") -> None:
    """Idempotent: every app built in a process shares the one filter."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, AccessLogRedaction) for f in logger.filters):
        logger.addFilter(AccessLogRedaction())


def _encoded(path: str) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers_for(path).items())


# the two sets there are, encoded once (this runs on every response)
_STATIC, _PAGES = _encoded("/static/"), _encoded("/")


def _encoded_for(path: str) -> tuple[tuple[bytes, bytes], ...]:
    return _STATIC if path.startswith("/static/") else _PAGES


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # the server logs each request line; the app that answers it is what knows those lines can carry PHI
        redact_access_log()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        wanted = _encoded_for(scope["path"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or ())
                present = {bytes(name).lower() for name, _ in headers}
                headers.extend(h for h in wanted if h[0] not in present)  # a handler's own value wins
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
