"""Never a 5xx from input: Unicode digits where numbers go, JSON nested a thousand deep, invalid UTF-8 in a JSON
string; each answers 400 or 422, naming the field where there is one, and writes nothing."""

from __future__ import annotations

import pytest

from tests.factories import bearer, login

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
        r = await client.post("/admin/protocols/1", data={"name": "x", "template_rows": digits, "_csrf_token": csrf})
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


# ---- names that reach an email header -------------------------------------------------------------------


INJECTIONS = ("Clinic\r\nBcc: everyone@evil.example", "Ann\nX-Evil: 1", "Ann\u2028Bcc: x", "Ann\x00")


async def test_a_line_break_in_a_name_that_reaches_a_header_is_refused_at_input(client, staff, db):
    from sqlalchemy import text

    clinic, users, tokens, patient = staff
    for value in INJECTIONS:
        for key in ("display_name", "name"):
            r = await client.patch("/api/v1/clinic", headers=tokens["admin"], json={key: value})
            assert r.status_code == 422 and r.json()["field"] == key and r.json()["code"] == "control_characters", (key, value)
        r = await client.post("/api/v1/patients", headers=tokens["front_desk"], json={
            "first_name": value, "last_name": "Lee", "date_of_birth": "1980-01-02", "phone": "555-0100", "notice_channel": "none"})
        assert r.status_code == 422 and r.json()["field"] == "first_name", value
        r = await client.patch(f"/api/v1/patients/{patient.id}", headers=tokens["front_desk"], json={"last_name": value})
        assert r.status_code == 422 and r.json()["field"] == "last_name", value
        r = await client.patch(f"/api/v1/staff/{users['nurse'].id}", headers=tokens["admin"], json={"full_name": value})
        assert r.status_code == 422 and r.json()["field"] == "full_name", value
    async with db.sessionmaker() as s:
        names = (await s.execute(text("SELECT display_name, name FROM clinics WHERE id = :c"), {"c": clinic.id})).one()
    assert not any("\n" in n or "\r" in n for n in names)


def test_email_headers_are_built_and_checked_by_the_email_library():
    from email import message_from_bytes, policy

    from clinic.notices.sender import Rendered, build_message

    rendered = Rendered(subject="Your visit on Tue 3 Dec is booked", text="Hello", html="<p>Hello</p>")
    sent = message_from_bytes(build_message(rendered, to="ann@example.org", sender_name="Clinique Été", sender="no-reply@clinic.example",
                                            mid="<notice.1.2@clinic.example>"), policy=policy.default)
    assert sent["From"].addresses[0].display_name == "Clinique Été" and sent["To"] == "ann@example.org"
    assert sent.get_body(("plain",)).get_content().strip() == "Hello"
    for name, to, subject in (("Clinic\r\nBcc: x@evil.example", "ann@example.org", "s"), ("Clinic", "ann@example.org\r\nBcc: x@evil.example", "s"),
                              ("Clinic", "ann@example.org", "s\nBcc: x@evil.example")):
        with pytest.raises(ValueError):
            build_message(Rendered(subject=subject, text="t", html="h"), to=to, sender_name=name, sender="no-reply@clinic.example", mid="<n.1.3@x>")


# ---- smaller promises -------------------------------------------------------------------------------------


async def test_a_clinics_idle_limit_is_accepted_up_to_the_servers_and_never_longer(client, staff, settings):
    clinic, users, tokens, patient = staff
    limit = settings.idle_timeout_minutes
    for minutes in (1, limit):
        r = await client.patch("/api/v1/clinic", headers=tokens["admin"], json={"settings": {"idle_timeout_minutes": minutes}})
        assert r.status_code == 200 and r.json()["settings"]["idle_timeout_minutes"] == minutes, r.text
    for minutes in (0, limit + 1, 720):
        r = await client.patch("/api/v1/clinic", headers=tokens["admin"], json={"settings": {"idle_timeout_minutes": minutes}})
        assert r.status_code == 422 and r.json()["field"] == "settings.idle_timeout_minutes", minutes


async def test_an_anonymous_unsafe_api_request_is_401_not_a_csrf_refusal(client):
    for method, path in (("POST", "/api/v1/patients"), ("PATCH", "/api/v1/clinic"), ("POST", "/api/v1/tokens"), ("DELETE", "/api/v1/shifts/1")):
        r = await client.request(method, path, json={})
        assert r.status_code == 401 and r.json()["code"] == "unauthenticated", (method, path, r.status_code)


async def test_dev_mail_shows_a_signed_in_person_only_their_own_clinics_mail(client, factory, settings, db, queue):
    import aiosmtplib

    from clinic.app import create_app
    from clinic.notices import devmail
    from clinic.notices.sender import Rendered, build_message, message_id
    from tests.conftest import app_client

    ours, theirs = await factory.clinic(), await factory.clinic()
    billing = await factory.user(ours, "billing")
    sink = devmail.start_dev_sink()
    try:
        for clinic, subject in ((ours, "Our clinic's notice"), (theirs, "Another clinic's notice")):
            msg = build_message(Rendered(subject=subject, text="t", html="h"), to="p@example.org", sender_name="C", sender="no-reply@clinic.example",
                                mid=message_id(1, clinic.id, settings.base_url))
            await aiosmtplib.send(msg, sender="no-reply@clinic.example", recipients=["p@example.org"], hostname="127.0.0.1", port=sink.port)
        async with app_client(create_app(settings.with_(dev_mail=True), db=db, queue=queue)) as c:
            await login(c, billing.email)
            page = (await c.get("/dev/mail")).text
    finally:
        sink.stop()
    assert "Our clinic&#39;s notice" in page or "Our clinic's notice" in page
    assert "Another clinic" not in page
