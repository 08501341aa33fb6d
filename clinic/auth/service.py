"""Logins, sessions, tokens and staff administration; one transaction per use case."""

from __future__ import annotations

from sqlalchemy import func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import Actor, record
from clinic.auth.models import ROLES, ApiToken, LoginAttempt, StaffUser, WebSession
from clinic.auth.rules import (
    THROTTLE_WINDOW,
    hash_password,
    is_throttled,
    new_token,
    password_problem,
    token_hash,
    verify_password,
)
from clinic.http import ClinicError, Conflict, InvalidInput, NotFound
from clinic.timeutil import utcnow


class TooManyAttempts(ClinicError):
    status_code = 429


class BadCredentials(ClinicError):
    status_code = 401


async def login(session: AsyncSession, *, email: str, password: str, ip: str) -> tuple[StaffUser, str]:
    """Check credentials (throttled per account and per address); returns the user and a fresh session token."""
    email = (email or "").strip().lower()
    since = utcnow() - THROTTLE_WINDOW
    failed = select(func.count()).select_from(LoginAttempt).where(LoginAttempt.at >= since, col(LoginAttempt.success).is_(False))
    by_email = (await session.exec(failed.where(LoginAttempt.email == email))).one()
    by_ip = (await session.exec(failed.where(LoginAttempt.ip == ip))).one()
    if is_throttled(by_email, by_ip):
        record(session, actor=Actor(None, 0, ip=ip), action="auth.login_throttled", entity="staff_user", changes={"email": email}, clinic_id=None)
        raise TooManyAttempts("Too many failed sign-ins. Wait 15 minutes and try again.", code="throttled")
    user = (await session.exec(select(StaffUser).where(StaffUser.email == email))).first()
    ok = verify_password(password or "", user.password_hash if user else None) and user is not None and user.active
    session.add(LoginAttempt(email=email, ip=ip, success=ok))
    if not ok:
        record(
            session,
            actor=Actor(None, user.clinic_id if user else 0, ip=ip),
            action="auth.login_failed",
            entity="staff_user",
            entity_id=user.id if user else None,
            changes={"email": email},
            clinic_id=user.clinic_id if user else None,
        )
        # same answer for a wrong password and an unknown email
        raise BadCredentials("Email or password is not right.", code="bad_credentials")
    raw, hashed = new_token()
    session.add(WebSession(token_hash=hashed, user_id=user.id, ip=ip))
    record(session, actor=Actor(user.id, user.clinic_id, tuple(user.roles), ip), action="auth.login", entity="staff_user", entity_id=user.id)
    return user, raw


async def logout(session: AsyncSession, *, raw_token: str | None, actor: Actor | None) -> None:
    if not raw_token:
        return
    await session.exec(
        update(WebSession).where(WebSession.token_hash == token_hash(raw_token)).values(ended_at=utcnow())  # type: ignore[call-overload]
    )
    if actor:
        record(session, actor=actor, action="auth.logout", entity="staff_user", entity_id=actor.user_id)


def _check_roles(roles: list[str]) -> list[str]:
    cleaned = sorted(set(roles))
    if not cleaned:
        raise InvalidInput("Choose at least one role.", field="roles")
    unknown = [r for r in cleaned if r not in ROLES]
    if unknown:
        raise InvalidInput(f"Unknown role {unknown[0]!r}; roles are {', '.join(ROLES)}.", field="roles")
    return cleaned


async def create_user(
    session: AsyncSession,
    *,
    actor: Actor,
    clinic_id: int,
    email: str,
    full_name: str,
    roles: list[str],
    password: str,
    credentials: str = "",
    npi: str | None = None,
    is_therapist: bool = False,
) -> StaffUser:
    email = (email or "").strip().lower()
    if "@" not in email or len(email) > 254 or email.startswith("@") or email.endswith("@"):
        raise InvalidInput("Enter a valid email address.", field="email")
    if not (full_name or "").strip():
        raise InvalidInput("Enter the person's full name.", field="full_name")
    problem = password_problem(password or "")
    if problem:
        raise InvalidInput(problem, field="password")
    roles = _check_roles(roles)
    if (await session.exec(select(StaffUser.id).where(StaffUser.email == email))).first():
        raise Conflict("A staff account with that email already exists.", field="email")
    user = StaffUser(
        clinic_id=clinic_id,
        email=email,
        full_name=full_name.strip(),
        roles=roles,
        password_hash=hash_password(password),
        credentials=credentials.strip(),
        npi=npi or None,
        is_therapist=is_therapist,
    )
    session.add(user)
    await session.flush()
    record(session, actor=actor, action="staff.create", entity="staff_user", entity_id=user.id, changes={"email": email, "roles": roles})
    return user


async def get_user(session: AsyncSession, *, clinic_id: int, user_id: int) -> StaffUser:
    user = await session.get(StaffUser, user_id)
    if user is None or user.clinic_id != clinic_id:
        raise NotFound("No such staff member.")
    return user


async def list_users(session: AsyncSession, *, clinic_id: int) -> list[StaffUser]:
    q = select(StaffUser).where(StaffUser.clinic_id == clinic_id).order_by(col(StaffUser.active).desc(), StaffUser.full_name)
    return list((await session.exec(q)).all())


async def set_active(session: AsyncSession, *, actor: Actor, user_id: int, active: bool) -> StaffUser:
    user = await get_user(session, clinic_id=actor.clinic_id, user_id=user_id)
    if user.id == actor.user_id and not active:
        raise InvalidInput("You cannot deactivate your own account.", field="user_id")
    user.active = active
    session.add(user)
    if not active:
        now = utcnow()
        # end every way in at once, not at the next idle timeout
        await session.exec(update(WebSession).where(WebSession.user_id == user.id, col(WebSession.ended_at).is_(None)).values(ended_at=now))  # type: ignore[call-overload]
        await session.exec(update(ApiToken).where(ApiToken.user_id == user.id, col(ApiToken.revoked_at).is_(None)).values(revoked_at=now))  # type: ignore[call-overload]
    record(session, actor=actor, action="staff.activate" if active else "staff.deactivate", entity="staff_user", entity_id=user.id)
    return user


async def update_roles(session: AsyncSession, *, actor: Actor, user_id: int, roles: list[str]) -> StaffUser:
    user = await get_user(session, clinic_id=actor.clinic_id, user_id=user_id)
    before = list(user.roles)
    user.roles = _check_roles(roles)
    session.add(user)
    record(session, actor=actor, action="staff.roles", entity="staff_user", entity_id=user.id, changes={"roles": [before, user.roles]})
    return user


async def reset_password(session: AsyncSession, *, actor: Actor, user_id: int, password: str) -> StaffUser:
    user = await get_user(session, clinic_id=actor.clinic_id, user_id=user_id)
    problem = password_problem(password or "")
    if problem:
        raise InvalidInput(problem, field="password")
    user.password_hash = hash_password(password)
    session.add(user)
    await session.exec(update(WebSession).where(WebSession.user_id == user.id, col(WebSession.ended_at).is_(None)).values(ended_at=utcnow()))  # type: ignore[call-overload]
    record(session, actor=actor, action="staff.reset_password", entity="staff_user", entity_id=user.id)
    return user


async def create_token(session: AsyncSession, *, actor: Actor, user_id: int, name: str = "") -> tuple[ApiToken, str]:
    user = await get_user(session, clinic_id=actor.clinic_id, user_id=user_id)
    if not user.active:
        raise InvalidInput("That account is deactivated.", field="user_id")
    raw, hashed = new_token("ct_")
    token = ApiToken(token_hash=hashed, user_id=user.id, name=(name or "")[:100])
    session.add(token)
    await session.flush()
    record(session, actor=actor, action="token.create", entity="api_token", entity_id=token.id, changes={"user_id": user.id, "name": token.name})
    return token, raw


async def list_tokens(session: AsyncSession, *, clinic_id: int) -> list[tuple[ApiToken, StaffUser]]:
    q = (
        select(ApiToken, StaffUser)
        .join(StaffUser, StaffUser.id == ApiToken.user_id)
        .where(StaffUser.clinic_id == clinic_id)
        .order_by(col(ApiToken.id).desc())
    )
    return list((await session.exec(q)).all())


async def revoke_token(session: AsyncSession, *, actor: Actor, token_id: int) -> ApiToken:
    token = await session.get(ApiToken, token_id)
    owner = await session.get(StaffUser, token.user_id) if token else None
    if token is None or owner is None or owner.clinic_id != actor.clinic_id:
        raise NotFound("No such token.")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        session.add(token)
        record(session, actor=actor, action="token.revoke", entity="api_token", entity_id=token.id)
    return token
