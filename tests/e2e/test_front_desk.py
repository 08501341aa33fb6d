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

    # move the second occurrence to another free time
    second = sessions.nth(1)
    old_when = second.get_by_role("link").inner_text()
    second.get_by_role("link").click()
    page.get_by_role("button", name="Move to another time or chair").click()
    choices = page.locator("#slots label.slot-choice")
    expect(choices.first).to_be_visible()
    target = choices.nth(min(3, choices.count() - 1))
    target.click()
    desk.shot("move picker")
    page.get_by_role("button", name="Move here").click()
    expect(page.get_by_role("status").filter(has_text="Moved to")).to_be_visible()
    desk.shot("moved")

    # cancel the third occurrence with a reason (the page asks to confirm)
    page.goto(course_url)
    third = page.locator("ol.course-sessions > li").nth(2)
    third.get_by_role("link").click()
    page.get_by_label("Cancel: reason").select_option("Patient request")
    page.get_by_role("button", name="Cancel this session").click()
    expect(page.get_by_role("status").filter(has_text="Cancelled")).to_be_visible()
    expect(page.locator("dl.facts")).to_contain_text("Patient request")
    desk.shot("cancelled")

    # the course now shows one moved and one cancelled, the rest untouched
    page.goto(course_url)
    rows = page.locator("ol.course-sessions > li")
    expect(rows.filter(has_text="Cancelled")).to_have_count(1)
    assert old_when not in [rows.nth(i).get_by_role("link").inner_text() for i in range(rows.count())]
    desk.shot("course after changes")
