"""Never a 5xx from input: Unicode digits where numbers go, JSON nested a thousand deep, invalid UTF-8 in a JSON
string; each answers 400 or 422, naming the field where there is one, and writes nothing."""

from __future__ import annotations

import pytest

from tests.factories import bearer, csrf_headers, login

SUPERSCRIPTS = ("³", "¹²³", "²")


@pytest.fixture
async def staff(client, factory):
    clinic = await factory.clinic()
    users = {role: await factory.user(clinic, role) for role in ("admin", "front_desk", "billing", "nurse")}
    tokens = {role: bearer(await factory.token(u)) for role, u in users.items()}
    patient = await factory.patient(clinic)
    return clinic, users, tokens, patient


def _refused(r, field: str | None = None) -> bool:
    if r.status_code not in (400, 422):
        return False
    if field is None or not r.headers.get("content-type", "").startswith("application/json"):
        return True
    return r.json().get("field") == field


async def test_unicode_digits_in_query_and_json_are_refused_naming_the_field(client, staff):
    clinic, users, tokens, patient = staff
    for digits in SUPERSCRIPTS:
        r = await client.get(f"/api/v1/availability?session_type={digits}&from=2030-01-07&to=2030-01-08", headers=tokens["front_desk"])
        assert _refused(r, "session_type"), (digits, r.status_code, r.text[:200])
        r = await client.post("/api/v1/appointments", headers=tokens["front_desk"],
                              json={"patient_id": patient.id, "session_type": digits, "chair_id": 1, "starts_at": "2030-01-07T10:00:00"})
        assert _refused(r, "session_type"), (digits, r.status_code, r.text[:200])
        r = await client.post("/api/v1/staff", headers=tokens["admin"],
                              json={"email": "n@clinic.example", "full_name": "N", "roles": ["prescriber"], "password": "a-long-initial-pass",
                                    "npi": digits * 4})
        assert _refused(r, "npi"), (digits, r.status_code, r.text[:200])
        r = await client.post("/api/v1/estimates", headers=tokens["billing"], json={"patient_id": patient.id, "visits": digits})
        assert _refused(r, "visits"), (digits, r.status_code, r.text[:200])
        r = await client.patch("/api/v1/clinic", headers=tokens["admin"], json={"settings": {"idle_timeout_minutes": digits}})
        assert _refused(r, "settings.idle_timeout_minutes"), (digits, r.status_code, r.text[:200])


async def test_unicode_digits_in_forms_are_refused(client, staff):
    clinic, users, tokens, patient = staff
    await login(client, users["admin"].email)
    csrf = client.cookies.get("csrftoken")
    for digits in SUPERSCRIPTS:
        r = await client.post("/admin/tokens", data={"user_id": digits, "name": "x", "_csrf_token": csrf})
        assert r.status_code == 422, (digits, r.status_code)
        r = await client.post("/admin/staff", data={"full_name": "N", "email": "n@clinic.example", "roles": "prescriber", "npi": digits * 4,
                                                   "password": "a-long-initial-pass", "_csrf_token": csrf})
        assert r.status_code == 422, (digits, r.status_code)
        r = await client.post("/admin/shifts", data={"user_id": digits, "role": "nurse", "first_day": "2030-01-07", "last_day": "2030-01-07",
                                                    "start": "08:00", "end": "12:00", "_csrf_token": csrf})
        assert r.status_code == 422, (digits, r.status_code)
        r = await client.get(f"/schedule/book?session_type={digits}")
        assert r.status_code in (200, 422), (digits, r.status_code)
        r = await client.post(f"/admin/protocols/1", data={"name": "x", "template_rows": digits, "_csrf_token": csrf})
        assert r.status_code in (404, 422), (digits, r.status_code)
    client.cookies.clear()
    await login(client, users["billing"].email)
    csrf = client.cookies.get("csrftoken")
    for digits in SUPERSCRIPTS:
        for field in ("visits", "session_type_id"):
            r = await client.post(f"/billing/patients/{patient.id}/gfe-request", data={field: digits, "_csrf_token": csrf})
            assert r.status_code == 422, (field, digits, r.status_code)


async def test_a_huge_row_count_in_a_form_is_refused_at_once(client, staff):
    clinic, users, tokens, patient = staff
    await login(client, users["admin"].email)
    r = await client.post("/admin/protocols/1", data={"name": "x", "template_rows": "999999999", "_csrf_token": client.cookies.get("csrftoken")})
    assert r.status_code in (404, 422)


async def test_json_nested_a_thousand_deep_and_invalid_utf8_are_400(client, staff):
    clinic, users, tokens, patient = staff
    deep = "[" * 1000 + "]" * 1000
    for path in ("/api/v1/patients", "/api/v1/appointments", "/api/v1/staff", "/api/v1/estimates"):
        token = tokens["admin"] if "staff" in path else tokens["billing"] if "estimates" in path else tokens["front_desk"]
        for body in (deep.encode(), ('{"first_name": ' + deep + "}").encode(), b'{"first_name": "Ann\xff\xfe"}', b'{"first_name": "\xed\xa0\x80"}'):
            r = await client.post(path, content=body, headers={**token, "content-type": "application/json"})
            assert r.status_code in (400, 422), (path, body[:30], r.status_code, r.text[:200])
            if b"Ann" in body:
                assert r.json()["field"] == "first_name", r.text


async def test_invalid_utf8_in_a_query_or_a_form_is_no_server_error(client, staff):
    clinic, users, tokens, patient = staff
    assert (await client.get("/api/v1/patients?q=%FF%FE", headers=tokens["front_desk"])).status_code in (200, 400, 422)
    r = await client.post("/login", content=b"email=%FF%FE&password=%ED%A0%80", headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code < 500
