"""A session charted lately skips the entry gate (ChartMemo): every entry must be judged exactly as if the gate
had been read, whatever else happened to the chart in between."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

import pytest

from clinic.audit.service import Actor
from clinic.monitoring.service import Measurements
from clinic.monitoring.vitals import ChartMemo, record_entry
from clinic.timeutil import utcnow
from tests.factories import appointment
from tests.integration.test_monitoring_session import CADSS6_ZERO, ago, chair_ids, check_in, cid, dosed_esketamine, make_session, vitals


async def two_sessions(factory):
    clinic = await factory.clinic(chairs=2)
    nurse = await factory.user(clinic, "nurse")
    now = utcnow()
    appts = []
    for chair in await chair_ids(factory, clinic):
        patient = await factory.patient(clinic)
        appts.append(await appointment(factory, clinic, patient, now - timedelta(hours=3), status="in_progress", checked_in_at=now - timedelta(hours=3), chair_id=chair,
                                       dosing_started_at=now - timedelta(hours=2), escort_confirmed=True))
    return Actor(user_id=nurse.id, clinic_id=clinic.id, roles=("nurse",)), appts


@pytest.mark.parametrize("seed", range(6))
async def test_with_the_memo_every_entry_raises_what_the_gate_would_have(db, factory, seed):
    """The same random charting (back-charted times, BP around the thresholds, entries without BP) on two sessions,
    one through the memo and one reading the gate every time: the same alerts, entry by entry."""
    rnd = random.Random(seed)
    actor, (with_memo, without) = await two_sessions(factory)
    memo = ChartMemo()
    steps = []
    for n in range(30):
        minutes_ago = rnd.choice([rnd.uniform(0, 2), rnd.uniform(0, 170)])  # mostly now, sometimes back-charted
        values = {"heart_rate": rnd.choice([None, 80, 135])}
        if rnd.random() < 0.8:
            systolic = rnd.choice([120, 150, 165, 185, 200])
            values |= {"systolic": systolic, "diastolic": rnd.choice([75, 95, 105, 112])}
        if values["heart_rate"] is None and "systolic" not in values:
            values["heart_rate"] = 72
        steps.append((minutes_ago, values))
    now = utcnow()
    raised: dict[int, list[list[str]]] = {with_memo.id: [], without.id: []}
    async with db.raw() as conn:
        for minutes_ago, values in steps:
            at = now - timedelta(minutes=minutes_ago)
            for appt, m in ((with_memo, memo), (without, None)):
                result = await record_entry(conn, actor=actor, appointment_id=appt.id, client_id=uuid.uuid4(), values=Measurements(**values),
                                                    taken_at=at, now=now, memo=m)
                raised[appt.id].append([a.code for a in result.alerts])
    assert raised[with_memo.id] == raised[without.id]
    assert any(raised[with_memo.id]), "the charting raised no alert at all; the comparison proved nothing"


async def test_a_correction_made_elsewhere_is_seen_by_the_next_entry(client, factory):
    """A stale memo would still hold the corrected reading as the BP before, and escalate a single high BP."""
    s = await make_session(client, factory, starts_ago=90)
    await dosed_esketamine(s, 60)
    first = await vitals(s, 20, systolic=184, diastolic=96)
    assert [a["code"] for a in first["alerts"]] == ["bp_high"]
    ack = await s.nurse.post(f"{s.path}/alerts/{first['alerts'][0]['id']}/acknowledge", {"note": "Re-measured, cuff too small."})
    assert ack.status_code == 200, ack.text
    fixed = await s.nurse.post(f"{s.path}/entries/{first['id']}/corrections", {"client_id": cid(), "reason": "Wrong cuff size", "systolic": 128, "diastolic": 80})
    assert fixed.status_code == 201, fixed.text
    second = await vitals(s, 10, systolic=181, diastolic=92)
    assert [(a["level"], a["code"]) for a in second["alerts"]] == [("alert", "bp_high")]


async def test_a_session_cancelled_or_discharged_elsewhere_takes_no_entry_through_the_memo(client, factory, db):
    s = await make_session(client, factory, starts_ago=40, kind="kap", rems=False)
    await check_in(s, 30)
    await vitals(s, 5, systolic=120, diastolic=80)  # the memo now holds this session
    async with db.sessionmaker() as session:
        from sqlalchemy import text

        await session.execute(text("UPDATE appointments SET status = 'cancelled' WHERE id = :id"), {"id": s.appt.id})
        await session.commit()
    r = await s.nurse.post(f"{s.path}/vitals", {"client_id": cid(), "systolic": 121, "diastolic": 80})
    assert r.status_code == 409 and r.json()["code"] == "not_active", r.text


async def test_every_monitoring_write_moves_the_chart_version(client, factory, db):
    """The memo stands for a chart only while its version stands still, so every write to a session must move it."""
    from sqlalchemy import select

    from clinic.scheduling.models import Appointment

    s = await make_session(client, factory, starts_ago=170)

    async def version() -> int:
        async with db.sessionmaker() as session:
            return (await session.execute(select(Appointment.chart_version).where(Appointment.id == s.appt.id))).scalar_one()

    async def moves(what: str, request) -> dict:
        before = await version()
        r = await request
        assert r.status_code in (200, 201), (what, r.text)
        assert await version() > before, f"{what} left the chart version where it was"
        return r.json()

    async def entry(what: str, minutes_ago: float, check_key: str | None = None, **values) -> dict:
        body = {"client_id": cid(), "taken_at": ago(minutes_ago), "check_key": check_key, **values}
        return await moves(what, s.nurse.post(f"{s.path}/entries", body))

    async def correction(what: str, path: str, **body) -> dict:
        return await moves(what, s.nurse.post(f"{s.path}/{path}/corrections", {"client_id": cid(), **body}))

    await moves("check-in", s.nurse.post(f"{s.path}/check-in", {"fasting_confirmed": True, "escort_confirmed": False, "taken_at": ago(165)}))
    await moves("escort confirmation", s.nurse.post(f"{s.path}/escort", {"escort_name": "Sam Rivera"}))
    pre_dose = await entry("entry", 152, "pre_dose", systolic=150, diastolic=85, spo2=98)
    assert [a["code"] for a in pre_dose["alerts"]] == ["pre_dose_bp"]
    await moves("alert acknowledgement", s.prescriber.post(f"{s.path}/alerts/{pre_dose['alerts'][0]['id']}/acknowledge", {"note": "Usual for this patient."}))
    await moves("start of dosing", s.nurse.post(f"{s.path}/start-dosing", {"client_id": cid(), "taken_at": ago(150), "lot_number": "LOT-A1", "dose_mg": 84}))
    second = await moves("device", s.nurse.post(f"{s.path}/dosing", {"client_id": cid(), "kind": "device", "taken_at": ago(145), "lot_number": "LOT-A1"}))
    third = await moves("device", s.nurse.post(f"{s.path}/dosing", {"client_id": cid(), "kind": "device", "taken_at": ago(140), "lot_number": "LOT-A1"}))
    await correction("dose correction", f"dosing/{second['id']}", reason="Lot misread", lot_number="LOT-A2")
    await correction("dose entered in error", f"dosing/{third['id']}", reason="Charted on the wrong session", entered_in_error=True)
    await entry("entry", 110, "t40", systolic=142, diastolic=88, spo2=97, moaas=4, dissociation=CADSS6_ZERO)
    t80 = await entry("entry", 70, "t80", spo2=96)
    await correction("correction", f"entries/{t80['id']}", reason="Read off the wrong monitor", spo2=98)
    stray = await entry("entry", 60, note="Asked for water.")
    await correction("entry entered in error", f"entries/{stray['id']}", reason="Meant for the next chair", entered_in_error=True)
    await entry("entry", 25, "discharge", systolic=126, diastolic=80, spo2=98, moaas=5, dissociation=CADSS6_ZERO)
    await moves("discharge", s.prescriber.post(f"{s.path}/discharge", {}))
    today = (await s.nurse.get("/rems-forms")).json()["today"]
    await moves("REMS submission", s.nurse.post(f"{s.path}/rems-form/submission", {"submitted_on": today, "confirmation": "RMS-20931"}))
