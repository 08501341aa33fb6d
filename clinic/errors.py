"""The refusals a person can act on, free of any web framework: rules and services raise them, clinic.http answers them."""

from __future__ import annotations

from typing import Any


class ClinicError(Exception):
    """A refusal with a sentence for a person; answered as {"detail", "field"?, "code"?} with its status."""

    status_code = 422
    headers: dict[str, str] = {}  # e.g. Retry-After on a 429 or 503

    def __init__(self, detail: str, *, field: str | None = None, code: str | None = None, extra: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.headers = headers or type(self).headers
        self.detail = detail
        self.field = field
        self.code = code
        self.extra = extra or {}

    @property
    def message(self) -> str:
        return self.detail

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"detail": self.detail}
        if self.field:
            out["field"] = self.field
        if self.code:
            out["code"] = self.code
        out.update(self.extra)
        return out


class RuleBroken(ClinicError):
    """Input or a request that a rule refuses (422): the field to fix, a stable rule code and a sentence.

    Pure rules also return one (instead of raising) where a caller weighs several candidates, e.g. availability."""

    status_code = 422


class Conflict(RuleBroken):
    """The request is valid but collides with what is saved (409): a slot taken, a state already moved on."""

    status_code = 409


class NotFound(ClinicError):
    status_code = 404


class Forbidden(ClinicError):
    """A domain rule about who may do this (403), as opposed to the route's permission check."""

    status_code = 403
