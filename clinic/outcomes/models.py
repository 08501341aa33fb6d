"""Outcome tables: completed questionnaires (append-only, corrected by superseding rows), safety reviews of PHQ-9 item 9,
baseline waivers, and the answers a patient saved on the way through a questionnaire link."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Index, String, Text, Uuid, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from clinic.timeutil import TimestampField

INSTRUMENT_KEYS = ("phq9", "gad7", "asrs")
COMPLETED_BY = ("patient", "staff")
VIA = ("link", "kiosk", "staff")


class OutcomeMeasure(SQLModel, table=True):
    """One completed questionnaire: every item answer, the instrument's version, who completed it and when.

    Never changed or removed (the database refuses UPDATE and DELETE): a correction is a new row that supersedes it,
    with who (recorded_by), when (recorded_at) and why (correction_reason)."""

    __tablename__ = "outcome_measures"
    __table_args__ = (
        CheckConstraint("instrument IN ('phq9','gad7','asrs')", name="instrument_known"),
        CheckConstraint(
            "(instrument = 'phq9' AND total BETWEEN 0 AND 27) OR (instrument = 'gad7' AND total BETWEEN 0 AND 21)"
            " OR (instrument = 'asrs' AND total BETWEEN 0 AND 72)",
            name="total_in_range",
        ),
        CheckConstraint("completed_by IN ('patient','staff')", name="completed_by_known"),
        CheckConstraint("via IN ('link','kiosk','staff')", name="via_known"),
        # staff who answered on the patient's behalf are named; a patient's own answers came through a link or the kiosk
        CheckConstraint("(completed_by = 'staff') = (completed_by_user_id IS NOT NULL)", name="staff_named"),
        CheckConstraint("via = 'staff' OR link_id IS NOT NULL", name="link_named"),
        CheckConstraint(
            "(supersedes_id IS NULL AND correction_reason IS NULL AND NOT entered_in_error)"
            " OR (supersedes_id IS NOT NULL AND length(correction_reason) > 0)",
            name="correction_has_reason",
        ),
        # a link answers each instrument once: a second submission is refused by the database
        Index("uq_outcome_measures_link_instrument", "link_id", "instrument", unique=True,
              postgresql_where=text("link_id IS NOT NULL AND supersedes_id IS NULL")),
        Index("ix_outcome_measures_patient_completed", "patient_id", "completed_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int = Field(foreign_key="clinics.id", index=True)
    patient_id: int = Field(foreign_key="patients.id")
    # the visit the answers were asked for (None: entered outside a visit)
    appointment_id: int | None = Field(default=None, foreign_key="appointments.id", index=True)
    instrument: str = Field(sa_type=String(8))
    version: str = Field(sa_type=String(40))
    answers: dict[str, Any] = Field(sa_type=JSONB)
    total: int
    completed_at: datetime = TimestampField()
    completed_by: str = Field(sa_type=String(8))
    completed_by_user_id: int | None = Field(default=None, foreign_key="staff_users.id")
    via: str = Field(sa_type=String(8))
    link_id: int | None = Field(default=None, foreign_key="cost_links.id")
    # a repeat of the same submission finds this row instead of adding one
    client_id: uuid.UUID = Field(sa_type=Uuid, unique=True)
    recorded_by: int | None = Field(default=None, foreign_key="staff_users.id")  # None: the patient, through a link
    recorded_at: datetime = TimestampField(default_now=True)
    supersedes_id: int | None = Field(default=None, foreign_key="outcome_measures.id", unique=True)
    correction_reason: str | None = Field(default=None, sa_type=String(500))
    entered_in_error: bool = False


class SafetyReview(SQLModel, table=True):
    """PHQ-9 item 9 above 0 (DOMAIN §5.6, fixed): open until a prescriber records the review; it blocks the next dosing.

    A review is added once and never changed or removed (a trigger refuses anything else)."""

    __tablename__ = "safety_reviews"
    __table_args__ = (
        CheckConstraint(
            "(reviewed_at IS NULL AND reviewed_by IS NULL AND risk_level IS NULL AND action_taken IS NULL AND safety_plan IS NULL)"
            " OR (reviewed_at IS NOT NULL AND reviewed_by IS NOT NULL AND risk_level IN ('low','moderate','high')"
            " AND length(action_taken) > 0 AND safety_plan IS NOT NULL)",
            name="reviewed_completely",
        ),
        Index("ix_safety_reviews_open", "clinic_id", "patient_id", postgresql_where=text("reviewed_at IS NULL")),
    )

    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int = Field(foreign_key="clinics.id")
    patient_id: int = Field(foreign_key="patients.id", index=True)
    measure_id: int = Field(foreign_key="outcome_measures.id", unique=True)
    raised_at: datetime = TimestampField(default_now=True)
    reviewed_by: int | None = Field(default=None, foreign_key="staff_users.id")
    reviewed_at: datetime | None = TimestampField(nullable=True)
    risk_level: str | None = Field(default=None, sa_type=String(10))
    action_taken: str | None = Field(default=None, sa_type=Text)
    safety_plan: bool | None = None


class BaselineWaiver(SQLModel, table=True):
    """A prescriber lets a course's first dose go ahead without baseline answers, with a reason (append-only)."""

    __tablename__ = "baseline_waivers"
    __table_args__ = (CheckConstraint("length(reason) > 0", name="has_reason"),)

    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int = Field(foreign_key="clinics.id")
    appointment_id: int = Field(foreign_key="appointments.id", unique=True)
    patient_id: int = Field(foreign_key="patients.id", index=True)
    reason: str = Field(sa_type=String(500))
    waived_by: int = Field(foreign_key="staff_users.id")
    waived_at: datetime = TimestampField(default_now=True)


class QuestionnaireDraft(SQLModel, table=True):
    """Answers a patient has given so far on one link, kept so a reload or a later visit picks up where they left off."""

    __tablename__ = "questionnaire_drafts"

    link_id: int = Field(foreign_key="cost_links.id", primary_key=True)
    instrument: str = Field(sa_type=String(8), primary_key=True)
    answers: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)
    updated_at: datetime = TimestampField(default_now=True)
