"""A signature belongs to the person who gave it: nobody mints a token in another person's name, integration accounts
are programs that never sign, every audit event names the credential it came with, and a new password revokes tokens."""

from __future__ import annotations

from sqlalchemy import text

from tests.factories import PASSWORD, Factory, bearer, csrf_headers, login
from tests.integration.test_cli import run_clinic


async def _rows(db, sql: str, **params) -> list:
    async with db.sessionmaker() as s:
        return list((await s.execute(text(sql), params)).all())


async def test_an_admin_cannot_mint_a_token_in_a_clinicians_name(client, factory, db):
    clinic = await factory.clinic()
    admin = await factory.user(clinic, "admin")
    prescriber = await factory.user(clinic, "prescriber")
    await login(client, admin.email)
    r = await client.post("/api/v1/tokens", json={"user_id": prescriber.id, "name": "forged"}, headers=csrf_headers(client))
    assert r.status_code == 403 and r.json()["code"] == "not_owner" and r.json()["field"] == "user_id"
    r = await client.post("/admin/tokens", data={"user_id": str(prescriber.id), "name": "forged", "_csrf_token": client.cookies.get("csrftoken")})
    assert r.status_code == 403
    assert await _rows(db, "SELECT id FROM api_tokens WHERE user_id = :u", u=prescriber.id) == []


async def test_a_token_cannot_mint_tokens(client, factory, db):
    clinic = await factory.clinic()
    nurse = await factory.user(clinic, "nurse")
    raw = await factory.token(nurse)
    r = await client.post("/api/v1/tokens", json={"name": "more"}, headers=bearer(raw))
    assert r.status_code == 403 and r.json()["code"] == "browser_required"
    assert len(await _rows(db, "SELECT id FROM api_tokens WHERE user_id = :u", u=nurse.id)) == 1


async def test_a_person_mints_and_revokes_their_own_tokens_on_their_account_page(client, factory, db):
    clinic = await factory.clinic()
    prescriber = await factory.user(clinic, "prescriber")
    await login(client, prescriber.email)
    r = await client.post("/account/tokens", data={"name": "My scripts", "_csrf_token": client.cookies.get("csrftoken")})
    assert r.status_code == 201 and "shown only this once" in r.text
    (token_id,) = [i for (i,) in await _rows(db, "SELECT id FROM api_tokens WHERE user_id = :u AND name = 'My scripts'", u=prescriber.id)]
    r = await client.post(f"/account/tokens/{token_id}/revoke", data={"_csrf_token": client.cookies.get("csrftoken")})
    assert r.status_code == 303
    assert (await _rows(db, "SELECT revoked_at IS NOT NULL FROM api_tokens WHERE id = :i", i=token_id))[0][0]


async def test_every_audit_event_names_the_session_or_token_it_came_with(client, factory, db):
    clinic = await factory.clinic()
    nurse = await factory.user(clinic, "nurse")
    patient = await factory.patient(clinic)
    raw = await factory.token(nurse)
    (token_id,) = [i for (i,) in await _rows(db, "SELECT id FROM api_tokens WHERE user_id = :u", u=nurse.id)]
    assert (await client.get(f"/api/v1/patients/{patient.id}", headers=bearer(raw))).status_code == 200
    await login(client, nurse.email)
    assert (await client.get(f"/api/v1/patients/{patient.id}")).status_code == 200
    (session_id,) = [i for (i,) in await _rows(db, "SELECT id FROM web_sessions WHERE user_id = :u AND ended_at IS NULL", u=nurse.id)]
    reads = await _rows(db, "SELECT via, credential_id FROM audit_events WHERE action = 'chart.read' AND patient_id = :p ORDER BY id", p=patient.id)
    assert [tuple(r) for r in reads] == [("bearer", token_id), ("session", session_id)]
    (signed_in,) = await _rows(db, "SELECT via, credential_id FROM audit_events WHERE action = 'auth.login' AND user_id = :u", u=nurse.id)
    assert tuple(signed_in) == ("session", session_id)
    listed = (await client.get("/api/v1/audit-events?action=chart.", headers=bearer(await factory.token(await factory.user(clinic, "admin"))))).json()
    assert {(e["via"], e["credential_id"]) for e in listed} == {("bearer", token_id), ("session", session_id)}


async def test_an_integration_account_holds_tokens_an_admin_makes_reads_and_never_signs(client, factory, db):
    clinic = await factory.clinic()
    admin = await factory.user(clinic, "admin")
    patient = await factory.patient(clinic)
    await login(client, admin.email)
    h = csrf_headers(client)
    r = await client.post("/api/v1/staff", json={"email": "ehr@clinic.example", "full_name": "EHR sync", "roles": ["integration"], "password": ""}, headers=h)
    assert r.status_code == 201, r.text
    sync_id = r.json()["id"]
    r = await client.post("/api/v1/staff", json={"email": "mixed@clinic.example", "full_name": "Mixed", "roles": ["integration", "prescriber"],
                                                  "password": "a-long-initial-pass"}, headers=h)
    assert r.status_code == 422 and r.json()["field"] == "roles"
    r = await client.post("/api/v1/tokens", json={"user_id": sync_id, "name": "EHR"}, headers=h)
    assert r.status_code == 201
    raw = r.json()["token"]
    client.cookies.clear()
    sync = bearer(raw)
    assert (await client.get(f"/api/v1/patients/{patient.id}", headers=sync)).status_code == 200
    r = await client.post("/api/v1/appointments/1/discharge", json={}, headers=sync)
    assert r.status_code == 403 and r.json()["code"] == "role"
    # no browser sign-in: no password works, not even an empty one
    for password in ("", PASSWORD, "!"):
        assert (await login(client, "ehr@clinic.example", password)).status_code == 401


async def test_the_command_line_mints_tokens_for_integration_accounts_only(engine_db, owner_database_url, database_url):
    f = Factory(engine_db)
    clinic = await f.clinic()
    nurse = await f.user(clinic, "nurse")
    sync = await f.user(clinic, "integration")
    env = {"DATABASE_OWNER_URL": owner_database_url, "DATABASE_URL": database_url}
    r = run_clinic("create-token", "--email", nurse.email, env=env)
    assert r.returncode == 2 and "created by that person" in r.stderr
    r = run_clinic("create-token", "--email", sync.email, env=env)
    assert r.returncode == 0 and r.stdout.strip().startswith("ct_"), r.stderr


async def test_a_password_reset_or_change_revokes_the_persons_api_tokens(client, factory, db):
    clinic = await factory.clinic()
    admin = await factory.user(clinic, "admin")
    nurse = await factory.user(clinic, "nurse")
    reset_away = await factory.token(nurse)
    await login(client, admin.email)
    r = await client.post(f"/api/v1/staff/{nurse.id}/reset-password", json={"password": "a-fresh-passphrase-1"}, headers=csrf_headers(client))
    assert r.status_code == 200
    client.cookies.clear()
    assert (await client.get("/api/v1/me", headers=bearer(reset_away))).status_code == 401

    changed_away = await factory.token(nurse)
    await login(client, nurse.email, "a-fresh-passphrase-1")
    r = await client.post("/account/password", data={"current_password": "a-fresh-passphrase-1", "new_password": "another-passphrase-2",
                                                     "confirm_password": "another-passphrase-2", "_csrf_token": client.cookies.get("csrftoken")})
    assert r.status_code == 303
    assert (await client.get("/api/v1/me")).status_code == 200  # this browser stays signed in
    assert (await client.get("/api/v1/me", headers={**bearer(changed_away), "Cookie": ""})).status_code == 401


async def test_common_and_breached_passwords_are_refused_for_new_and_changed_passwords(client, factory):
    clinic = await factory.clinic()
    admin = await factory.user(clinic, "admin")
    nurse = await factory.user(clinic, "nurse")
    await login(client, admin.email)
    for weak in ("aaaaaaaaaaaa", "password1234"):
        r = await client.post("/api/v1/staff", json={"email": "new@clinic.example", "full_name": "New", "roles": ["nurse"], "password": weak},
                              headers=csrf_headers(client))
        assert r.status_code == 422 and r.json()["code"] == "password_common" and r.json()["field"] == "password", weak
        r = await client.post(f"/api/v1/staff/{nurse.id}/reset-password", json={"password": weak}, headers=csrf_headers(client))
        assert r.status_code == 422 and r.json()["code"] == "password_common", weak
    r = await client.post("/account/password", data={"current_password": PASSWORD, "new_password": "password1234",
                                                     "confirm_password": "password1234", "_csrf_token": client.cookies.get("csrftoken")})
    assert r.status_code == 422 and "common or breached" in r.text
