"""Questionnaires before dosing, through the JSON API: what is due on a course, the first dose blocked without a baseline
until it is answered or a prescriber waives it, answers entered and corrected by staff, bad answers refused."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select, text

from clinic.audit.models import AuditEvent
from clinic.outcomes.models import BaselineWaiver, OutcomeMeasure, SafetyReview
from clinic.scheduling.models import Course, SessionType
from clinic.timeutil import utcnow
from tests.factories import Factory, appointment
from tests.integration.test_db_roles import PERMISSION_DENIED, refused, sqlstate
from tests.integration.test_monitoring_session import ago, check_in, cid, count, make_session, vitals

PHQ_12 = {f"q{n}": v for n, v in enumerate((2, 2, 1, 2, 1, 1, 2, 1, 0), start=1)}
GAD_9 = {f"q{n}": v for n, v in enumerate((2, 1, 2, 1, 1, 1, 1), start=1)}


async def course_session(client, factory, *, sessions: int = 4, codes=("F33.1", "F41.1"), template: str = "induction"):
    """An esketamine course whose first session started 40 minutes ago, the rest on the days after."""
    s = await make_session(client, factory, starts_ago=40)
    async with factory.db.sessionmaker() as db:
        st = (await db.execute(select(SessionType).where(SessionType.clinic_id == s.clinic.id, SessionType.kind == "esketamine"))).scalar_one()
        p = await db.get(type(s.patient), s.patient.id)
        p.diagnosis_codes = list(codes)
        db.add(p)
        course = Course(clinic_id=s.clinic.id, patient_id=s.patient.id, session_type_id=st.id, template=template)
        db.add(course)
        await db.commit()
    async with factory.db.sessionmaker() as db:
        a = await db.get(type(s.appt), s.appt.id)
        a.course_id = course.id
        db.add(a)
        await db.commit()
    later = [await appointment(factory, s.clinic, s.patient, s.appt.starts_at + timedelta(days=3 * n), kind="esketamine", course_id=course.id)
             for n in range(1, sessions)]
    return s, course, later


async def ready_to_dose(s) -> None:
    await check_in(s, 30)
    await vitals(s, 4, check_key="pre_dose", systolic=124, diastolic=80, spo2=98, heart_rate=70)


async def start(s):
    return await s.nurse.post(f"{s.path}/start-dosing", {"client_id": cid(), "taken_at": ago(1), "lot_number": "LOT-A1", "dose_mg": 56})


async def test_a_course_first_dose_waits_for_the_baseline_until_a_prescriber_waives_it(client, factory, db):
    s, course, later = await course_session(client, factory)
    await ready_to_dose(s)
    due = (await s.nurse.get(f"{s.path}/outcomes-due")).json()
    assert due["baseline"] and [(d["instrument"], d["reason"], d["done"]) for d in due["due"]] == [("phq9", "baseline", False), ("gad7", "baseline", False)]
    assert [b["code"] for b in due["blockers"]] == ["outcome_baseline"]
    state = (await s.nurse.get(f"{s.path}/session")).json()
    assert "outcome_baseline" in [b["code"] for b in state["pre_dose_blockers"]]

    r = await start(s)
    assert r.status_code == 409 and [b["code"] for b in r.json()["blockers"]] == ["outcome_baseline"]

    # a nurse cannot waive; a prescriber must give a reason
    assert (await s.nurse.post(f"{s.path}/outcome-waiver", {"reason": "Patient cannot read today"})).json()["code"] == "role"
    r = await s.prescriber.post(f"{s.path}/outcome-waiver", {"reason": "   "})
    assert r.status_code == 422 and r.json()["field"] == "reason"
    assert await count(db, BaselineWaiver, appointment_id=s.appt.id) == 0

    r = await s.prescriber.post(f"{s.path}/outcome-waiver", {"reason": "Forgot glasses; PHQ-9 asked at the next session"})
    assert r.status_code == 201 and r.json()["baseline_waived"] and r.json()["blockers"] == []
    async with db.sessionmaker() as x:
        event = (await x.execute(select(AuditEvent).where(AuditEvent.action == "outcomes.baseline_waived"))).scalars().one()
    assert event.patient_id == s.patient.id and event.changes["instruments"] == ["phq9", "gad7"]
    assert (await s.prescriber.post(f"{s.path}/outcome-waiver", {"reason": "again"})).status_code == 409

    assert (await start(s)).status_code == 201
    # a session that is not a course's first has no baseline to wait for
    second = (await s.nurse.get(f"/appointments/{later[0].id}/outcomes-due")).json()
    assert not second["baseline"] and second["due"] == [] and second["blockers"] == []


async def test_baseline_answers_entered_by_staff_lift_the_block(client, factory, db):
    s, course, later = await course_session(client, factory)
    await ready_to_dose(s)
    body = {"client_id": cid(), "instrument": "phq9", "answers": PHQ_12, "appointment_id": s.appt.id}
    r = await s.nurse.post(f"/patients/{s.patient.id}/outcome-measures", body)
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["created"] and out["safety_review"] is None
    m = out["measure"]
    assert (m["score"]["total"], m["score"]["band"], m["completed_by"], m["via"], m["version"]) == (12, "moderate", "staff", "staff", "PHQ-9 en-US 1999")
    assert m["completed_by_user_id"] == s.nurse_user.id and m["answers"] == PHQ_12
    # the same submission again: the first result, nothing new
    again = await s.nurse.post(f"/patients/{s.patient.id}/outcome-measures", body)
    assert again.status_code == 200 and again.json()["measure"]["id"] == m["id"] and not again.json()["created"]
    # GAD-7 is still missing: the block stays, naming it
    assert "GAD-7" in (await start(s)).json()["blockers"][0]["message"]
    r = await s.nurse.post(f"/patients/{s.patient.id}/outcome-measures", {"client_id": cid(), "instrument": "gad7", "answers": GAD_9})
    assert r.status_code == 201
    due = (await s.nurse.get(f"{s.path}/outcomes-due")).json()
    assert all(d["done"] for d in due["due"]) and due["blockers"] == []
    assert (await start(s)).status_code == 201


async def test_bad_answers_are_refused_naming_the_field_and_nothing_is_written(client, factory, db):
    s, _, _ = await course_session(client, factory, sessions=1)
    url = f"/patients/{s.patient.id}/outcome-measures"
    cases = [
        ({"instrument": "phq9", "answers": PHQ_12 | {"q2": 4}}, "q2"),  # outside the options
        ({"instrument": "phq9", "answers": {k: v for k, v in PHQ_12.items() if k != "q7"}}, "q7"),  # a missing item
        ({"instrument": "gad7", "answers": GAD_9 | {"q8": 1}}, "q8"),  # not a question of the GAD-7
        ({"instrument": "beck", "answers": PHQ_12}, "instrument"),
        ({"instrument": "asrs", "answers": {f"q{n}": 5 for n in range(1, 19)}}, "q1"),
        ({"instrument": "phq9", "answers": PHQ_12, "completed_at": (utcnow() + timedelta(hours=1)).isoformat()}, "completed_at"),
        ({"instrument": "phq9", "answers": PHQ_12, "completed_at": (utcnow() - timedelta(days=31)).isoformat()}, "completed_at"),
    ]
    for body, field in cases:
        r = await s.nurse.post(url, {"client_id": cid(), **body})
        assert r.status_code == 422 and r.json()["field"] == field, (body, r.text)
    r = await s.nurse.post(url, {"client_id": cid(), "instrument": "phq9", "answers": {**PHQ_12, "q3": "often"}})
    assert r.status_code in (400, 422) and "q3" in r.text
    assert await count(db, OutcomeMeasure, patient_id=s.patient.id) == 0
    # front desk may see what is due, never the answers
    desk = await factory.user(s.clinic, "front_desk")
    from tests.factories import bearer

    token = await factory.token(desk)
    assert (await client.get(f"/api/v1{s.path}/outcomes-due", headers=bearer(token))).status_code == 200
    assert (await client.get(f"/api/v1/patients/{s.patient.id}/outcome-measures", headers=bearer(token))).status_code == 403


async def test_a_correction_supersedes_with_who_when_why_and_reads_are_audited(client, factory, db):
    s, _, _ = await course_session(client, factory, sessions=1)
    first = (await s.nurse.post(f"/patients/{s.patient.id}/outcome-measures",
                                {"client_id": cid(), "instrument": "phq9", "answers": PHQ_12})).json()["measure"]
    r = await s.prescriber.post(f"/outcome-measures/{first['id']}/corrections", {"client_id": cid(), "reason": "", "answers": {"q1": 0}})
    assert r.status_code == 422 and r.json()["field"] == "reason"
    r = await s.prescriber.post(f"/outcome-measures/{first['id']}/corrections",
                                {"client_id": cid(), "reason": "Item 1 was misread from the paper form", "answers": {"q1": 0}})
    assert r.status_code == 201, r.text
    fixed = r.json()["measure"]
    assert (fixed["supersedes_id"], fixed["score"]["total"], fixed["recorded_by"]) == (first["id"], 10, s.prescriber_user.id)
    assert fixed["completed_at"] == first["completed_at"] and fixed["completed_by_user_id"] == s.nurse_user.id
    assert (await s.prescriber.post(f"/outcome-measures/{first['id']}/corrections",
                                    {"client_id": cid(), "reason": "again", "answers": {"q1": 1}})).status_code == 409
    # a correction that puts item 9 above 0 opens a safety review
    r = await s.prescriber.post(f"/outcome-measures/{fixed['id']}/corrections", {"client_id": cid(), "reason": "Item 9 was ticked", "answers": {"q9": 1}})
    assert r.json()["safety_review"]["open"] is True
    current = (await s.nurse.get(f"/patients/{s.patient.id}/outcome-measures")).json()
    assert [m["score"]["total"] for m in current] == [11]
    every = (await s.nurse.get(f"/patients/{s.patient.id}/outcome-measures", current_only="false")).json()
    assert len(every) == 3
    async with db.sessionmaker() as x:
        actions = (await x.execute(select(AuditEvent.action).where(AuditEvent.patient_id == s.patient.id))).scalars().all()
    assert actions.count("outcomes.record") == 1 and actions.count("outcomes.correct") == 2 and actions.count("outcomes.view") == 2


async def test_the_app_may_only_add_answers_and_waivers_and_review_once(engine_db):
    for sql in ("UPDATE outcome_measures SET total = 0", "DELETE FROM outcome_measures", "UPDATE baseline_waivers SET reason = 'x'",
                "DELETE FROM baseline_waivers", "DELETE FROM safety_reviews", "TRUNCATE outcome_measures"):
        assert sqlstate(await refused(engine_db, sql)) == PERMISSION_DENIED, sql
    f = Factory(engine_db)
    clinic = await f.clinic()
    patient = await f.patient(clinic)
    doctor = await f.user(clinic, "prescriber")
    m = OutcomeMeasure(clinic_id=clinic.id, patient_id=patient.id, instrument="phq9", version="PHQ-9 en-US 1999",
                       answers={f"q{n}": 0 for n in range(1, 10)} | {"q9": 1}, total=1, completed_at=utcnow(), completed_by="patient",
                       via="staff", client_id=uuid.uuid4())
    await f.add(m)
    review = SafetyReview(clinic_id=clinic.id, patient_id=patient.id, measure_id=m.id)
    await f.add(review)
    # the review is added once (the trigger), by the app's role
    async with engine_db.transaction() as s:
        await s.execute(text("UPDATE safety_reviews SET reviewed_by = :u, reviewed_at = now(), risk_level = 'low', action_taken = 'called',"
                             " safety_plan = true WHERE id = :id"), {"u": doctor.id, "id": review.id})
    assert sqlstate(await refused(engine_db, "UPDATE safety_reviews SET risk_level = 'high' WHERE id = :id", id=review.id)) == PERMISSION_DENIED
