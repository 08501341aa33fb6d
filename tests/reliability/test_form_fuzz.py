"""Hostile input into every HTML form: each form is found by crawling the pages each role can open (so forms added
later are fuzzed without touching this file), then sent back with fields missing, repeated, unknown, huge, unicode,
control characters, impossible numbers and dates.

Whatever arrives: never a 5xx; a refusal (4xx) writes nothing; a 422 names the field it is about.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from litestar.middleware.csrf import generate_csrf_token
from sqlalchemy import text

from clinic.app import create_app
from clinic.auth.permissions import allows
from tests.conftest import app_client
from tests.reliability.conftest import ROLE_PREFERENCE, demo_database
from tests.reliability.helpers import HtmlForm, html_get_routes, ids_for, named_fields, parse_forms

EXAMPLES_PER_FORM = 8
# tables a refused request may still touch: the audit trail and sign-in bookkeeping record attempts on purpose
NOT_STATE = {"audit_events", "login_attempts", "web_sessions", "api_tokens"}
SKIP_ACTIONS = ("/logout",)  # signing ourselves out would end the crawl, not test a form

HOSTILE = [
    "", " ", "0", "-1", "-0", "1e309", "NaN", "Infinity", "99999999999999999999999", "2147483648", "-2147483649", "3.5",
    "1,5", "0x1F", "0001-01-01", "9999-12-31", "2026-02-30", "2026-13-01", "25:61", "00:00", "12:00:00+99:00",
    "\x00", "a\x00b", "\r\n", "\t", "' OR 1=1 --", "\"; DROP TABLE patients; --", "<script>alert(1)</script>",
    "{{ 7*7 }}", "${7*7}", "../../etc/passwd", "\u202eevil", "\ufeff", "😀" * 300, "Ωmega ñandú 東京", "A" * 5000,
    "9" * 100_000, str(uuid.uuid4()), "not-a-uuid", "true", "on", "null", "[]", "{}",
]
values = st.one_of(st.sampled_from(HOSTILE), st.text(st.characters(exclude_categories=("Cs",)), max_size=40),
                   st.integers(min_value=-(10**12), max_value=10**12).map(str))


@dataclass
class Target:
    role: str
    form: HtmlForm
    page: str


async def fingerprint(db) -> dict[str, str]:
    """A digest of every table that holds clinic state: any insert, update or delete changes it."""
    async with db.engine.connect() as conn:
        tables = [r[0] for r in await conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"))]
        parts = [f"SELECT '{t}', md5(coalesce(string_agg(md5(x::text), '' ORDER BY md5(x::text)), '')) FROM {t} x" for t in tables if t not in NOT_STATE]
        return dict((await conn.execute(text(" UNION ALL ".join(parts)))).all())


@pytest.fixture(scope="module")
async def demo(_servers, redis_url):
    async with demo_database(_servers[0], redis_url) as d:
        yield d


@pytest.fixture(scope="module")
async def crawled(demo) -> list[Target]:
    """Every distinct POST form on every page each role may open."""
    app = create_app(demo.settings, db=demo.db)
    routes = html_get_routes(app)
    targets: dict[tuple, Target] = {}
    async with app_client(app) as c:
        for role in ("anonymous", *ROLE_PREFERENCE):
            c.cookies.clear()
            if role != "anonymous":
                c.cookies.set("clinic_session", demo.sessions[role])
            for path, permission in routes:
                if permission != "public" and (role == "anonymous" or not allows(permission, [role])):
                    continue
                params = re.findall(r"\{(\w+)\}", path)
                fills = [{}]
                for p in params:
                    ids = await ids_for(demo.db, p)
                    fills = [f | {p: i} for f in fills for i in ids]
                for fill in fills:
                    url = path
                    for k, v in fill.items():
                        url = url.replace("{" + k + "}", str(v))
                    r = await c.get(url)
                    if r.status_code != 200 or "text/html" not in r.headers.get("content-type", ""):
                        continue
                    for form in parse_forms(r.text):
                        if form.action.startswith(SKIP_ACTIONS) or not form.action.startswith("/"):
                            continue
                        key = (role, re.sub(r"\d+", "N", form.action), tuple(sorted({f.name for f in form.fields})))
                        targets.setdefault(key, Target(role, form, url))
    return list(targets.values())


def test_the_crawl_finds_the_forms_people_use(crawled):
    actions = {re.sub(r"\d+", "N", t.form.action) for t in crawled}
    # a sample from each area; the crawl itself picks up every other form
    for expected in ("/login", "/patients", "/schedule/book", "/sessions/N/entries", "/admin/staff"):
        assert expected in actions, (expected, sorted(actions))


async def test_every_form_refuses_hostile_input_cleanly(demo, crawled):
    app = create_app(demo.settings, db=demo.db)
    findings: list[str] = []
    loop = asyncio.get_running_loop()

    def run(coro):
        # hypothesis drives plain functions; the app and the database live on this test's event loop
        return asyncio.run_coroutine_threadsafe(coro, loop).result(120)

    csrf = generate_csrf_token(secret=demo.settings.secret_key)
    async with app_client(app) as c:

        async def send(t: Target, body: list[tuple[str, str]]):
            headers = {"x-csrftoken": csrf}
            if t.form.htmx:
                headers |= {"HX-Request": "true", "HX-Current-URL": f"http://testserver.local{t.page}"}
            c.cookies.clear()
            if t.role != "anonymous":
                c.cookies.set("clinic_session", demo.sessions[t.role])
            c.cookies.set("csrftoken", csrf)
            before = await fingerprint(demo.db)
            data: dict[str, list[str]] = {}
            for k, v in body:
                data.setdefault(k, []).append(v)
            r = await c.post(t.form.action, data=data, headers=headers)
            after = await fingerprint(demo.db) if 400 <= r.status_code < 500 else before
            return r, sorted(k for k in before if before[k] != after.get(k))

        def fuzz(t: Target) -> None:
            names = sorted({f.name for f in t.form.fields if f.name != "_csrf_token"} | {"unknown_field"})

            @settings(max_examples=EXAMPLES_PER_FORM, derandomize=True, deadline=None, database=None,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(how=st.sampled_from(["value", "missing", "repeat"]), name=st.sampled_from(names), value=values)
            def attempt(how: str, name: str, value: str) -> None:
                body = [(k, v) for k, v in t.form.defaults() if not (how in ("value", "missing") and k == name)]
                body = [(k, csrf if k == "_csrf_token" else v) for k, v in body]
                if how in ("value", "repeat"):
                    body.append((name, value))
                r, changed = run(send(t, body))
                where = f"{t.role} POST {t.form.action} ({how} {name}={value[:40]!r}): {r.status_code}"
                if r.status_code >= 500:
                    findings.append(f"{where} server error")
                elif 400 <= r.status_code < 500 and r.status_code != 401:
                    if changed:
                        findings.append(f"{where} refused but wrote to {changed}")
                    if r.status_code == 422 and not named_fields(r.text):
                        findings.append(f"{where} 422 names no field: {re.sub(r'<[^>]+>', ' ', r.text)[:200]!r}")

            attempt()

        for t in crawled:
            await asyncio.to_thread(fuzz, t)
    assert not findings, f"{len(findings)} finding(s):\n" + "\n".join(sorted(set(findings))[:80])
