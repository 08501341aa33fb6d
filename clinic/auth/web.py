"""Sign-in, sign-out and the home page that sends each role where it works."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlparse

from litestar import Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, Template
from msgspec import Struct

from clinic.auth import service
from clinic.auth.middleware import SESSION_COOKIE
from clinic.http import CurrentActor, DbSession, ClinicError

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
    if not target:
        return None
    u = urlparse(target)
    if u.scheme or u.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    return target


@get("/login", opt={"public": True}, include_in_schema=False)
async def login_page(request: Request, next: str | None = None) -> Template:
    return Template("auth/login.html", context={"next": safe_next(next) or "", "error": None})


@post("/login", opt={"public": True}, include_in_schema=False)
async def login_submit(
    request: Request,
    db_session: DbSession,
    data: Annotated[LoginForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response:
    ip = request.client.host if request.client else "unknown"
    try:
        user, raw = await service.login(db_session, email=data.email, password=data.password, ip=ip)
    except ClinicError as exc:
        # the failed attempt is still recorded: commit it, then answer
        await db_session.commit()
        return Template(
            "auth/login.html",
            context={"next": safe_next(data.next) or "", "error": exc.detail, "email": data.email[:254]},
            status_code=exc.status_code,
        )
    settings = request.app.state.settings
    target = safe_next(data.next) or home_for(user.roles)
    response = Redirect(path=target)
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
    response = Redirect(path="/login")
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


@get("/account", opt={"permission": "staff"}, include_in_schema=False)
async def account(request: Request) -> Template:
    return Template("auth/account.html", context={})


routes = [login_page, login_submit, logout, home, account]
