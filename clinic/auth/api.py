"""JSON routes for the audit trail (admin only)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar import get
from litestar.params import Parameter

from clinic.audit.service import AuditFilter, list_events
from clinic.http import CurrentActor, DbSession


@get("/audit-events", opt={"permission": "audit.read"}, tags=["audit"], summary="List audit events (admin)")
async def audit_events(
    db_session: DbSession,
    actor: CurrentActor,
    action: str | None = Parameter(default=None, description="prefix, e.g. 'appointment.'"),
    user_id: int | None = None,
    patient_id: int | None = None,
    entity: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = Parameter(default=100, ge=1, le=1000),
) -> list[dict[str, Any]]:
    events = await list_events(
        db_session,
        clinic_id=actor.clinic_id,
        flt=AuditFilter(action=action, user_id=user_id, patient_id=patient_id, entity=entity, since=since, until=until, limit=limit),
    )
    return [
        {
            "id": e.id,
            "at": e.at.isoformat(),
            "user_id": e.user_id,
            "ip": e.ip,
            "action": e.action,
            "entity": e.entity,
            "entity_id": e.entity_id,
            "patient_id": e.patient_id,
            "changes": e.changes,
        }
        for e in events
    ]


routes = [audit_events]
