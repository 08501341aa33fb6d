"""The clinic's outcomes on a seeded data set with a known answer, the FHIR export of answers (validated with fhir.resources),
and every outcome page rendering for the roles that may see it."""

from __future__ import annotations

import uuid
from datetime import timedelta

from fhir.resources.R4B.bundle import Bundle
from sqlalchemy import select

from clinic.audit.models import AuditEvent
from clinic.outcomes import rules
from clinic.outcomes.instruments import INSTRUMENTS
from clinic.outcomes.models import OutcomeMeasure, SafetyReview
from clinic.timeutil import utcnow
from tests.factories import appointment, bearer, login
from tests.integration.test_monitoring_session import cid, make_session

FIRST_DOSE = utcnow().replace(microsecond=0) - timedelta(days=40)


def answers_for(instrument: str, total: int) -> dict[str, int]:
    inst = INSTRUMENTS[instrument]
    top = max(inst.scored_items[0].values)
    out, left = {}, total
    for item in inst.scored_items:
        out[item.key] = min(top, left) if item.key != "q9" else 0
        left -= out[item.key]
    assert left == 0
    return out


def asrs(part_a: int, part_b_total: int) -> dict[str, int]:
    """Every Part A item at `part_a`, Part B adding up to `part_b_total`."""
    out = {f"q{n}": part_a for n in range(1, 7)}
    left = part_b_total
    for n in range(7, 19):
        out[f"q{n}"] = min(4, left)
        left -= out[f"q{n}"]
    return out


async def treated(factory, clinic, n: int, kind: str, codes: list[str], series: dict[str, list[tuple[int, dict[str, int]]]]):
    """A patient first dosed under `kind` at FIRST_DOSE (+ n hours, one chair), with answers at (days from the first dose, answers)."""
    patient = await factory.patient(clinic, diagnosis_codes=codes)
    at = FIRST_DOSE + timedelta(hours=3 * n)
    await appointment(factory, clinic, patient, at - timedelta(minutes=15), kind=kind, status="fulfilled", dosing_started_at=at,
                      checked_in_at=at - timedelta(minutes=15), ends_at=at + timedelta(minutes=150))
    rows = []
    for instrument, points in series.items():
        for days, answers in points:
            rows.append(OutcomeMeasure(clinic_id=clinic.id, patient_id=patient.id, instrument=instrument, version=INSTRUMENTS[instrument].version,
                                       answers=answers, total=rules.score(instrument, answers).total, completed_at=at + timedelta(days=days),
                                       completed_by="patient", via="staff", client_id=uuid.uuid4()))
    await factory.add(*rows)
    return patient


def phq(base: int, end: int, *, at: int = 10) -> list[tuple[int, dict[str, int]]]:
    return [(-2, answers_for("phq9", base)), (at, answers_for("phq9", end))]


async def test_the_outcomes_page_computes_response_and_remission_on_a_known_data_set(client, factory):
    clinic = await factory.clinic(chairs=1)
    n = 0
    iv = [(20, 10), (18, 9), (16, 4), (14, 7), (12, 3), (10, 8)]  # 5 respond, 2 remit (withheld), mean change -8.2
    gad = [(15, 5), (12, 6), (10, 2), (9, 8), (14, 3)]  # 4 respond, 2 remit: both withheld; 5 patients, mean change -7.2
    for i, (b, e) in enumerate(iv):
        series = {"phq9": phq(b, e)}
        codes = ["F33.1"]
        if i < 5:
            series["gad7"] = [(-2, answers_for("gad7", gad[i][0])), (10, answers_for("gad7", gad[i][1]))]
            codes.append("F41.1")
        await treated(factory, clinic, (n := n + 1), "ketamine_iv", codes, series)
    # no follow-up, no baseline: neither counts
    await treated(factory, clinic, (n := n + 1), "ketamine_iv", ["F33.1"], {"phq9": [(-2, answers_for("phq9", 20))]})
    await treated(factory, clinic, (n := n + 1), "ketamine_iv", ["F33.1"], {"phq9": [(5, answers_for("phq9", 3))]})
    esk = [(20, 4), (22, 3), (15, 2), (18, 4), (21, 12), (16, 1)]  # 5 respond, 5 remit
    for i, (b, e) in enumerate(esk):
        series = {"phq9": phq(b, e)}
        codes = ["F33.2"]
        if i < 5:  # ADHD: ASRS Part A from all six shaded to none; totals 18+B -> 6+B
            series["asrs"] = [(-2, asrs(3, 32 - 2 * i)), (10, asrs(1, 28 - 2 * i))]
            codes.append("F90.0")
        await treated(factory, clinic, (n := n + 1), "esketamine", codes, series)
    for b, e in [(18, 8), (15, 12)]:
        await treated(factory, clinic, (n := n + 1), "kap", ["F43.10"], {"phq9": phq(b, e)})

    doctor = await factory.user(clinic, "prescriber")
    out = (await client.get("/api/v1/outcomes", headers=bearer(await factory.token(doctor)))).json()
    proto = {g["key"]: g["instruments"] for g in out["by_protocol"]}
    groups = {g["key"]: g["instruments"] for g in out["by_diagnosis"]}
    iv_phq = proto["ketamine_iv"]["phq9"]
    assert (iv_phq["patients"], iv_phq["responders"], iv_phq["response_rate"]) == (6, 5, 0.833)
    assert (iv_phq["remitters"], iv_phq["remission_rate"], iv_phq["withheld"], iv_phq["mean_change"]) == (None, None, ["remitters"], -8.2)
    esk_phq = proto["esketamine"]["phq9"]
    assert (esk_phq["patients"], esk_phq["responders"], esk_phq["remitters"], esk_phq["remission_rate"]) == (6, 5, 5, 0.833)
    assert proto["ketamine_iv"]["gad7"] == {"patients": 5, "responders": None, "remitters": None, "response_rate": None,
                                                "remission_rate": None, "mean_change": -7.2, "mean_part_a_change": None,
                                                "withheld": ["responders", "remitters"]}
    kap = proto["kap"]["phq9"]
    assert (kap["patients"], kap["responders"], kap["withheld"]) == (None, None, ["patients", "responders", "remitters"])
    assert (proto["esketamine"]["asrs"]["patients"], proto["esketamine"]["asrs"]["mean_change"], proto["esketamine"]["asrs"]["mean_part_a_change"]) == (5, -16.0, -6.0)
    assert (groups["depression"]["phq9"]["patients"], groups["depression"]["phq9"]["responders"], groups["depression"]["phq9"]["remitters"]) == (12, 10, 7)
    assert (groups["adhd"]["asrs"]["patients"], groups["adhd"]["phq9"]["patients"], groups["adhd"]["phq9"]["responders"]) == (5, 5, None)
    assert (groups["anxiety"]["gad7"]["patients"], groups["anxiety"]["phq9"]["patients"]) == (5, 5)
    weekly = out["weekly_change"]["phq9"]
    assert weekly["ketamine_iv"] == [{"week": 2, "mean_change": -8.2, "patients": 6}]
    assert weekly["esketamine"] == [{"week": 2, "mean_change": -14.3, "patients": 6}] and "kap" not in weekly
    assert out["small_cell"] == 5
    # computed from every treated patient's answers: audited as a bulk read naming them
    async with factory.db.sessionmaker() as x:
        event = (await x.execute(select(AuditEvent).where(AuditEvent.action == "read.outcomes", AuditEvent.clinic_id == clinic.id))).scalars().one()
    assert event.user_id == doctor.id and event.changes["rows"] == 16 and len(event.changes["patient_ids"]) == 16  # 8 IV, 6 intranasal, 2 KAP

    web = await login_as(client, factory, clinic, "prescriber")
    page = await web.get("/outcomes")
    assert page.status_code == 200
    assert "83 %" in page.text and "&lt; 5" in page.text and "−8.2" not in page.text and "-8.2" in page.text
    assert page.text.count("<svg") == 3  # a weekly chart per instrument: each has 5 patients in week 2 somewhere
    # the front desk and billing never see it; a nurse neither
    for role in ("front_desk", "billing", "nurse"):
        token = await factory.token(await factory.user(clinic, role))
        assert (await client.get("/api/v1/outcomes", headers=bearer(token))).status_code == 403


async def login_as(client, factory, clinic, role):
    user = await factory.user(clinic, role)
    assert (await login(client, user.email)).status_code == 303
    return client


async def test_fhir_questionnaire_responses_and_total_observations_validate(client, factory):
    s = await make_session(client, factory, starts_ago=30)
    patient = s.patient
    async with factory.db.sessionmaker() as x:
        p = await x.get(type(patient), patient.id)
        p.diagnosis_codes = ["F33.1", "F90.0"]
        x.add(p)
        await x.commit()
    phq = answers_for("phq9", 11) | {"difficulty": 1}
    r = await s.nurse.post(f"/patients/{patient.id}/outcome-measures", {"client_id": cid(), "instrument": "phq9", "answers": phq, "appointment_id": s.appt.id})
    assert r.status_code == 201
    r = await s.nurse.post(f"/patients/{patient.id}/outcome-measures", {"client_id": cid(), "instrument": "asrs", "answers": asrs(3, 20)})
    assert r.status_code == 201
    for url, expect in ((f"/patients/{patient.id}/fhir/outcomes", {"phq9", "asrs"}), (f"{s.path}/fhir", {"phq9"})):
        r = await s.nurse.get(url)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+json")
        bundle = Bundle.model_validate(r.json())
        by_type: dict[str, list] = {}
        for e in bundle.entry:
            by_type.setdefault(e.resource.__resource_type__, []).append(e)
        qrs = {e.resource.questionnaire: e for e in by_type["QuestionnaireResponse"]}
        assert {"phq9": "http://loinc.org/q/44249-1", "asrs": "urn:clinic:questionnaire:asrs-v1.1"}.keys() >= expect
        observations = [e.resource for e in by_type["Observation"] if e.resource.category[0].coding[0].code == "survey"
                        and e.resource.derivedFrom]
        phq_obs = next(o for o in observations if o.code.coding[0].code == "44261-6")
        assert phq_obs.code.coding[0].system == "http://loinc.org" and phq_obs.valueInteger == 11 and phq_obs.interpretation[0].text == "moderate"
        qr = qrs["http://loinc.org/q/44249-1"]
        assert phq_obs.derivedFrom[0].reference == qr.fullUrl and qr.resource.status == "completed"
        items = {i.linkId: i for i in qr.resource.item}
        assert len(items) == 10 and items["q1"].definition == "http://loinc.org/44250-9"
        assert items["difficulty"].answer[0].valueCoding.code == "LA6573-5"
        assert items["q9"].answer[0].valueCoding.code == "LA6568-5" and items["q9"].definition == "http://loinc.org/44260-8"
        if "asrs" in expect:
            asrs_obs = next(o for o in observations if o.code.coding[0].code == "asrs-total")
            assert asrs_obs.code.coding[0].system == "urn:clinic:codes" and asrs_obs.valueInteger == 38
            assert [c.valueInteger for c in asrs_obs.component] == [6, 32, 6]  # Part A; items 1-4 and 7-11; 5-6 and 12-18
        else:
            assert all(o.encounter for o in observations)


async def test_every_outcome_page_renders_for_its_roles(client, factory, db):
    s = await make_session(client, factory, starts_ago=20)
    clinic = s.clinic
    r = await s.nurse.post(f"/patients/{s.patient.id}/outcome-measures",
                           {"client_id": cid(), "instrument": "phq9", "answers": answers_for("phq9", 8) | {"q9": 1}, "appointment_id": s.appt.id})
    measure_id, review_id = r.json()["measure"]["id"], r.json()["safety_review"]["id"]
    web = await login_as(client, factory, clinic, "prescriber")
    pages = {
        f"/patients/{s.patient.id}/outcomes": ["Outcome measures", "Safety review", "<svg", "item 9"],
        f"/patients/{s.patient.id}/outcomes/new?instrument=gad7": ["Generalized Anxiety Disorder", "Feeling nervous, anxious or on edge"],
        f"/outcomes/measures/{measure_id}": ["Thoughts that you would be better off dead", "Several days"],
        f"/outcomes/safety/{review_id}": ["Record the review", "Risk level"],
        f"/sessions/{s.appt.id}": ["PHQ-9 9", "Safety review", "Record the review"],
        f"/schedule/appointments/{s.appt.id}": ["Safety review", "Questionnaires"],
        "/board": ["· safety review"],  # a booked visit, in its chair's list for later
        "/outcomes": ["By protocol", "By diagnosis group"],
    }
    for url, texts in pages.items():
        page = await web.get(url)
        assert page.status_code == 200, (url, page.text[:300])
        for text in texts:
            assert text in page.text, (url, text)
    # the prescriber's review from the page lifts the alert
    r = await web.post(f"/outcomes/safety/{review_id}", data={"risk_level": "moderate", "action_taken": "Seen in clinic; plan agreed",
                                                             "safety_plan": "yes", "_csrf_token": web.cookies["csrftoken"]}, follow_redirects=False)
    assert r.status_code == 303
    async with db.sessionmaker() as x:
        review = await x.get(SafetyReview, review_id)
    assert (review.risk_level, review.safety_plan) == ("moderate", True)
    assert "safety review" not in (await web.get("/board")).text.lower()
