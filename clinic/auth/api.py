"""JSON routes for staff accounts, API tokens, the audit trail (admin) and "who am I" (everyone)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from litestar import Request, Response, get, patch, post, put
from litestar.datastructures import ResponseHeader
from litestar.params import Parameter

from clinic.audit.service import AuditFilter, list_events
from clinic.auth import service
from clinic.auth.models import ApiToken, StaffUser
from clinic.auth.schemas import (
    AuditEventOut,
    MeOut,
    PasswordReset,
    RolesUpdate,
    StaffCreate,
    StaffOut,
    StaffUpdate,
    TokenCreate,
    TokenCreated,
    TokenOut,
)
from clinic.clinics import Clinic
from clinic.http import CurrentActor, CurrentClinic, DbSession, given
from clinic.timeutil import both_zones

TAGS = ["staff & access"]


# ---- shapes --------------------------------------------------------------------------------


def staff_json(user: StaffUser, last_sign_in: datetime | None, tz: str) -> StaffOut:
    return StaffOut(
        id=user.id,
        email=user.email,
        full_name=user.full_name,
        credentials=user.credentials,
        npi=user.npi,
        roles=list(user.roles),
        is_therapist=user.is_therapist,
        active=user.active,
        created_at=both_zones(user.created_at, tz),
        last_sign_in=both_zones(last_sign_in, tz),
    )


def token_json(row: ApiToken, owner: StaffUser, tz: str, view: type[TokenOut] = TokenOut, **more: Any) -> TokenOut:
    return view(
        id=row.id,
        name=row.name,
        user_id=owner.id,
        user_email=owner.email,
        created_at=both_zones(row.created_at, tz),
        last_used_at=both_zones(row.last_used_at, tz),
        revoked_at=both_zones(row.revoked_at, tz),
        active=row.revoked_at is None and owner.active,
        **more,
    )


async def _staff_out(db_session, clinic: Clinic, user: StaffUser) -> StaffOut:
    seen = await service.last_sign_ins(db_session, user_ids=[user.id])
    return staff_json(user, seen.get(user.id), clinic.timezone)


# ---- me ------------------------------------------------------------------------------------


@get("/me", opt={"permission": "staff"}, tags=TAGS, summary="The signed-in user or token owner, with roles")
async def me(request: Request) -> MeOut:
    user = request.scope["user"]
    return MeOut(id=user.id, clinic_id=user.clinic_id, email=user.email, full_name=user.full_name, roles=list(user.roles), via=user.via)


# ---- staff ---------------------------------------------------------------------------------


@get("/staff", opt={"permission": "admin"}, tags=TAGS, summary="List staff accounts (admin)")
async def staff_index(db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, active: bool | None = None) -> list[StaffOut]:
    users = await service.list_users(db_session, clinic_id=actor.clinic_id)
    if active is not None:
        users = [u for u in users if u.active == active]
    seen = await service.last_sign_ins(db_session, user_ids=[u.id for u in users if u.id is not None])
    tz = clinic.timezone
    return [staff_json(u, seen.get(u.id), tz) for u in users]


@post("/staff", opt={"permission": "admin"}, tags=TAGS, summary="Create a staff account (admin)", status_code=201)
async def staff_create(db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, data: StaffCreate) -> StaffOut:
    user = await service.create_user(
        db_session,
        actor=actor,
        clinic_id=actor.clinic_id,
        email=data.email,
        full_name=data.full_name,
        roles=data.roles,
        password=data.password,
        credentials=data.credentials,
        npi=data.npi,
        is_therapist=data.is_therapist,
    )
    return await _staff_out(db_session, clinic, user)


@get("/staff/{user_id:int}", opt={"permission": "admin"}, tags=TAGS, summary="One staff account (admin)")
async def staff_show(db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, user_id: int) -> StaffOut:
    user = await service.get_user(db_session, clinic_id=actor.clinic_id, user_id=user_id)
    return await _staff_out(db_session, clinic, user)


@patch("/staff/{user_id:int}", opt={"permission": "admin"}, tags=TAGS, summary="Change name, credentials, NPI, therapist flag (admin)")
async def staff_update(db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, user_id: int, data: StaffUpdate) -> StaffOut:
    user = await service.get_user(db_session, clinic_id=actor.clinic_id, user_id=user_id)
    details = {"full_name": user.full_name, "credentials": user.credentials, "npi": user.npi, "is_therapist": user.is_therapist}
    user = await service.update_details(db_session, actor=actor, user_id=user_id, **(details | given(data)))
    return await _staff_out(db_session, clinic, user)


@put("/staff/{user_id:int}/roles", opt={"permission": "admin"}, tags=TAGS, summary="Replace a staff member's roles (admin)")
async def staff_roles(db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, user_id: int, data: RolesUpdate) -> StaffOut:
    user = await service.update_roles(db_session, actor=actor, user_id=user_id, roles=data.roles)
    return await _staff_out(db_session, clinic, user)


@post("/staff/{user_id:int}/deactivate", opt={"permission": "admin"}, tags=TAGS, status_code=200,
      summary="Deactivate: sessions and tokens stop working at once (admin)")
async def staff_deactivate(db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, user_id: int) -> StaffOut:
    user = await service.set_active(db_session, actor=actor, user_id=user_id, active=False)
    return await _staff_out(db_session, clinic, user)


@post("/staff/{user_id:int}/reactivate", opt={"permission": "admin"}, tags=TAGS, status_code=200, summary="Reactivate an account (admin)")
async def staff_reactivate(db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, user_id: int) -> StaffOut:
    user = await service.set_active(db_session, actor=actor, user_id=user_id, active=True)
    return await _staff_out(db_session, clinic, user)


@post("/staff/{user_id:int}/reset-password", opt={"permission": "admin"}, tags=TAGS, status_code=200,
      summary="Set a new password; the person is signed out everywhere (admin)")
async def staff_reset_password(db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, user_id: int, data: PasswordReset) -> StaffOut:
    user = await service.reset_password(db_session, actor=actor, user_id=user_id, password=data.password)
    return await _staff_out(db_session, clinic, user)


# ---- tokens --------------------------------------------------------------------------------


@get("/tokens", opt={"permission": "staff"}, tags=TAGS, summary="List API tokens: your own, or the clinic's for an admin (secrets are never shown again)")
async def tokens_index(db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, user_id: int | None = None) -> list[TokenOut]:
    tz = clinic.timezone
    rows = await service.list_tokens(db_session, clinic_id=actor.clinic_id, user_id=service.tokens_visible_to(actor))
    return [token_json(t, u, tz) for t, u in rows if user_id is None or u.id == user_id]


@post("/tokens", opt={"permission": "staff"}, tags=TAGS, status_code=201,
      summary="Create an API token of your own (signed in with a browser), or an admin one for an integration account; "
              "the response is the only time the secret is shown")
async def tokens_create(db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, data: TokenCreate) -> TokenCreated:
    token, raw = await service.create_token(db_session, actor=actor, user_id=data.user_id, name=data.name)
    _, owner = await service.get_token(db_session, clinic_id=actor.clinic_id, token_id=token.id)
    return token_json(token, owner, clinic.timezone, TokenCreated, token=raw)


@post("/tokens/{token_id:int}/revoke", opt={"permission": "staff"}, tags=TAGS, status_code=200,
      summary="Revoke an API token (your own, or any of the clinic's for an admin); its next request is refused")
async def tokens_revoke(db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, token_id: int) -> TokenOut:
    await service.revoke_token(db_session, actor=actor, token_id=token_id)
    token, owner = await service.get_token(db_session, clinic_id=actor.clinic_id, token_id=token_id)
    return token_json(token, owner, clinic.timezone)


# ---- audit ---------------------------------------------------------------------------------


@get("/audit-events", opt={"permission": "audit.read"}, tags=["audit"],
     summary="List audit events, newest first (admin); follow the Link header for older pages",
     response_headers=[ResponseHeader(name="Link", documentation_only=True, required=False,
                                      description='`<...?before_id=N>; rel="next"` when an older page exists')])
async def audit_events(
    request: Request,
    db_session: DbSession,
    actor: CurrentActor,
    clinic: CurrentClinic,
    action: str | None = Parameter(default=None, description="prefix, e.g. 'appointment.'"),
    user_id: int | None = None,
    patient_id: int | None = None,
    entity: str | None = None,
    entity_id: str | None = None,
    since: datetime | None = Parameter(default=None, description="ISO 8601 with offset; inclusive"),
    until: datetime | None = Parameter(default=None, description="ISO 8601 with offset; exclusive"),
    before_id: int | None = Parameter(default=None, description="only events older than this id (next page)"),
    limit: int = Parameter(default=100, ge=1, le=1000),
) -> Response[list[AuditEventOut]]:
    events = await list_events(
        db_session,
        clinic_id=actor.clinic_id,
        flt=AuditFilter(
            action=action, user_id=user_id, patient_id=patient_id, entity=entity, entity_id=entity_id,
            since=since, until=until, before_id=before_id, limit=limit,
        ),
    )
    tz = clinic.timezone
    body = [
        AuditEventOut(
            id=e.id,
            at=e.at.isoformat(),
            at_local=both_zones(e.at, tz).local,  # type: ignore[union-attr]
            user_id=e.user_id,
            ip=e.ip,
            via=e.via,
            credential_id=e.credential_id,
            action=e.action,
            entity=e.entity,
            entity_id=e.entity_id,
            patient_id=e.patient_id,
            changes=e.changes,
        )
        for e in events
    ]
    headers = {}
    if len(events) == limit:
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "before_id"] + [("before_id", str(events[-1].id))]
        headers["Link"] = f'</api/v1/audit-events?{urlencode(params)}>; rel="next"'
    return Response(content=body, headers=headers, media_type="application/json")


routes = [
    me,
    staff_index,
    staff_create,
    staff_show,
    staff_update,
    staff_roles,
    staff_deactivate,
    staff_reactivate,
    staff_reset_password,
    tokens_index,
    tokens_create,
    tokens_revoke,
    audit_events,
]
