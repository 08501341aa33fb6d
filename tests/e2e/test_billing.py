"""Billing staff see a Good Faith Estimate due and issue it; the patient opens it through the emailed link on a phone, after their date of birth."""

from __future__ import annotations

import re
from datetime import date, timedelta

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import DESKTOP, PHONE, axe_violations, describe_violations, wait_for_mail

pytestmark = pytest.mark.e2e

LINK = re.compile(r"https?://[^\s\"'<>]+/e/[A-Za-z0-9._~-]+")


def _text(message) -> str:
    part = message.get_body(preferencelist=("plain",))
    return part.get_content() if part is not None else ""


def test_gfe_through_emailed_link(tabs, site, notice_worker):
    gfe = site.facts["gfe"]
    desk = tabs("billing", DESKTOP)
    page = desk.page

    desk.login("billing")
    expect(page).to_have_url(re.compile(r"/billing$"))
    due = page.get_by_role("region", name="Estimates to issue")
    row = due.get_by_role("row").filter(has=page.get_by_role("link", name=gfe["name"], exact=True))
    expect(row).to_contain_text("Good Faith Estimate")
    expect(row.locator(".badge")).to_have_text(re.compile(r"^(due|late|due today)"))
    desk.shot("gfe due")

    row.get_by_role("button", name="Issue").click()
    expect(page.get_by_role("status")).to_contain_text("Estimate issued")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Good Faith Estimate")
    desk.shot("gfe issued")

    # the worker sends it; the email carries a link and no amounts
    mail = wait_for_mail(site.smtp, lambda m: gfe["email"] in str(m.get("To", "")) and LINK.search(_text(m))
                         and "Good Faith Estimate" in _text(m))
    body = _text(mail)
    assert "$" not in body, "the email must keep amounts behind the link"
    link = LINK.search(body).group(0)
    assert link.startswith(site.url), f"the link should point at the clinic's BASE_URL, got {link}"

    patient = tabs("patient", PHONE)
    phone = patient.page
    phone.goto(link)
    expect(phone.get_by_text("please confirm your date of birth")).to_be_visible()
    patient.shot("date of birth asked")
    violations = axe_violations(phone)
    assert not violations, describe_violations(phone.url, violations)

    wrong = date.fromisoformat(gfe["dob"]) + timedelta(days=1)
    phone.get_by_label("Date of birth").fill(wrong.isoformat())
    phone.get_by_role("button", name="Continue").click()
    refusal = phone.get_by_role("alert").filter(has_text="does not match")
    expect(refusal).to_contain_text("4 tries left")
    patient.shot("wrong date of birth")

    phone.get_by_label("Date of birth").fill(gfe["dob"])
    phone.get_by_role("button", name="Continue").click()
    expect(phone.get_by_text(f"Hello {gfe['name'].split()[0]}")).to_be_visible()
    expect(phone.get_by_role("heading", name=re.compile("Good Faith Estimate"))).to_be_visible()
    expect(phone.locator("main")).to_contain_text("$")
    patient.shot("estimate shown")
    violations = axe_violations(phone)
    assert not violations, describe_violations(phone.url, violations)
    overflow = phone.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the estimate scrolls sideways by {overflow} px on a phone"
