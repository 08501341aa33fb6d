"""Accessibility of every main page: axe-core finds no serious or critical violation; tablet pages have 44x44 px touch targets and no sideways scrolling."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.conftest import (
    DEMO_PASSWORD,
    DESKTOP,
    EMAILS,
    TABLET,
    axe_violations,
    describe_targets,
    describe_violations,
    small_touch_targets,
)

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Page:
    name: str
    role: str | None  # None: signed out
    path: str | Callable[[dict[str, Any]], str]
    viewport: dict[str, int]
    ready: str | None = None  # a selector that shows the page has finished loading its fragments
    tablet: bool = False  # touch targets and horizontal scrolling are checked too


def _live(key: str) -> Callable[[dict[str, Any]], str]:
    def path(facts: dict[str, Any]) -> str:
        live = facts["live"]
        assert key in live, f"the demo seed left no {key} session running today (it has {sorted(live)})"
        return live[key]
    return path


PAGES = [
    Page("login", None, "/login", DESKTOP),
    Page("schedule-day", "front_desk", "/schedule", DESKTOP),
    Page("schedule-week", "front_desk", "/schedule/week", DESKTOP),
    Page("booking", "front_desk", lambda f: f"/schedule/book?patient_id={f['returning']['id']}", DESKTOP,
         ready="#slots .slot-choice, #slots .slot-empty"),
    Page("course-booking", "front_desk", lambda f: f"/schedule/courses/new?patient_id={f['returning']['id']}", DESKTOP),
    Page("patients", "front_desk", "/patients", DESKTOP),
    Page("patient", "front_desk", lambda f: f"/patients/{f['returning']['id']}", DESKTOP),
    Page("board", "nurse", "/board", TABLET, tablet=True),
    Page("session-checked-in", "nurse", lambda f: f"/sessions/{_live('esketamine:arrived')(f)}", TABLET, tablet=True),
    Page("session-esketamine", "nurse", lambda f: f"/sessions/{_live('esketamine:in_progress')(f)}", TABLET, tablet=True),
    Page("session-iv", "nurse", lambda f: f"/sessions/{_live('ketamine_iv:in_progress')(f)}", TABLET, tablet=True),
    Page("session-sign", "prescriber", lambda f: f"/sessions/{_live('esketamine:in_progress')(f)}", TABLET, tablet=True),
    Page("rems-form", "nurse", lambda f: f"/rems/{_live('esketamine:in_progress')(f)}", DESKTOP),
    Page("rems-tracker", "nurse", "/rems", TABLET),
    Page("billing", "billing", "/billing", DESKTOP),
    Page("billing-patient", "billing", lambda f: f"/billing/patients/{f['gfe']['patient_id']}", DESKTOP),
    Page("estimate", "billing", lambda f: f"/billing/estimates/{f['gfe']['estimate_id']}", DESKTOP),
    Page("notices", "billing", "/notices", DESKTOP),
    Page("admin-staff", "admin", "/admin/staff", DESKTOP),
    Page("outcomes", "prescriber", "/outcomes", DESKTOP),
    Page("outcomes-tablet", "prescriber", "/outcomes", TABLET, tablet=True),
    Page("patient-outcomes", "nurse", lambda f: f"/patients/{f['outcomes']['patient_id']}/outcomes", TABLET, tablet=True),
    Page("safety-review", "prescriber", lambda f: f"/outcomes/safety/{f['outcomes']['review_id']}", TABLET, tablet=True),
    Page("outcome-entry", "nurse", lambda f: f"/patients/{f['outcomes']['patient_id']}/outcomes/new?instrument=asrs", TABLET, tablet=True),
]


@pytest.fixture(scope="module")
def signed_in(browser, site) -> Callable[[str], Any]:
    """role -> a signed-in storage state, one sign-in per role for the module."""
    states: dict[str, Any] = {}

    def state(role: str) -> Any:
        if role not in states:
            ctx = browser.new_context(base_url=site.url)
            page = ctx.new_page()
            page.goto("/login")
            page.get_by_label("Email").fill(EMAILS[role])
            page.get_by_label("Password").fill(DEMO_PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(lambda u: "/login" not in u)
            states[role] = ctx.storage_state()
            ctx.close()
        return states[role]

    return state


@pytest.mark.parametrize("spec", PAGES, ids=[p.name for p in PAGES])
def test_page(spec: Page, tabs, site, signed_in):
    tab = tabs(spec.role or "anonymous", spec.viewport, signed_in(spec.role) if spec.role else None)
    page = tab.page
    path = spec.path(site.facts) if callable(spec.path) else spec.path
    response = page.goto(path)
    assert response is not None and response.status == 200, f"{path} answered {response and response.status}"
    page.wait_for_load_state("networkidle")
    if spec.ready:
        page.locator(spec.ready).first.wait_for()
    tab.shot(spec.name)

    problems = []
    violations = axe_violations(page)
    if violations:
        problems.append(describe_violations(path, violations))
    if spec.tablet:
        # what a finger can reach, with every collapsed section opened
        page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
        small = small_touch_targets(page)
        if small:
            problems.append(describe_targets(path, small))
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        if overflow > 0:
            problems.append(f"{path}: scrolls sideways by {overflow} px at {spec.viewport['width']} px wide")
    assert not problems, "\n\n".join(problems)
