"""Staff accounts, browser sessions, API tokens and login attempts."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import String
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import Field, SQLModel

from clinic.timeutil import TimestampField



class Role(StrEnum):
    front_desk = "front_desk"
    nurse = "nurse"
    prescriber = "prescriber"
    billing = "billing"
    admin = "admin"
    integration = "integration"


ROLES = tuple(Role)  # for `in` on Python 3.11, where a string is not "in" an enum
# an integration account's password hash: verifies nothing, so it never signs in with a browser
NO_PASSWORD = "!"


class StaffUser(SQLModel, table=True):
    __tablename__ = "staff_users"

    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int = Field(foreign_key="clinics.id", index=True)
    email: str = Field(sa_type=String(254), unique=True)
    full_name: str = Field(sa_type=String(200))
    credentials: str = Field(default="", sa_type=String(40))  # e.g. "RN", "MD"
    npi: str | None = Field(default=None, sa_type=String(10))
    roles: list[str] = Field(default_factory=list, sa_type=ARRAY(String(20)))
    # also works as a therapist (integration/KAP sessions); not an access role
    is_therapist: bool = False
    password_hash: str = Field(sa_type=String(255))
    active: bool = True
    created_at: datetime = TimestampField(default_now=True)

    def has_role(self, *roles: str) -> bool:
        return any(r in self.roles for r in roles)


class WebSession(SQLModel, table=True):
    """A browser login; the cookie holds a random token, the table only its hash."""

    __tablename__ = "web_sessions"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(sa_type=String(64), unique=True)
    user_id: int = Field(foreign_key="staff_users.id", index=True)
    created_at: datetime = TimestampField(default_now=True)
    last_seen_at: datetime = TimestampField(default_now=True)
    ended_at: datetime | None = TimestampField(nullable=True)
    ip: str | None = Field(default=None, sa_type=String(64))


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_tokens"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(sa_type=String(64), unique=True)
    user_id: int = Field(foreign_key="staff_users.id", index=True)
    name: str = Field(default="", sa_type=String(100))
    created_at: datetime = TimestampField(default_now=True)
    last_used_at: datetime | None = TimestampField(nullable=True)
    revoked_at: datetime | None = TimestampField(nullable=True)


class LoginAttempt(SQLModel, table=True):
    __tablename__ = "login_attempts"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(sa_type=String(254), index=True)
    ip: str = Field(sa_type=String(64), index=True)
    at: datetime = TimestampField(default_now=True, index=True)
    success: bool = False
