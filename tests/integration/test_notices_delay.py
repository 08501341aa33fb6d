"""Staff see when notices stall: the billing, admin and notices pages say since when, past the clinic's own limit."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest

from clinic.notices import service as notices
from clinic.notices.models import Notice
from clinic.timeutil import utcnow
from tests.factories import bearer, csrf_headers, login

NY = ZoneInfo("America/New_York")


async def waiting(factory, clinic, send_after, *, status: str = "pending") -> Notice:
    n = Notice(clinic_id=clinic.id, kind="staff_digest", dedupe_key=f"delay-test:{clinic.id}:{send_after.isoformat()}:{status}",
               to_address="staff@test.clinic", status=status, send_after=send_after)
    await factory.add(n)
    return n


async def since(db, clinic, now):
    async with db.sessionmaker() as s:
        return await notices.delayed_since(s, clinic=clinic, now=now)


async def test_a_notice_due_longer_ago_than_the_limit_is_delayed_and_not_a_second_sooner(db, factory):
    clinic = await factory.clinic()
    now = utcnow().replace(microsecond=0)
    await waiting(factory, clinic, now - timedelta(minutes=10))
    assert await since(db, clinic, now) is None  # exactly the default 10 minutes: not yet
    assert await since(db, clinic, now + timedelta(seconds=1)) == (now - timedelta(minutes=10)).astimezone(NY).strftime("%H:%M")


async def test_the_oldest_waiting_notice_counts_and_sent_failed_cancelled_or_future_ones_do_not(db, factory):
    clinic = await factory.clinic()
    now = utcnow().replace(microsecond=0)
    for status in ("sent", "failed", "cancelled"):
        await waiting(factory, clinic, now - timedelta(hours=2), status=status)
    await waiting(factory, clinic, now + timedelta(hours=1))  # a reminder not due yet
    assert await since(db, clinic, now) is None
    claimed = await waiting(factory, clinic, now - timedelta(minutes=40), status="sending")  # a worker died mid-send
    await waiting(factory, clinic, now - timedelta(minutes=15))
    assert await since(db, clinic, now) == claimed.send_after.astimezone(NY).strftime("%H:%M")


async def test_the_clinics_own_limit_applies_and_an_older_day_is_named(db, factory):
    clinic = await factory.clinic(settings={"notice_delay_minutes": 30})
    now = utcnow().replace(microsecond=0)
    await waiting(factory, clinic, now - timedelta(minutes=30))
    assert await since(db, clinic, now) is None
    assert await since(db, clinic, now + timedelta(seconds=1)) is not None
    yesterday = now - timedelta(days=1, minutes=5)
    await waiting(factory, clinic, yesterday)
    local = yesterday.astimezone(NY)
    assert await since(db, clinic, now) == f"{local:%a} {local.day} {local:%b} {local:%H:%M}"


async def test_billing_admin_and_notices_pages_show_the_delay(client, db, factory):
    clinic = await factory.clinic()
    admin = await factory.user(clinic, "admin", "billing")
    await login(client, admin.email)
    for path in ("/billing", "/admin", "/notices"):
        page = await client.get(path, follow_redirects=True)
        assert page.status_code == 200 and "Notices are delayed" not in page.text, path
    due = utcnow().replace(microsecond=0) - timedelta(minutes=11)
    await waiting(factory, clinic, due)
    expected = f"Notices are delayed since {due.astimezone(NY):%H:%M}"
    for path in ("/billing", "/admin", "/notices"):
        page = await client.get(path, follow_redirects=True)
        assert page.status_code == 200 and expected in page.text, path


async def test_an_admin_sets_the_limit_where_the_other_clinic_settings_are(client, factory):
    clinic = await factory.clinic()
    admin = await factory.user(clinic, "admin")
    await login(client, admin.email)
    page = await client.get("/admin/clinic")
    assert 'name="notice_delay_minutes" min="1" max="1440" value="10"' in page.text
    form = {"name": clinic.name, "display_name": clinic.display_name, "timezone": clinic.timezone, "phone": "", "address": "",
            "nurse_ratio": "3", "grid_minutes": "15", "late_cancel_hours": "24", "reminder_hours": "48", "notice_delay_minutes": "25"}
    for d in range(5):
        form |= {f"open-{d}": "1", f"from-{d}-0": "09:00", f"to-{d}-0": "17:00"}
    r = await client.post("/admin/clinic", data=form, headers={**csrf_headers(client), "HX-Request": "true"})
    assert r.status_code == 200, r.text
    assert 'name="notice_delay_minutes" min="1" max="1440" value="25"' in (await client.get("/admin/clinic")).text
    r = await client.post("/admin/clinic", data=form | {"notice_delay_minutes": "0"}, headers={**csrf_headers(client), "HX-Request": "true"})
    assert r.status_code == 422 and 'value="25"' in (await client.get("/admin/clinic")).text


@pytest.mark.parametrize("value", [0, 1441, "soon"])
async def test_a_limit_out_of_range_is_refused_naming_the_setting(client, factory, value):
    clinic = await factory.clinic()
    admin = await factory.user(clinic, "admin")
    r = await client.patch("/api/v1/clinic", json={"settings": {"notice_delay_minutes": value}}, headers=bearer(await factory.token(admin)))
    assert r.status_code == 422 and r.json()["field"] == "settings.notice_delay_minutes"
    r = await client.get("/api/v1/clinic", headers=bearer(await factory.token(admin)))
    assert "notice_delay_minutes" not in r.json()["settings"]
