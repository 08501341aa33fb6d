"""The front desk at 1280x800: sign in, find a returning patient as they type, book esketamine from the slot picker, book an IV course, move one session and cancel another."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import DESKTOP

pytestmark = pytest.mark.e2e


def test_front_desk(tabs, site):
    desk = tabs("desk", DESKTOP)
    page = desk.page
    returning = site.facts["returning"]

    desk.login("front_desk")
    expect(page).to_have_url(re.compile(r"/schedule$"))
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    desk.shot("day view")

    # find the returning patient by typing part of their surname: results arrive as they type
    page.get_by_role("navigation", name="Schedule").get_by_role("link", name="Book a session").click()
    search = page.get_by_label("Find the patient by name, date of birth or phone")
    search.press_sequentially(returning["last"][:4], delay=60)
    result = page.locator("#patient-results").get_by_role("link", name=re.compile(f"{returning['last']}, {returning['first']}"))
    expect(result).to_be_visible()
    desk.shot("search as you type")
    result.click()

    # a returning patient: their usual protocol is chosen; pick esketamine explicitly and the first free time
    expect(page.get_by_role("heading", name=re.compile("Protocol"))).to_be_visible()
    page.get_by_role("radio", name=re.compile("Esketamine")).check()
    page.get_by_role("radio", name="56 mg").check()
    slots = page.locator("#slots")
    first_slot = slots.locator("label.slot-choice").first
    expect(first_slot).to_be_visible()
    desk.shot("slot picker")
    slot_text = first_slot.inner_text().split("\n")[0].replace("★", "").strip()
    first_slot.click()
    page.get_by_role("button", name="Book", exact=True).click()
    expect(page.get_by_role("status").filter(has_text="Booked.")).to_be_visible()
    expect(page.locator("dl.facts")).to_contain_text(returning["last"])
    expect(page.locator("dl.facts")).to_contain_text(slot_text)
    expect(page.locator("dl.facts")).to_contain_text("56 mg")
    desk.shot("esketamine booked")

    # an IV course for the same patient: check the dates, take the plan (alternatives where a date clashes), book it
    page.get_by_role("navigation", name="Schedule").get_by_role("link", name="Book a course").click()
    page.get_by_label("Find the patient by name, date of birth or phone").press_sequentially(returning["last"][:5], delay=60)
    page.locator("#patient-results").get_by_role("link", name=re.compile(returning["last"])).click()
    page.get_by_label("Protocol").select_option("ketamine_iv")
    expect(page.get_by_label("Template")).to_have_value("induction")
    page.get_by_role("button", name="Check the dates").click()
    plan = page.locator("#course-plan")
    expect(plan.locator("ol.course-plan > li")).to_have_count(6)
    desk.shot("course plan")
    page.get_by_role("button", name=re.compile(r"^Book \d+ sessions$")).click()
    expect(page.get_by_role("status").filter(has_text="Course booked")).to_be_visible()
    sessions = page.locator("ol.course-sessions > li")
    booked = sessions.filter(has_text="Booked")
    assert booked.count() >= 4, f"expected most of the 6 infusions booked, got {booked.count()}"
    desk.shot("course booked")
    course_url = page.url

    # move the second session to a free time on a later day; cancel the third (a different session, whatever the new order)
    links = [sessions.nth(i).get_by_role("link") for i in range(sessions.count())]
    hrefs = [link.get_attribute("href") for link in links]
    old_when = links[1].inner_text()
    page.locator(f'ol.course-sessions a[href="{hrefs[1]}"]').click()
    page.get_by_role("button", name="Move to another time or chair").click()
    days = page.locator("#slots fieldset.slot-day")
    expect(days.first).to_be_visible()
    later = [days.nth(i).locator("label.slot-choice") for i in range(1, days.count())]
    target = next((c.first for c in later if c.count()), None)
    assert target is not None, "no free time on the days after the session's own"
    target.click()
    desk.shot("move picker")
    page.get_by_role("button", name="Move here").click()
    expect(page.get_by_role("status").filter(has_text="Moved to")).to_be_visible()
    desk.shot("moved")

    page.goto(course_url)
    page.locator(f'ol.course-sessions a[href="{hrefs[2]}"]').click()
    page.get_by_label("Cancel: reason").select_option("Patient request")
    page.get_by_role("button", name="Cancel this session").click()
    expect(page.get_by_role("status").filter(has_text="Cancelled")).to_be_visible()
    expect(page.locator("dl.facts")).to_contain_text("Patient request")
    desk.shot("cancelled")

    # the course shows the moved session at its new time, the cancelled one, and the rest untouched
    page.goto(course_url)
    rows = page.locator("ol.course-sessions > li")
    expect(rows.filter(has_text="Cancelled")).to_have_count(1)

    def row_of(href: str):
        return rows.filter(has=page.locator(f'a[href="{href}"]'))

    expect(row_of(hrefs[2])).to_contain_text("Cancelled")
    expect(row_of(hrefs[1]).get_by_role("link")).not_to_have_text(old_when)
    expect(row_of(hrefs[1])).to_contain_text("Booked")
    for href in hrefs[3:]:
        expect(row_of(href)).to_contain_text("Booked")
    desk.shot("course after changes")
