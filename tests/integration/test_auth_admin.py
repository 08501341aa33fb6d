"""Staff administration as an admin sees it, in the browser and through the API: every write audited."""

from __future__ import annotations

import re

from sqlalchemy import text

from tests.factories import PASSWORD, bearer, csrf_headers, login


async def _admin_client(client, factory):
    clinic = await factory.clinic()
    admin = await factory.user(clinic, "admin", full_name="Ada Admin")
    assert (await login(client, admin.email)).status_code == 303
    return clinic, admin


def _form(client, **fields):
    return {"_csrf_token": client.cookies.get("csrftoken"), **fields}


async def _audit(db, action: str, entity_id=None) -> list:
    async with db.sessionmaker() as s:
        q = "SELECT user_id, action, entity_id, changes FROM audit_events WHERE action = :a"
        params = {"a": action}
        if entity_id is not None:
            q += " AND entity_id = :e"
            params["e"] = str(entity_id)
        return list((await s.execute(text(q), params)).all())


async def test_staff_list_shows_name_email_roles_status_and_last_sign_in(client, factory):
    clinic, admin = await _admin_client(client, factory)
    nurse = await factory.user(clinic, "nurse", full_name="Nora Nurse", credentials="RN")
    gone = await factory.user(clinic, "billing", full_name="Gone Biller", active=False)
    other_clinic = await factory.clinic()
    await factory.user(other_clinic, "nurse", full_name="Someone Elsewhere")

    r = await client.get("/admin/staff")
    assert r.status_code == 200
    page = r.text
    assert "Nora Nurse" in page and nurse.email in page and "RN" in page
    assert "Gone Biller" in page and "Deactivated" in page
    assert "Someone Elsewhere" not in page  # another clinic's staff never shows
    # the admin signed in just now; the nurse never has
    row = re.search(r"<tr[^>]*>\s*<td data-label=\"Name\"><a href=\"/admin/staff/%d\">Ada Admin.*?</tr>" % admin.id, page, re.S)
    assert row and "never" not in row.group(0)
    row = re.search(r"<a href=\"/admin/staff/%d\">Nora Nurse.*?</tr>" % nurse.id, page, re.S)
    assert row and "never" in row.group(0)
    assert f"/admin/staff/{gone.id}" in page


async def test_create_staff_member_then_they_can_sign_in(client, factory, db):
    clinic, admin = await _admin_client(client, factory)
    r = await client.post(
        "/admin/staff",
        data=_form(
            client, full_name="  Priya   Patel ", email="Priya@Example.org", credentials="MD", npi="1234567893",
            is_therapist="1", roles=["prescriber", "nurse"], password="a-long-initial-pass",
        ),
    )
    assert r.status_code == 303
    new_id = int(re.search(r"/admin/staff/(\d+)\?done=created", r.headers["location"]).group(1))
    page = (await client.get(r.headers["location"])).text
    assert "Account created" in page and "Priya Patel" in page and "priya@example.org" in page

    rows = await _audit(db, "staff.create", new_id)
    assert len(rows) == 1 and rows[0].user_id == admin.id
    assert rows[0].changes["roles"] == ["nurse", "prescriber"] and "password" not in str(rows[0].changes)

    client.cookies.clear()
    assert (await login(client, "priya@example.org", "a-long-initial-pass")).status_code == 303
    assert (await client.get("/api/v1/me")).json()["roles"] == ["nurse", "prescriber"]


async def test_create_refuses_short_password_bad_npi_no_roles_and_duplicate_email_keeping_the_form(client, factory, db):
    clinic, admin = await _admin_client(client, factory)
    base = dict(full_name="Ned Nurse", email="ned@example.org", roles=["nurse"], password="long-enough-pass")

    r = await client.post("/admin/staff", data=_form(client, **{**base, "password": "short-pass"}))
    assert r.status_code == 422 and "at least 12 characters" in r.text
    assert 'value="ned@example.org"' in r.text and "short-pass" not in r.text  # typed values kept, password never echoed

    r = await client.post("/admin/staff", data=_form(client, **{**base, "npi": "1234567890"}))
    assert r.status_code == 422 and "check digit" in r.text

    r = await client.post("/admin/staff", data=_form(client, **{k: v for k, v in base.items() if k != "roles"}))
    assert r.status_code == 422 and "Choose at least one role." in r.text

    r = await client.post("/admin/staff", data=_form(client, **{**base, "email": admin.email.upper()}))
    assert r.status_code == 409 and "already exists" in r.text
    assert await _audit(db, "staff.create") == []


async def test_edit_roles_details_and_the_change_applies_on_the_next_request(client, factory, settings, db, queue):
    from clinic.app import create_app
    from tests.conftest import app_client

    clinic, admin = await _admin_client(client, factory)
    person = await factory.user(clinic, "front_desk", full_name="Fran Desk")
    async with app_client(create_app(settings, db=db, queue=queue)) as theirs:
        await login(theirs, person.email)
        assert (await theirs.get("/api/v1/me")).json()["roles"] == ["front_desk"]

        r = await client.post(f"/admin/staff/{person.id}/roles", data=_form(client, roles=["front_desk", "billing"]))
        assert r.status_code == 303 and r.headers["location"].endswith("done=roles")
        assert (await theirs.get("/api/v1/me")).json()["roles"] == ["billing", "front_desk"]

    r = await client.post(f"/admin/staff/{person.id}/details", data=_form(client, full_name="Frances Desk", credentials="CMA", npi=""))
    assert r.status_code == 303
    page = (await client.get(f"/admin/staff/{person.id}")).text
    assert "Frances Desk" in page and "CMA" in page

    (roles_row,) = await _audit(db, "staff.roles", person.id)
    assert roles_row.changes == {"roles": [["front_desk"], ["billing", "front_desk"]]}
    (details_row,) = await _audit(db, "staff.update", person.id)
    assert details_row.changes["full_name"] == ["Fran Desk", "Frances Desk"]


async def test_admin_cannot_lock_themselves_out(client, factory, db):
    clinic, admin = await _admin_client(client, factory)
    r = await client.post(f"/admin/staff/{admin.id}/roles", data=_form(client, roles=["nurse"]))
    assert r.status_code == 422 and "cannot remove your own admin role" in r.text
    r = await client.post(f"/admin/staff/{admin.id}/deactivate", data=_form(client))
    assert r.status_code == 422 and "cannot deactivate your own account" in r.text
    assert (await client.get("/admin/staff")).status_code == 200


async def test_deactivate_ends_sessions_and_tokens_at_once_and_reactivate_lets_them_back(client, factory, settings, db, queue):
    from clinic.app import create_app
    from tests.conftest import app_client

    clinic, admin = await _admin_client(client, factory)
    nurse = await factory.user(clinic, "nurse")
    token = await factory.token(nurse)
    async with app_client(create_app(settings, db=db, queue=queue)) as theirs:
        await login(theirs, nurse.email)
        assert (await theirs.get("/account")).status_code == 200
        assert (await theirs.get("/api/v1/me", headers=bearer(token))).status_code == 200

        r = await client.post(f"/admin/staff/{nurse.id}/deactivate", data=_form(client))
        assert r.status_code == 303 and "done=deactivated" in r.headers["location"]

        r = await theirs.get("/account", follow_redirects=False)
        assert r.status_code == 302 and r.headers["location"].startswith("/login")
        assert (await theirs.get("/api/v1/me")).status_code == 401
        assert (await theirs.get("/api/v1/me", headers=bearer(token))).status_code == 401
        assert (await login(theirs, nurse.email)).status_code == 401  # same answer as a wrong password

        r = await client.post(f"/admin/staff/{nurse.id}/reactivate", data=_form(client))
        assert r.status_code == 303
        assert (await login(theirs, nurse.email)).status_code == 303
        # tokens revoked at deactivation stay revoked
        assert (await theirs.get("/api/v1/me", headers=bearer(token))).status_code == 401
    assert len(await _audit(db, "staff.deactivate", nurse.id)) == 1
    assert len(await _audit(db, "staff.activate", nurse.id)) == 1


async def test_reset_password_signs_the_person_out_and_the_new_password_works(client, factory, settings, db, queue):
    from clinic.app import create_app
    from tests.conftest import app_client

    clinic, admin = await _admin_client(client, factory)
    nurse = await factory.user(clinic, "nurse")
    async with app_client(create_app(settings, db=db, queue=queue)) as theirs:
        await login(theirs, nurse.email)
        r = await client.post(
            f"/admin/staff/{nurse.id}/password", data=_form(client, password="brand-new-password", confirm_password="brand-new-passwor")
        )
        assert r.status_code == 422 and "differ" in r.text
        r = await client.post(
            f"/admin/staff/{nurse.id}/password", data=_form(client, password="brand-new-password", confirm_password="brand-new-password")
        )
        assert r.status_code == 303
        assert (await theirs.get("/api/v1/me")).status_code == 401
        assert (await login(theirs, nurse.email, PASSWORD)).status_code == 401
        assert (await login(theirs, nurse.email, "brand-new-password")).status_code == 303
    (row,) = await _audit(db, "staff.reset_password", nurse.id)
    assert "brand-new" not in str(row.changes)


async def test_unknown_or_other_clinic_staff_is_404(client, factory):
    clinic, admin = await _admin_client(client, factory)
    elsewhere = await factory.user(await factory.clinic(), "nurse")
    assert (await client.get(f"/admin/staff/{elsewhere.id}")).status_code == 404
    r = await client.post(f"/admin/staff/{elsewhere.id}/deactivate", data=_form(client))
    assert r.status_code == 404
    assert (await client.get(f"/api/v1/staff/{elsewhere.id}")).status_code == 404


async def test_staff_api_twins(client, factory, db):
    clinic = await factory.clinic()
    admin = await factory.user(clinic, "admin")
    h = bearer(await factory.token(admin))

    r = await client.post(
        "/api/v1/staff",
        json={"email": "bill@example.org", "full_name": "Bill Ing", "roles": ["billing"], "password": "billing-password-1"},
        headers=h,
    )
    assert r.status_code == 201, r.text
    person = r.json()
    assert person["roles"] == ["billing"] and person["active"] is True and person["last_sign_in"] is None
    assert set(person["created_at"]) == {"utc", "local"}

    r = await client.post("/api/v1/staff", json={"email": "x@example.org", "full_name": "X", "roles": ["chef"], "password": "long-password-123"}, headers=h)
    assert r.status_code == 422 and r.json()["field"] == "roles"
    r = await client.post("/api/v1/staff", json={"email": "y@example.org", "full_name": "Y", "roles": ["nurse"], "password": "short"}, headers=h)
    assert r.status_code == 422 and r.json()["field"] == "password"

    listed = (await client.get("/api/v1/staff", headers=h)).json()
    assert {p["email"] for p in listed} == {admin.email, "bill@example.org"}

    pid = person["id"]
    r = await client.patch(f"/api/v1/staff/{pid}", json={"credentials": "CPC"}, headers=h)
    assert r.status_code == 200 and r.json()["credentials"] == "CPC" and r.json()["full_name"] == "Bill Ing"
    r = await client.put(f"/api/v1/staff/{pid}/roles", json={"roles": ["billing", "front_desk"]}, headers=h)
    assert r.json()["roles"] == ["billing", "front_desk"]
    r = await client.post(f"/api/v1/staff/{pid}/reset-password", json={"password": "another-password-1"}, headers=h)
    assert r.status_code == 200
    r = await client.post(f"/api/v1/staff/{pid}/deactivate", headers=h)
    assert r.status_code == 200 and r.json()["active"] is False
    assert (await client.get("/api/v1/staff?active=false", headers=h)).json()[0]["id"] == pid
    r = await client.post(f"/api/v1/staff/{pid}/reactivate", headers=h)
    assert r.json()["active"] is True

    async with db.sessionmaker() as s:
        actions = [a for (a,) in (await s.execute(text("SELECT action FROM audit_events WHERE entity_id = :e AND entity = 'staff_user' ORDER BY id"), {"e": str(pid)})).all()]
    assert actions == ["staff.create", "staff.update", "staff.roles", "staff.reset_password", "staff.deactivate", "staff.activate"]


async def test_account_page_changes_own_password_and_signs_out_other_devices(client, factory, settings, db, queue):
    from clinic.app import create_app
    from tests.conftest import app_client

    clinic = await factory.clinic()
    nurse = await factory.user(clinic, "nurse")
    await login(client, nurse.email)
    async with app_client(create_app(settings, db=db, queue=queue)) as other_device:
        await login(other_device, nurse.email)
        r = await client.post("/account/password", data=_form(client, current_password="wrong-password-x", new_password="my-new-password-1", confirm_password="my-new-password-1"))
        assert r.status_code == 422 and "current password is not right" in r.text
        r = await client.post("/account/password", data=_form(client, current_password=PASSWORD, new_password="my-new-password-1", confirm_password="my-new-password-1"))
        assert r.status_code == 303
        assert "password was changed" in (await client.get(r.headers["location"])).text
        assert (await other_device.get("/api/v1/me")).status_code == 401
    assert (await client.get("/api/v1/me")).status_code == 200  # this browser stays signed in
    assert len(await _audit(db, "auth.password_change_failed")) == 1
    assert len(await _audit(db, "auth.password_change")) == 1


async def test_admin_forms_without_csrf_token_are_refused(client, factory):
    clinic, admin = await _admin_client(client, factory)
    r = await client.post("/admin/staff", data={"full_name": "Eve", "email": "eve@example.org", "roles": "admin", "password": "eve-passphrase-2030"})
    assert r.status_code == 403
    r = await client.post("/api/v1/staff", json={"email": "eve@example.org", "full_name": "Eve", "roles": ["admin"], "password": "eve-passphrase-2030"})
    assert r.status_code == 403 and r.json()["code"] == "csrf"
    r = await client.post("/api/v1/staff", json={"email": "eve@example.org", "full_name": "Eve", "roles": ["admin"], "password": "eve-passphrase-2030"}, headers=csrf_headers(client))
    assert r.status_code == 201
