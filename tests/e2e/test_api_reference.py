"""The API reference at /schema runs from the app's own files under the app's own CSP: nothing from a CDN, no CSP
violation, and it still shows the operations."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.e2e.conftest import TIMEOUT_MS

pytestmark = pytest.mark.e2e


def test_the_api_reference_loads_nothing_from_elsewhere_and_breaks_no_csp(browser, site):
    # no bypass_csp here: the page is judged by the policy it is served with
    context = browser.new_context(base_url=site.url)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    ours = urlsplit(site.url).netloc
    elsewhere: list[str] = []
    problems: list[str] = []
    page.on("request", lambda r: None if urlsplit(r.url).netloc in (ours, "") or r.url.startswith(("data:", "blob:")) else elsewhere.append(r.url))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" and "Content Security Policy" in m.text else None)
    page.on("pageerror", lambda e: problems.append(f"uncaught: {e}"))
    page.add_init_script("document.addEventListener('securitypolicyviolation', e => console.error('Content Security Policy: ' + e.violatedDirective + ' ' + e.blockedURI))")
    try:
        response = page.goto("/schema")
        assert "script-src 'self'" in response.headers["content-security-policy"]
        page.get_by_text("staff & access").first.wait_for()  # the operations, grouped by tag
        page.wait_for_timeout(2000)  # whatever the reference fetches after drawing (fonts, images) has been asked for
    finally:
        context.close()
    assert elsewhere == [], f"requests to other hosts: {elsewhere}"
    # its validation library asks once whether eval works (try { Function('') } catch ...): refused, and it goes on without
    assert [p for p in problems if p != "Content Security Policy: script-src eval"] == [], problems
