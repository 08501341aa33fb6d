"""No one let in, nothing shown to the wrong person, nothing about a patient in the logs.

Route x role access is tested exhaustively in tests/integration/test_role_matrix.py (every registered route, every
role, session and bearer, CSRF on every unsafe route); these tests take an attacker's point of view on the rest:
session fixation, cookie flags, cross-site requests, idle sessions, cost links, headers on every page, the templates,
and what ends up in the logs during a whole day's work.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from datetime import timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import quote

import httpx
from arq.worker import Worker
from sqlalchemy import text

from clinic.app import create_app
from clinic.notices import links
from clinic.notices.service import add_link
from clinic.security import CSP
from clinic.timeutil import utcnow
from tests.conftest import app_client
from tests.factories import PASSWORD, appointment, login
from tests.reliability.conftest import ROLE_PREFERENCE, booking_day, demo_database, local_iso, make_world
from tests.reliability.helpers import html_get_routes, ids_for, rows, scalar
from workers.settings import worker_settings

ROOT = Path(__file__).resolve().parents[2]
PATIENT = ("Zelphine", "Quorrington", "1963-07-29", "zelphine.quorrington@example.org", "555-867-5309")
PHI = [*PATIENT, "07/29/1963", "1963/07/29", "5558675309", "867-5309"]
PHI += [quote(x, safe="") for x in PHI if quote(x, safe="") != x]  # as they appear in a URL
INLINE_SCRIPT = re.compile(r"<script\b(?![^>]*\bsrc=)[^>]*>", re.I)
HANDLER_ATTR = re.compile(r"<[a-z][^>]*\son[a-z]+\s*=", re.I)
JS_URL = re.compile(r"""(?:href|src|action|formaction)\s*=\s*["']?\s*javascript:""", re.I)


def set_cookies(r: httpx.Response) -> dict[str, str]:
    """Set-Cookie headers by cookie name, attributes and all."""
    out = {}
    for raw in r.headers.get_list("set-cookie"):
        name = raw.split("=", 1)[0].strip()
        out[name] = raw
    return out


def cookie_attrs(raw: str) -> dict[str, str]:
    c = SimpleCookie()
    c.load(raw)
    morsel = next(iter(c.values()))
    return {k.lower(): str(v) for k, v in morsel.items() if v not in ("", False)} | {"_value": morsel.value}


# ---- sessions -----------------------------------------------------------------------------------------------


async def test_a_planted_session_id_is_never_the_one_that_signs_in(engine_db, settings, live_server, world):
    app = live_server(settings)
    victim = world.users["nurse"]
    attacker = world.users["billing"]
    async with httpx.AsyncClient(base_url=app.url) as mallory:
        assert (await login(mallory, attacker.email)).status_code == 303
        planted = mallory.cookies["clinic_session"]
    for fixed in (planted, "attacker-chosen-session-id-0000000000000000"):
        async with httpx.AsyncClient(base_url=app.url) as browser:
            browser.cookies.set("clinic_session", fixed, domain="127.0.0.1")
            r = await login(browser, victim.email)
            assert r.status_code == 303
            issued = cookie_attrs(set_cookies(r)["clinic_session"])["_value"]
            assert issued != fixed
        async with httpx.AsyncClient(base_url=app.url, cookies={"clinic_session": issued}) as browser:
            assert (await browser.get("/api/v1/me")).json()["email"] == victim.email
        # the planted id does not carry the victim's sign-in
        async with httpx.AsyncClient(base_url=app.url, cookies={"clinic_session": fixed}) as replay:
            r = await replay.get("/api/v1/me")
            assert r.status_code == 401 or r.json()["email"] != victim.email


async def test_session_cookie_flags_on_the_wire(engine_db, settings, live_server, world):
    for base_url, secure in (("http://clinic.example", False), ("https://clinic.example", True)):
        app = live_server(settings.with_(base_url=base_url))
        async with httpx.AsyncClient(base_url=app.url) as c:
            csrf = cookie_attrs(set_cookies(await c.get("/login"))["csrftoken"])
            # behind TLS the browser would send the Secure cookie back; this client speaks plain HTTP, so it is sent by hand
            r = await c.post("/login", headers={"Cookie": f"csrftoken={csrf['_value']}"}, follow_redirects=False,
                             data={"email": world.users["front_desk"].email, "password": PASSWORD, "_csrf_token": csrf["_value"]})
            assert r.status_code == 303, r.text[:200]
        session = cookie_attrs(set_cookies(r)["clinic_session"])
        assert session["httponly"] and session["samesite"].lower() == "lax" and session["path"] == "/"
        assert "domain" not in session and "expires" not in session and "max-age" not in session  # ends with the browser
        assert bool(session.get("secure")) is secure and bool(csrf.get("secure")) is secure
        assert csrf["samesite"].lower() == "lax"
        assert len(session["_value"]) >= 32


async def test_signing_out_kills_the_session_server_side(engine_db, settings, live_server, world):
    app = live_server(settings)
    async with httpx.AsyncClient(base_url=app.url) as c:
        await login(c, world.users["front_desk"].email)
        stolen = c.cookies["clinic_session"]
        r = await c.post("/logout", headers={"x-csrftoken": c.cookies["csrftoken"]})
        assert r.status_code == 303
    async with httpx.AsyncClient(base_url=app.url, cookies={"clinic_session": stolen}) as thief:
        assert (await thief.get("/api/v1/me")).status_code == 401
        assert (await thief.get("/schedule")).headers["location"].startswith("/login")


async def test_an_idle_session_is_over_even_for_whoever_copied_the_cookie(engine_db, settings, live_server, world):
    app = live_server(settings)
    async with httpx.AsyncClient(base_url=app.url) as c:
        await login(c, world.users["nurse"].email)
        cookie = c.cookies["clinic_session"]
        assert (await c.get("/board")).status_code == 200
        async with engine_db.engine.begin() as conn:
            await conn.execute(text("UPDATE web_sessions SET last_seen_at = now() - interval '16 minutes' WHERE user_id = :u"),
                               {"u": world.users["nurse"].id})
        r = await c.get("/board")
        assert r.status_code in (302, 303) and "reason=idle" in r.headers["location"] and "next=%2Fboard" in r.headers["location"] or "next=/board" in r.headers["location"]
    async with httpx.AsyncClient(base_url=app.url, cookies={"clinic_session": cookie}) as copy:
        r = await copy.get("/api/v1/me")
        assert r.status_code == 401
    logged = await rows(engine_db, "SELECT action FROM audit_events WHERE user_id = :u AND action = 'auth.idle_logoff'", u=world.users["nurse"].id)
    assert logged


# ---- cross-site requests -----------------------------------------------------------------------------------------


async def test_cross_site_posts_are_refused_and_write_nothing(engine_db, settings, live_server, world):
    app = live_server(settings)
    async with httpx.AsyncClient(base_url=app.url) as c:
        await login(c, world.users["front_desk"].email)
        good = c.cookies["csrftoken"]
        body = {"first_name": "Eve", "last_name": "Forged", "date_of_birth": "1970-01-01", "sex": "female"}
        before = await scalar(engine_db, "SELECT count(*) FROM patients WHERE clinic_id = :c", c=world.clinic.id)
        attempts = [
            {},  # a plain cross-site form: the cookie rides along, no token
            {"x-csrftoken": "forged-token"},
            {"x-csrftoken": good[:-4] + "AAAA"},
            {"Authorization": "Bearer not-a-real-token"},  # a bogus bearer header does not switch CSRF off for a cookie
            {"Origin": "https://evil.example", "Referer": "https://evil.example/x"},
        ]
        for headers in attempts:
            r = await c.post("/patients", data=body, headers=headers)
            assert r.status_code in (401, 403), (headers, r.status_code)
            r = await c.post("/api/v1/patients", json=body, headers=headers)
            assert r.status_code in (401, 403), (headers, r.status_code)
        after = await scalar(engine_db, "SELECT count(*) FROM patients WHERE clinic_id = :c", c=world.clinic.id)
        assert after == before
        # the same request with the page's token goes through: the refusals above were about the token
        r = await c.post("/api/v1/patients", json=body, headers={"x-csrftoken": good})
        assert r.status_code == 201, r.text


# ---- cost links in notices ---------------------------------------------------------------------------------------


async def _link(engine_db, world, *, days: float = 7):
    patient = world.patients[0]
    async with engine_db.sessionmaker() as s:
        link = await add_link(s, clinic=world.clinic, patient=patient, kind="balance")
        link.expires_at = utcnow() + timedelta(days=days)
        s.add(link)
        await s.commit()
    return link, patient


async def test_cost_links_refuse_tampering_and_expiry_and_say_nothing_about_the_patient(engine_db, settings, world):
    link, patient = await _link(engine_db, world)
    other, _ = await _link(engine_db, world)
    secret = settings.secret_key
    token = links.sign(secret, link.id, link.expires_at)
    lid, exp, sig = token.split(".")
    forged = [
        f"{other.id}.{exp}.{sig}",  # someone else's link with this signature
        f"{lid}.{int(exp) + 86400 * 365}.{sig}",  # a longer life
        f"{lid}.{exp}.{sig[:-1]}{'A' if sig[-1] != 'A' else 'B'}",
        f"{lid}.{exp}.", f"{lid}.{exp}", f"{lid}..{sig}", f".{exp}.{sig}", f"{lid}.{exp}.{sig}.x", "x" * 5000,
        f"{lid}.{exp}.{sig}%00", f"-{lid}.{exp}.{sig}", f"{lid}.-{exp}.{sig}", f"{lid}.{exp}.{sig.upper()}",
        links.sign("another-secret-entirely-xxxxxxxxxxxx", link.id, link.expires_at),
        f"99999999999999999999.{exp}.{sig}", "٣.٣.٣",
    ]
    # the token says "valid" but the clinic shortened the link in the database; and a token already past its time
    async with engine_db.sessionmaker() as s:
        await s.execute(text("UPDATE cost_links SET expires_at = now() - interval '1 minute' WHERE id = :i"), {"i": other.id})
        await s.commit()
    shortened = links.sign(secret, other.id, utcnow() + timedelta(days=3))
    past = links.sign(secret, link.id, utcnow() - timedelta(seconds=1))
    app = create_app(settings, db=engine_db)
    async with app_client(app) as c:
        for bad in forged + [shortened, past]:
            for r in (await c.get(f"/e/{bad}"), await c.post(f"/e/{bad}", data={"date_of_birth": patient.date_of_birth.isoformat()})):
                assert r.status_code in (403, 404), (bad[:60], r.status_code)
                for secret_bit in (patient.first_name, patient.last_name, patient.email, patient.date_of_birth.isoformat()):
                    assert secret_bit not in r.text
        # the untouched link still works, so the refusals above were about the tampering
        r = await c.get(f"/e/{token}")
        assert r.status_code == 200 and patient.last_name not in r.text
        assert r.headers["referrer-policy"] == "no-referrer" and r.headers["cache-control"] == "no-store"


async def test_five_wrong_dates_of_birth_lock_a_link_even_when_guessed_at_once(engine_db, settings, world):
    link, patient = await _link(engine_db, world)
    token = links.sign(settings.secret_key, link.id, link.expires_at)
    app = create_app(settings, db=engine_db)
    dob = patient.date_of_birth
    guesses = [(dob + timedelta(days=i + 1)).isoformat() for i in range(12)] + ["not a date", "", "1980-02-30", "\x00"]
    async with app_client(app) as c:
        await c.get(f"/e/{token}")
        csrf = c.cookies.get("csrftoken")
        answers = await asyncio.gather(*(c.post(f"/e/{token}", data={"date_of_birth": g, "_csrf_token": csrf}) for g in guesses))
        assert all(r.status_code in (403, 422) for r in answers), [r.status_code for r in answers]
        assert sum(r.status_code == 422 for r in answers) <= 4, "more than five guesses were weighed"
        state = (await rows(engine_db, "SELECT failed_attempts, locked_at FROM cost_links WHERE id = :i", i=link.id))[0]
        assert state.locked_at is not None and state.failed_attempts == 5
        # locked for everyone: the right date of birth, from another browser, no longer opens it
        async with app_client(app) as other:
            await other.get(f"/e/{token}")
            r = await other.post(f"/e/{token}", data={"date_of_birth": dob.isoformat(), "_csrf_token": other.cookies.get("csrftoken")})
            assert r.status_code == 403 and patient.last_name not in r.text


# ---- what every page sends ---------------------------------------------------------------------------------------


def check_page(url: str, r: httpx.Response) -> list[str]:
    problems = []
    h = r.headers
    csp = h.get("content-security-policy", "")
    directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
    script_src = directives.get("script-src", directives.get("default-src", []))
    if "'self'" not in script_src or any(x in script_src for x in ("'unsafe-inline'", "'unsafe-eval'", "*", "data:")):
        problems.append(f"{url}: script-src {script_src}")
    if directives.get("frame-ancestors") != ["'none'"]:
        problems.append(f"{url}: frame-ancestors {directives.get('frame-ancestors')}")
    if directives.get("object-src") != ["'none'"]:
        problems.append(f"{url}: object-src {directives.get('object-src')}")
    if h.get("x-content-type-options") != "nosniff":
        problems.append(f"{url}: x-content-type-options {h.get('x-content-type-options')}")
    if h.get("referrer-policy") not in ("no-referrer", "same-origin", "strict-origin"):
        problems.append(f"{url}: referrer-policy {h.get('referrer-policy')}")
    if h.get("cache-control") != "no-store":
        problems.append(f"{url}: cache-control {h.get('cache-control')}")
    for pattern, what in ((INLINE_SCRIPT, "inline <script>"), (HANDLER_ATTR, "on* handler"), (JS_URL, "javascript: URL")):
        if m := pattern.search(r.text):
            problems.append(f"{url}: {what}: {m.group(0)[:80]}")
    return problems


async def test_every_page_every_role_sends_the_security_headers_and_no_inline_script(_servers, redis_url):
    async with demo_database(_servers[0], redis_url) as demo:
        app = create_app(demo.settings, db=demo.db)
        routes = html_get_routes(app)
        problems: list[str] = []
        seen = 0
        async with app_client(app) as c:
            # pages nobody signed in may see, and the error pages anyone may hit
            for url in ("/login", "/login?reason=idle&idle=15", "/e/1.1.forged", "/no-such-page", "/patients/2000000000"):
                r = await c.get(url)
                problems += check_page(url, r)
                seen += 1
            for role in ROLE_PREFERENCE:
                c.cookies.clear()
                c.cookies.set("clinic_session", demo.sessions[role])
                for path, permission in routes:
                    fills = [{}]
                    for p in re.findall(r"\{(\w+)\}", path):
                        fills = [f | {p: i} for f in fills for i in (await ids_for(demo.db, p))[:2]]
                    for fill in fills:
                        url = path
                        for k, v in fill.items():
                            url = url.replace("{" + k + "}", str(v))
                        r = await c.get(url)
                        if "text/html" in r.headers.get("content-type", ""):
                            problems += check_page(f"{role} {url}", r)
                            seen += 1
            static = await c.get("/static/js/app.js")
            assert static.headers.get("x-content-type-options") == "nosniff"
        assert seen > 60, f"only {seen} pages were checked"
        assert not problems, "\n".join(problems[:40])


def test_templates_hold_no_inline_script_handlers_or_javascript_urls():
    problems = []
    for path in sorted((ROOT / "templates").rglob("*.html")):
        if "emails" in path.parts:
            continue  # mail is not a web page: no script runs there at all
        body = path.read_text()
        for pattern, what in ((INLINE_SCRIPT, "inline <script>"), (HANDLER_ATTR, "on* handler"), (JS_URL, "javascript: URL")):
            for m in pattern.finditer(body):
                problems.append(f"{path.relative_to(ROOT)}: {what}: {m.group(0)[:80]}")
        # hx-on:* runs strings as script (eval), which the CSP forbids anyway; keep behaviour in static JS
        if re.search(r"\shx-on[:-]", body):
            problems.append(f"{path.relative_to(ROOT)}: hx-on attribute")
    assert not problems, "\n".join(problems)
    assert "'unsafe-inline'" not in CSP.split("script-src")[1].split(";")[0]


# ---- the logs --------------------------------------------------------------------------------------------------


class Collect(logging.Handler):
    """Every record the app's, the server's and the worker's loggers emit, formatted as written (exceptions included)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple[str, str]] = []
        self._seen: set[int] = set()

    def emit(self, record: logging.LogRecord) -> None:
        if id(record) in self._seen:  # the same record reaching us through a logger and the root
            return
        self._seen.add(id(record))
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.records.append((record.name, text))


# loggers that may have been set not to propagate (uvicorn's own logging config does that) are listened to directly
SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "arq", "arq.worker", "arq.jobs", "litestar", "clinic")
QUIET = ("sqlalchemy", "httpx", "httpcore", "hpack", "aiosmtpd", "mail.log", "asyncio")


async def test_a_days_work_leaves_no_patient_details_in_the_logs(engine_db, settings, live_server, smtp_sink, redis):
    """Registration, search as you type, booking, check-in, vitals (and a refused entry), coverage and its notice,
    the worker sending mail, the patient's cost link with wrong dates of birth, a sign-in attempt with the patient's
    email: every log record of the app, uvicorn and arq is searched for the patient's name, DOB, email and phone."""
    world = await make_world(engine_db)
    settings = settings.with_(smtp_url=smtp_sink.url)
    app = live_server(settings)  # Litestar sets up logging as the app is built; listen after that
    collected = Collect()
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in SERVER_LOGGERS)]
    saved = [(lg, lg.level, lg.disabled) for lg in loggers] + [(logging.getLogger(n), logging.getLogger(n).level, None) for n in QUIET]
    for lg in loggers:
        lg.addHandler(collected)
        lg.setLevel(logging.DEBUG)
        lg.disabled = False
    for name in QUIET:
        # the test's own HTTP client and SMTP sink, and the SQL echo no deployment turns on, are not the app's logs
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        await _a_days_work(engine_db, settings, app, smtp_sink, world)
    finally:
        for lg in loggers:
            lg.removeHandler(collected)
        for lg, level, disabled in saved:
            lg.setLevel(level)
            if disabled is not None:
                lg.disabled = disabled
    records = collected.records
    assert any(name.startswith("uvicorn.access") for name, _ in records), "uvicorn's access log was not captured"
    assert any(name.startswith("arq") for name, _ in records), "the worker's log was not captured"
    leaks = sorted({f"{name}: {line[:200]}" for name, line in records for secret in PHI if secret.lower() in line.lower()})
    assert not leaks, "patient details in the logs:\n" + "\n".join(leaks[:30])


async def _a_days_work(engine_db, settings, app, smtp_sink, world) -> None:
    name_first, name_last, dob, email, phone = PATIENT
    async with httpx.AsyncClient(base_url=app.url, timeout=20) as desk, httpx.AsyncClient(base_url=app.url, timeout=20) as nurse, \
            httpx.AsyncClient(base_url=app.url, timeout=20) as billing, httpx.AsyncClient(base_url=app.url, timeout=20) as stranger:
        await login(desk, world.users["front_desk"].email)
        await login(nurse, world.users["nurse"].email)
        await login(billing, world.users["billing"].email)
        dh = {"x-csrftoken": desk.cookies["csrftoken"], "HX-Request": "true"}
        r = await desk.post("/patients", headers=dh, data={
            "first_name": name_first, "last_name": name_last, "date_of_birth": dob, "sex": "female", "email": email, "phone": phone,
            "notice_channel": "email", "notice_consent": "1", "rems_enrolled_on": "2025-01-02", "rems_patient_id": "RP-556677"})
        assert r.status_code == 200, r.text[:300]
        pid = await scalar(engine_db, "SELECT id FROM patients WHERE clinic_id = :c AND last_name = :n", c=world.clinic.id, n=name_last)
        for q in (name_last, name_first[:4], dob, "07/29/1963", phone, "5558675309", email):
            assert (await desk.get("/patients/search", params={"q": q}, headers={"HX-Request": "true"})).status_code == 200
            assert (await desk.get("/api/v1/patients", params={"q": q})).status_code == 200
        assert (await desk.get(f"/patients/{pid}")).status_code == 200
        # a refused edit carrying the details again
        r = await desk.post(f"/patients/{pid}/edit", headers=dh, data={"first_name": name_first, "last_name": name_last, "date_of_birth": dob,
                                                                      "sex": "female", "email": f"{email}@@", "phone": phone})
        assert r.status_code == 422
        r = await desk.post("/api/v1/appointments", headers={"x-csrftoken": desk.cookies["csrftoken"]}, json={
            "patient_id": pid, "session_type": "esketamine", "chair_id": world.chairs[0], "starts_at": local_iso(booking_day(), 10),
            "planned_dose_mg": 56, "escort_name": "Sam Rivera"})
        assert r.status_code == 201, r.text

        # today's session, on the tablet
        async with engine_db.sessionmaker() as s:
            from clinic.patients.models import Patient

            patient = await s.get(Patient, pid)
        today = await appointment(world.factory, world.clinic, patient, utcnow().replace(microsecond=0) - timedelta(minutes=15))
        nh = {"x-csrftoken": nurse.cookies["csrftoken"], "HX-Request": "true"}
        r = await nurse.post(f"/sessions/{today.id}/check-in", headers=nh, data={"fasting_confirmed": "1", "escort_confirmed": "1", "escort_name": "Sam Rivera"})
        assert r.status_code == 200, r.text[:300]
        for values in ({"systolic": "128", "diastolic": "82", "heart_rate": "74"}, {"systolic": "400", "diastolic": "82", "note": f"{name_first} {dob}"}):
            await nurse.post(f"/sessions/{today.id}/entries", headers=nh, data=values | {"client_id": str(uuid.uuid4())})
        assert (await nurse.get(f"/sessions/{today.id}")).status_code == 200
        assert (await nurse.get(f"/api/v1/appointments/{today.id}/fhir")).status_code == 200

        # billing: coverage and its estimate notice
        bh = {"x-csrftoken": billing.cookies["csrftoken"]}
        r = await billing.put(f"/api/v1/coverage/{pid}", headers=bh, json={"kind": "self_pay"})
        assert r.status_code < 500, r.text[:300]

        # the cost link, with a patient guessing
        link, _ = await _link(engine_db, type("W", (), {"patients": [patient], "clinic": world.clinic})())
        token = links.sign(settings.secret_key, link.id, link.expires_at)
        await stranger.get(f"/e/{token}")
        for guess in ("1963-07-28", dob):
            await stranger.post(f"/e/{token}", data={"date_of_birth": guess, "_csrf_token": stranger.cookies.get("csrftoken")})
        # someone tries the patient's email as a staff sign-in
        await stranger.get("/login")
        await stranger.post("/login", data={"email": email, "password": f"{name_last}{dob}", "_csrf_token": stranger.cookies.get("csrftoken")})

    # the worker sends whatever the day queued (in this process, so its logs are captured too)
    worker = Worker(**(worker_settings(settings, db=engine_db) | {"burst": True, "poll_delay": 0.05}))
    try:
        from workers import jobs
        from arq.connections import create_pool
        from clinic.queue import redis_settings

        pool = await create_pool(redis_settings(settings.redis_url))
        # the booking's follow-up first: it writes the notices and queues them, its reminder for days ahead
        async with engine_db.sessionmaker() as s:
            from clinic.scheduling import changes

            followups = await changes.pending(s)
        for change_id in followups:
            await jobs.follow_schedule_change({"db": engine_db, "redis": pool}, change_id)
        # reminders wait in the queue for days; a burst worker would wait with them
        await pool.zremrangebyscore("arq:queue", f"({int((utcnow().timestamp() + 5) * 1000)}", "+inf")
        await jobs.sweep_outbox({"db": engine_db, "redis": pool})
        await pool.aclose()
        await worker.main()
    finally:
        await worker.close()
    assert smtp_sink.messages, "the day's notices were not sent, so the worker's logs were not exercised"


def test_the_redaction_survives_uvicorns_own_logging_setup(settings):
    """`clinic serve` runs uvicorn with its default logging config; the filter must still see every request line."""
    import logging.config

    from uvicorn.config import LOGGING_CONFIG

    names = ("uvicorn", "uvicorn.error", "uvicorn.access")
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate, logging.getLogger(n).level) for n in names}
    try:
        create_app(settings.with_(database_url="postgresql+asyncpg://x@localhost/x"))
        logging.config.dictConfig(LOGGING_CONFIG)
        seen: list[str] = []
        catcher = logging.Handler()
        catcher.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
        access = logging.getLogger("uvicorn.access")
        access.addHandler(catcher)
        access.info('%s - "%s %s HTTP/%s" %d', "10.0.0.7:5123", "GET", f"/patients/search?q={PATIENT[1]}", "1.1", 200)
        access.info('%s - "%s %s HTTP/%s" %d', "10.0.0.7:5123", "GET", "/e/12.1893456000.abcdefSIGNATURE", "1.1", 200)
        access.info('%s - "%s %s HTTP/%s" %d', "10.0.0.7:5123", "POST", "/q/13.1893456000.abcdefSIGNATURE/answers", "1.1", 200)
        assert seen == ['10.0.0.7:5123 - "GET /patients/search?[redacted] HTTP/1.1" 200', '10.0.0.7:5123 - "GET /e/[redacted] HTTP/1.1" 200',
                        '10.0.0.7:5123 - "POST /q/[redacted]/answers HTTP/1.1" 200']
    finally:
        for n, (handlers, propagate, level) in saved.items():
            logger = logging.getLogger(n)
            logger.handlers[:] = handlers
            logger.propagate, logger.level = propagate, level
