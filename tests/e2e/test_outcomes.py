"""A patient answers a PHQ-9 on a 390x844 phone from the emailed link; a nurse on an 820x1180 tablet, on that visit's session
page, sees the new score and the safety alert within 2 seconds, without touching the page."""

from __future__ import annotations

import re
import time
from datetime import date, timedelta

import pytest
from playwright.sync_api import expect

from clinic.db import Database
from tests.e2e.conftest import PHONE, TABLET, axe_violations, describe_targets, describe_violations, run_async, small_touch_targets, wait_for_mail

pytestmark = pytest.mark.e2e

LINK = re.compile(r"https?://[^\s\"'<>]+/q/[A-Za-z0-9._~-]+")
DOB = date(1984, 9, 23)


def _text(message) -> str:
    part = message.get_body(preferencelist=("plain",))
    return part.get_content() if part is not None else ""


async def _visit_and_notice(url: str) -> dict:
    """A patient booked for esketamine in three hours (a chair of their own), and the worker's notice job run now: 18:00
    yesterday has passed, so the notice is due at once and the running worker mails it."""
    from clinic.outcomes import service as outcomes
    from clinic.clinics import Clinic
    from clinic.scheduling.models import Chair
    from clinic.timeutil import utcnow
    from sqlmodel import select
    from tests.factories import Factory, appointment

    db = Database.connect(url, pool_size=2)
    try:
        async with db.sessionmaker() as s:
            clinic = (await s.exec(select(Clinic))).first()
        f = Factory(db)
        chair = Chair(clinic_id=clinic.id, name="Chair 12", kind="chair", sort_order=12)
        await f.add(chair)
        patient = await f.patient(clinic, first_name="Wren", last_name="Halloway", date_of_birth=DOB, diagnosis_codes=["F33.1"],
                                  email="wren.halloway@example.org", rems_enrolled_on=date(2024, 5, 1), rems_patient_id="RP-448812")
        starts = utcnow().replace(second=0, microsecond=0) + timedelta(hours=3)
        appt = await appointment(f, clinic, patient, starts, kind="esketamine", chair_id=chair.id, escort_name="Lee Halloway")
        async with db.transaction() as s:
            await outcomes.queue_questionnaire_notices(s)
        return {"appointment_id": appt.id, "email": patient.email}
    finally:
        await db.dispose()


def test_phq9_from_the_emailed_link_reaches_the_nurse(tabs, site, notice_worker):
    visit = run_async(_visit_and_notice(site.database_url))
    mail = wait_for_mail(site.smtp, lambda m: visit["email"] in str(m.get("To", "")) and LINK.search(_text(m)))
    body = _text(mail)
    assert "Wren" in body and "Halloway" not in body
    link = LINK.search(body).group(0)
    # the link's signature is random letters: it may spell anything
    assert not re.search(r"PHQ|depress|ketamine|Spravato|score", LINK.sub("", body), re.I), "the notice names what it must not"

    # the nurse has the visit's session page open on a tablet
    nurse = tabs("nurse", TABLET)
    nurse.login("nurse")
    tablet = nurse.page
    tablet.goto(f"/sessions/{visit['appointment_id']}")
    card = tablet.get_by_role("region", name="Questionnaires")
    expect(card).to_contain_text("PHQ-9")
    expect(card.locator(".badge").first).to_have_text("due")
    nurse.shot("questionnaire due")

    patient = tabs("patient", PHONE)
    phone = patient.page
    phone.goto(link)
    expect(phone.get_by_text("please confirm your date of birth")).to_be_visible()
    patient.shot("date of birth")
    phone.get_by_label("Date of birth").fill(DOB.isoformat())
    phone.get_by_role("button", name="Continue").click()
    expect(phone.get_by_role("heading", level=1)).to_have_text("Patient Health Questionnaire (PHQ-9)")
    patient.shot("questionnaire")
    problems = []
    if violations := axe_violations(phone):
        problems.append(describe_violations(phone.url, violations))
    if small := small_touch_targets(phone):
        problems.append(describe_targets(phone.url, small))
    overflow = phone.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    if overflow > 0:
        problems.append(f"the questionnaire scrolls sideways by {overflow} px on a phone")
    assert not problems, "\n\n".join(problems)

    # each question is a group named by its text; the keyboard moves between its answers
    first = phone.get_by_role("group", name=re.compile(r"^1\. Little interest"))
    first.get_by_text("Not at all", exact=True).click()
    phone.keyboard.press("ArrowRight")
    expect(first.get_by_role("radio", name="Several days")).to_be_checked()
    for n in range(2, 9):
        phone.get_by_role("group", name=re.compile(rf"^{n}\. ")).get_by_text("Not at all", exact=True).click()
    crisis = phone.locator(".crisis-now")
    expect(crisis).to_be_hidden()
    phone.get_by_role("group", name=re.compile(r"^9\. Thoughts")).get_by_text("Several days", exact=True).click()
    expect(crisis).to_be_visible()  # at once, before sending
    expect(crisis).to_contain_text("988")
    patient.shot("item 9 answered")
    violations = axe_violations(phone)
    assert not violations, describe_violations(phone.url, violations)

    phone.get_by_role("button", name="Send my answers").click()
    sent = time.monotonic()
    alert = phone.get_by_role("alert").filter(has_text="988")
    expect(alert).to_be_visible()
    expect(phone.get_by_role("heading", name="Thank you, Wren")).to_be_visible()
    patient.shot("answers sent")

    # the tablet refreshes itself: the score in the header and the safety alert, within 2 s of the answers
    expect(tablet.locator(".head-scores")).to_contain_text("PHQ-9 2", timeout=2000)
    expect(tablet.get_by_role("alert").filter(has_text="Safety review")).to_be_visible(timeout=max(100, int(2000 - (time.monotonic() - sent) * 1000)))
    waited = time.monotonic() - sent
    nurse.shot("score and safety alert")
    assert waited < 2.0, f"the nurse saw the answers {waited:.2f} s after they were sent"
    expect(card.locator(".badge").first).to_have_text("answered")
    violations = axe_violations(tablet)
    assert not violations, describe_violations(tablet.url, violations)

    # a second visit to the link: answered already, nothing to send twice
    phone.goto(link)
    expect(phone.get_by_role("heading", name="Thank you, Wren")).to_be_visible()
    assert phone.locator("form.q-form").count() == 0
