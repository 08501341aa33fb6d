"""Browser tests' harness: the app under uvicorn on a free port against a fresh, migrated, demo-seeded database, and Debian's chromium driven by Playwright."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from tests.servers import ThreadedServer

from clinic.app import create_app
from clinic.cli import run_migrations
from clinic.dbroles import default_runtime_url
from clinic.config import Settings
from clinic.db import Database
from clinic.seed import DEMO_PASSWORD
from tests.conftest import _asyncpg_dsn, _with_db
from tests.reliability.helpers import free_port
from tests.smtp_sink import SmtpSink

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
ARTIFACTS = HERE / "artifacts"
AXE = HERE / "assets" / "axe.min.js"
DESKTOP = {"width": 1280, "height": 800}
TABLET = {"width": 820, "height": 1180}
PHONE = {"width": 390, "height": 844}
EMAILS = {
    "front_desk": "frontdesk@demo.clinic",
    "nurse": "nurse@demo.clinic",
    "prescriber": "prescriber@demo.clinic",
    "billing": "billing@demo.clinic",
    "admin": "admin@demo.clinic",
}
# a generous wait: two cores are shared by the server, the browser and the test
TIMEOUT_MS = 15_000


@dataclass
class Site:
    """The running app and what the flows need to know about its data."""

    url: str
    database_url: str
    redis_url: str
    smtp: SmtpSink
    tz: str
    settings: Settings
    facts: dict[str, Any] = field(default_factory=dict)


class AppServer(ThreadedServer):
    """The app under a real server; no access log (the browser flows' own screenshots say what happened)."""

    def __init__(self, app: Any, port: int) -> None:
        super().__init__(app, port, access_log=False)


# ---- the server ------------------------------------------------------------------------------------------


def run_async(coro: Any) -> Any:
    """Run a coroutine to completion on a thread of its own: Playwright's sync API keeps a loop running on this one."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            out["error"] = exc

    t = threading.Thread(target=target, name="e2e-async")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out.get("value")


async def _create_database(server_url: str, name: str) -> str:
    admin = await asyncpg.connect(_asyncpg_dsn(server_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    owner = _with_db(server_url, name)
    # the browser tests' app connects as the runtime role, like production
    return await asyncio.to_thread(run_migrations, owner, default_runtime_url(owner, secrets.token_urlsafe(16)))


async def _drop_database(server_url: str, name: str) -> None:
    admin = await asyncpg.connect(_asyncpg_dsn(server_url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'DROP ROLE IF EXISTS "{name}_app"')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def e2e_database(_servers) -> Iterator[tuple[str, dict[str, Any]]]:
    """A database of the browser tests' own (their writes are committed, so they stay out of the shared test database)."""
    server_url = _servers[0]
    name = f"clinic_e2e_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        url = run_async(_create_database(server_url, name))
        facts = run_async(_seed(url))
        yield url, facts
    finally:
        run_async(_drop_database(server_url, name))


async def _seed(url: str) -> dict[str, Any]:
    """The demo clinic (small), plus one esketamine booking in a chair of its own that the nurse flow runs from check-in."""
    from sqlalchemy import text

    from clinic.scheduling.models import Chair
    from clinic.seed import seed_demo
    from clinic.timeutil import utcnow
    from tests.factories import Factory, appointment

    db = Database.connect(url, pool_size=2)
    try:
        clinic = await seed_demo(db, patients=14, days=7)
        f = Factory(db)
        chair = Chair(clinic_id=clinic.id, name="Chair 9", kind="chair", sort_order=9)
        await f.add(chair)
        patient = await f.patient(clinic, first_name="Iris", last_name="Vandermeer", date_of_birth=date(1979, 3, 14),
                                  email="iris.vandermeer@example.org", phone="(555) 019-4411",
                                  rems_enrolled_on=date(2024, 2, 1), rems_patient_id="RP-771234",
                                  escort_name="Tom Vandermeer", escort_phone="(555) 019-4412")
        zone = ZoneInfo(clinic.timezone)
        now = utcnow()
        midnight = datetime.combine(now.astimezone(zone).date(), datetime.min.time(), zone)
        # booked a while ago today (so it is on today's board), checked in late: the flow back-charts its times
        starts = max(now - timedelta(minutes=150), midnight + timedelta(minutes=1)).replace(second=0, microsecond=0)
        appt = await appointment(f, clinic, patient, starts, kind="esketamine", chair_id=chair.id, planned_dose_mg=56,
                                 ends_at=starts + timedelta(minutes=160), escort_name="Tom Vandermeer", escort_phone="(555) 019-4412")
        async with db.engine.connect() as conn:
            # a returning patient: REMS enrolled, with a discharged session behind them
            row = (await conn.execute(text(
                "SELECT p.id, p.first_name, p.last_name FROM patients p WHERE p.clinic_id = :c AND p.rems_patient_id IS NOT NULL"
                " AND EXISTS (SELECT 1 FROM appointments a WHERE a.patient_id = p.id AND a.status = 'fulfilled')"
                " AND p.id <> :skip ORDER BY p.id LIMIT 1"), {"c": clinic.id, "skip": patient.id})).one()
            # a self-pay patient with a Good Faith Estimate to issue, who takes email
            gfe = (await conn.execute(text(
                "SELECT e.id, p.id, p.first_name, p.last_name, p.date_of_birth, p.email FROM estimates e JOIN patients p ON p.id = e.patient_id"
                " WHERE e.clinic_id = :c AND e.issued_at IS NULL AND e.kind = 'gfe' AND e.due_on IS NOT NULL AND p.notice_channel = 'email'"
                " AND NOT p.notices_opted_out AND p.email IS NOT NULL AND p.id NOT IN (:r, :skip) ORDER BY e.due_on, e.id LIMIT 1"),
                {"c": clinic.id, "r": row[0], "skip": patient.id})).one()
            # the outcome demo's PHQ-9 item 9 answer, reviewed, and its patient's scores over time
            review = (await conn.execute(text(
                "SELECT r.id, r.patient_id FROM safety_reviews r WHERE r.clinic_id = :c ORDER BY r.id LIMIT 1"), {"c": clinic.id})).one()
            live = (await conn.execute(text(
                "SELECT a.id, st.kind, a.status FROM appointments a JOIN session_types st ON st.id = a.session_type_id"
                " WHERE a.clinic_id = :c AND a.status IN ('arrived', 'in_progress') ORDER BY a.id"), {"c": clinic.id})).all()
        return {
            "clinic_id": clinic.id,
            # sessions the monitoring demo left running: (kind, status) -> appointment id
            "live": {f"{kind}:{status}": aid for aid, kind, status in reversed(live)},
            "tz": clinic.timezone,
            "returning": {"id": row[0], "first": row[1], "last": row[2]},
            "gfe": {"estimate_id": gfe[0], "patient_id": gfe[1], "name": f"{gfe[2]} {gfe[3]}", "dob": gfe[4].isoformat(), "email": gfe[5]},
            "nurse_appointment": appt.id,
            "nurse_patient": {"id": patient.id, "first": "Iris", "last": "Vandermeer", "dob": "1979-03-14"},
            "nurse_chair": "Chair 9",
            "outcomes": {"review_id": review[0], "patient_id": review[1]},
        }
    finally:
        await db.dispose()


@pytest.fixture(scope="session")
def site(e2e_database, redis_url) -> Iterator[Site]:
    """The app under uvicorn (a thread with its own loop and pools, as in production), with an SMTP sink for the worker."""
    url, facts = e2e_database
    sink = SmtpSink()
    sink.start()
    port = free_port()  # known before the settings: BASE_URL goes into emailed links
    settings = Settings(database_url=url, redis_url=redis_url, smtp_url=sink.url, secret_key="e2e-secret-key-" + "x" * 24,
                        base_url=f"http://127.0.0.1:{port}")
    server = AppServer(create_app(settings), port).start()
    try:
        yield Site(url=server.url, database_url=url, redis_url=redis_url, smtp=sink, tz=facts["tz"], settings=settings, facts=facts)
    finally:
        server.stop()
        sink.stop()


WORKER = """
import asyncio, json, sys
from arq import cron
from arq.worker import Worker
from clinic.config import Settings
from workers import jobs
from workers.settings import worker_settings
ws = worker_settings(Settings(**json.loads(sys.argv[1])), max_jobs=4, job_timeout=10)
ws["cron_jobs"] = [cron(jobs.sweep_outbox, second=set(range(60)), run_at_startup=True, unique=True)]  # every second, not every 30
ws["poll_delay"] = 0.1
async def main():
    worker = Worker(**ws)
    try:
        await worker.main()
    finally:
        await worker.close()
asyncio.run(main())
"""


@pytest.fixture(scope="module")
def notice_worker(site) -> Iterator[subprocess.Popen]:
    """The production arq worker in a process of its own, with the site's settings (links are signed with its key), mailing the sink."""
    s = site.settings
    config = {"database_url": s.database_url, "redis_url": s.redis_url, "smtp_url": s.smtp_url, "secret_key": s.secret_key, "base_url": s.base_url}
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(config)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# ---- the browser -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium per test module: Playwright's sync API holds this thread's event loop, which the async tests after these need back."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"Browser tests need Debian's chromium at {CHROMIUM}; install it with `apt-get install chromium` (.ci/run does this).",
            pytrace=False,
        )
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class Tab:
    """One browser context (a person at a device): its page, its screenshots, and the JavaScript errors it saw."""

    def __init__(self, browser: Any, site: Site, flow: str, who: str, viewport: dict[str, int], storage_state: Any = None) -> None:
        # bypass_csp: only so axe-core can be injected; the app's own pages are still served with their CSP
        self.context = browser.new_context(viewport=viewport, base_url=site.url, bypass_csp=True, locale="en-US",
                                           timezone_id=site.tz, device_scale_factor=1, has_touch=viewport["width"] < 1000,
                                           storage_state=storage_state)
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.site = site
        self.flow = flow
        self.who = who
        self.errors: list[str] = []
        self.step = 0
        self.page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        self.page.on("console", self._console)
        self.page.on("dialog", lambda d: d.accept())  # data-confirm forms ask before cancelling; a person says yes

    def _console(self, msg: Any) -> None:
        if msg.type == "error" and ("Content Security Policy" in msg.text or "Uncaught" in msg.text):
            self.errors.append(msg.text)

    def shot(self, name: str) -> Path:
        self.step += 1
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        slug = re.sub(r"[^a-z0-9]+", "-", f"{self.flow} {self.who} {self.step:02d} {name}".lower()).strip("-")
        path = ARTIFACTS / f"{slug}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def login(self, role: str) -> None:
        page = self.page
        page.goto("/login")
        page.get_by_label("Email").fill(EMAILS[role])
        page.get_by_label("Password").fill(DEMO_PASSWORD)
        self.shot(f"sign in as {role}")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda u: "/login" not in u)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tabs(browser, site, request) -> Iterator[Any]:
    """open(who, viewport) -> Tab; every tab is closed after the test, and a test fails on any JavaScript error its tabs saw."""
    opened: list[Tab] = []
    flow = request.node.name.removeprefix("test_")

    def open_tab(who: str, viewport: dict[str, int] = DESKTOP, storage_state: Any = None) -> Tab:
        tab = Tab(browser, site, flow, who, viewport, storage_state)
        opened.append(tab)
        return tab

    yield open_tab
    errors = [f"{t.who}: {e}" for t in opened for e in t.errors]
    for t in opened:
        t.close()
    assert not errors, "JavaScript errors in the browser:\n" + "\n".join(errors)


# ---- checks on a page ------------------------------------------------------------------------------------------


def axe_violations(page: Any, *, impacts: tuple[str, ...] = ("serious", "critical")) -> list[dict[str, Any]]:
    """Run axe-core on the page as it is now; the violations of the given impacts."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [v for v in result["violations"] if v.get("impact") in impacts]


def describe_violations(url: str, violations: list[dict[str, Any]]) -> str:
    lines = [f"{url}:"]
    for v in violations:
        lines.append(f"  [{v['impact']}] {v['id']}: {v['help']} ({v['helpUrl']})")
        for node in v["nodes"][:8]:
            target = " ".join(str(t) for t in node.get("target", []))
            lines.append(f"      at {target}: {node.get('failureSummary', '').splitlines()[-1].strip() if node.get('failureSummary') else ''}")
            lines.append(f"         {node.get('html', '')[:160]}")
        if len(v["nodes"]) > 8:
            lines.append(f"      ... and {len(v['nodes']) - 8} more")
    return "\n".join(lines)


TOUCH_TARGETS_JS = """
(min) => {
  const out = [];
  const seen = new Set();
  const sel = 'a[href], button, input:not([type=hidden]), select, textarea, summary, [role=button]';
  for (const el of document.querySelectorAll(sel)) {
    const style = getComputedStyle(el);
    if (style.visibility === 'hidden' || style.display === 'none' || el.closest('[hidden]')) continue;
    // a checkbox or radio is tapped through its label: the label is the target
    let target = el;
    if ((el.type === 'checkbox' || el.type === 'radio') ) {
      target = el.closest('label') || (el.id && document.querySelector(`label[for="${el.id}"]`)) || el;
    }
    if (seen.has(target)) continue;
    seen.add(target);
    const r = target.getBoundingClientRect();
    // not rendered, or moved off-screen until focused (the skip link)
    if (r.width <= 1 || r.height <= 1 || r.right <= 0 || r.bottom <= 0) continue;
    if (r.width < min || r.height < min) {
      out.push({
        tag: target.tagName.toLowerCase(),
        text: (target.innerText || target.value || target.getAttribute('aria-label') || target.name || '').trim().replace(/\\s+/g, ' ').slice(0, 60),
        width: Math.round(r.width * 10) / 10,
        height: Math.round(r.height * 10) / 10,
        html: target.outerHTML.slice(0, 140),
      });
    }
  }
  return out;
}
"""


def small_touch_targets(page: Any, minimum: int = 44) -> list[dict[str, Any]]:
    return page.evaluate(TOUCH_TARGETS_JS, minimum)


def describe_targets(url: str, small: list[dict[str, Any]]) -> str:
    return f"{url}: {len(small)} touch target(s) under 44x44 px\n" + "\n".join(
        f"  {s['width']}x{s['height']} <{s['tag']}> {s['text']!r}: {s['html']}" for s in small
    )


def wait_for_mail(sink: SmtpSink, predicate, timeout: float = 30.0) -> Any:
    """The first message in the sink that satisfies predicate, polling until timeout seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for m in list(sink.messages):
            if predicate(m):
                return m
        time.sleep(0.2)
    raise AssertionError(f"no matching email within {timeout:.0f}s; the sink has {len(sink.messages)}: "
                         + json.dumps([m.get("Subject") for m in sink.messages]))


def local_hhmm(instant: datetime, tz: str) -> str:
    return instant.astimezone(ZoneInfo(tz)).strftime("%H:%M")
