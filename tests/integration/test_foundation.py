"""The foundation as an integrator sees it: health, migrations, sign-in, errors."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tests.factories import bearer, login


async def test_healthz_reports_db_redis_and_the_workers_heartbeat(client, redis):
    from clinic.queue import WORKER_HEARTBEAT_KEY

    r = await client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"db": "ok", "redis": "ok", "worker": "stale"}
    await redis.set(WORKER_HEARTBEAT_KEY, b"beat", px=2000)  # what a worker's heartbeat leaves
    assert (await client.get("/healthz")).json() == {"db": "ok", "redis": "ok", "worker": "ok"}


async def test_healthz_says_redis_down_but_stays_up(settings, db):
    from clinic.app import create_app
    from clinic.queue import Queue
    from tests.conftest import app_client

    app = create_app(settings, db=db, queue=Queue("redis://127.0.0.1:1/0"))
    async with app_client(app) as c:
        r = await c.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"db": "ok", "redis": "down", "worker": "stale"}


async def test_openapi_schema_is_served(client):
    r = await client.get("/schema/openapi.json")
    assert r.status_code == 200
    assert r.json()["info"]["title"] == "Clinic API"


async def test_login_sets_httponly_session_cookie_and_redirects(client, factory):
    clinic = await factory.clinic()
    user = await factory.user(clinic, "nurse")
    r = await login(client, user.email)
    assert r.status_code in (302, 303)
    cookie = r.headers.get("set-cookie", "")
    assert "clinic_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    assert (await client.get("/account")).status_code == 200


async def test_wrong_password_and_unknown_email_get_the_same_answer(client, factory):
    clinic = await factory.clinic()
    user = await factory.user(clinic, "nurse")
    wrong = await login(client, user.email, "not-the-password!")
    unknown = await login(client, "nobody@test.clinic", "not-the-password!")
    assert wrong.status_code == unknown.status_code == 401
    assert "Email or password is not right." in wrong.text and "Email or password is not right." in unknown.text


async def test_anonymous_html_goes_to_login_and_api_gets_401(client):
    r = await client.get("/account", follow_redirects=False)
    assert r.status_code in (302, 303) and r.headers["location"].startswith("/login?next=/account")
    r = await client.get("/api/v1/audit-events")
    assert r.status_code == 401
    assert "detail" in r.json()


async def test_bearer_token_authenticates_without_csrf(client, factory):
    clinic = await factory.clinic()
    admin = await factory.user(clinic, "admin")
    token = await factory.token(admin)
    r = await client.get("/api/v1/audit-events", headers=bearer(token))
    assert r.status_code == 200


async def test_audit_rows_cannot_be_updated_or_deleted(owner_db):
    # even the tables' owner (the app itself may not try: tests/integration/test_db_roles.py)
    async with owner_db.engine.connect() as conn:
        trans = await conn.begin()
        await conn.execute(text("INSERT INTO audit_events (at, action, entity, changes) VALUES (now(), 'test.row', 't', '{}')"))
        with pytest.raises(DBAPIError, match="append-only"):
            async with conn.begin_nested():
                await conn.execute(text("UPDATE audit_events SET action = 'tampered' WHERE action = 'test.row'"))
        with pytest.raises(DBAPIError, match="append-only"):
            async with conn.begin_nested():
                await conn.execute(text("DELETE FROM audit_events WHERE action = 'test.row'"))
        await trans.rollback()


async def test_security_headers_on_pages(client):
    r = await client.get("/login")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
