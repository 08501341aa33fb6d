"""The notice outbox: one row per notice, written in the transaction that causes it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from clinic.timeutil import TimestampField


class NoticeKind(StrEnum):
    booking_confirmation = "booking_confirmation"
    reminder = "reminder"
    estimate_ready = "estimate_ready"
    gfe = "gfe"
    balance = "balance"
    staff_digest = "staff_digest"
    questionnaire = "questionnaire"  # outcome questionnaires due before a visit (clinic.outcomes)
    safety_review = "safety_review"  # to the prescribers on shift: a questionnaire needs a clinician's review


class NoticeStatus(StrEnum):
    pending = "pending"
    sending = "sending"
    sent = "sent"
    failed = "failed"
    cancelled = "cancelled"


NOTICE_STATES = tuple(NoticeStatus)  # for `in` on Python 3.11, where a string is not "in" an enum


class Notice(SQLModel, table=True):
    __tablename__ = "notices"

    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int = Field(foreign_key="clinics.id", index=True)
    kind: str = Field(sa_type=String(30))
    # unique: one job per notice, whatever retries or double clicks happen
    dedupe_key: str = Field(sa_type=String(200), unique=True)
    patient_id: int | None = Field(default=None, foreign_key="patients.id", index=True)
    appointment_id: int | None = Field(default=None, index=True)
    to_address: str = Field(sa_type=String(254))
    status: str = Field(default="pending", sa_type=String(12), index=True)
    send_after: datetime = TimestampField(default_now=True, index=True)
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_type=Text)
    message_id: str | None = Field(default=None, sa_type=String(200))
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)
    created_at: datetime = TimestampField(default_now=True)
    claimed_at: datetime | None = TimestampField(nullable=True)
    sent_at: datetime | None = TimestampField(nullable=True)
