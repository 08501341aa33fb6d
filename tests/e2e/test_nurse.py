"""A nurse on an 820x1180 tablet runs an esketamine session from check-in to discharge, while a prescriber's board updates live.

The session was booked earlier today and the times are back-charted (as a nurse does after a busy
morning), so the 40-minute and later checks fall due within the test's few seconds.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import TABLET

pytestmark = pytest.mark.e2e


def _form(page, button: str):
    """The form whose submit button says `button` (the page has several entry forms)."""
    return page.locator("form").filter(has=page.get_by_role("button", name=button, exact=True))


def _set_time(form, label: str, hhmm: str) -> None:
    """Back-chart an entry: the time field sits in the form's collapsed "Other values, time, note" section."""
    details = form.locator("details.more").first
    if details.get_attribute("open") is None:
        details.locator("summary").click()
    form.get_by_label(label).fill(hhmm)


def _cadss(form, scores: dict[int, int]) -> None:
    for item, score in scores.items():
        form.get_by_role("radiogroup", name=f"Item {item}", exact=True).get_by_role("radio", name=str(score), exact=True).check()


def test_nurse_session(tabs, site):
    tz = site.tz
    nurse = tabs("nurse", TABLET)
    doctor = tabs("prescriber", TABLET)
    patient = site.facts["nurse_patient"]
    chair = site.facts["nurse_chair"]
    t0 = datetime.now(ZoneInfo(tz)).replace(second=0, microsecond=0)

    def at(minutes_before: int) -> str:
        return (t0 - timedelta(minutes=minutes_before)).strftime("%H:%M")

    # the prescriber watches the board on a second tablet the whole time
    doctor.login("prescriber")
    board = doctor.page
    expect(board).to_have_url(re.compile(r"/board$"))
    expect(board.get_by_role("article", name=chair)).to_be_visible()
    board.evaluate("window.__sameDocument = true")  # gone if the page ever reloads

    nurse.login("nurse")
    page = nurse.page
    expect(page).to_have_url(re.compile(r"/board$"))
    nurse.shot("board")
    card = page.get_by_role("article", name=chair)
    card.get_by_role("link", name=re.compile(f"{patient['first']} {patient['last'][0]}\\.")).click()
    expect(page.get_by_role("heading", level=1, name=f"{patient['first']} {patient['last']}")).to_be_visible()
    nurse.shot("session booked")

    # check in: fasting and escort confirmed, back-charted
    check_in = _form(page, "Check in")
    check_in.get_by_label("Followed the fasting instructions").check()
    check_in.get_by_label("Escort confirmed").check()
    check_in.get_by_label("Checked in at").fill(at(140))
    check_in.get_by_role("button", name="Check in").click()
    expect(page.get_by_role("heading", name=re.compile("Start dosing"))).to_be_visible()
    expect(page.get_by_text("Escort confirmed: Tom Vandermeer")).to_be_visible()
    nurse.shot("checked in")

    # pre-dose BP and SpO2 (below the esketamine caution, so no prescriber is needed to dose)
    pre = _form(page, "Save pre-dose check")
    pre.get_by_label("Systolic (mmHg)").fill("128")
    pre.get_by_label("Diastolic (mmHg)").fill("78")
    pre.get_by_label("SpO2 (%)").fill("98")
    _set_time(pre, "Time taken", at(135))
    pre.get_by_role("button", name="Save pre-dose check").click()
    expect(page.locator(".timeline")).to_contain_text("BP 128/78 · SpO2 98%")
    nurse.shot("pre-dose recorded")

    # dosing: device 1 starts the clock, device 2 five minutes later
    start = _form(page, "Record device 1 and start")
    expect(start.get_by_role("radio", name=re.compile("^56 mg"))).to_be_checked()
    start.get_by_label("Device 1 lot number").fill("LOT-2231A")
    start.get_by_label("Given at").fill(at(130))
    start.get_by_role("button", name="Record device 1 and start").click()
    device2 = _form(page, "Record device 2")
    expect(device2).to_be_visible()
    expect(device2.get_by_label("Lot number")).to_have_value("LOT-2231A")
    device2.get_by_label("Given at").fill(at(125))
    device2.get_by_role("button", name="Record device 2").click()
    expect(page.locator(".timeline")).to_contain_text("Device 2: 28 mg, lot LOT-2231A")
    nurse.shot("dosed")

    # the 40-minute check: BP, SpO2, MOAA/S and CADSS-6, charted at its due time
    t40 = _form(page, "Save 40-minute check")
    expect(t40).to_be_visible()
    t40.get_by_label("Systolic (mmHg)").fill("136")
    t40.get_by_label("Diastolic (mmHg)").fill("84")
    t40.get_by_label("SpO2 (%)").fill("97")
    t40.get_by_role("radio", name=re.compile(r"^4 Lethargic")).check()
    _cadss(t40, {1: 2, 2: 1, 6: 1, 7: 0, 15: 1, 22: 0})
    _set_time(t40, "Time taken", at(90))
    nurse.shot("40-minute check filled")
    t40.get_by_role("button", name="Save 40-minute check").click()
    expect(page.locator(".schedule .check-row.done").filter(has_text="40-minute check")).to_be_visible()
    nurse.shot("40-minute check saved")

    # the 80-minute SpO2 is low: an urgent alert, which reaches the prescriber's board without a reload
    t80 = _form(page, "Save 80-minute SpO2")
    t80.get_by_label("SpO2 (%)").fill("90")
    _set_time(t80, "Time taken", at(50))
    t80.get_by_role("button", name="Save 80-minute SpO2").click()
    alert = page.locator(".alert-card.urgent")
    expect(alert).to_contain_text("SpO2")
    nurse.shot("urgent alert on the tablet")
    board_alert = board.get_by_role("article", name=chair).locator(".board-alert.urgent")
    expect(board_alert).to_be_visible(timeout=5_000)
    assert board.evaluate("window.__sameDocument === true"), "the board reloaded instead of updating live"
    doctor.shot("alert on the board")

    discharge = page.get_by_role("region", name="Discharge")
    expect(discharge.locator("li[data-code=open_alert]")).to_be_visible()

    # acknowledge with a note: the alert leaves the board too
    alert.get_by_label("Note").fill("Repositioned, deep breaths; SpO2 back to 97% within 2 minutes")
    alert.get_by_role("button", name="Acknowledge").click()
    expect(page.locator(".alert-card")).to_have_count(0)
    expect(discharge.locator("li[data-code=open_alert]")).to_have_count(0)
    expect(board_alert).to_have_count(0, timeout=5_000)
    nurse.shot("alert acknowledged")

    # the check before discharge (now): every blocker clears
    final = _form(page, "Save Before discharge")
    final.get_by_label("Systolic (mmHg)").fill("124")
    final.get_by_label("Diastolic (mmHg)").fill("76")
    final.get_by_label("SpO2 (%)").fill("97")
    final.get_by_role("radio", name=re.compile(r"^5 Normal")).check()
    _cadss(final, {1: 0, 2: 0, 6: 0, 7: 0, 15: 0, 22: 0})
    final.get_by_role("button", name="Save Before discharge").click()
    expect(discharge.get_by_text("Every discharge criterion is met.")).to_be_visible()
    expect(discharge.locator("ul.blockers li")).to_have_count(0)
    expect(discharge.get_by_text("A prescriber signs the discharge.")).to_be_visible()
    nurse.shot("discharge blockers cleared")

    # the prescriber signs from the board
    expect(board.get_by_role("article", name=chair).get_by_text("All discharge criteria met")).to_be_visible(timeout=5_000)
    doctor.shot("ready on the board")
    board.get_by_role("article", name=chair).get_by_role("link", name=re.compile(f"{patient['first']} {patient['last'][0]}\\.")).click()
    sign = board.get_by_role("button", name="Sign discharge")
    expect(sign).to_be_enabled()
    doctor.shot("discharge form")
    sign.click()
    expect(board.get_by_role("heading", name=re.compile(r"^Discharged \d\d:\d\d"))).to_be_visible()
    expect(board.locator("dl.facts")).to_contain_text("Dr. Priya Patel")
    expect(board.locator("dl.facts")).to_contain_text("56 mg")
    doctor.shot("discharged")

    # the nurse's tablet follows (live or on its next refresh), and the board lists the session as done
    page.goto("/board")
    expect(page.get_by_role("article", name=chair)).to_contain_text("discharged")
    nurse.shot("board after discharge")
