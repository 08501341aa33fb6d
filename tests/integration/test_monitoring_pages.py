"""The tablet session page, the board page and the REMS pages as a nurse or prescriber uses them in a browser (htmx requests)."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

from sqlalchemy import select

from clinic.audit.models import AuditEvent
from clinic.monitoring.board import load_board
from clinic.monitoring.models import ClinicalEntry
from clinic.timeutil import utcnow
import pytest

from clinic.app import create_app
from tests.conftest import app_client
from tests.factories import csrf_headers, login
from tests.integration.test_monitoring_session import (
    CADSS6_ZERO,
    check_in,
    count,
    dosed_esketamine,
    make_session,
    monitored_to_discharge,
    vitals,
)


@pytest.fixture
async def browser(settings, db, queue):
    """A signed-in browser beside `client`, which the API helpers use with bearer tokens (no cookies, so no CSRF)."""
    async with app_client(create_app(settings, db=db, queue=queue)) as c:
        yield c


def htmx(client) -> dict[str, str]:
    return csrf_headers(client) | {"HX-Request": "true"}


async def test_the_session_page_is_made_for_a_tablet(client, browser, factory):
    s = await make_session(client, factory, starts_ago=90)
    await dosed_esketamine(s, 45)
    await login(browser, s.nurse_user.email)
    r = await browser.get(f"/sessions/{s.appt.id}")
    assert r.status_code == 200
    html = r.text
    assert "<script>" not in html and " onclick=" not in html
    assert "/static/js/monitoring.js" in html and "/static/css/monitoring.css" in html
    # the due check is one form with exactly what it records, numeric keypads and a submission id
    assert "40-minute check" in html and 'name="check_key" value="t40"' in html
    assert 'inputmode="numeric"' in html and 'name="client_id" value="" data-client-id' in html
    assert 'name="moaas"' in html and 'name="item_22"' in html
    assert "<svg" in html and "session-chart" in html
    assert 'sse-connect="/sessions/%d/stream"' % s.appt.id in html
    assert "Jordan Rivera" in html


async def test_a_double_tap_on_the_tablet_writes_one_row(client, browser, factory, db):
    s = await make_session(client, factory, starts_ago=30)
    await login(browser, s.nurse_user.email)
    r = await browser.post(
        f"/sessions/{s.appt.id}/check-in",
        data={"fasting_confirmed": "on", "escort_confirmed": "on", "escort_name": "Sam Rivera"},
        headers=htmx(browser),
    )
    assert r.status_code == 200 and 'id="session-live"' in r.text
    form = {"client_id": str(uuid.uuid4()), "check_key": "pre_dose", "systolic": "126", "diastolic": "80", "spo2": "98", "taken_at": ""}
    first = await browser.post(f"/sessions/{s.appt.id}/entries", data=form, headers=htmx(browser))
    second = await browser.post(f"/sessions/{s.appt.id}/entries", data=form, headers=htmx(browser))
    assert first.status_code == second.status_code == 200
    assert await count(db, ClinicalEntry, appointment_id=s.appt.id) == 1
    assert "BP 126/80 · SpO2 98%" in second.text


async def test_a_bad_value_on_the_tablet_names_the_field_in_the_flash_slot(client, browser, factory, db):
    s = await make_session(client, factory, starts_ago=30)
    await check_in(s, 10)
    await login(browser, s.nurse_user.email)
    r = await browser.post(f"/sessions/{s.appt.id}/entries", data={"client_id": str(uuid.uuid4()), "systolic": "12o", "diastolic": "80"}, headers=htmx(browser))
    assert r.status_code == 422 and r.headers["hx-retarget"] == "#flash"
    assert 'data-field="systolic"' in r.text and "whole number" in r.text
    # "³".isdigit() is true, but it is no number: refused like any other, never a 500
    r = await browser.post(f"/sessions/{s.appt.id}/entries", data={"client_id": str(uuid.uuid4()), "systolic": "³", "diastolic": "80"}, headers=htmx(browser))
    assert r.status_code == 422 and 'data-field="systolic"' in r.text and "whole number" in r.text
    r = await browser.post(f"/sessions/{s.appt.id}/entries", data={"client_id": str(uuid.uuid4()), "spo2": "30"}, headers=htmx(browser))
    assert r.status_code == 422 and 'data-field="spo2"' in r.text
    r = await browser.post(f"/sessions/{s.appt.id}/entries", data={"spo2": "97"}, headers=htmx(browser))
    assert r.status_code == 422 and 'data-field="client_id"' in r.text
    assert await count(db, ClinicalEntry, appointment_id=s.appt.id) == 0


async def test_back_charting_on_the_tablet_takes_a_clinic_local_time(client, browser, factory, db):
    s = await make_session(client, factory, starts_ago=90)
    await check_in(s, 80)
    await login(browser, s.nurse_user.email)
    from zoneinfo import ZoneInfo

    when = (utcnow() - timedelta(minutes=30)).astimezone(ZoneInfo(s.clinic.timezone))
    r = await browser.post(
        f"/sessions/{s.appt.id}/entries", data={"client_id": str(uuid.uuid4()), "spo2": "97", "taken_at": when.strftime("%H:%M")}, headers=htmx(browser)
    )
    assert r.status_code == 200
    async with db.sessionmaker() as x:
        entry = (await x.execute(select(ClinicalEntry).where(ClinicalEntry.appointment_id == s.appt.id))).scalar_one()
    assert entry.taken_at.astimezone(ZoneInfo(s.clinic.timezone)).strftime("%H:%M") == when.strftime("%H:%M")


async def test_the_discharge_checklist_shows_the_blockers_and_a_prescriber_signs_on_the_page(client, browser, factory):
    s = await make_session(client, factory, starts_ago=120)
    await dosed_esketamine(s, 90)
    await login(browser, s.prescriber_user.email)
    page = await browser.get(f"/sessions/{s.appt.id}")
    assert 'data-code="min_monitoring_time"' in page.text and "Sign discharge" in page.text
    r = await browser.post(f"/sessions/{s.appt.id}/discharge", data={"note": ""}, headers=htmx(browser))
    assert r.status_code == 409 and "at least 120 minutes" in r.text

    done = await make_session(client, factory, clinic=s.clinic, chair=1, starts_ago=170)
    await monitored_to_discharge(done, 130)
    r = await browser.post(f"/sessions/{done.appt.id}/discharge", data={"note": "Well.", "ready_to_leave_at": ""}, headers=htmx(browser))
    assert r.status_code == 200 and "Discharged" in r.text


async def test_a_nurse_sees_who_must_acknowledge_a_caution(client, browser, factory):
    s = await make_session(client, factory, starts_ago=30)
    await check_in(s, 20)
    await vitals(s, 2, systolic=150, diastolic=85, spo2=98)
    await login(browser, s.nurse_user.email)
    page = await browser.get(f"/sessions/{s.appt.id}")
    assert "A prescriber must acknowledge this caution" in page.text
    assert "Sign discharge" not in page.text


async def test_a_correction_on_the_page_shows_the_old_entry_superseded(client, browser, factory, db):
    s = await make_session(client, factory, starts_ago=30)
    await check_in(s, 20)
    entry = await vitals(s, 5, systolic=128, diastolic=82, spo2=97)
    await login(browser, s.nurse_user.email)
    r = await browser.post(
        f"/sessions/{s.appt.id}/entries/{entry['id']}/correct",
        data={"client_id": str(uuid.uuid4()), "systolic": "138", "diastolic": "82", "spo2": "97", "reason": "Transposed digits"},
        headers=htmx(browser),
    )
    assert r.status_code == 200
    assert re.search(r'class="tl entry superseded".*?BP 128/82', r.text, re.S)
    assert "Correction of entry %d: Transposed digits" % entry["id"] in r.text
    assert await count(db, ClinicalEntry, appointment_id=s.appt.id) == 2


async def test_opening_a_session_page_is_an_audited_chart_read(client, browser, factory, db):
    s = await make_session(client, factory)
    await login(browser, s.nurse_user.email)
    await browser.get(f"/sessions/{s.appt.id}")
    async with db.sessionmaker() as x:
        actions = (await x.execute(select(AuditEvent.action).where(AuditEvent.patient_id == s.patient.id))).scalars().all()
    assert actions == ["session.view"]


async def test_the_board_shows_first_name_and_initial_phase_alerts_and_overdue_checks(client, browser, factory, db):
    s = await make_session(client, factory, starts_ago=90)
    await dosed_esketamine(s, 60)
    await vitals(s, 15, check_key="t40", systolic=188, diastolic=96, spo2=97, moaas=5, dissociation=CADSS6_ZERO)
    await login(browser, s.nurse_user.email)
    r = await browser.get("/board")
    assert r.status_code == 200
    html = r.text
    assert "Jordan R." in html and "Rivera" not in html
    assert 'sse-connect="/board/stream"' in html and 'sse-swap="board"' in html
    assert "chair-card alerting" in html and "BP 188/96" in html
    assert "OVERDUE" in html and "Repeat BP" in html
    assert "60</strong> min since dosing" in html or "61</strong> min since dosing" in html
    data = (await browser.get("/api/v1/board")).json()
    card = next(c for chair in data["chairs"] for c in chair["current"])
    assert card["patient"] == "Jordan R." and card["phase"] == "monitoring" and card["open_alerts"][0]["code"] == "bp_high"
    assert card["next_check"]["key"].startswith("repeat_bp@") and card["next_check"]["status"] == "overdue"


async def test_overdue_state_advances_with_time_without_any_entry(factory, db):
    s = await make_session(None, factory, starts_ago=60)
    # dosed 45 minutes ago with nothing charted since: t40 is due now and overdue once its window closes
    from clinic.monitoring.models import DosingEntry
    from clinic.scheduling.models import Appointment

    dosed = utcnow() - timedelta(minutes=45)
    async with db.sessionmaker() as x:
        appt = await x.get(Appointment, s.appt.id)
        appt.status, appt.checked_in_at, appt.dosing_started_at, appt.escort_confirmed = "in_progress", dosed - timedelta(minutes=10), dosed, True
        x.add(ClinicalEntry(clinic_id=s.clinic.id, appointment_id=appt.id, client_id=uuid.uuid4(), taken_at=dosed - timedelta(minutes=4), recorded_by=s.nurse_user.id, systolic=120, diastolic=80, spo2=98))
        x.add(DosingEntry(clinic_id=s.clinic.id, appointment_id=appt.id, client_id=uuid.uuid4(), kind="device", taken_at=dosed, recorded_by=s.nurse_user.id, device_number=1, dose_mg=28, lot_number="L"))
        await x.commit()
    async with db.sessionmaker() as x:
        now_board = await load_board(x, clinic_id=s.clinic.id)
        later_board = await load_board(x, clinic_id=s.clinic.id, now=utcnow() + timedelta(minutes=10))
    assert now_board.overdue_count == 0 and now_board.active[0].state.next_check.key == "t40"
    assert later_board.overdue_count == 1 and later_board.active[0].state.overdue[0].key == "t40"


async def test_the_board_judges_a_session_as_the_session_page_does(client, factory, db):
    """The board reads only what is current, in its own two statements: corrected and erroneous entries and doses and
    acknowledged alerts must count exactly as on the session page, for every phase and at any time."""
    from clinic.audit.service import Actor
    from clinic.monitoring.service import session_state

    s = await make_session(client, factory, starts_ago=100)
    await dosed_esketamine(s, 70)
    high = await vitals(s, 30, check_key="t40", systolic=188, diastolic=96, spo2=97, moaas=5, dissociation=CADSS6_ZERO)
    r = await s.nurse.post(f"{s.path}/entries/{high['id']}/corrections", {"client_id": str(uuid.uuid4()), "reason": "Cuff too small", "systolic": 132, "diastolic": 84})
    assert r.status_code == 201, r.text
    wrong = await vitals(s, 10, spo2=99, heart_rate=70)
    r = await s.nurse.post(f"{s.path}/entries/{wrong['id']}/corrections", {"client_id": str(uuid.uuid4()), "reason": "Other chair", "entered_in_error": True})
    assert r.status_code == 201, r.text
    doses = (await s.nurse.get(f"{s.path}/dosing")).json()
    r = await s.nurse.post(f"{s.path}/dosing/{doses[-1]['id']}/corrections", {"client_id": str(uuid.uuid4()), "reason": "Lot misread", "lot_number": "LOT-B2"})
    assert r.status_code == 201, r.text
    r = await s.nurse.post(f"{s.path}/dosing/{r.json()['id']}/corrections", {"client_id": str(uuid.uuid4()), "reason": "Not given after all", "entered_in_error": True})
    assert r.status_code == 201, r.text  # one device of the two planned: the session is back to dosing
    alert = high["alerts"][0]
    assert (await s.prescriber.post(f"{s.path}/alerts/{alert['id']}/acknowledge", {"note": "Cuff too small; repeat was 132/84."})).status_code == 200
    await vitals(s, 5, systolic=186, diastolic=90)  # a new high BP: an open alert and a repeat-BP check
    other = await make_session(client, factory, clinic=s.clinic, chair=1, starts_ago=20)
    await check_in(other, 12)
    await vitals(other, 4, systolic=150, diastolic=92, spo2=98, heart_rate=80)  # the pre-dose caution stays open
    actor = Actor(user_id=s.nurse_user.id, clinic_id=s.clinic.id, roles=("nurse",))
    for minutes_on in (0, 12, 45, 90):
        now = utcnow() + timedelta(minutes=minutes_on)
        async with db.sessionmaker() as x:
            board = await load_board(x, clinic_id=s.clinic.id, now=now)
            cards = {c.appointment.id: c for c in board.active}
            assert set(cards) == {s.appt.id, other.appt.id}
            for appt_id, card in cards.items():
                page = await session_state(x, actor=actor, appointment_id=appt_id, audit=False, now=now)
                assert card.phase == page.phase and card.state.minutes_since_dosing == page.minutes_since_dosing
                assert card.state.schedule == page.schedule and card.state.next_check == page.next_check
                assert card.state.blockers == page.blockers and card.state.pre_dose == page.pre_dose
                assert [a.id for a in card.open_alerts] == [a.id for a in page.data.open_alerts()]
    assert alert["id"] not in [a.id for a in cards[s.appt.id].open_alerts] and cards[s.appt.id].worst_alert == "alert"


async def test_rems_form_is_filled_from_the_chart_and_marks_what_is_missing(client, browser, factory):
    s = await make_session(client, factory, starts_ago=170)
    await monitored_to_discharge(s, 130)
    await login(browser, s.nurse_user.email)
    before = await browser.get(f"/rems/{s.appt.id}")
    assert before.status_code == 200
    assert "Jordan Rivera" in before.text and "LOT-A1" in before.text and "56 mg (2 devices)" in before.text
    assert "MISSING" in before.text and "filled at discharge" in before.text
    assert (await s.prescriber.post(f"/appointments/{s.appt.id}/discharge", {})).status_code == 200
    form = (await s.nurse.get(f"/appointments/{s.appt.id}/rems-form")).json()
    assert form["missing"] == []
    values = {f["label"]: f["value"] for f in form["fields"] if f["section"] != "Monitoring provider"}
    provider = {f["label"]: f["value"] for f in form["fields"] if f["section"] == "Monitoring provider"}
    assert provider["Name"] == "Dr. Priya Patel" and provider["Email"] == s.prescriber_user.email
    assert values["Benzodiazepines"] == "Yes" and values["Opioids"] == "No" and values["Name"] == s.clinic.name
    assert values["First treatment"] == "Yes" and values["Sedation occurred"] == "Yes" and values["Dissociation occurred"] == "Yes"
    assert values["Respiratory depression occurred"] == "No" and values["Vital signs acceptable at the end of monitoring"] == "Yes"
    assert values["BP before dosing"].startswith("128/82") and values["BP about 40 minutes after dosing"].startswith("142/88")
    assert int(values["Total minutes from first device to end of monitoring"]) >= 130
    after = await browser.get(f"/rems/{s.appt.id}")
    assert "MISSING" not in after.text and "@media print" not in after.text  # print styles live in the stylesheet


async def test_rems_tracker_lists_forms_due_and_records_the_submission(client, browser, factory):
    s = await make_session(client, factory, starts_ago=170)
    await monitored_to_discharge(s, 130)
    assert (await s.prescriber.post(f"/appointments/{s.appt.id}/discharge", {})).status_code == 200
    await login(browser, s.nurse_user.email)
    page = await browser.get("/rems")
    assert page.status_code == 200 and "Jordan Rivera" in page.text and "in 7 days" in page.text
    today = (await s.nurse.get("/rems-forms")).json()["today"]
    r = await browser.post(f"/rems/{s.appt.id}/submission", data={"submitted_on": today, "confirmation": "RMS-55821"}, headers=htmx(browser))
    assert r.status_code == 200 and "RMS-55821" in r.text and "Nothing to submit" in r.text
    tracked = (await s.nurse.get("/rems-forms")).json()
    assert tracked["pending"] == [] and tracked["submitted"][0]["confirmation"] == "RMS-55821"
    again = await s.nurse.post(f"/appointments/{s.appt.id}/rems-form/submission", {"submitted_on": today, "confirmation": "OTHER"})
    assert again.status_code == 409
    admin = await factory.user(s.clinic, "admin")
    await login(browser, admin.email)
    assert (await browser.get("/rems")).status_code == 200
    assert (await browser.post(f"/rems/{s.appt.id}/submission", data={"submitted_on": today, "confirmation": "X"}, headers=htmx(browser))).status_code == 403


async def test_a_rems_form_is_sent_only_after_discharge(client, browser, factory):
    s = await make_session(client, factory, starts_ago=90)
    await dosed_esketamine(s, 60)
    today = (await s.nurse.get("/rems-forms")).json()["today"]
    r = await s.nurse.post(f"/appointments/{s.appt.id}/rems-form/submission", {"submitted_on": today, "confirmation": "RMS-1"})
    assert r.status_code == 409 and r.json()["code"] == "session_open"
    await login(browser, s.nurse_user.email)
    page = await browser.get("/rems")
    assert "Session in progress: send after discharge" in page.text
