"""Browser sessions: idle logoff with a friendly way back, a new session id per sign-in, cookie flags, broken credentials."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from sqlalchemy import text

from tests.factories import bearer, csrf_headers, login


async def _age_sessions(db, user_id: int, minutes: int) -> None:
    async with db.sessionmaker() as s:
        await s.execute(
            text("UPDATE web_sessions SET last_seen_at = now() - make_interval(mins => :m) WHERE user_id = :u"),
            {"m": minutes, "u": user_id},
        )
        await s.commit()


async def _session_row(db, user_id: int):
    async with db.sessionmaker() as s:
        return (await s.execute(text("SELECT last_seen_at, ended_at FROM web_sessions WHERE user_id = :u ORDER BY id DESC"), {"u": user_id})).first()


def _cookie(value: str) -> dict[str, bytes]:
    """A Cookie header sent as raw bytes, so values a browser could send but httpx would refuse get through."""
    return {"Cookie": f"clinic_session={value}".encode()}


async def test_idle_session_ends_and_the_page_comes_back_after_sign_in(client, factory, db):
    clinic = await factory.clinic()
    nurse = await factory.user(clinic, "nurse")
    await login(client, nurse.email)
    await _age_sessions(db, nurse.id, 16)

    r = await client.get("/account?tab=security", follow_redirects=False)
    assert r.status_code == 302
    target = r.headers["location"]
    q = parse_qs(urlsplit(target).query)
    assert urlsplit(target).path == "/login" and q["next"] == ["/account?tab=security"] and q["reason"] == ["idle"]
    assert "clinic_session=" in r.headers.get("set-cookie", "")  # the dead cookie is cleared
    assert (await _session_row(db, nurse.id)).ended_at is not None
    async with db.sessionmaker() as s:
        logged = (await s.execute(text("SELECT user_id, clinic_id, changes FROM audit_events WHERE action = 'auth.idle_logoff'"))).one()
    assert logged.user_id == nurse.id and logged.clinic_id == clinic.id and logged.changes == {"idle_minutes": 15}

    page = await client.get(target)
    assert "Your session ended after 15 minutes idle" in page.text
    assert 'name="next" value="/account?tab=security"' in page.text

    token = client.cookies.get("csrftoken")
    r = await client.post("/login", data={"email": nurse.email, "password": "correct-horse-battery", "next": "/account?tab=security", "_csrf_token": token})
    assert r.status_code == 303 and r.headers["location"] == "/account?tab=security"


async def test_htmx_request_from_an_idle_session_sends_the_whole_page_to_login(client, factory, db):
    clinic = await factory.clinic()
    nurse = await factory.user(clinic, "nurse")
    await login(client, nurse.email)
    await _age_sessions(db, nurse.id, 20)

    r = await client.post(
        "/logout",
        headers={"HX-Request": "true", "HX-Current-URL": "http://testserver.local/account?x=1", **csrf_headers(client)},
        follow_redirects=False,
    )
    assert r.status_code == 401
    target = urlsplit(r.headers["HX-Redirect"])
    assert target.path == "/login"
    assert parse_qs(target.query) == {"next": ["/account?x=1"], "reason": ["idle"], "idle": ["15"]}
    assert "<" not in r.text  # nothing to swap into the page


async def test_htmx_current_url_from_another_site_is_not_used_as_next(client, factory):
    r = await client.get("/account", headers={"HX-Request": "true", "HX-Current-URL": "https://evil.example/phish"})
    assert r.status_code == 401 and r.headers["HX-Redirect"] == "/login"


async def test_api_answers_401_with_a_reason_after_idle(client, factory, db):
    clinic = await factory.clinic()
    nurse = await factory.user(clinic, "nurse")
    await login(client, nurse.email)
    await _age_sessions(db, nurse.id, 16)
    r = await client.get("/api/v1/me")
    assert r.status_code == 401 and r.json()["code"] == "idle"
    assert (await client.get("/api/v1/me")).json()["code"] == "unauthenticated"


async def test_activity_within_the_limit_keeps_the_session_and_pushes_the_limit_back(client, factory, db):
    clinic = await factory.clinic()
    nurse = await factory.user(clinic, "nurse")
    await login(client, nurse.email)
    await _age_sessions(db, nurse.id, 14)
    assert (await client.get("/api/v1/me")).status_code == 200
    row = await _session_row(db, nurse.id)
    assert row.ended_at is None
    async with db.sessionmaker() as s:
        idle = (await s.execute(text("SELECT now() - :t"), {"t": row.last_seen_at})).scalar_one()
    assert idle.total_seconds() < 60


async def test_background_polls_do_not_count_as_activity(client, factory, db):
    clinic = await factory.clinic()
    nurse = await factory.user(clinic, "nurse")
    await login(client, nurse.email)
    await _age_sessions(db, nurse.id, 10)

    async def idle_minutes() -> float:
        async with db.sessionmaker() as s:
            q = text("SELECT extract(epoch FROM now() - last_seen_at) / 60 FROM web_sessions WHERE user_id = :u")
            return float((await s.execute(q, {"u": nurse.id})).scalar_one())

    assert (await client.get("/api/v1/me", headers={"X-Clinic-Background": "1"})).status_code == 200
    assert await idle_minutes() >= 9.9
    assert (await client.get("/api/v1/me", headers={"Accept": "text/event-stream"})).status_code == 200
    assert await idle_minutes() >= 9.9
    assert (await client.get("/api/v1/me")).status_code == 200  # a person's click does count
    assert await idle_minutes() < 1


async def test_idle_limit_is_a_setting_and_a_clinic_may_set_its_own(settings, db, queue, factory):
    from clinic.app import create_app
    from tests.conftest import app_client

    clinic = await factory.clinic()
    nurse = await factory.user(clinic, "nurse")
    async with app_client(create_app(settings.with_(idle_timeout_minutes=5), db=db, queue=queue)) as c:
        await login(c, nurse.email)
        await _age_sessions(db, nurse.id, 6)
        r = await c.get("/account", follow_redirects=False)
        assert "idle=5" in r.headers["location"]
        assert "after 5 minutes idle" in (await c.get(r.headers["location"])).text

    strict = await factory.clinic(settings={"idle_timeout_minutes": 3})
    nurse2 = await factory.user(strict, "nurse")
    async with app_client(create_app(settings, db=db, queue=queue)) as c:
        await login(c, nurse2.email)
        # the page knows the clinic's limit, so it can leave the screen when the session ends
        assert '<meta name="clinic-idle-minutes" content="3">' in (await c.get("/account")).text
        await _age_sessions(db, nurse2.id, 4)
        assert (await c.get("/api/v1/me")).status_code == 401


async def test_every_sign_in_gets_a_new_session_id_and_logout_kills_the_old_one(client, factory):
    clinic = await factory.clinic()
    nurse = await factory.user(clinic, "nurse")
    await login(client, nurse.email)
    first = client.cookies.get("clinic_session")
    await login(client, nurse.email)
    second = client.cookies.get("clinic_session")
    assert first and second and first != second

    # signing in again ended the session the browser carried before
    assert (await client.get("/api/v1/me", headers=_cookie(first))).status_code == 401
    assert (await client.get("/api/v1/me", headers=_cookie(second))).status_code == 200

    r = await client.post("/logout", headers=csrf_headers(client), follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert client.cookies.get("clinic_session") is None
    # a copy of the cookie kept from before logout
    assert (await client.get("/api/v1/me", headers=_cookie(second))).status_code == 401
    r = await client.get("/account", headers=_cookie(second), follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"].startswith("/login")


async def test_session_cookie_flags_over_http_and_https(settings, db, queue, factory):
    from clinic.app import create_app
    from tests.conftest import app_client

    clinic = await factory.clinic()
    nurse = await factory.user(clinic, "nurse")
    async with app_client(create_app(settings, db=db, queue=queue)) as c:
        cookie = (await login(c, nurse.email)).headers["set-cookie"].lower()
    assert "clinic_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie
    assert "secure" not in cookie

    secure = settings.with_(base_url="https://clinic.example")
    async with app_client(create_app(secure, db=db, queue=queue), base_url="https://clinic.example") as c:
        page = await c.get("/login")
        assert "secure" in page.headers["set-cookie"].lower()  # the CSRF cookie too
        cookie = (await login(c, nurse.email)).headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" in cookie


async def test_signed_in_person_visiting_login_goes_to_work(client, factory):
    clinic = await factory.clinic()
    nurse = await factory.user(clinic, "nurse")
    await login(client, nurse.email)
    r = await client.get("/login", follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == "/board"
    r = await client.get("/login?next=/account", follow_redirects=False)
    assert r.headers["location"] == "/account"


async def test_next_never_leaves_the_site(client, factory):
    clinic = await factory.clinic()
    nurse = await factory.user(clinic, "nurse")
    for bad in ("//evil.example/x", "https://evil.example/", "javascript:alert(1)", "/\\evil.example"):
        await client.get("/login")
        r = await client.post(
            "/login",
            data={"email": nurse.email, "password": "correct-horse-battery", "next": bad, "_csrf_token": client.cookies.get("csrftoken")},
            follow_redirects=False,
        )
        assert r.status_code == 303 and r.headers["location"] == "/board", bad


async def test_tampered_and_unknown_credentials_never_cause_a_500(client, factory):
    clinic = await factory.clinic()
    nurse = await factory.user(clinic, "nurse")
    await login(client, nurse.email)
    good = client.cookies.get("clinic_session")
    client.cookies.clear()
    for value in (good[:-1] + ("A" if good[-1] != "A" else "B"), "x" * 500, "", "%00%ff", "ünïcødé", '"quoted"', "a=b; c"):
        r = await client.get("/account", headers=_cookie(value), follow_redirects=False)
        assert r.status_code == 302 and r.headers["location"].startswith("/login"), value
        r = await client.get("/api/v1/me", headers=_cookie(value))
        assert r.status_code == 401 and "detail" in r.json(), value
    for header in ("Bearer ct_not-a-real-token", "Bearer " + "y" * 400, "Bearer", "Basic Zm9vOmJhcg==", "Bearer ünï"):
        r = await client.get("/api/v1/me", headers={"Authorization": header.encode()})
        assert r.status_code == 401, header


async def test_tampered_csrf_cookie_is_replaced_instead_of_breaking_every_form(client, factory):
    clinic = await factory.clinic()
    nurse = await factory.user(clinic, "nurse")
    forged = {"Cookie": "csrftoken=forged-value-ünï".encode()}
    r = await client.post("/login", data={"email": nurse.email, "password": "correct-horse-battery", "_csrf_token": "forged"}, headers=forged)
    assert r.status_code == 403
    page = await client.get("/login", headers={"Cookie": b"csrftoken=0123456789abcdef"})
    assert page.status_code == 200 and "csrftoken=" in page.headers.get("set-cookie", "")
    assert "0123456789abcdef" not in page.text  # the forged value is not echoed into the form
    assert (await login(client, nurse.email)).status_code == 303


async def test_revoked_token_is_refused_on_its_next_request(client, factory):
    clinic = await factory.clinic()
    admin = await factory.user(clinic, "admin")
    sync = await factory.user(clinic, "integration")
    await login(client, admin.email)
    r = await client.post("/api/v1/tokens", json={"user_id": sync.id, "name": "EHR sync"}, headers=csrf_headers(client))
    assert r.status_code == 201
    token_id, raw = r.json()["id"], r.json()["token"]
    assert (await client.get("/api/v1/me", headers={**bearer(raw), "Cookie": ""})).json()["via"] == "bearer"

    assert (await client.post(f"/api/v1/tokens/{token_id}/revoke", headers=csrf_headers(client))).json()["active"] is False
    client.cookies.clear()
    r = await client.get("/api/v1/me", headers=bearer(raw))
    assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
