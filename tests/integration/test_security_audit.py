"""The audit trail: append-only in the database, filterable and paged in the API and on the admin page, one clinic at a time."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from clinic.audit.models import AuditEvent
from tests.factories import bearer, login


async def test_the_database_refuses_update_delete_and_truncate_of_audit_rows(owner_db):
    # even for the tables' owner; the app's own role may not even try (tests/integration/test_db_roles.py)
    async with owner_db.engine.connect() as conn:
        trans = await conn.begin()
        row_id = (await conn.execute(text("INSERT INTO audit_events (at, action, entity, changes) VALUES (now(), 'test.row', 't', '{}') RETURNING id"))).scalar_one()
        for statement in (
            "UPDATE audit_events SET changes = '{\"forged\": true}' WHERE id = :id",
            "UPDATE audit_events SET at = now() - interval '1 year' WHERE id = :id",
            "DELETE FROM audit_events WHERE id = :id",
            "TRUNCATE audit_events",
        ):
            with pytest.raises(DBAPIError, match="append-only"):
                async with conn.begin_nested():
                    await conn.execute(text(statement), {"id": row_id})
        assert (await conn.execute(text("SELECT action FROM audit_events WHERE id = :id"), {"id": row_id})).scalar_one() == "test.row"
        await trans.rollback()


async def _seed_events(factory, clinic, user, n: int, **kw) -> None:
    await factory.add(*[
        AuditEvent(clinic_id=clinic.id, user_id=user.id, action=kw.get("action", "chart.read"), entity="patient",
                   entity_id=str(i), patient_id=kw.get("patient_id"), at=kw.get("at", datetime.now(timezone.utc)), changes={"i": i})
        for i in range(n)
    ])


async def test_api_filters_by_action_prefix_user_patient_and_time(client, factory):
    clinic = await factory.clinic()
    admin = await factory.user(clinic, "admin")
    nurse = await factory.user(clinic, "nurse")
    h = bearer(await factory.token(admin))
    long_ago = datetime(2020, 1, 1, 12, tzinfo=timezone.utc)
    await _seed_events(factory, clinic, nurse, 2, action="chart.read", patient_id=41)
    await _seed_events(factory, clinic, nurse, 1, action="appointment.book", patient_id=42)
    await _seed_events(factory, clinic, admin, 1, action="staff.create", at=long_ago)
    await _seed_events(factory, clinic, admin, 1, action="chart_x.read")  # "chart_" must not match the prefix "chart."

    async def actions(query: str) -> list[str]:
        r = await client.get(f"/api/v1/audit-events?{query}", headers=h)
        assert r.status_code == 200, r.text
        return [e["action"] for e in r.json()]

    assert await actions("action=chart.") == ["chart.read", "chart.read"]
    assert await actions(f"user_id={nurse.id}") == ["appointment.book", "chart.read", "chart.read"]
    assert await actions("patient_id=42") == ["appointment.book"]
    assert await actions("until=2020-01-02T00:00:00%2B00:00") == ["staff.create"]
    assert "staff.create" not in await actions("since=2020-01-02T00:00:00%2B00:00")

    event = (await client.get("/api/v1/audit-events?patient_id=42", headers=h)).json()[0]
    assert set(event) >= {"id", "at", "at_local", "user_id", "ip", "action", "entity", "entity_id", "patient_id", "changes"}
    assert event["at_local"].endswith(("-05:00", "-04:00"))  # the clinic's zone, with offset


async def test_api_pages_with_a_link_header_and_never_shows_another_clinic(client, factory):
    clinic = await factory.clinic()
    admin = await factory.user(clinic, "admin")
    h = bearer(await factory.token(admin))
    await _seed_events(factory, clinic, admin, 7, action="page.test")
    other = await factory.clinic()
    await _seed_events(factory, other, await factory.user(other, "admin"), 3, action="page.test")

    seen = []
    url = "/api/v1/audit-events?action=page.&limit=3"
    while url:
        r = await client.get(url, headers=h)
        seen += [e["changes"]["i"] for e in r.json()]
        link = r.headers.get("link")
        url = re.match(r"<([^>]+)>", link).group(1) if link else None
    assert seen == [6, 5, 4, 3, 2, 1, 0]


async def test_audit_api_is_admin_only(client, factory):
    clinic = await factory.clinic()
    for role in ("front_desk", "nurse", "prescriber", "billing"):
        token = await factory.token(await factory.user(clinic, role))
        r = await client.get("/api/v1/audit-events", headers=bearer(token))
        assert r.status_code == 403 and r.json()["code"] == "role"


async def test_audit_page_filters_and_pages(client, factory):
    clinic = await factory.clinic()
    admin = await factory.user(clinic, "admin", full_name="Ada Admin")
    nurse = await factory.user(clinic, "nurse", full_name="Nora Nurse")
    await _seed_events(factory, clinic, nurse, 60, action="chart.read", patient_id=77)
    await _seed_events(factory, clinic, nurse, 1, action="appointment.book", at=datetime.now(timezone.utc) - timedelta(days=3))
    await login(client, admin.email)

    first = (await client.get("/admin/audit?action=chart.")).text
    assert first.count("<code>chart.read</code>") == 50 and "Nora Nurse" in first
    older = re.search(r'href="/admin/audit\?([^"]*before=\d+[^"]*)"', first).group(1).replace("&amp;", "&")
    assert "action=chart." in older
    second = (await client.get(f"/admin/audit?{older}")).text
    assert second.count("<code>chart.read</code>") == 10
    assert "before=" not in second.split('class="pager"')[1]  # no older page after the last
    newer = re.search(r'href="/admin/audit\?([^"]*after=\d+[^"]*)"', second).group(1).replace("&amp;", "&")
    back = (await client.get(f"/admin/audit?{newer}")).text
    assert back.count("<code>chart.read</code>") == 50

    # "to" is a whole day in the clinic's zone: two days ago includes the event from three days ago, not today's
    two_days_ago = (datetime.now(timezone.utc) - timedelta(days=2)).astimezone(ZoneInfo(clinic.timezone)).date()
    by_day = (await client.get(f"/admin/audit?user_id={nurse.id}&from=2000-01-01&to={two_days_ago}")).text
    assert "<code>appointment.book</code>" in by_day and "<code>chart.read</code>" not in by_day

    by_patient = (await client.get("/admin/audit?patient_id=77")).text
    assert "<code>appointment.book</code>" not in by_patient and "chart.read" in by_patient

    nothing = (await client.get("/admin/audit?action=nothing.")).text
    assert "No audit entries match these filters." in nothing


async def test_audit_page_refuses_bad_filter_values_without_a_500(client, factory):
    clinic = await factory.clinic()
    admin = await factory.user(clinic, "admin")
    await login(client, admin.email)
    for query in ("from=yesterday", "user_id=abc", "patient_id=-1", "before=x", "action=" + "%25" * 200):
        r = await client.get(f"/admin/audit?{query}")
        assert r.status_code in (200, 400, 422), query


async def test_admin_writes_and_sign_ins_leave_audit_rows_with_who_and_where(client, factory, db):
    clinic = await factory.clinic()
    admin = await factory.user(clinic, "admin")
    await login(client, admin.email)
    csrf = client.cookies.get("csrftoken")
    r = await client.post("/admin/staff", data={"_csrf_token": csrf, "full_name": "New Nurse", "email": "new@example.org", "roles": "nurse", "password": "nurse-passphrase-14"})
    new_id = int(r.headers["location"].split("/")[3].split("?")[0])
    await client.post(f"/admin/staff/{new_id}/deactivate", data={"_csrf_token": csrf})
    await client.post("/logout", data={"_csrf_token": csrf})
    async with db.sessionmaker() as s:
        rows = (await s.execute(text("SELECT action, user_id, ip, clinic_id FROM audit_events WHERE clinic_id = :c ORDER BY id"), {"c": clinic.id})).all()
    assert [r.action for r in rows] == ["auth.login", "staff.create", "staff.deactivate", "auth.logout"]
    assert all(r.user_id == admin.id and r.ip == "127.0.0.1" for r in rows)
