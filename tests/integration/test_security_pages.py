"""What people see: navigation limited to what the role may use, safe error pages, headers that keep PHI out of caches."""

from __future__ import annotations

import logging
import re

from litestar import Litestar, get
from litestar.middleware import DefineMiddleware
from litestar.plugins.htmx import HTMXPlugin
from litestar.routes import HTTPRoute

from clinic.auth.permissions import STAFF_ROLES, allows
from clinic.auth.middleware import BearerAwareCSRFMiddleware, csrf_config
from clinic.http import EXCEPTION_HANDLERS
from clinic.templating import NAV, template_config
from tests.conftest import app_client
from tests.factories import login


def _get_routes(app) -> dict[str, dict]:
    routes = {}
    for route in app.routes:
        if isinstance(route, HTTPRoute) and "GET" in route.route_handler_map:
            routes[route.path] = route.route_handler_map["GET"][0].opt
    return routes


async def test_navigation_shows_exactly_the_pages_each_role_may_open(settings, db, queue, factory):
    from clinic.app import create_app

    app = create_app(settings, db=db, queue=queue)
    gets = _get_routes(app)
    clinic = await factory.clinic()
    for role in sorted(STAFF_ROLES):  # the roles that have pages (an integration never signs in with a browser)
        user = await factory.user(clinic, role)
        async with app_client(app) as c:
            await login(c, user.email)
            page = (await c.get("/account")).text
        nav = page.split('class="nav-links"')[1].split("</ul>")[0]
        shown = set(re.findall(r'href="([^"]+)"', nav))
        for label, href, permission in NAV:
            assert (href in shown) == allows(permission, [role]), (role, label)
            opt = gets.get(href)
            if opt is not None:  # the page exists: the menu must agree with its guard
                assert allows(opt["permission"], [role]) == (href in shown), (role, href, opt)


async def test_login_page_shows_no_navigation_and_no_staff_data(client):
    page = (await client.get("/login")).text
    assert 'class="nav-links"' not in page and "Sign out" not in page
    assert 'autocomplete="current-password"' in page


async def test_pages_are_not_cached_and_carry_security_headers(client, factory):
    clinic = await factory.clinic()
    admin = await factory.user(clinic, "admin")
    await login(client, admin.email)
    for path in ("/admin/staff", "/admin/audit", "/admin/tokens", "/account", "/api/v1/staff"):
        r = await client.get(path)
        assert r.status_code == 200, path
        assert r.headers["cache-control"] == "no-store", path
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"], path
        assert r.headers["x-frame-options"] == "DENY", path


async def test_admin_pages_have_no_inline_script(client, factory):
    clinic = await factory.clinic()
    admin = await factory.user(clinic, "admin")
    nurse = await factory.user(clinic, "nurse")
    await login(client, admin.email)
    for path in ("/admin/staff", "/admin/staff/new", f"/admin/staff/{nurse.id}", "/admin/audit", "/admin/tokens", "/account", "/login"):
        html = (await client.get(path)).text
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), path
        assert not re.search(r"\son[a-z]+=", html), path


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage() + (self.formatException(record.exc_info) if record.exc_info else ""))

    def formatException(self, exc_info) -> str:  # noqa: N802
        return logging.Formatter().formatException(exc_info)


async def test_unexpected_errors_never_show_or_log_patient_details():
    secret = "Jane Example DOB 1980-05-17"

    @get("/boom", opt={"public": True})
    async def boom() -> None:
        raise ValueError(f"could not save {secret}")

    @get("/api/v1/boom", opt={"public": True})
    async def api_boom() -> None:
        raise KeyError(secret)

    app = Litestar(
        route_handlers=[boom, api_boom],
        exception_handlers=EXCEPTION_HANDLERS,
        template_config=template_config(),
        middleware=[DefineMiddleware(BearerAwareCSRFMiddleware, config=csrf_config("k" * 32, False))],
        plugins=[HTMXPlugin()],  # as in create_app: the error answers read request.htmx
    )
    collected = _Collect()
    logging.getLogger().addHandler(collected)
    logging.getLogger("clinic.http").addHandler(collected)
    try:
        await _call_both(app, secret)
    finally:
        logging.getLogger().removeHandler(collected)
        logging.getLogger("clinic.http").removeHandler(collected)
    text = "\n".join(collected.lines)
    assert secret not in text
    assert "unhandled KeyError on GET /api/v1/boom" in text


async def _call_both(app, secret: str) -> None:
    async with app_client(app) as c:
        r = await c.get("/api/v1/boom")
        assert r.status_code == 500 and r.json()["code"] == "server_error"
        assert secret not in r.text
        r = await c.get("/boom")
        assert r.status_code == 500 and "Something went wrong on our side" in r.text
        assert secret not in r.text
