"""Admin pages: staff accounts, API tokens and the audit trail (HTML; the JSON twins live in auth/api.py)."""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from litestar import Request, Response, get, post
from litestar.params import Parameter
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Redirect, Template
from msgspec import Struct
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import Actor, AuditFilter, list_events
from clinic.auth import service
from clinic.auth.models import ROLES
from clinic.auth.permissions import INTEGRATION
from clinic.auth.rules import MIN_PASSWORD_LENGTH
from clinic.clinics import Clinic
from clinic.errors import ClinicError, RuleBroken
from clinic.forms import read_form
from clinic.http import CurrentActor, CurrentClinic, DbSession
from clinic.pages import notices_banner

ROLE_LABELS = {
    "front_desk": "Front desk",
    "nurse": "Nurse",
    "prescriber": "Prescriber",
    "billing": "Billing",
    "admin": "Admin",
    "integration": "Integration",
}
ROLE_HINTS = {
    "front_desk": "books appointments, edits patients",
    "nurse": "runs supervised sessions",
    "prescriber": "runs sessions, acknowledges cautions, signs discharges",
    "billing": "estimates, claims, balances",
    "admin": "staff, chairs, protocols, fees, audit trail",
    "integration": "a program, not a person: API tokens an admin creates, read only, never signs; no password",
}
# outcomes shown after a redirect; fixed sentences, so nothing from the request is echoed
DONE_MESSAGES = {
    "created": "Account created. Give the person their initial password in person or by phone.",
    "details": "Details saved.",
    "roles": "Roles saved. They apply from the person's next click.",
    "deactivated": "Account deactivated. Its sessions and API tokens stopped working at once.",
    "reactivated": "Account reactivated. Tokens revoked at deactivation stay revoked; create new ones if needed.",
    "password": "Password reset. The person was signed out everywhere and must use the new password.",
    "revoked": "Token revoked. It is refused from its next request on.",
}
AUDIT_PAGE_SIZE = 50
AUDIT_ACTION_PREFIXES = ("auth.", "staff.", "token.", "patient.", "chart.", "appointment.", "session.", "billing.", "notice.")


# ---- forms: text as typed (passwords are never trimmed) ------------------------------------


class StaffDetailsForm(Struct):
    full_name: str = ""
    credentials: str = ""
    npi: str = ""
    is_therapist: bool = False


class StaffForm(StaffDetailsForm):
    email: str = ""
    roles: list[str] = []
    password: str = ""


class RolesForm(Struct):
    roles: list[str] = []


class PasswordForm(Struct):
    password: str = ""
    confirm_password: str = ""


class TokenForm(Struct):
    user_id: int | None = None
    name: str = ""


def _common(**context: Any) -> dict[str, Any]:
    return {"roles_all": ROLES, "role_labels": ROLE_LABELS, "role_hints": ROLE_HINTS, "min_password": MIN_PASSWORD_LENGTH, **context}


# ---- staff ------------------------------------------------------------------------------


@get("/admin", opt={"permission": "admin"}, include_in_schema=False)
async def admin_home() -> Redirect:
    return Redirect(path="/admin/staff")


@get("/admin/staff", opt={"permission": "admin"}, include_in_schema=False)
async def staff_list(db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, done: str | None = None) -> Template:
    users = await service.list_users(db_session, clinic_id=actor.clinic_id)
    seen = await service.last_sign_ins(db_session, user_ids=[u.id for u in users if u.id is not None])
    tz = clinic.timezone
    return Template(
        "admin/staff_list.html",
        context=_common(users=users, last_seen=seen, tz=tz, ok=DONE_MESSAGES.get(done or ""), section="staff",
                        **await notices_banner(db_session, clinic)),
    )


@get("/admin/staff/new", opt={"permission": "admin"}, include_in_schema=False)
async def staff_new() -> Template:
    return Template("admin/staff_new.html", context=_common(form={"roles": []}, error=None, section="staff"))


@post("/admin/staff", opt={"permission": "admin"}, include_in_schema=False)
async def staff_create(request: Request, db_session: DbSession, actor: CurrentActor) -> Response:
    form = await read_form(request, StaffForm)
    values = {"full_name": form.full_name, "email": form.email, "credentials": form.credentials, "npi": form.npi,
              "is_therapist": form.is_therapist, "roles": form.roles}
    try:
        user = await service.create_user(db_session, actor=actor, clinic_id=actor.clinic_id, password=form.password, **values)
    except ClinicError as exc:
        # the form comes back with what was typed (never the password) and the reason
        return Template(
            "admin/staff_new.html",
            context=_common(form=values, error=exc.body(), section="staff"),
            status_code=exc.status_code,
        )
    return Redirect(path=f"/admin/staff/{user.id}?done=created", status_code=303)


async def _staff_page(
    session: AsyncSession, actor: Actor, clinic: Clinic, user_id: int, *, ok: str | None = None, error: dict | None = None, status_code: int = 200
) -> Template:
    user = await service.get_user(session, clinic_id=actor.clinic_id, user_id=user_id)
    seen = await service.last_sign_ins(session, user_ids=[user_id])
    tokens = [t for t, _ in await service.list_tokens(session, clinic_id=actor.clinic_id) if t.user_id == user_id]
    tz = clinic.timezone
    return Template(
        "admin/staff_detail.html",
        context=_common(
            person=user, last_seen=seen.get(user_id), tokens=tokens, tz=tz, ok=ok, error=error,
            is_self=user.id == actor.user_id, section="staff",
        ),
        status_code=status_code,
    )


@get("/admin/staff/{user_id:int}", opt={"permission": "admin"}, include_in_schema=False)
async def staff_detail(db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, user_id: int, done: str | None = None) -> Template:
    return await _staff_page(db_session, actor, clinic, user_id, ok=DONE_MESSAGES.get(done or ""))


async def _staff_write(session: AsyncSession, actor: Actor, clinic: Clinic, user_id: int, done: str, write) -> Response:
    """Run one staff change; on a refusal show the person's page again with the reason."""
    try:
        await write()
    except ClinicError as exc:
        if exc.status_code == 404:
            raise
        await session.rollback()
        return await _staff_page(session, actor, clinic, user_id, error=exc.body(), status_code=exc.status_code)
    return Redirect(path=f"/admin/staff/{user_id}?done={done}", status_code=303)


@post("/admin/staff/{user_id:int}/details", opt={"permission": "admin"}, include_in_schema=False)
async def staff_update_details(request: Request, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, user_id: int) -> Response:
    form = await read_form(request, StaffDetailsForm)
    return await _staff_write(
        db_session, actor, clinic, user_id, "details",
        lambda: service.update_details(
            db_session, actor=actor, user_id=user_id, full_name=form.full_name, credentials=form.credentials, npi=form.npi,
            is_therapist=form.is_therapist,
        ),
    )


@post("/admin/staff/{user_id:int}/roles", opt={"permission": "admin"}, include_in_schema=False)
async def staff_update_roles(request: Request, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, user_id: int) -> Response:
    form = await read_form(request, RolesForm)
    return await _staff_write(
        db_session, actor, clinic, user_id, "roles",
        lambda: service.update_roles(db_session, actor=actor, user_id=user_id, roles=form.roles),
    )


@post("/admin/staff/{user_id:int}/deactivate", opt={"permission": "admin"}, include_in_schema=False)
async def staff_deactivate(db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, user_id: int) -> Response:
    return await _staff_write(
        db_session, actor, clinic, user_id, "deactivated",
        lambda: service.set_active(db_session, actor=actor, user_id=user_id, active=False),
    )


@post("/admin/staff/{user_id:int}/reactivate", opt={"permission": "admin"}, include_in_schema=False)
async def staff_reactivate(db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, user_id: int) -> Response:
    return await _staff_write(
        db_session, actor, clinic, user_id, "reactivated",
        lambda: service.set_active(db_session, actor=actor, user_id=user_id, active=True),
    )


@post("/admin/staff/{user_id:int}/password", opt={"permission": "admin"}, include_in_schema=False)
async def staff_reset_password(request: Request, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, user_id: int) -> Response:
    form = await read_form(request, PasswordForm)

    async def write() -> None:
        if form.password != form.confirm_password:
            raise RuleBroken("The password and its confirmation differ.", field="confirm_password")
        await service.reset_password(db_session, actor=actor, user_id=user_id, password=form.password)

    return await _staff_write(db_session, actor, clinic, user_id, "password", write)


# ---- API tokens --------------------------------------------------------------------------


async def _tokens_context(session: AsyncSession, actor: Actor, clinic: Clinic, **extra: Any) -> dict[str, Any]:
    tokens = await service.list_tokens(session, clinic_id=actor.clinic_id)
    # admins make tokens for programs only; a person makes their own on the Your account page
    users = [u for u in await service.list_users(session, clinic_id=actor.clinic_id) if u.active and u.has_role(INTEGRATION)]
    tz = clinic.timezone
    defaults = {"new_token": None, "error": None, "ok": None, "selected_user": None}
    return _common(tokens=tokens, users=users, tz=tz, section="tokens", **{**defaults, **extra})


@get("/admin/tokens", opt={"permission": "admin"}, include_in_schema=False)
async def tokens_page(db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, done: str | None = None, user_id: int | None = None) -> Template:
    return Template(
        "admin/tokens.html",
        context=await _tokens_context(db_session, actor, clinic, ok=DONE_MESSAGES.get(done or ""), selected_user=user_id),
    )


@post("/admin/tokens", opt={"permission": "admin"}, include_in_schema=False)
async def tokens_create(request: Request, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic) -> Response:
    form = None
    try:
        form = await read_form(request, TokenForm)
        if form.user_id is None:
            raise RuleBroken("Choose whose token this is.", field="user_id")
        token, raw = await service.create_token(db_session, actor=actor, user_id=form.user_id, name=form.name)
    except ClinicError as exc:
        await db_session.rollback()
        context = await _tokens_context(db_session, actor, clinic, error=exc.body(), selected_user=form.user_id if form else None)
        return Template("admin/tokens.html", context=context, status_code=exc.status_code)
    await db_session.flush()
    # the secret exists only in this response: it is stored hashed and cannot be shown again
    context = await _tokens_context(db_session, actor, clinic, new_token={"raw": raw, "id": token.id, "name": token.name})
    return Template("admin/tokens.html", context=context, status_code=201)


@post("/admin/tokens/{token_id:int}/revoke", opt={"permission": "admin"}, include_in_schema=False)
async def tokens_revoke(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, token_id: int) -> Response:
    token = await service.revoke_token(db_session, actor=actor, token_id=token_id)
    if request.htmx:
        token, owner = await service.get_token(db_session, clinic_id=actor.clinic_id, token_id=token.id)
        tz = clinic.timezone
        return Template("admin/partials/token_row.html", context={"token": token, "owner": owner, "tz": tz})
    return Redirect(path="/admin/tokens?done=revoked", status_code=303)


# ---- audit trail -------------------------------------------------------------------------


def summarize(changes: dict[str, Any] | None, limit: int) -> str:
    text = json.dumps(changes or {}, ensure_ascii=False, default=str, separators=(", ", ": "))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _day_start(day: date | None, tz: str) -> datetime | None:
    return datetime.combine(day, time.min, tzinfo=ZoneInfo(tz)) if day else None


@get("/admin/audit", opt={"permission": "audit.read"}, include_in_schema=False)
async def audit_page(
    request: Request,
    db_session: DbSession,
    actor: CurrentActor,
    clinic: CurrentClinic,
    action: str | None = None,
    user_id: int | None = Parameter(default=None, ge=1),
    patient_id: int | None = Parameter(default=None, ge=1),
    date_from: date | None = Parameter(query="from", default=None),
    date_to: date | None = Parameter(query="to", default=None),
    before: int | None = Parameter(default=None, ge=1),
    after: int | None = Parameter(default=None, ge=0),
) -> Template:
    tz = clinic.timezone
    action = (action or "").strip()[:80] or None
    until = _day_start(date_to + timedelta(days=1), tz) if date_to else None  # "to" is inclusive of that whole day
    events = await list_events(
        db_session,
        clinic_id=actor.clinic_id,
        flt=AuditFilter(
            action=action, user_id=user_id, patient_id=patient_id, since=_day_start(date_from, tz), until=until,
            before_id=before, after_id=after, limit=AUDIT_PAGE_SIZE + 1,
        ),
    )
    # one extra row tells whether another page exists in the direction we walked
    more = len(events) > AUDIT_PAGE_SIZE
    if more:
        events = events[1:] if after is not None and before is None else events[:AUDIT_PAGE_SIZE]
    paging_back = after is not None and before is None
    has_older = more if not paging_back else True
    has_newer = (before is not None) or (paging_back and more)
    staff = await service.list_users(db_session, clinic_id=actor.clinic_id)
    filters = {"action": action or "", "user_id": user_id, "patient_id": patient_id, "from": date_from, "to": date_to}
    base = {k: ("" if v is None else str(v)) for k, v in filters.items() if v not in (None, "")}
    return Template(
        "admin/audit.html",
        context=_common(
            events=events, staff={u.id: u for u in staff}, staff_list=staff, tz=tz, filters=filters, query=base,
            older=events[-1].id if events and has_older else None,
            newer=events[0].id if events and has_newer else None,
            prefixes=AUDIT_ACTION_PREFIXES, section="audit", page_size=AUDIT_PAGE_SIZE,
            filtered=bool(base), summarize=summarize,
        ),
    )


routes = [
    admin_home,
    staff_list,
    staff_new,
    staff_create,
    staff_detail,
    staff_update_details,
    staff_update_roles,
    staff_deactivate,
    staff_reactivate,
    staff_reset_password,
    tokens_page,
    tokens_create,
    tokens_revoke,
    audit_page,
]
