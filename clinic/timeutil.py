"""Aware datetimes: UTC instants in the database, clinic-local wall time for people."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from msgspec import Struct
from sqlalchemy import DateTime
from sqlmodel import Field

UTC = timezone.utc


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_local(instant: datetime, tz: str) -> datetime:
    return instant.astimezone(ZoneInfo(tz))


def valid_zone(name: str | None) -> str | None:
    """The name when it is an IANA time zone this machine knows, else None."""
    if not name or len(name) > 64:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return name


def hm(instant: datetime, tz: str) -> str:
    """Clinic-local HH:MM, formatted by hand: strftime costs three times as much, and a board shows dozens."""
    local = instant.astimezone(ZoneInfo(tz))
    return f"{local.hour:02d}:{local.minute:02d}"


class Instant(Struct):
    """A time in JSON: the UTC instant and the clinic's wall time, both ISO 8601 with offsets."""

    utc: str
    local: str


def both_zones(instant: datetime | None, tz: str) -> Instant | None:
    if instant is None:
        return None
    return Instant(utc=instant.astimezone(UTC).isoformat(), local=to_local(instant, tz).isoformat())


def TimestampField(*, nullable: bool = False, index: bool = False, default_now: bool = False):  # noqa: N802
    """A timestamptz column; SQLModel's default would be a naive timestamp."""
    kwargs = {"default_factory": utcnow} if default_now else {"default": None}
    return Field(sa_type=DateTime(timezone=True), nullable=nullable, index=index, **kwargs)
