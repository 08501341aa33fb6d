"""API tokens: created by their owner (or by an admin for an integration account), shown once, stored hashed, scoped
to the owner's roles, revocable."""

from __future__ import annotations

import re

from sqlalchemy import text

from clinic.auth.rules import token_hash
from tests.factories import bearer, csrf_headers, login


async def test_admin_page_shows_a_new_token_once_and_it_works_with_the_owners_roles(client, factory, db):
    clinic = await factory.clinic()
    admin = await factory.user(clinic, "admin")
    billing = await factory.user(clinic, "integration", full_name="Bill Ing")
    await login(client, admin.email)

    r = await client.post("/admin/tokens", data={"user_id": str(billing.id), "name": "Clearinghouse", "_csrf_token": client.cookies.get("csrftoken")})
    assert r.status_code == 201
    raw = re.search(r'id="new-token-value"[^>]*value="(ct_[^"]+)"', r.text).group(1)
    assert "shown only this once" in r.text

    async with db.sessionmaker() as s:
        stored = (await s.execute(text("SELECT token_hash FROM api_tokens WHERE name = 'Clearinghouse'"))).scalar_one()
    assert stored == token_hash(raw) and raw not in stored

    listing = await client.get("/admin/tokens")
    assert "Clearinghouse" in listing.text and "Bill Ing" in listing.text and raw not in listing.text

    client.cookies.clear()
    me = await client.get("/api/v1/me", headers=bearer(raw))
    assert me.json()["roles"] == ["integration"] and me.json()["via"] == "bearer"
    assert (await client.get("/api/v1/staff", headers=bearer(raw))).status_code == 403  # an integration is not admin


async def test_revoke_from_the_page_with_htmx_swaps_the_row_and_the_token_stops(client, factory, db):
    clinic = await factory.clinic()
    admin = await factory.user(clinic, "admin")
    nurse = await factory.user(clinic, "nurse")
    raw = await factory.token(nurse)
    async with db.sessionmaker() as s:
        token_id = (await s.execute(text("SELECT id FROM api_tokens WHERE token_hash = :h"), {"h": token_hash(raw)})).scalar_one()
    await login(client, admin.email)

    r = await client.post(f"/admin/tokens/{token_id}/revoke", headers={"HX-Request": "true", **csrf_headers(client)})
    assert r.status_code == 200
    assert r.text.lstrip().startswith(f'<tr id="token-{token_id}"') and "Revoked" in r.text and "<html" not in r.text
    assert (await client.get("/api/v1/me", headers={**bearer(raw), "Cookie": ""})).status_code == 401

    # revoking twice is harmless and records one event
    r = await client.post(f"/admin/tokens/{token_id}/revoke", data={"_csrf_token": client.cookies.get("csrftoken")})
    assert r.status_code == 303 and r.headers["location"] == "/admin/tokens?done=revoked"
    async with db.sessionmaker() as s:
        n = (await s.execute(text("SELECT count(*) FROM audit_events WHERE action = 'token.revoke' AND entity_id = :e"), {"e": str(token_id)})).scalar_one()
    assert n == 1


async def test_token_page_refuses_missing_owner_and_deactivated_owner(client, factory):
    clinic = await factory.clinic()
    admin = await factory.user(clinic, "admin")
    gone = await factory.user(clinic, "integration", active=False)
    await login(client, admin.email)
    csrf = client.cookies.get("csrftoken")
    r = await client.post("/admin/tokens", data={"user_id": "", "name": "x", "_csrf_token": csrf})
    assert r.status_code == 422 and "Choose whose token" in r.text
    r = await client.post("/admin/tokens", data={"user_id": str(gone.id), "name": "x", "_csrf_token": csrf})
    assert r.status_code == 422 and "deactivated" in r.text
    # "³".isdigit() is true, but it names nobody: the page says so instead of failing
    r = await client.post("/admin/tokens", data={"user_id": "³", "name": "x", "_csrf_token": csrf})
    assert r.status_code == 422 and "whole number" in r.text


async def test_token_api_lists_without_secrets_and_keeps_clinics_apart(client, factory, db):
    clinic = await factory.clinic()
    admin = await factory.user(clinic, "admin")
    await factory.token(admin)
    await login(client, admin.email)
    elsewhere_admin = await factory.user(await factory.clinic(), "admin")
    elsewhere_token = await factory.token(elsewhere_admin)

    created = (await client.post("/api/v1/tokens", json={"name": "Reports"}, headers=csrf_headers(client))).json()
    assert created["token"].startswith("ct_") and created["active"] is True and created["user_id"] == admin.id

    listed = (await client.get("/api/v1/tokens")).json()
    assert {t["name"] for t in listed} == {"test", "Reports"}
    assert all("token" not in t and "token_hash" not in t for t in listed)
    assert (await client.get(f"/api/v1/tokens?user_id={admin.id}")).json()[0]["user_id"] == admin.id

    async with db.sessionmaker() as s:
        other_id = (await s.execute(text("SELECT id FROM api_tokens WHERE token_hash = :h"), {"h": token_hash(elsewhere_token)})).scalar_one()
    assert (await client.post(f"/api/v1/tokens/{other_id}/revoke", headers=csrf_headers(client))).status_code == 404
    assert (await client.get("/api/v1/me", headers={**bearer(elsewhere_token), "Cookie": ""})).status_code == 200
    r = await client.post("/api/v1/tokens", json={"user_id": elsewhere_admin.id}, headers=csrf_headers(client))
    assert r.status_code == 404

    async with db.sessionmaker() as s:
        row = (await s.execute(text("SELECT user_id, via, credential_id, changes FROM audit_events WHERE action = 'token.create' AND entity_id = :e"),
                               {"e": str(created["id"])})).one()
    assert row.user_id == admin.id and row.via == "session" and created["token"] not in str(row.changes)


async def test_token_last_used_is_recorded(client, factory, db):
    clinic = await factory.clinic()
    nurse = await factory.user(clinic, "nurse")
    raw = await factory.token(nurse)
    assert (await client.get("/api/v1/me", headers=bearer(raw))).status_code == 200
    async with db.sessionmaker() as s:
        used = (await s.execute(text("SELECT last_used_at FROM api_tokens WHERE token_hash = :h"), {"h": token_hash(raw)})).scalar_one()
    assert used is not None
