"""Billing as staff and integrators see it: coverage, estimates and GFEs, charges at discharge, claims, links, fees."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from clinic.billing import rules
from clinic.billing.demo import fee_schedule
from clinic.billing.models import Charge, CostLink, Estimate, FeeScheduleEntry
from clinic.events import AppointmentBooked, AppointmentMoved, SessionDischarged, publish
from clinic.notices import links
from clinic.notices.models import Notice
from clinic.scheduling.models import Appointment
from clinic.timeutil import utcnow
from tests.factories import appointment, bearer, csrf_headers, login

WORKED = {"kind": "insured", "payer": "Blue Harbor", "member_id": "BH123", "copay_cents": 0, "coinsurance_pct": 20,
          "deductible_remaining_cents": 300_00, "oop_remaining_cents": 2_000_00, "allowed_amounts": {"G2082": 500_00}}


async def world(factory, *, fees: bool = True, **patient_kw):
    clinic = await factory.clinic()
    if fees:
        await factory.add(*fee_schedule(clinic.id, date(2020, 1, 1)))
    billing = await factory.user(clinic, "billing")
    token = await factory.token(billing)
    patient = await factory.patient(clinic, first_name="Robin", diagnosis_codes=["F33.2"], **patient_kw)
    return clinic, billing, token, patient


async def book(db, factory, clinic, patient, days: int = 20, **kw) -> Appointment:
    appt = await appointment(factory, clinic, patient, utcnow().replace(microsecond=0) + timedelta(days=days), **kw)
    async with db.transaction() as s:
        await publish(s, AppointmentBooked(appt, patient, clinic), queue=None)
    return appt


async def rows(db, model, *where):
    async with db.sessionmaker() as s:
        return list((await s.execute(select(model).where(*where).order_by(model.id))).scalars().all())


# ---- coverage and the insurance estimate --------------------------------------------------------------


async def test_worked_example_through_the_api(client, db, factory):
    clinic, _, token, patient = await world(factory)
    await book(db, factory, clinic, patient, planned_dose_mg=56)
    r = await client.put(f"/api/v1/coverage/{patient.id}", json=WORKED, headers=bearer(token))
    assert r.status_code == 200, r.text
    assert r.json()["estimates_as"] == "insurance"
    # the coverage change issued an insurance estimate at once, and queued its notice
    (e,) = (await client.get(f"/api/v1/estimates?patient_id={patient.id}&status=issued", headers=bearer(token))).json()["items"]
    assert e["kind"] == "insurance" and e["reason"] == "coverage"
    visit = e["content"]["visits"][0]
    assert (visit["allowed_cents"], visit["patient_cents"], visit["plan_cents"]) == (500_00, 340_00, 160_00)
    assert e["patient_cents"] == 340_00
    (n,) = await rows(db, Notice, Notice.patient_id == patient.id, Notice.kind == "estimate_ready")
    assert n.payload["link_id"] and "340" not in str(n.payload)


@pytest.mark.parametrize("field,value", [("copay_cents", -100), ("copay_cents", 12.5), ("coinsurance_pct", 101),
                                         ("coinsurance_pct", -1), ("oop_remaining_cents", "lots")])
async def test_bad_money_or_percent_is_refused_and_nothing_written(client, db, factory, field, value):
    clinic, _, token, patient = await world(factory)
    r = await client.put(f"/api/v1/coverage/{patient.id}", json=WORKED | {field: value}, headers=bearer(token))
    assert r.status_code == 422
    assert r.json()["field"] == field
    r = await client.get(f"/api/v1/coverage?patient_id={patient.id}", headers=bearer(token))
    assert r.json()["items"][0]["on_file"] is False


async def test_coverage_missing_an_allowed_amount_leaves_a_draft_and_issuing_says_why(client, db, factory):
    clinic, _, token, patient = await world(factory)
    await book(db, factory, clinic, patient, planned_dose_mg=84)  # G2083, which WORKED has no allowed amount for
    assert (await client.put(f"/api/v1/coverage/{patient.id}", json=WORKED, headers=bearer(token))).status_code == 200
    (draft,) = (await client.get(f"/api/v1/estimates?patient_id={patient.id}", headers=bearer(token))).json()["items"]
    assert draft["status"] == "draft"
    r = await client.post(f"/api/v1/estimates/{draft['id']}/issue", headers=bearer(token))
    assert r.status_code == 422
    assert "no allowed amount for G2083" in r.json()["detail"]
    assert await rows(db, Notice, Notice.patient_id == patient.id, Notice.kind == "estimate_ready") == []


# ---- Good Faith Estimates ----------------------------------------------------------------------------------


async def test_self_pay_booking_owes_a_gfe_with_its_legal_deadline(db, factory):
    clinic, _, _, patient = await world(factory)
    appt = await book(db, factory, clinic, patient, days=20)
    (draft,) = await rows(db, Estimate, Estimate.patient_id == patient.id)
    today = clinic.today()
    assert draft.kind == "gfe" and draft.issued_at is None and draft.appointment_id == appt.id
    assert draft.due_on == rules.gfe_due(scheduled_on=today, service_on=draft.service_date, reason="scheduled")
    # a second visit widens the same draft instead of adding another
    await book(db, factory, clinic, patient, days=27)
    assert len(await rows(db, Estimate, Estimate.patient_id == patient.id)) == 1


async def test_issued_gfe_has_every_required_element_and_is_frozen(client, db, factory):
    clinic, billing, _, patient = await world(factory)
    await book(db, factory, clinic, patient, days=20)
    await book(db, factory, clinic, patient, days=24, kind="integration")
    (draft,) = await rows(db, Estimate, Estimate.patient_id == patient.id)
    await login(client, billing.email)
    r = await client.post(f"/billing/estimates/{draft.id}/issue", data={"_csrf_token": client.cookies.get("csrftoken")})
    assert r.status_code in (302, 303), r.text
    page = (await client.get(f"/billing/estimates/{draft.id}")).text
    for element in (patient.full_name, "1980-05-17", "Primary service", "G2082", "90837", "F33.2", "$590.00",
                    clinic.name, "NPI 1234567893", "TIN 12-3456789", clinic.address, "CT",
                    "Services scheduled separately", "not included in this Good Faith Estimate", "only an estimate",
                    "patient-provider dispute resolution", "does not affect", "not a contract"):
        assert element in page, element
    (issued,) = await rows(db, Estimate, Estimate.id == draft.id)
    assert issued.total_cents == 590_00 + 210_00
    with pytest.raises(DBAPIError, match="issued and cannot be changed"):
        async with db.transaction() as s:
            await s.execute(text("UPDATE estimates SET total_cents = 1 WHERE id = :id"), {"id": draft.id})
    with pytest.raises(DBAPIError, match="issued and cannot be changed"):
        async with db.transaction() as s:
            await s.execute(text("DELETE FROM estimates WHERE id = :id"), {"id": draft.id})


async def test_moving_a_visit_after_the_gfe_makes_a_new_one_due_the_business_day_before(client, db, factory):
    clinic, _, token, patient = await world(factory)
    appt = await book(db, factory, clinic, patient, days=20)
    (draft,) = await rows(db, Estimate, Estimate.patient_id == patient.id)
    assert (await client.post(f"/api/v1/estimates/{draft.id}/issue", headers=bearer(token))).status_code == 200
    async with db.transaction() as s:
        a = await s.get(Appointment, appt.id)
        old = a.starts_at
        a.starts_at, a.ends_at = old + timedelta(days=7), a.ends_at + timedelta(days=7)
        await publish(s, AppointmentMoved(a, patient, clinic), queue=None)
    first, second = await rows(db, Estimate, Estimate.patient_id == patient.id)
    assert second.supersedes_id == first.id and second.reason == "scope_change" and second.issued_at is None
    assert second.due_on == rules.business_day_before(second.service_date)
    r = await client.post(f"/api/v1/estimates/{second.id}/issue", headers=bearer(token))
    assert r.status_code == 200
    items = (await client.get(f"/api/v1/estimates?patient_id={patient.id}", headers=bearer(token))).json()["items"]
    assert {e["id"]: e["status"] for e in items} == {first.id: "superseded", second.id: "issued"}


async def test_gfe_on_request_before_anything_is_booked(client, db, factory):
    clinic, _, token, patient = await world(factory)
    async with db.sessionmaker() as s:
        iv = (await s.execute(text("SELECT id FROM session_types WHERE clinic_id = :c AND kind = 'ketamine_iv'"), {"c": clinic.id})).scalar_one()
    r = await client.post("/api/v1/estimates", json={"patient_id": patient.id, "session_type_id": iv, "visits": 6}, headers=bearer(token))
    assert r.status_code == 201, r.text
    assert r.json()["reason"] == "request"
    r = await client.post(f"/api/v1/estimates/{r.json()['id']}/issue", headers=bearer(token))
    assert r.status_code == 200
    assert r.json()["total_cents"] == 6 * 450_00
    assert r.json()["content"]["primary_service"]["codes"] == ["96365"]


# ---- after the session --------------------------------------------------------------------------------------


async def discharge(db, factory, clinic, patient, *, facts, kind="esketamine", prescriber=None):
    start = utcnow() - timedelta(hours=3)
    appt = await appointment(factory, clinic, patient, start, kind=kind, status="fulfilled", facts=facts,
                             dosing_started_at=start, discharged_at=start + timedelta(hours=2),
                             discharged_by=prescriber.id if prescriber else None)
    async with db.transaction() as s:
        await publish(s, SessionDischarged(appt, patient, clinic), queue=None)
    return appt


async def test_discharge_makes_charges_a_superbill_a_balance_and_a_balance_notice(client, db, factory):
    clinic, billing, token, patient = await world(factory)
    prescriber = await factory.user(clinic, "prescriber", full_name="Dr. Priya Patel", credentials="MD", npi="1588667638")
    appt = await discharge(db, factory, clinic, patient, facts={"dose_mg": 84}, prescriber=prescriber)
    charges = (await client.get(f"/api/v1/charges?appointment_id={appt.id}", headers=bearer(token))).json()["items"]
    assert [(c["code"], c["units"], c["amount_cents"]) for c in charges] == [("G2083", 1, 860_00)]
    # running the hook twice (a retried discharge) adds nothing
    async with db.transaction() as s:
        await publish(s, SessionDischarged(appt, patient, clinic), queue=None)
    assert len(await rows(db, Charge, Charge.appointment_id == appt.id)) == 1
    (n,) = await rows(db, Notice, Notice.kind == "balance", Notice.patient_id == patient.id)
    bal = (await client.get(f"/api/v1/balances?patient_id={patient.id}", headers=bearer(token))).json()["items"]
    assert bal[0]["owed_cents"] == 860_00
    r = await client.post(f"/api/v1/patients/{patient.id}/payments", json={"amount_cents": 200_00, "appointment_id": appt.id}, headers=bearer(token))
    assert r.status_code == 201
    bal = (await client.get(f"/api/v1/balances?patient_id={patient.id}", headers=bearer(token))).json()["items"]
    assert bal[0]["owed_cents"] == 660_00
    await login(client, billing.email)
    page = (await client.get(f"/billing/sessions/{appt.id}/superbill")).text
    for element in (patient.full_name, "05/17/1980", clinic.name, "Dr. Priya Patel", "MD", "NPI 1588667638", "12-3456789",
                    clinic.address, "11 (office)", "G2083", "F33.2", "$860.00", "Amount paid by the patient", "$200.00"):
        assert element in page, element


@pytest.mark.parametrize("facts,kind,codes", [
    ({"infusion_minutes": 100}, "ketamine_iv", [("96365", 1), ("96366", 1)]),
    ({"therapy_minutes": 45}, "integration", [("90834", 1)]),
    ({"dose_mg": 56}, "esketamine", [("G2082", 1)]),
])
async def test_charges_follow_each_protocols_facts(db, factory, facts, kind, codes):
    clinic, _, _, patient = await world(factory)
    appt = await discharge(db, factory, clinic, patient, facts=facts, kind=kind)
    assert [(c.code, c.units) for c in await rows(db, Charge, Charge.appointment_id == appt.id)] == codes


async def test_billed_400_over_the_gfe_is_flagged(client, db, factory):
    clinic, billing, token, patient = await world(factory)
    appt = await book(db, factory, clinic, patient, days=20, planned_dose_mg=56)
    (draft,) = await rows(db, Estimate, Estimate.patient_id == patient.id)
    assert (await client.post(f"/api/v1/estimates/{draft.id}/issue", headers=bearer(token))).status_code == 200
    await login(client, billing.email)
    assert "Billed $400 or more above" not in (await client.get("/billing")).text
    # the session ran at 84 mg, and this clinic's G2083 price is high enough to cross the line
    async with db.transaction() as s:
        await s.execute(text("UPDATE fee_schedule SET self_pay_cents = 99000 WHERE clinic_id = :c AND code = 'G2083'"), {"c": clinic.id})
        a = await s.get(Appointment, appt.id)
        a.status, a.facts = "fulfilled", {"dose_mg": 84}
        await publish(s, SessionDischarged(a, patient, clinic), queue=None)
    page = (await client.get("/billing")).text
    assert "Billed $400 or more above the Good Faith Estimate" in page and "$400.00" in page


async def test_claim_moves_through_its_states_and_refuses_a_skip(client, db, factory):
    clinic, _, token, patient = await world(factory)
    await client.put(f"/api/v1/coverage/{patient.id}", json=WORKED, headers=bearer(token))
    await discharge(db, factory, clinic, patient, facts={"dose_mg": 56})
    (claim,) = (await client.get(f"/api/v1/claims?patient_id={patient.id}", headers=bearer(token))).json()["items"]
    assert (claim["status"], claim["billed_cents"], claim["patient_cents"]) == ("draft", 590_00, 340_00)
    r = await client.post(f"/api/v1/claims/{claim['id']}/status", json={"status": "paid"}, headers=bearer(token))
    assert r.status_code == 422 and "draft can move to submitted" in r.json()["detail"]
    r = await client.post(f"/api/v1/claims/{claim['id']}/status", json={"status": "submitted"}, headers=bearer(token))
    assert r.json()["status"] == "submitted"
    r = await client.post(f"/api/v1/claims/{claim['id']}/status",
                          json={"status": "partially_paid", "plan_paid_cents": 120_00, "patient_cents": 380_00}, headers=bearer(token))
    assert (r.json()["status"], r.json()["plan_paid_cents"], r.json()["patient_cents"]) == ("partially_paid", 120_00, 380_00)



async def test_a_claim_for_a_code_with_no_price_yet_asks_the_patient_for_nothing(client, db, factory):
    """The allowed amount alone would make the patient owe $340 of a $0 bill; billing staff price the code first."""
    clinic, _, token, patient = await world(factory, fees=False)
    await client.put(f"/api/v1/coverage/{patient.id}", json=WORKED, headers=bearer(token))
    await discharge(db, factory, clinic, patient, facts={"dose_mg": 56})
    (claim,) = (await client.get(f"/api/v1/claims?patient_id={patient.id}", headers=bearer(token))).json()["items"]
    assert (claim["status"], claim["billed_cents"], claim["patient_cents"]) == ("draft", 0, 0)

# ---- the patient's link ---------------------------------------------------------------------------------


async def link_for(db, settings, patient, *, expires_in=timedelta(days=30)):
    async with db.transaction() as s:
        link = CostLink(clinic_id=patient.clinic_id, patient_id=patient.id, kind="balance", expires_at=utcnow() + expires_in)
        s.add(link)
        await s.flush()
        return link, links.sign(settings.secret_key, link.id, link.expires_at)


async def test_link_asks_for_the_date_of_birth_and_locks_after_five_wrong_tries(client, db, factory, settings):
    clinic, _, _, patient = await world(factory)
    await discharge(db, factory, clinic, patient, facts={"dose_mg": 84})
    link, token = await link_for(db, settings, patient)
    r = await client.get(f"/e/{token}")
    assert r.status_code == 200 and "date of birth" in r.text and "$" not in r.text
    csrf = client.cookies.get("csrftoken")
    right = await client.post(f"/e/{token}", data={"date_of_birth": "1980-05-17", "_csrf_token": csrf})
    assert right.status_code == 200 and "$860.00" in right.text
    for i in range(4):
        r = await client.post(f"/e/{token}", data={"date_of_birth": "1980-05-18", "_csrf_token": csrf})
        assert r.status_code == 422 and f"{4 - i} tr" in r.text and "$860" not in r.text
    r = await client.post(f"/e/{token}", data={"date_of_birth": "1980-05-18", "_csrf_token": csrf})
    assert r.status_code == 403 and "locked" in r.text
    # even the right date no longer opens it
    r = await client.post(f"/e/{token}", data={"date_of_birth": "1980-05-17", "_csrf_token": csrf})
    assert r.status_code == 403 and "$860" not in r.text


async def test_tampered_and_expired_links_are_refused_with_a_clear_message(client, db, factory, settings):
    clinic, _, _, patient = await world(factory)
    _, token = await link_for(db, settings, patient)
    link_id, expires, sig = token.split(".")
    forged = f"{int(link_id) + 1}.{expires}.{sig}"
    r = await client.get(f"/e/{forged}")
    assert r.status_code == 404 and "not valid" in r.text
    later = f"{link_id}.{int(expires) + 86400}.{sig}"
    assert (await client.get(f"/e/{later}")).status_code == 404
    _, old = await link_for(db, settings, patient, expires_in=timedelta(seconds=-1))
    r = await client.get(f"/e/{old}")
    assert r.status_code == 404 and "expired" in r.text and clinic.phone in r.text


# ---- staff pages and permissions ---------------------------------------------------------------------------


async def test_fee_schedule_is_admin_only_and_a_later_price_ends_the_open_one(client, db, factory):
    clinic, billing, _, _ = await world(factory)
    admin = await factory.user(clinic, "admin")
    await login(client, billing.email)
    assert (await client.get("/admin/fees")).status_code == 403
    await login(client, admin.email)
    assert "G2083" in (await client.get("/admin/fees")).text
    r = await client.post("/admin/fees", data={"code": "G2083", "description": "Esketamine over 56 mg", "self_pay": "900.00",
                                              "effective_from": "2027-01-01", "_csrf_token": client.cookies.get("csrftoken")})
    assert r.status_code in (302, 303), r.text
    g = [(f.effective_from, f.effective_to, f.self_pay_cents) for f in await rows(db, FeeScheduleEntry,
         FeeScheduleEntry.clinic_id == clinic.id, FeeScheduleEntry.code == "G2083")]
    assert g == [(date(2020, 1, 1), date(2027, 1, 1), 860_00), (date(2027, 1, 1), None, 900_00)]
    r = await client.post("/admin/fees", data={"code": "G2082", "description": "x", "self_pay": "-5",
                                              "effective_from": "2027-01-01", "_csrf_token": client.cookies.get("csrftoken")})
    assert r.status_code == 422 and "cannot be negative" in r.text


async def test_billing_pages_render_for_billing_staff_and_front_desk_edits_coverage_only(client, db, factory):
    clinic, billing, _, patient = await world(factory)
    await book(db, factory, clinic, patient)
    await discharge(db, factory, clinic, patient, facts={"dose_mg": 56})
    await login(client, billing.email)
    for path in ("/billing", f"/billing/patients/{patient.id}", f"/billing/patients/{patient.id}/coverage", "/notices"):
        r = await client.get(path)
        assert r.status_code == 200, path
    assert "Estimates to issue" in (await client.get("/billing")).text
    desk = await factory.user(clinic, "front_desk")
    await login(client, desk.email)
    assert (await client.get("/billing")).status_code == 403
    r = await client.post(f"/billing/patients/{patient.id}/coverage", data={
        "kind": "insured", "payer": "Evergreen", "member_id": "E9", "coinsurance_pct": "10", "copay_cents": "25.00",
        "deductible_remaining_cents": "0", "oop_remaining_cents": "1000", "allowed_pct": "70", "files_claim": "on",
        "_csrf_token": client.cookies.get("csrftoken")})
    assert r.status_code in (302, 303), r.text
    r = await client.get(f"/billing/patients/{patient.id}/coverage")
    assert r.status_code == 200 and "Evergreen" in r.text and 'value="25.00"' in r.text


async def test_failed_notice_is_listed_and_retried_by_billing_staff(client, db, factory, redis):
    clinic, billing, token, patient = await world(factory)
    async with db.transaction() as s:
        n = Notice(clinic_id=clinic.id, kind="balance", dedupe_key=f"t-failed:{clinic.id}", to_address=patient.email,
                   patient_id=patient.id, status="failed", attempts=5, last_error="SMTPResponseException 451")
        s.add(n)
    r = await client.get("/api/v1/notices?status=failed", headers=bearer(token))
    assert [x["id"] for x in r.json()["items"]] == [n.id]
    assert "to_address" not in r.json()["items"][0]
    await login(client, billing.email)
    page = (await client.get("/notices?status=failed")).text
    assert f"/notices/{n.id}/retry" in page and "451" in page
    r = await client.post(f"/notices/{n.id}/retry", data={"_csrf_token": client.cookies.get("csrftoken")})
    assert r.status_code in (302, 303)
    (after,) = await rows(db, Notice, Notice.id == n.id)
    assert (after.status, after.attempts) == ("pending", 0)
    assert await redis.zcard("arq:queue") == 1
    r = await client.post(f"/api/v1/notices/{n.id}/retry", headers=csrf_headers(client))
    assert r.status_code == 409 and "only a failed notice" in r.json()["detail"].lower()


@pytest.mark.parametrize("field,value", [("visits", "³"), ("visits", "two"), ("session_type_id", "x1")])
async def test_a_gfe_request_form_with_a_value_that_is_no_number_is_refused_naming_it(client, db, factory, field, value):
    clinic, billing, _, patient = await world(factory)
    await login(client, billing.email)
    r = await client.post(f"/billing/patients/{patient.id}/gfe-request", data={field: value, "_csrf_token": client.cookies.get("csrftoken")})
    assert r.status_code == 422 and f'data-field="{field}"' in r.text
    assert await rows(db, Estimate, Estimate.patient_id == patient.id) == []


async def test_dev_mail_is_hidden_unless_dev_mail_is_on(client, factory):
    clinic = await factory.clinic()
    admin = await factory.user(clinic, "admin")
    await login(client, admin.email)
    assert (await client.get("/dev/mail")).status_code == 404


@pytest.mark.parametrize("method,path,body", [
    ("put", "/api/v1/coverage/{p}", {"kind": "insured", "payer": "X", "member_id": "1", "allowed_amounts": {"NOT A CODE!": 1}}),
    ("put", "/api/v1/coverage/{p}", {"kind": "insured", "payer": "X", "member_id": "1", "copay_cents": 10**12}),
    ("put", "/api/v1/coverage/{p}", {"kind": "insured", "payer": "X", "member_id": "1", "not_covered": "J3490,TOOLONGCODE1"}),
    ("post", "/api/v1/estimates", {"patient_id": "{p}", "session_type_id": "abc"}),
    ("post", "/api/v1/estimates", {"patient_id": "{p}", "visits": 99}),
    ("post", "/api/v1/patients/{p}/payments", {"amount_cents": 100, "appointment_id": "x"}),
    ("post", "/api/v1/patients/{p}/payments", {"amount_cents": 100, "appointment_id": 2**40}),
])
async def test_odd_input_gets_a_422_naming_the_field_never_a_500(client, factory, method, path, body):
    clinic, _, token, patient = await world(factory)
    body = {k: (patient.id if v == "{p}" else v) for k, v in body.items()}
    r = await getattr(client, method)(path.format(p=patient.id), json=body, headers=bearer(token))
    assert r.status_code == 422, r.text
    assert r.json().get("field")


async def test_ids_beyond_the_integer_range_are_simply_not_found(client, factory):
    clinic, _, token, _ = await world(factory)
    for path in ("/api/v1/estimates/99999999999", "/api/v1/coverage/99999999999"):
        r = await (client.get(path, headers=bearer(token)) if "estimates" in path else client.put(path, json={}, headers=bearer(token)))
        assert r.status_code == 404, (path, r.text)


@pytest.mark.parametrize("sql", [
    "INSERT INTO coverages (clinic_id, patient_id, kind, payer, member_id, in_network, copay_cents, coinsurance_pct,"
    " deductible_remaining_cents, oop_remaining_cents, allowed_amounts, not_covered, files_claim, updated_at)"
    " VALUES (:c, :p, 'insured', 'X', '1', true, 0, 101, 0, 0, '{}', '{}', true, now())",
    "INSERT INTO coverages (clinic_id, patient_id, kind, payer, member_id, in_network, copay_cents, coinsurance_pct,"
    " deductible_remaining_cents, oop_remaining_cents, allowed_amounts, not_covered, files_claim, updated_at)"
    " VALUES (:c, :p, 'insured', 'X', '1', true, -1, 20, 0, 0, '{}', '{}', true, now())",
    "INSERT INTO fee_schedule (clinic_id, code, description, self_pay_cents, effective_from, created_at)"
    " VALUES (:c, 'X1', 'x', -100, '2026-01-01', now())",
    "INSERT INTO payments (clinic_id, patient_id, amount_cents, method, received_at) VALUES (:c, :p, -5, 'card', now())",
])
async def test_the_database_itself_refuses_negative_money_and_coinsurance_over_100(db, factory, sql):
    clinic, _, _, patient = await world(factory, fees=False)
    with pytest.raises(DBAPIError, match="check constraint"):
        async with db.transaction() as s:
            await s.execute(text(sql), {"c": clinic.id, "p": patient.id})
