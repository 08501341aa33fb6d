"""Chairs, protocols (session types), staff shifts, courses, appointments and the schedule's changes outbox."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import CheckConstraint, Index, String, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from clinic.timeutil import TimestampField


class AppointmentStatus(StrEnum):
    booked = "booked"
    arrived = "arrived"
    in_progress = "in_progress"
    fulfilled = "fulfilled"
    cancelled = "cancelled"
    noshow = "noshow"


APPOINTMENT_STATUSES = tuple(AppointmentStatus)  # for `in` on Python 3.11, where a string is not "in" an enum
LIVE_STATUSES = (AppointmentStatus.booked, AppointmentStatus.arrived, AppointmentStatus.in_progress, AppointmentStatus.fulfilled)


class SessionKind(StrEnum):
    """A protocol's kind (SessionType.kind)."""

    esketamine = "esketamine"
    ketamine_iv = "ketamine_iv"
    kap = "kap"
    integration = "integration"
    consult = "consult"


class ChairKind(StrEnum):
    chair = "chair"
    room = "room"


class Chair(SQLModel, table=True):
    """A treatment chair or a therapy room; a monitored session holds one for its whole hold."""

    __tablename__ = "chairs"

    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int = Field(foreign_key="clinics.id", index=True)
    name: str = Field(sa_type=String(100))
    kind: str = Field(default="chair", sa_type=String(10))  # chair | room
    active: bool = True
    sort_order: int = 0


class SessionType(SQLModel, table=True):
    """A protocol: data, not code branches (DOMAIN.md §1)."""

    __tablename__ = "session_types"
    __table_args__ = (UniqueConstraint("clinic_id", "kind", name="uq_session_types_clinic_kind"),)

    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int = Field(foreign_key="clinics.id", index=True)
    kind: str = Field(sa_type=String(20))
    name: str = Field(sa_type=String(100))
    needs_chair: bool = True  # False: a room
    monitored: bool = True
    needs_prescriber: bool = False
    needs_therapist: bool = False
    requires_rems: bool = False
    prep_minutes: int = 15
    dosing_minutes: int = 0
    monitoring_minutes: int = 0
    turnover_minutes: int = 10
    # full protocol data: check schedule, thresholds, discharge, doses, course templates, billing
    protocol: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)
    active: bool = True


class Shift(SQLModel, table=True):
    __tablename__ = "shifts"
    # one person is never on two overlapping shifts: ex_shifts_user_overlap (migration 0002)
    __table_args__ = (
        CheckConstraint("ends_at > starts_at", name="shift_positive"),
        Index("ix_shifts_clinic_starts", "clinic_id", "starts_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int = Field(foreign_key="clinics.id", index=True)
    user_id: int = Field(foreign_key="staff_users.id", index=True)
    role: str = Field(sa_type=String(20))  # nurse | prescriber | therapist
    starts_at: datetime = TimestampField(index=True)
    ends_at: datetime = TimestampField()


class Course(SQLModel, table=True):
    __tablename__ = "courses"

    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int = Field(foreign_key="clinics.id", index=True)
    patient_id: int = Field(foreign_key="patients.id", index=True)
    session_type_id: int = Field(foreign_key="session_types.id")
    template: str = Field(sa_type=String(40))
    created_by: int | None = Field(default=None, foreign_key="staff_users.id")
    created_at: datetime = TimestampField(default_now=True)


class Appointment(SQLModel, table=True):
    """One session. Overlaps are refused by exclusion constraints created in migration 0001."""

    __tablename__ = "appointments"
    __table_args__ = (
        CheckConstraint("ends_at > starts_at", name="positive_hold"),
        CheckConstraint(
            "status IN ('booked','arrived','in_progress','fulfilled','cancelled','noshow')",
            name="status_known",
        ),
        Index("ix_appointments_clinic_starts", "clinic_id", "starts_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int = Field(foreign_key="clinics.id")
    patient_id: int = Field(foreign_key="patients.id", index=True)
    session_type_id: int = Field(foreign_key="session_types.id")
    chair_id: int = Field(foreign_key="chairs.id", index=True)
    course_id: int | None = Field(default=None, foreign_key="courses.id", index=True)
    starts_at: datetime = TimestampField()
    ends_at: datetime = TimestampField()
    status: str = Field(default="booked", sa_type=String(12))
    planned_dose_mg: int | None = None
    escort_name: str | None = Field(default=None, sa_type=String(200))
    escort_phone: str | None = Field(default=None, sa_type=String(40))
    escort_confirmed: bool = False
    notes: str | None = Field(default=None, sa_type=Text)
    created_by: int | None = Field(default=None, foreign_key="staff_users.id")
    created_at: datetime = TimestampField(default_now=True)
    updated_at: datetime = TimestampField(default_now=True)
    cancel_reason: str | None = Field(default=None, sa_type=String(300))
    cancelled_by: int | None = Field(default=None, foreign_key="staff_users.id")
    cancelled_at: datetime | None = TimestampField(nullable=True)
    late_cancel: bool = False
    # monitoring lifecycle facts
    checked_in_at: datetime | None = TimestampField(nullable=True)
    dosing_started_at: datetime | None = TimestampField(nullable=True)
    discharged_at: datetime | None = TimestampField(nullable=True)
    discharged_by: int | None = Field(default=None, foreign_key="staff_users.id")
    weight_kg: float | None = None
    fasting_confirmed: bool = False
    facts: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)
    # bumped by every write to the session's chart (entries, dosing, alerts, lifecycle); a vitals entry is
    # written only if it is unchanged since the entry's rules were evaluated (see monitoring.service)
    chart_version: int = Field(default=0, sa_column_kwargs={"server_default": text("0")})


class ChangeKind(StrEnum):
    BOOKED = "booked"
    MOVED = "moved"
    CANCELLED = "cancelled"
    COURSE_BOOKED = "course_booked"


class ScheduleChange(SQLModel, table=True):
    """The schedule's outbox: a booking, move or cancellation writes one row in its own transaction; the worker
    follows it up (the patient's estimate and notices, clinic.scheduling.changes) and sets done_at."""

    __tablename__ = "schedule_changes"
    __table_args__ = (
        CheckConstraint("kind IN ('booked','moved','cancelled','course_booked')", name="kind_known"),
        # what is left to follow up, each patient's oldest first
        Index("ix_schedule_changes_pending", "patient_id", "id", postgresql_where=text("done_at IS NULL")),
    )

    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int = Field(foreign_key="clinics.id")
    patient_id: int = Field(foreign_key="patients.id")
    # a course booked in one go: its first visit (payload["appointment_ids"] lists them all)
    appointment_id: int = Field(foreign_key="appointments.id")
    kind: str = Field(sa_type=String(20))
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)
    created_at: datetime = TimestampField(default_now=True)
    done_at: datetime | None = TimestampField(nullable=True)
