"""Logins, sessions, tokens and staff administration; one transaction per use case."""

from __future__ import annotations

import math
from datetime import datetime

from sqlalchemy import func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import Actor, record
from clinic.auth import hashing
from clinic.auth.cache import forget_sign_ins_after_commit
from clinic.auth.models import NO_PASSWORD, ROLES, ApiToken, StaffUser, WebSession
from clinic.auth.permissions import ADMIN, INTEGRATION, NO_BROWSER
from clinic.auth.rules import (
    THROTTLE_WINDOW,
    RecentFailures,
    Throttled,
    check_email,
    check_npi,
    check_password,
    new_token,
    sign_in_throttle,
    token_hash,
)
from clinic.db import Database, after_commit
from clinic.errors import ClinicError, Conflict, Forbidden, NotFound, RuleBroken
from clinic.names import single_line
from clinic.timeutil import utcnow


class TooManyAttempts(ClinicError):
    status_code = 429


class BadCredentials(ClinicError):
    status_code = 401


# one statement each, on a connection of its own, under locks per account and per address: concurrent sign-ins
# are counted one after the other, and every one that may check a password is recorded (as failed) before it does
_LOCK_ACCOUNT = "SELECT pg_advisory_xact_lock(hashtextextended('sign-in account ' || $1, 0))"
_LOCK_ADDRESS = "SELECT pg_advisory_xact_lock(hashtextextended('sign-in address ' || $1, 0))"
_RECENT = """
    SELECT count(*) FILTER (WHERE email = $1 AND ip = $2) AS pair, min(at) FILTER (WHERE email = $1 AND ip = $2) AS pair_first,
           count(*) FILTER (WHERE ip = $2) AS address, max(at) FILTER (WHERE ip = $2) AS address_last,
           count(*) FILTER (WHERE email = $1) AS account, max(at) FILTER (WHERE email = $1) AS account_last
    FROM login_attempts WHERE at >= $3 AND NOT success AND (email = $1 OR ip = $2)
"""
_RECORD = "INSERT INTO login_attempts (email, ip, at, success) VALUES ($1, $2, $3, false) RETURNING id"
_SUCCEEDED = "UPDATE login_attempts SET success = true WHERE id = $1"


async def claim_attempt(db: Database, *, email: str, ip: str) -> int | Throttled:
    """Record a sign-in attempt about to check a password (its id), or say why it may not (nothing recorded)."""
    now = utcnow()
    async with db.raw() as conn, conn.transaction():
        await conn.execute(_LOCK_ACCOUNT, email)
        await conn.execute(_LOCK_ADDRESS, ip)
        row = await conn.fetchrow(_RECENT, email, ip, now - THROTTLE_WINDOW)
        refused = sign_in_throttle(RecentFailures(**dict(row)), now)
        if refused is not None:
            return refused
        return await conn.fetchval(_RECORD, email, ip, now)


async def login(
    session: AsyncSession, db: Database, *, email: str, password: str, ip: str, previous_token: str | None = None
) -> tuple[StaffUser, str]:
    """Check credentials (throttled per account and address, see clinic.auth.rules); returns the user and a fresh
    session token. A session token the browser still carries is ended, so every sign-in starts a new session id.
    """
    email = (email or "").strip().lower()[:254]
    user = (await session.exec(select(StaffUser).where(StaffUser.email == email))).first()
    clinic_id = user.clinic_id if user else None
    anonymous = Actor(None, clinic_id or 0, ip=ip, via="password")
    # the turn first: a sign-in sent away as busy (503) must not count as a failure
    async with hashing.turn():
        claimed = await claim_attempt(db, email=email, ip=ip)
        if isinstance(claimed, Throttled):
            record(session, actor=anonymous, action="auth.login_throttled", entity="staff_user", entity_id=user.id if user else None,
                   changes={"email": email, "by": claimed.by, "retry_after": claimed.retry_after}, clinic_id=clinic_id)
            raise TooManyAttempts(f"Too many failed sign-ins. Wait {_wait_words(claimed.retry_after)} and try again.",
                                  code="throttled", headers={"Retry-After": str(claimed.retry_after)})
        # an integration account has no password: it is checked against nothing, as slowly as anyone else
        can_sign_in = user is not None and user.active and not user.has_role(*NO_BROWSER)
        ok = await hashing.verify_in_turn(password or "", user.password_hash if can_sign_in else None) and can_sign_in
    if not ok:
        record(session, actor=anonymous, action="auth.login_failed", entity="staff_user", entity_id=user.id if user else None,
               changes={"email": email}, clinic_id=clinic_id)
        # same answer for a wrong password, an unknown email and a deactivated account
        raise BadCredentials("Email or password is not right.", code="bad_credentials")
    async with db.raw() as conn:
        await conn.execute(_SUCCEEDED, claimed)
    if previous_token:
        await end_session(session, raw_token=previous_token)
    raw, hashed = new_token()
    web_session = WebSession(token_hash=hashed, user_id=user.id, ip=ip)
    session.add(web_session)
    await session.flush()
    record(session, actor=Actor(user.id, user.clinic_id, tuple(user.roles), ip, via="session", credential_id=web_session.id),
           action="auth.login", entity="staff_user", entity_id=user.id)
    return user, raw


def _wait_words(seconds: int) -> str:
    return f"{seconds} seconds" if seconds < 120 else f"{math.ceil(seconds / 60)} minutes"


async def end_session(session: AsyncSession, *, raw_token: str) -> None:
    await session.exec(
        update(WebSession)  # type: ignore[call-overload]
        .where(WebSession.token_hash == token_hash(raw_token), col(WebSession.ended_at).is_(None))
        .values(ended_at=utcnow())
    )


async def logout(session: AsyncSession, *, raw_token: str | None, actor: Actor | None) -> None:
    if not raw_token:
        return
    await end_session(session, raw_token=raw_token)
    if actor:
        record(session, actor=actor, action="auth.logout", entity="staff_user", entity_id=actor.user_id)


def _check_roles(roles: list[str]) -> list[str]:
    cleaned = sorted(set(roles))
    if not cleaned:
        raise RuleBroken("Choose at least one role.", field="roles")
    unknown = [r for r in cleaned if r not in ROLES]
    if unknown:
        raise RuleBroken(f"Unknown role {unknown[0]!r}; roles are {', '.join(ROLES)}.", field="roles")
    if INTEGRATION in cleaned and len(cleaned) > 1:
        # a program's account is never also a person's, so nobody signs clinically with a token an admin made
        raise RuleBroken("An integration account holds the integration role only.", field="roles", code="integration_alone")
    return cleaned


def _check_details(full_name: str, credentials: str, npi: str | None) -> tuple[str, str, str | None]:
    # a line break is refused, not folded away: the name may reach a notice's header
    full_name = " ".join(single_line(full_name or "", field="full_name", label="The name").split())
    if not full_name:
        raise RuleBroken("Enter the person's full name.", field="full_name")
    if len(full_name) > 200:
        raise RuleBroken("The name is too long (200 characters at most).", field="full_name")
    credentials = (credentials or "").strip()
    if len(credentials) > 40:
        raise RuleBroken("Credentials are too long (40 characters at most), e.g. RN, MD, PhD.", field="credentials")
    npi = (npi or "").replace(" ", "").strip() or None
    check_npi(npi or "")
    return full_name, credentials, npi


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
    check_email(email)
    full_name, credentials, npi = _check_details(full_name, credentials, npi)
    roles = _check_roles(roles)
    integration = INTEGRATION in roles
    if not integration:
        check_password(password or "")
    if (await session.exec(select(StaffUser.id).where(StaffUser.email == email))).first():
        raise Conflict("A staff account with that email already exists.", field="email")
    user = StaffUser(
        clinic_id=clinic_id,
        email=email,
        full_name=full_name,
        roles=roles,
        # an integration account never signs in with a password: only its tokens work
        password_hash=NO_PASSWORD if integration else await hashing.hash_password(password),
        credentials=credentials,
        npi=npi,
        is_therapist=is_therapist,
    )
    session.add(user)
    await session.flush()
    record(
        session,
        actor=actor,
        action="staff.create",
        entity="staff_user",
        entity_id=user.id,
        changes={"email": email, "full_name": full_name, "roles": roles, "credentials": credentials, "npi": npi, "is_therapist": is_therapist},
        clinic_id=clinic_id,
    )
    return user


async def get_user(session: AsyncSession, *, clinic_id: int, user_id: int) -> StaffUser:
    user = await session.get(StaffUser, user_id)
    if user is None or user.clinic_id != clinic_id:
        raise NotFound("No such staff member.")
    return user


async def list_users(session: AsyncSession, *, clinic_id: int) -> list[StaffUser]:
    q = select(StaffUser).where(StaffUser.clinic_id == clinic_id).order_by(col(StaffUser.active).desc(), StaffUser.full_name)
    return list((await session.exec(q)).all())


async def last_sign_ins(session: AsyncSession, *, user_ids: list[int]) -> dict[int, datetime]:
    """When each user last signed in (start of their newest browser session)."""
    if not user_ids:
        return {}
    q = (
        select(WebSession.user_id, func.max(WebSession.created_at))
        .where(col(WebSession.user_id).in_(user_ids))
        .group_by(WebSession.user_id)
    )
    return {uid: at for uid, at in (await session.exec(q)).all()}


async def update_details(
    session: AsyncSession,
    *,
    actor: Actor,
    user_id: int,
    full_name: str,
    credentials: str = "",
    npi: str | None = None,
    is_therapist: bool = False,
) -> StaffUser:
    user = await get_user(session, clinic_id=actor.clinic_id, user_id=user_id)
    full_name, credentials, npi = _check_details(full_name, credentials, npi)
    after = {"full_name": full_name, "credentials": credentials, "npi": npi, "is_therapist": is_therapist}
    changes = {k: [getattr(user, k), v] for k, v in after.items() if getattr(user, k) != v}
    if changes:
        for k, v in after.items():
            setattr(user, k, v)
        session.add(user)
        record(session, actor=actor, action="staff.update", entity="staff_user", entity_id=user.id, changes=changes)
        after_commit(session, forget_sign_ins_after_commit)
    return user


async def set_active(session: AsyncSession, *, actor: Actor, user_id: int, active: bool) -> StaffUser:
    user = await get_user(session, clinic_id=actor.clinic_id, user_id=user_id)
    if user.id == actor.user_id and not active:
        raise RuleBroken("You cannot deactivate your own account.", field="user_id")
    if user.active == active:
        return user
    user.active = active
    session.add(user)
    if not active:
        # end every way in at once, not at the next idle timeout
        await _sign_out_everywhere(session, user_id=user.id, keep_session_id=None)
    record(session, actor=actor, action="staff.activate" if active else "staff.deactivate", entity="staff_user", entity_id=user.id)
    after_commit(session, forget_sign_ins_after_commit)  # other processes hear it from the database
    return user


async def update_roles(session: AsyncSession, *, actor: Actor, user_id: int, roles: list[str]) -> StaffUser:
    user = await get_user(session, clinic_id=actor.clinic_id, user_id=user_id)
    cleaned = _check_roles(roles)
    if user.id == actor.user_id and "admin" in user.roles and "admin" not in cleaned:
        # another admin must do it, so a clinic never locks itself out of staff management
        raise RuleBroken("You cannot remove your own admin role.", field="roles")
    before = sorted(user.roles)
    if before != cleaned:
        user.roles = cleaned
        session.add(user)
        record(session, actor=actor, action="staff.roles", entity="staff_user", entity_id=user.id, changes={"roles": [before, cleaned]})
        after_commit(session, forget_sign_ins_after_commit)
    return user


async def reset_password(session: AsyncSession, *, actor: Actor, user_id: int, password: str) -> StaffUser:
    user = await get_user(session, clinic_id=actor.clinic_id, user_id=user_id)
    if user.id == actor.user_id:
        raise RuleBroken("Change your own password on the Your account page.", field="user_id")
    if user.has_role(*NO_BROWSER):
        raise RuleBroken("An integration account has no password; revoke its tokens or create new ones.", field="user_id")
    check_password(password or "")
    user.password_hash = await hashing.hash_password(password)
    session.add(user)
    # whoever knew the old password is signed out everywhere, and tokens made with it stop working
    await _sign_out_everywhere(session, user_id=user.id, keep_session_id=None)
    record(session, actor=actor, action="staff.reset_password", entity="staff_user", entity_id=user.id)
    return user


async def _sign_out_everywhere(session: AsyncSession, *, user_id: int, keep_session_id: int | None) -> None:
    """End the person's browser sessions (all but the one kept) and revoke their API tokens; open streams stop."""
    now = utcnow()
    await session.exec(
        update(WebSession)  # type: ignore[call-overload]
        .where(WebSession.user_id == user_id, col(WebSession.ended_at).is_(None), WebSession.id != (keep_session_id or 0))
        .values(ended_at=now)
    )
    await session.exec(update(ApiToken).where(ApiToken.user_id == user_id, col(ApiToken.revoked_at).is_(None)).values(revoked_at=now))  # type: ignore[call-overload]
    after_commit(session, forget_sign_ins_after_commit)


async def change_own_password(
    session: AsyncSession, *, actor: Actor, current_password: str, new_password: str, keep_session_id: int | None
) -> None:
    user = await get_user(session, clinic_id=actor.clinic_id, user_id=actor.user_id or 0)
    if not await hashing.verify_password(current_password or "", user.password_hash):
        record(session, actor=actor, action="auth.password_change_failed", entity="staff_user", entity_id=user.id)
        raise RuleBroken("Your current password is not right.", field="current_password")
    check_password(new_password or "", field="new_password")
    if new_password == current_password:
        raise RuleBroken("Choose a password different from the current one.", field="new_password")
    user.password_hash = await hashing.hash_password(new_password)
    session.add(user)
    # other browsers signed in as this user are signed out and their API tokens revoked; this browser stays
    await _sign_out_everywhere(session, user_id=user.id, keep_session_id=keep_session_id)
    record(session, actor=actor, action="auth.password_change", entity="staff_user", entity_id=user.id)


async def create_token(session: AsyncSession, *, actor: Actor, user_id: int | None = None, name: str = "") -> tuple[ApiToken, str]:
    """A token is created by its owner, signed in with a browser (a token cannot breed tokens that outlive it), or by
    an admin for an integration account: nobody holds a token that acts in another person's name."""
    if actor.via not in ("session", "system"):
        raise Forbidden("Create API tokens while signed in with a browser.", code="browser_required")
    user = await get_user(session, clinic_id=actor.clinic_id, user_id=actor.user_id if user_id is None else user_id)
    if user.id != actor.user_id and not (actor.has_role(ADMIN) and user.has_role(INTEGRATION)):
        raise Forbidden("A person's API tokens are created by that person (Your account page); admins create them for "
                        "integration accounts only.", field="user_id", code="not_owner")
    if not user.active:
        raise RuleBroken("That account is deactivated.", field="user_id")
    name = " ".join((name or "").split())
    if len(name) > 100:
        raise RuleBroken("The token name is too long (100 characters at most).", field="name")
    raw, hashed = new_token("ct_")
    token = ApiToken(token_hash=hashed, user_id=user.id, name=name)
    session.add(token)
    await session.flush()
    record(session, actor=actor, action="token.create", entity="api_token", entity_id=token.id, changes={"user_id": user.id, "name": token.name})
    return token, raw


async def list_tokens(session: AsyncSession, *, clinic_id: int, user_id: int | None = None) -> list[tuple[ApiToken, StaffUser]]:
    """The clinic's tokens (admins), or one person's own."""
    q = (
        select(ApiToken, StaffUser)
        .join(StaffUser, StaffUser.id == ApiToken.user_id)
        .where(StaffUser.clinic_id == clinic_id)
        .order_by(col(ApiToken.revoked_at).is_not(None), col(ApiToken.id).desc())
    )
    if user_id is not None:
        q = q.where(ApiToken.user_id == user_id)
    return list((await session.exec(q)).all())


def tokens_visible_to(actor: Actor) -> int | None:
    """Whose tokens an actor may list and revoke: everyone's in the clinic for an admin, else their own."""
    return None if actor.has_role(ADMIN) else actor.user_id or 0


async def get_token(session: AsyncSession, *, clinic_id: int, token_id: int, user_id: int | None = None) -> tuple[ApiToken, StaffUser]:
    token = await session.get(ApiToken, token_id)
    owner = await session.get(StaffUser, token.user_id) if token else None
    if token is None or owner is None or owner.clinic_id != clinic_id or (user_id is not None and owner.id != user_id):
        raise NotFound("No such token.")
    return token, owner


async def revoke_token(session: AsyncSession, *, actor: Actor, token_id: int) -> ApiToken:
    token, _ = await get_token(session, clinic_id=actor.clinic_id, token_id=token_id, user_id=tokens_visible_to(actor))
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        session.add(token)
        record(session, actor=actor, action="token.revoke", entity="api_token", entity_id=token.id, changes={"user_id": token.user_id})
        after_commit(session, forget_sign_ins_after_commit)
    return token
