"""The clinic every record belongs to: its table, its closed dates, its settings and local calendar day, read alike by
scheduling, monitoring, billing and notices."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import String, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import Actor
from clinic.errors import NotFound
from clinic.timeutil import TimestampField, utcnow


class Clinic(SQLModel, table=True):
    __tablename__ = "clinics"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_type=String(200))
    # what patients see in notices; need not say "ketamine"
    display_name: str = Field(sa_type=String(200))
    timezone: str = Field(default="America/New_York", sa_type=String(64))
    phone: str = Field(default="", sa_type=String(40))
    address: str = Field(default="", sa_type=String(300))
    state: str = Field(default="", sa_type=String(2))
    npi: str = Field(default="", sa_type=String(10))
    tin: str = Field(default="", sa_type=String(12))
    # {"0": [["09:00", "17:00"]], ... "6": []}: Monday=0, local wall times
    opening_hours: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)
    # editable settings: nurse_ratio, grid_minutes, reminder_hours, idle_timeout_minutes, ...
    settings: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)
    created_at: datetime = TimestampField(default_now=True)

    def local_date(self, instant: datetime) -> date:
        return instant.astimezone(ZoneInfo(self.timezone)).date()

    def today(self, now: datetime | None = None) -> date:
        return self.local_date(now or utcnow())

    def setting(self, key: str, default: Any) -> Any:
        """A setting the clinic edited, else `default` (an emptied field counts as not set)."""
        value = (self.settings or {}).get(key)
        return default if value in (None, "") else value


class ClosedDate(SQLModel, table=True):
    __tablename__ = "closed_dates"
    __table_args__ = (UniqueConstraint("clinic_id", "day", name="uq_closed_dates_clinic_day"),)

    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int = Field(foreign_key="clinics.id", index=True)
    day: date
    reason: str = Field(default="", sa_type=String(200))


async def clinic_of(session: AsyncSession, actor: Actor) -> Clinic:
    clinic = await session.get(Clinic, actor.clinic_id)
    if clinic is None:
        raise NotFound("No such clinic.")
    return clinic


async def closed_dates(session: AsyncSession, clinic_id: int) -> frozenset[date]:
    rows = await session.exec(select(ClosedDate.day).where(ClosedDate.clinic_id == clinic_id))
    return frozenset(rows.all())
