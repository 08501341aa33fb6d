"""The patient's side end to end, on the committed database with the real arq worker and an SMTP sink: the evening-before
notice and its DOB-gated link, progress saved, PHQ-9 item 9 above 0 (crisis resources, a safety review, a PHI-free notice to
the prescribers on shift, dosing blocked until the review), links refused, and the waiting-room kiosk."""

from __future__ import annotations

import logging
import re
import uuid
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from clinic.app import create_app
from clinic.audit.models import AuditEvent
from clinic.auth.models import WebSession
from clinic.billing.models import CostLink
from clinic.notices import links
from clinic.notices.models import Notice
from clinic.outcomes import service as outcomes
from clinic.outcomes.models import OutcomeMeasure, QuestionnaireDraft, SafetyReview
from clinic.scheduling.models import Shift
from clinic.timeutil import utcnow
from tests.conftest import app_client
from tests.factories import Factory, appointment, bearer, login
from tests.integration.test_notices_outbox import bodies, drain, sweep

LINK = re.compile(r"https?://[^\s\"'<>]+/q/[A-Za-z0-9._~-]+")
NEVER_IN_MAIL_OR_LOGS = ("PHQ", "GAD", "ASRS", "questionnaire (", "item 9", "depress", "anxi", "suicid", "ketamine", "Spravato",
                         "Nearly every day", "Several days", "F33", "moderate")
DOB = date(1981, 4, 2)


async def rows(db, model, **where):
    async with db.sessionmaker() as s:
        q = select(model)
        for k, v in where.items():
            q = q.where(getattr(model, k) == v)
        return list((await s.execute(q)).scalars().all())


async def world(engine_db, *, starts_in: timedelta = timedelta(hours=5)):
    f = Factory(engine_db)
    clinic = await f.clinic(display_name="Riverside Clinic")
    on_shift = await f.user(clinic, "prescriber", full_name="Dana Oncall", email=f"oncall{clinic.id}@test.clinic")
    off_shift = await f.user(clinic, "prescriber", full_name="Ed Offshift", email=f"offshift{clinic.id}@test.clinic")
    nurse = await f.user(clinic, "nurse")
    now = utcnow()
    await f.add(Shift(clinic_id=clinic.id, user_id=on_shift.id, role="prescriber", starts_at=now - timedelta(hours=1), ends_at=now + timedelta(hours=8)))
    patient = await f.patient(clinic, first_name="Robin", last_name="Quillfeather", date_of_birth=DOB, diagnosis_codes=["F33.1"],
                              email=f"robin{clinic.id}@example.org")
    appt = await appointment(f, clinic, patient, now.replace(microsecond=0) + starts_in, kind="esketamine")
    return f, clinic, patient, appt, on_shift, off_shift, nurse


def phq(**answers: int) -> dict[str, str]:
    out = {f"q{n}": "0" for n in range(1, 10)}
    out.update({k: str(v) for k, v in answers.items()})
    return out


def csrf(client) -> dict[str, str]:
    return {"_csrf_token": client.cookies.get("csrftoken") or ""}


@pytest.fixture
def capture_logs():
    """Every record the app, the worker and their libraries log at any level, as text."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(f"{record.name}: {record.getMessage()}")

    handler, root = Keep(level=logging.DEBUG), logging.getLogger()
    before = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    quiet = {name: logging.getLogger(name).level for name in ("sqlalchemy", "httpx", "httpcore", "aiosmtpd", "mail.log", "asyncio")}
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)  # the test's own client and sink, and SQL echo, are not the app's logs
    yield lines
    root.removeHandler(handler)
    root.setLevel(before)
    for name, level in quiet.items():
        logging.getLogger(name).setLevel(level)


async def test_item_9_from_the_emailed_link_to_the_prescribers_review(engine_db, settings, smtp_sink, queue, redis, capture_logs):
    f, clinic, patient, appt, on_shift, off_shift, nurse = await world(engine_db)
    settings = settings.with_(smtp_url=smtp_sink.url)
    # the worker's job writes the evening-before notice (its 18:00 has passed: at once), the worker sends it
    async with engine_db.transaction() as s:
        ids = await outcomes.queue_questionnaire_notices(s)
    mine = [n for n in await rows(engine_db, Notice, clinic_id=clinic.id) if n.kind == "questionnaire"]
    assert [n.id for n in mine] and set(n.id for n in mine) <= set(ids) and mine[0].appointment_id == appt.id
    async with engine_db.transaction() as s:
        assert await outcomes.queue_questionnaire_notices(s) == [] or all(  # a second run adds nothing for this visit
            n.appointment_id != appt.id for n in await rows(engine_db, Notice, kind="questionnaire") if n.id not in {m.id for m in mine})
    await sweep(settings, engine_db)
    await drain(settings, engine_db)
    await smtp_sink.wait_for(1)
    mail = next(m for m in smtp_sink.messages if m["To"] == patient.email)
    text = bodies(mail)
    local = appt.starts_at.astimezone(ZoneInfo(clinic.timezone))
    assert "Robin" in text and "Riverside Clinic" in text and clinic.phone in text and f"{local.day} {local:%B}" in text
    url = LINK.search(text).group(0)
    words = LINK.sub("", text).lower()  # the link's signature is random letters: it may spell anything
    assert "quillfeather" not in words and not [w for w in NEVER_IN_MAIL_OR_LOGS if w.lower() in words]
    path = url[url.index("/q/"):]

    async with app_client(create_app(settings, db=engine_db, queue=queue)) as phone:
        r = await phone.get(path)
        assert r.status_code == 200 and "please confirm your date of birth" in r.text
        r = await phone.post(path, data={"date_of_birth": (DOB + timedelta(days=1)).isoformat(), **csrf(phone)})
        assert r.status_code == 422 and "4 tries left" in r.text
        r = await phone.post(path, data={"date_of_birth": DOB.isoformat(), **csrf(phone)}, follow_redirects=False)
        assert r.status_code == 303 and "clinic_q" in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]
        page = await phone.get(path)
        assert page.status_code == 200 and "Patient Health Questionnaire (PHQ-9)" in page.text and "Hello Robin" in page.text
        assert page.text.count('<fieldset class="q-item') == 10 and page.text.count("<legend>") >= 10
        client_id = re.search(r'name="client_id" value="([^"]+)"', page.text).group(1)

        # progress kept on the server as the patient goes
        r = await phone.post(f"{path}/progress", data={"instrument": "phq9", "q1": "2", "q4": "1", **csrf(phone)},
                             headers={"HX-Request": "true", "x-csrftoken": phone.cookies["csrftoken"]})
        assert r.status_code == 204
        drafts = await rows(engine_db, QuestionnaireDraft, instrument="phq9")
        assert [d.answers for d in drafts if d.link_id == mine[0].payload["link_id"]] == [{"q1": 2, "q4": 1}]
        assert re.search(r'name="q1" value="2"[^>]*checked', (await phone.get(path)).text)
        r = await phone.post(f"{path}/progress", data={"instrument": "phq9", "q2": "7", **csrf(phone)},
                             headers={"HX-Request": "true", "x-csrftoken": phone.cookies["csrftoken"]})
        assert r.status_code == 422 and 'data-field="q2"' in r.text  # the fragment htmx puts in the page's alert slot

        # a missing question: named, kept, nothing written
        answers = phq(q1=2, q4=1)
        del answers["q7"]
        r = await phone.post(f"{path}/answers", data={"instrument": "phq9", "client_id": client_id, **answers, **csrf(phone)})
        assert r.status_code == 422 and "Question 7 is not answered" in r.text and 'href="#item-q7"' in r.text
        assert await rows(engine_db, OutcomeMeasure, patient_id=patient.id) == []

        # item 9 at "Several days", a total of 4: crisis resources at once
        r = await phone.post(f"{path}/answers", data={"instrument": "phq9", "client_id": client_id, **phq(q1=2, q4=1, q9=1), **csrf(phone)})
        assert r.status_code == 200 and "988" in r.text and 'role="alert"' in r.text
        [m] = await rows(engine_db, OutcomeMeasure, patient_id=patient.id)
        assert (m.total, m.via, m.completed_by, m.appointment_id, m.link_id) == (4, "link", "patient", appt.id, mine[0].payload["link_id"])
        [review] = await rows(engine_db, SafetyReview, patient_id=patient.id)
        assert review.reviewed_at is None and review.measure_id == m.id

        # sent twice: refused, nothing more written
        r = await phone.post(f"{path}/answers", data={"instrument": "phq9", "client_id": str(uuid.uuid4()), **phq(q9=1), **csrf(phone)})
        assert r.status_code == 409
        assert (await phone.get(path)).status_code == 409
        assert len(await rows(engine_db, OutcomeMeasure, patient_id=patient.id)) == 1

    # the prescribers on shift are told, without a name, a score or why
    staff = [n for n in await rows(engine_db, Notice, clinic_id=clinic.id) if n.kind == "safety_review"]
    assert [n.to_address for n in staff] == [on_shift.email] and staff[0].patient_id is None
    await sweep(settings, engine_db)
    await drain(settings, engine_db)
    await smtp_sink.wait_for(2)
    told = next(x for x in smtp_sink.messages if x["To"] == on_shift.email)
    text = bodies(told)
    assert told["Subject"] == "A questionnaire needs a clinician's review"
    assert f"/outcomes/safety/{review.id}" in text and "Dana" in text
    assert "Robin" not in text and "Quillfeather" not in text and not [w for w in NEVER_IN_MAIL_OR_LOGS if w.lower() in text.lower()]
    assert not [x for x in smtp_sink.messages if x["To"] == off_shift.email]

    # dosing waits for the review; a nurse cannot record it; a prescriber does, completely
    async with app_client(create_app(settings, db=engine_db, queue=queue)) as api:
        nurse_token, doctor = await f.token(nurse), await f.token(on_shift)
        due = (await api.get(f"/api/v1/appointments/{appt.id}/outcomes-due", headers=bearer(nurse_token))).json()
        assert [b["code"] for b in due["blockers"]] == ["safety_review"] and due["open_safety_reviews"] == [review.id]
        assert (await api.post(f"/api/v1/safety-reviews/{review.id}", headers=bearer(nurse_token),
                               json={"risk_level": "low", "action_taken": "x", "safety_plan": True})).status_code == 403
        r = await api.post(f"/api/v1/safety-reviews/{review.id}", headers=bearer(doctor), json={"risk_level": "medium", "action_taken": "Called", "safety_plan": True})
        assert r.status_code == 422 and r.json()["field"] == "risk_level"
        r = await api.post(f"/api/v1/safety-reviews/{review.id}", headers=bearer(doctor),
                           json={"risk_level": "low", "action_taken": "Called the patient: no plan or intent; plan reviewed", "safety_plan": True})
        assert r.status_code == 200 and r.json()["open"] is False and r.json()["reviewed_by"] == on_shift.id
        assert (await api.post(f"/api/v1/safety-reviews/{review.id}", headers=bearer(doctor),
                               json={"risk_level": "high", "action_taken": "again", "safety_plan": False})).status_code == 409
        due = (await api.get(f"/api/v1/appointments/{appt.id}/outcomes-due", headers=bearer(nurse_token))).json()
        assert due["blockers"] == [] and [d["done"] for d in due["due"]] == [True]

    actions = {e.action for e in await rows(engine_db, AuditEvent, patient_id=patient.id)}
    assert {"outcomes.link_opened", "outcomes.answered", "outcomes.safety_review"} <= actions
    leaks = [line for line in capture_logs for w in (*NEVER_IN_MAIL_OR_LOGS, "Robin", "Quillfeather", DOB.isoformat()) if w.lower() in line.lower()]
    assert not leaks, leaks[:5]


async def test_links_refused_wrong_dob_locks_and_tokens_do_not_cross(engine_db, settings, queue, redis):
    f, clinic, patient, appt, *_ = await world(engine_db)
    secret = settings.secret_key
    link = CostLink(clinic_id=clinic.id, patient_id=patient.id, kind="questionnaire", appointment_id=appt.id, expires_at=appt.ends_at)
    expired = CostLink(clinic_id=clinic.id, patient_id=patient.id, kind="questionnaire", appointment_id=appt.id, expires_at=utcnow() - timedelta(minutes=1))
    cost = CostLink(clinic_id=clinic.id, patient_id=patient.id, kind="visit", appointment_id=appt.id, expires_at=appt.ends_at)
    await f.add(link, expired, cost)
    path = f"/q/{links.sign(secret, link.id, link.expires_at, 'questionnaire')}"
    async with app_client(create_app(settings, db=engine_db, queue=queue)) as c:
        assert (await c.get(f"/q/{links.sign(secret, expired.id, expired.expires_at, 'questionnaire')}")).status_code == 404
        assert "has expired" in (await c.get(f"/q/{links.sign(secret, expired.id, expired.expires_at, 'questionnaire')}")).text
        # a cost link's token opens no questionnaire, and a questionnaire's opens no costs
        assert (await c.get(f"/q/{links.sign(secret, cost.id, cost.expires_at)}")).status_code == 404
        assert (await c.get(f"/e/{links.sign(secret, link.id, link.expires_at, 'questionnaire')}")).status_code == 404
        assert (await c.get(path[:-2] + "xx")).status_code == 404
        await c.get(path)
        # answers without the date of birth first: refused, asked for it
        r = await c.post(f"{path}/answers", data={"instrument": "phq9", "client_id": "6f0c3a52-0f5e-4a53-9a1c-1c6f2d3b4e5f", **phq(), **csrf(c)})
        assert r.status_code == 403 and "date of birth" in r.text
        for n in range(4):
            r = await c.post(path, data={"date_of_birth": "1990-01-01", **csrf(c)})
            assert r.status_code == 422 and f"{4 - n} tr" in r.text
        r = await c.post(path, data={"date_of_birth": "1990-01-01", **csrf(c)})
        assert r.status_code == 403 and "locked" in r.text
        # locked for good: even the right date now opens nothing
        assert (await c.post(path, data={"date_of_birth": DOB.isoformat(), **csrf(c)})).status_code == 403
    assert await rows(engine_db, OutcomeMeasure, patient_id=patient.id) == []
    assert "outcomes.link_locked" in {e.action for e in await rows(engine_db, AuditEvent, patient_id=patient.id)}


async def test_the_kiosk_signs_the_front_desk_out_and_shows_only_that_visit(engine_db, settings, queue, redis):
    f, clinic, patient, appt, *_ = await world(engine_db, starts_in=timedelta(minutes=20))
    desk = await f.user(clinic, "front_desk")
    other = await f.patient(clinic, first_name="Sky", date_of_birth=date(1970, 1, 1))
    async with app_client(create_app(settings, db=engine_db, queue=queue)) as tablet:
        assert (await login(tablet, desk.email)).status_code == 303
        session_cookie = tablet.cookies.get("clinic_session")
        page = await tablet.get(f"/schedule/appointments/{appt.id}")
        assert "Hand this tablet to the patient" in page.text and "forms due" not in page.text
        day = await tablet.get("/schedule", params={"date": appt.starts_at.astimezone(ZoneInfo(clinic.timezone)).date().isoformat()})
        assert "forms due" in day.text
        r = await tablet.post(f"/outcomes/appointments/{appt.id}/kiosk", data=csrf(tablet), follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/q/")
        kiosk = r.headers["location"]
        [ws] = [w for w in await rows(engine_db, WebSession, user_id=desk.id)]
        assert ws.ended_at is not None
        assert tablet.cookies.get("clinic_session") is None
        # staff pages need a sign-in again, even with the old cookie put back
        assert (await tablet.get("/schedule", follow_redirects=False)).headers["location"].startswith("/login")
        tablet.cookies.set("clinic_session", session_cookie)
        assert (await tablet.get("/schedule", follow_redirects=False)).headers["location"].startswith("/login")
        tablet.cookies.delete("clinic_session")
        # the visit's questions, with no date of birth asked and no staff navigation
        page = await tablet.get(kiosk)
        assert page.status_code == 200 and "Hello Robin" in page.text and 'aria-label="Main"' not in page.text
        assert "hand the tablet back" in page.text
        # another patient's link still asks for their date of birth
        theirs = CostLink(clinic_id=clinic.id, patient_id=other.id, kind="questionnaire", appointment_id=appt.id, expires_at=appt.ends_at)
        await f.add(theirs)
        r = await tablet.get(f"/q/{links.sign(settings.secret_key, theirs.id, theirs.expires_at, 'questionnaire')}")
        assert "please confirm your date of birth" in r.text
        client_id = re.search(r'name="client_id" value="([^"]+)"', page.text).group(1)
        r = await tablet.post(f"{kiosk}/answers", data={"instrument": "phq9", "client_id": client_id, **phq(q1=1, q2=1), **csrf(tablet)})
        assert r.status_code == 200 and "hand the tablet back to the front desk" in r.text and "988" not in r.text
    [m] = await rows(engine_db, OutcomeMeasure, patient_id=patient.id)
    assert (m.via, m.completed_by, m.total) == ("kiosk", "patient", 2)
    # nothing left to answer: no kiosk
    async with app_client(create_app(settings, db=engine_db, queue=queue)) as tablet:
        await login(tablet, desk.email)
        r = await tablet.post(f"/outcomes/appointments/{appt.id}/kiosk", data=csrf(tablet), follow_redirects=False)
        assert r.status_code == 409


async def test_the_notice_goes_at_18_00_in_the_patients_own_zone(db, factory):
    clinic = await factory.clinic(tz="America/New_York")
    west = await factory.patient(clinic, first_name="West", time_zone="America/Los_Angeles")
    home = await factory.patient(clinic, first_name="Home")
    opted_out = await factory.patient(clinic, first_name="Quiet", notices_opted_out=True)
    visit = datetime(2026, 3, 9, 14, 0, tzinfo=timezone.utc)  # Monday 10:00 in New York, the day after DST began
    west_appt = await appointment(factory, clinic, west, visit, kind="ketamine_iv")
    home_appt = await appointment(factory, clinic, home, visit + timedelta(hours=3), kind="ketamine_iv")
    await appointment(factory, clinic, opted_out, visit + timedelta(hours=6), kind="ketamine_iv")

    async def run(now: datetime) -> dict[int, datetime]:
        async with db.transaction() as s:
            await outcomes.queue_questionnaire_notices(s, now=now)
        return {n.appointment_id: n.send_after for n in await rows(db, Notice, clinic_id=clinic.id) if n.kind == "questionnaire"}

    # Sunday 18:00 EDT (22:00 UTC) for the clinic's zone; 18:00 PDT (01:00 UTC Monday) in Los Angeles; an hour ahead each
    assert await run(datetime(2026, 3, 8, 20, 59, tzinfo=timezone.utc)) == {}
    assert await run(datetime(2026, 3, 8, 21, 0, tzinfo=timezone.utc)) == {home_appt.id: datetime(2026, 3, 8, 22, 0, tzinfo=timezone.utc)}
    sent = await run(datetime(2026, 3, 9, 0, 15, tzinfo=timezone.utc))
    assert sent == {home_appt.id: datetime(2026, 3, 8, 22, 0, tzinfo=timezone.utc), west_appt.id: datetime(2026, 3, 9, 1, 0, tzinfo=timezone.utc)}
    assert await run(datetime(2026, 3, 9, 0, 30, tzinfo=timezone.utc)) == sent  # one notice per visit and time
    [n] = [n for n in await rows(db, Notice, clinic_id=clinic.id) if n.appointment_id == west_appt.id]
    assert n.payload["link_purpose"] == "questionnaire" and n.payload["starts_at"] == visit.isoformat()
    [link] = await rows(db, CostLink, id=n.payload["link_id"])
    assert (link.kind, link.appointment_id, link.expires_at) == ("questionnaire", west_appt.id, west_appt.ends_at)
