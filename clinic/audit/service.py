"""Writing and reading audit events; every clinical or billing write and every chart read calls record(), every list
or search of patient data record_read()."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.models import AuditEvent


@dataclass(frozen=True)
class Actor:
    """Who is acting, from where: passed to every service that writes."""

    user_id: int | None
    clinic_id: int
    roles: tuple[str, ...] = ()
    ip: str | None = None
    name: str = ""
    via: str = "session"  # session | bearer | system | password (a sign-in attempt)
    credential_id: int | None = None  # the web_sessions or api_tokens row the request came with

    def has_role(self, *roles: str) -> bool:
        return any(r in self.roles for r in roles)


SYSTEM = Actor(user_id=None, clinic_id=0, roles=("system",), via="system")


def jsonable(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def record(
    session: AsyncSession,
    *,
    actor: Actor,
    action: str,
    entity: str = "",
    entity_id: Any = None,
    patient_id: int | None = None,
    changes: dict[str, Any] | None = None,
    clinic_id: int | None = None,
) -> AuditEvent:
    event = AuditEvent(
        clinic_id=clinic_id if clinic_id is not None else (actor.clinic_id or None),
        user_id=actor.user_id,
        ip=actor.ip,
        via=actor.via,
        credential_id=actor.credential_id,
        action=action,
        entity=entity,
        entity_id=None if entity_id is None else str(entity_id),
        patient_id=patient_id,
        changes=jsonable(changes or {}),
    )
    session.add(event)
    return event


def record_read(
    session: AsyncSession, *, actor: Actor, what: str, query: dict[str, Any], rows: int, patient_ids: Iterable[int | None]
) -> AuditEvent:
    """A bulk read of patient data (a list, a search, the board): who, when, which query, how many rows, which patients."""
    return record(
        session,
        actor=actor,
        action=f"read.{what}",
        entity=what,
        changes={
            "query": {k: v for k, v in query.items() if v not in (None, "", [], ())},
            "rows": rows,
            "patient_ids": sorted({p for p in patient_ids if p is not None}),
        },
    )


@dataclass
class AuditFilter:
    action: str | None = None  # a prefix: "staff." matches staff.create, staff.roles, ...
    user_id: int | None = None
    patient_id: int | None = None
    entity: str | None = None
    entity_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100
    # keyset pages: events older than before_id, or newer than after_id
    before_id: int | None = None
    after_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


async def list_events(session: AsyncSession, *, clinic_id: int, flt: AuditFilter) -> list[AuditEvent]:
    """Newest first, always within one clinic."""
    q = select(AuditEvent).where(AuditEvent.clinic_id == clinic_id)
    if flt.action:
        # a prefix match must not treat % or _ in the filter as wildcards
        q = q.where(col(AuditEvent.action).startswith(flt.action, autoescape=True))
    if flt.user_id is not None:
        q = q.where(AuditEvent.user_id == flt.user_id)
    if flt.patient_id is not None:
        q = q.where(AuditEvent.patient_id == flt.patient_id)
    if flt.entity:
        q = q.where(AuditEvent.entity == flt.entity)
    if flt.entity_id is not None:
        q = q.where(AuditEvent.entity_id == str(flt.entity_id))
    if flt.since:
        q = q.where(AuditEvent.at >= flt.since)
    if flt.until:
        q = q.where(AuditEvent.at < flt.until)
    limit = min(max(flt.limit, 1), 1000)
    if flt.after_id is not None and flt.before_id is None:
        q = q.where(col(AuditEvent.id) > flt.after_id).order_by(col(AuditEvent.id).asc()).limit(limit)
        return list(reversed((await session.exec(q)).all()))
    if flt.before_id is not None:
        q = q.where(col(AuditEvent.id) < flt.before_id)
    q = q.order_by(col(AuditEvent.id).desc()).limit(limit)
    return list((await session.exec(q)).all())
