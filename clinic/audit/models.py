"""The append-only audit trail (the database refuses UPDATE and DELETE on it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from clinic.timeutil import TimestampField


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_events"

    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int | None = Field(default=None, index=True)
    at: datetime = TimestampField(default_now=True, index=True)
    user_id: int | None = Field(default=None, index=True)
    ip: str | None = Field(default=None, sa_type=String(64))
    # which credential acted: a browser session or an API token (their ids), or the system itself
    via: str | None = Field(default=None, sa_type=String(10))
    credential_id: int | None = None
    action: str = Field(sa_type=String(80), index=True)  # e.g. "appointment.book", "chart.read"
    entity: str = Field(default="", sa_type=String(40))
    entity_id: str | None = Field(default=None, sa_type=String(40))
    patient_id: int | None = Field(default=None, index=True)
    changes: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)
