"""Staff and access JSON shapes under /api/v1: accounts, roles, passwords and tokens in; staff, tokens, audit events out."""

from __future__ import annotations

from typing import Any, Literal

from msgspec import UNSET, Struct, UnsetType

from clinic.timeutil import Instant

# ---- bodies -------------------------------------------------------------------------------------


class StaffCreate(Struct, forbid_unknown_fields=True):
    email: str
    full_name: str
    roles: list[str]
    password: str
    credentials: str = ""
    npi: str | None = None
    is_therapist: bool = False


class StaffUpdate(Struct, forbid_unknown_fields=True):
    """Fields left out keep their value."""

    full_name: str | UnsetType = UNSET
    credentials: str | UnsetType = UNSET
    npi: str | UnsetType = UNSET
    is_therapist: bool | UnsetType = UNSET


class RolesUpdate(Struct, forbid_unknown_fields=True):
    roles: list[str]


class PasswordReset(Struct, forbid_unknown_fields=True):
    password: str


class TokenCreate(Struct, forbid_unknown_fields=True):
    """Without user_id (or with your own) a token of your own; an admin may name an integration account."""

    user_id: int | None = None
    name: str = ""


# ---- views --------------------------------------------------------------------------------------


class MeOut(Struct):
    id: int
    clinic_id: int
    email: str
    full_name: str
    roles: list[str]
    via: Literal["session", "bearer"]


class StaffOut(Struct):
    id: int
    email: str
    full_name: str
    credentials: str
    npi: str | None
    roles: list[str]
    is_therapist: bool
    active: bool
    created_at: Instant
    last_sign_in: Instant | None


class TokenOut(Struct, kw_only=True):
    id: int
    name: str
    user_id: int
    user_email: str
    created_at: Instant
    last_used_at: Instant | None
    revoked_at: Instant | None
    active: bool


class TokenCreated(TokenOut, kw_only=True):
    """The only answer that shows the secret: it is stored hashed."""

    token: str


class AuditEventOut(Struct):
    id: int
    at: str
    at_local: str
    user_id: int | None
    ip: str | None
    via: str | None  # session | bearer
    credential_id: int | None
    action: str
    entity: str
    entity_id: str | None
    patient_id: int | None
    changes: dict[str, Any] | None
