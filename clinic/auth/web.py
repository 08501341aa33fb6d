"""Sign-in, sign-out, your own account, and the home page that sends each role where it works."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlparse

from litestar import Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, Parameter
from litestar.response import Redirect, Template
from msgspec import Struct

from clinic.auth import service
from clinic.auth.middleware import SESSION_COOKIE, idle_minutes
from clinic.clinics import Clinic
from clinic.errors import ClinicError, RuleBroken
from clinic.http import CurrentActor, CurrentClinic, DbSession

HOME_BY_ROLE = (
    ("nurse", "/board"),
    ("prescriber", "/board"),
    ("front_desk", "/schedule"),
    ("billing", "/billing"),
    ("admin", "/admin/staff"),
)


class LoginForm(Struct):
    email: str = ""
    password: str = ""
    next: str = ""


def safe_next(target: str | None) -> str | None:
    """Only same-site paths: never an open redirect."""
    if not target or len(target) > 2000:
        return None
    # browsers read a backslash as a slash, so "/\\evil.example" would leave the site
    if "\\" in target or any(ord(c) < 32 or ord(c) == 127 for c in target):
        return None
    u = urlparse(target)
    if u.scheme or u.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    return target


@get("/login", opt={"public": True}, include_in_schema=False)
async def login_page(
    request: Request,
    next_: Annotated[str | None, Parameter(query="next")] = None,
    reason: str | None = None,
    idle: str | None = None,
) -> Response:
    user = request.scope.get("user")
    if user is not None and request.scope.get("auth") == "session":
        return Redirect(path=safe_next(next_) or home_for(user.roles))
    notice = None
    if reason == "idle":
        minutes = idle_minutes(idle, request.app.state.settings.idle_timeout_minutes)
        notice = f"Your session ended after {minutes} minute{'s' if minutes != 1 else ''} idle. Sign in to carry on where you left off."
    return Template("auth/login.html", context={"next": safe_next(next_) or "", "error": None, "notice": notice})


@post("/login", opt={"public": True}, include_in_schema=False)
async def login_submit(
    request: Request,
    db_session: DbSession,
    data: Annotated[LoginForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response:
    ip = request.client.host if request.client else "unknown"
    try:
        user, raw = await service.login(
            db_session, request.app.state.db, email=data.email, password=data.password, ip=ip,
            previous_token=request.cookies.get(SESSION_COOKIE),
        )
    except ClinicError as exc:
        # the failed attempt is still recorded: commit it, then answer
        await db_session.commit()
        return Template(
            "auth/login.html",
            context={"next": safe_next(data.next) or "", "error": exc.detail, "email": data.email[:254], "notice": None},
            status_code=exc.status_code,
            headers=exc.headers or None,
        )
    settings = request.app.state.settings
    target = safe_next(data.next) or home_for(user.roles)
    response = Redirect(path=target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        raw,
        httponly=True,
        samesite="lax",
        secure=settings.base_url.startswith("https"),
        path="/",
    )
    return response


@post("/logout", opt={"permission": "staff"}, include_in_schema=False)
async def logout(request: Request, db_session: DbSession, actor: CurrentActor) -> Response:
    await service.logout(db_session, raw_token=request.cookies.get(SESSION_COOKIE), actor=actor)
    response = Redirect(path="/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def home_for(roles) -> str:
    for role, path in HOME_BY_ROLE:
        if role in roles:
            return path
    return "/account"


@get("/", opt={"permission": "staff"}, include_in_schema=False)
async def home(request: Request) -> Redirect:
    return Redirect(path=home_for(request.scope["user"].roles))


ACCOUNT_DONE = {
    "password": "Your password was changed. Other devices were signed out and your API tokens revoked.",
    "revoked": "Token revoked. It is refused from its next request on.",
}


@get("/account", opt={"permission": "staff"}, include_in_schema=False)
async def account(request: Request, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, done: str | None = None) -> Template:
    return await _account_page(request, db_session, actor, clinic, ok=ACCOUNT_DONE.get(done or ""))


async def _account_page(request: Request, db_session: DbSession, actor: CurrentActor, clinic: Clinic, *, ok: str | None = None,
                        error: dict | None = None, status_code: int = 200, new_token: dict | None = None) -> Template:
    from clinic.auth.rules import MIN_PASSWORD_LENGTH

    return Template(
        "auth/account.html",
        context={"ok": ok, "error": error, "min_password": MIN_PASSWORD_LENGTH, "new_token": new_token,
                 "tokens": await service.list_tokens(db_session, clinic_id=actor.clinic_id, user_id=actor.user_id),
                 "tz": clinic.timezone},
        status_code=status_code,
    )


class TokenForm(Struct):
    name: str = ""


@post("/account/tokens", opt={"permission": "staff"}, include_in_schema=False)
async def create_own_token(
    request: Request,
    db_session: DbSession,
    actor: CurrentActor,
    clinic: CurrentClinic,
    data: Annotated[TokenForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response:
    try:
        token, raw = await service.create_token(db_session, actor=actor, name=data.name)
    except ClinicError as exc:
        await db_session.rollback()
        return await _account_page(request, db_session, actor, clinic, error=exc.body(), status_code=exc.status_code)
    # the secret exists only in this response: it is stored hashed and cannot be shown again
    return await _account_page(request, db_session, actor, clinic, status_code=201, new_token={"raw": raw, "name": token.name or "unnamed"})


@post("/account/tokens/{token_id:int}/revoke", opt={"permission": "staff"}, include_in_schema=False)
async def revoke_own_token(db_session: DbSession, actor: CurrentActor, token_id: int) -> Redirect:
    await service.revoke_token(db_session, actor=actor, token_id=token_id)
    return Redirect(path="/account?done=revoked", status_code=303)


class PasswordChangeForm(Struct):
    current_password: str = ""
    new_password: str = ""
    confirm_password: str = ""


@post("/account/password", opt={"permission": "staff"}, include_in_schema=False)
async def change_password(
    request: Request,
    db_session: DbSession,
    actor: CurrentActor,
    clinic: CurrentClinic,
    data: Annotated[PasswordChangeForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response:
    user = request.scope["user"]
    try:
        if data.new_password != data.confirm_password:
            raise RuleBroken("The new password and its confirmation differ.", field="confirm_password")
        await service.change_own_password(
            db_session,
            actor=actor,
            current_password=data.current_password,
            new_password=data.new_password,
            keep_session_id=user.credential_id if user.via == "session" else None,
        )
    except ClinicError as exc:
        # the failed attempt's audit row is kept
        await db_session.commit()
        return await _account_page(request, db_session, actor, clinic, error=exc.body(), status_code=exc.status_code)
    return Redirect(path="/account?done=password", status_code=303)


routes = [login_page, login_submit, logout, home, account, change_password, create_own_token, revoke_own_token]
