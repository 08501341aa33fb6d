"""Every list or search of patient data leaves an audit event (who, when, which query, how many rows, which patients),
in the API and on the pages; and the front desk's board shows who is where and the phase, nothing clinical."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import text

from clinic.timeutil import utcnow
from tests.factories import appointment, bearer, login


async def _reads(db, action: str, clinic_id: int) -> list:
    async with db.sessionmaker() as s:
        q = text("SELECT user_id, via, credential_id, changes FROM audit_events WHERE action = :a AND clinic_id = :c ORDER BY id")
        return list((await s.execute(q, {"a": action, "c": clinic_id})).all())


async def test_api_lists_and_searches_are_audited_with_query_rows_and_patients(client, factory, db):
    clinic = await factory.clinic()
    admin = await factory.user(clinic, "admin")
    billing = await factory.user(clinic, "billing")
    ann = await factory.patient(clinic, first_name="Ann", last_name="Zed")
    bob = await factory.patient(clinic, first_name="Bob", last_name="Zed")
    await appointment(factory, clinic, ann, utcnow() + timedelta(days=1))
    # in a chair now: on the board whatever the hour
    await appointment(factory, clinic, bob, utcnow() - timedelta(minutes=10), status="arrived", checked_in_at=utcnow() - timedelta(minutes=5))
    h_admin, h_billing = bearer(await factory.token(admin)), bearer(await factory.token(billing))
    async with db.sessionmaker() as s:
        billing_token = (await s.execute(text("SELECT id FROM api_tokens WHERE user_id = :u"), {"u": billing.id})).scalar_one()

    assert (await client.get("/api/v1/patients?q=Zed&limit=100", headers=h_admin)).status_code == 200
    (search,) = await _reads(db, "read.patients", clinic.id)
    assert search.user_id == admin.id and search.changes == {"query": {"q": "Zed", "limit": 100}, "rows": 2, "patient_ids": sorted([ann.id, bob.id])}

    day = (utcnow() + timedelta(days=1)).astimezone(ZoneInfo(clinic.timezone)).date().isoformat()
    assert (await client.get(f"/api/v1/appointments?date={day}", headers=h_admin)).status_code == 200
    (listed,) = await _reads(db, "read.appointments", clinic.id)
    assert listed.changes["patient_ids"] == [ann.id] and listed.changes["rows"] == 1 and listed.changes["query"]["day"] == day

    for path, action in (("/api/v1/coverage", "read.coverage"), (f"/api/v1/claims?patient_id={ann.id}", "read.claims"),
                         ("/api/v1/charges", "read.charges"), ("/api/v1/balances", "read.balances"),
                         ("/api/v1/estimates?status=draft", "read.estimates"), ("/api/v1/notices", "read.notices")):
        assert (await client.get(path, headers=h_billing)).status_code == 200, path
        (event,) = await _reads(db, action, clinic.id)
        assert event.user_id == billing.id and event.via == "bearer" and event.credential_id == billing_token, path
        assert set(event.changes) == {"query", "rows", "patient_ids"}, path
    (claims,) = await _reads(db, "read.claims", clinic.id)
    assert claims.changes["query"] == {"patient_id": ann.id}

    assert (await client.get("/api/v1/board", headers=h_admin)).status_code == 200
    (board,) = await _reads(db, "read.board", clinic.id)
    assert board.changes["query"] == {"view": "api"} and bob.id in board.changes["patient_ids"]


async def test_pages_listing_patients_are_audited_too(client, factory, db):
    clinic = await factory.clinic()
    front = await factory.user(clinic, "front_desk")
    billing = await factory.user(clinic, "billing")
    ann = await factory.patient(clinic, first_name="Ann", last_name="Zed")
    await appointment(factory, clinic, ann, utcnow() + timedelta(hours=1))
    await login(client, front.email)
    for path in ("/patients?q=Zed", "/schedule", "/board"):
        assert (await client.get(path)).status_code == 200, path
    assert [r.changes["patient_ids"] for r in await _reads(db, "read.patients", clinic.id)] == [[ann.id]]
    assert any(ann.id in r.changes["patient_ids"] for r in await _reads(db, "read.appointments", clinic.id))
    assert [r.changes["query"] for r in await _reads(db, "read.board", clinic.id)] == [{"view": "page"}]
    client.cookies.clear()
    await login(client, billing.email)
    for path in ("/billing", "/notices"):
        assert (await client.get(path)).status_code == 200, path
    assert await _reads(db, "read.billing_dashboard", clinic.id) and await _reads(db, "read.notices", clinic.id)


async def test_the_front_desk_board_shows_who_and_where_not_vitals_or_alerts(client, factory, db):
    from clinic.monitoring.models import Alert

    clinic = await factory.clinic()
    front = await factory.user(clinic, "front_desk")
    nurse = await factory.user(clinic, "nurse")
    patient = await factory.patient(clinic, first_name="Morgan", last_name="Lee")
    appt = await appointment(factory, clinic, patient, utcnow() - timedelta(minutes=20), status="arrived", checked_in_at=utcnow() - timedelta(minutes=15))
    await factory.add(Alert(clinic_id=clinic.id, appointment_id=appt.id, level="urgent", code="spo2_low", message="SpO2 88 % is below 92 %"))
    front_h, nurse_h = bearer(await factory.token(front)), bearer(await factory.token(nurse))

    full = (await client.get("/api/v1/board", headers=nurse_h)).json()
    card = next(c for row in full["chairs"] for c in row["current"])
    assert card["open_alerts"][0]["message"] == "SpO2 88 % is below 92 %"

    minimal = (await client.get("/api/v1/board", headers=front_h)).json()
    card = next(c for row in minimal["chairs"] for c in row["current"])
    assert card["patient"] == "Morgan L." and card["phase"] and "open_alerts" not in card and "next_check" not in card
    assert "SpO2" not in str(minimal) and "open_alerts" not in minimal

    await login(client, front.email)
    page = (await client.get("/board")).text
    assert "Morgan L." in page and "SpO2" not in page and "URGENT" not in page and f"/sessions/{appt.id}" not in page
    client.cookies.clear()
    await login(client, nurse.email)
    page = (await client.get("/board")).text
    assert "SpO2 88 %" in page and f"/sessions/{appt.id}" in page
