"""Entries from many tablets arriving together share one statement and one commit (EntryWriter): each must be
stored, audited and answered exactly as if it had been written alone, and one the database refuses fails alone."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from contextlib import asynccontextmanager
from datetime import timedelta

import asyncpg
import pytest
from sqlalchemy import text

from clinic.audit.service import Actor
from clinic.monitoring.service import Measurements
from clinic.monitoring.vitals import EntryWriter, record_entry
from clinic.timeutil import utcnow
from tests.factories import Factory, appointment
from tests.integration.test_monitoring_session import chair_ids


async def sessions(engine_db, n: int):
    """n sessions in monitoring, committed (the writer's statements commit on their own)."""
    f = Factory(engine_db)
    clinic = await f.clinic(chairs=n)
    nurse = await f.user(clinic, "nurse")
    now = utcnow()
    appts = []
    for chair in await chair_ids(f, clinic):
        patient = await f.patient(clinic)
        appts.append(await appointment(f, clinic, patient, now - timedelta(hours=3), status="in_progress", checked_in_at=now - timedelta(hours=3),
                                       chair_id=chair, dosing_started_at=now - timedelta(hours=2), escort_confirmed=True))
    return Actor(user_id=nurse.id, clinic_id=clinic.id, roles=("nurse",), ip="10.0.0.7"), appts


async def stored(engine_db, sql: str, **params):
    async with engine_db.sessionmaker() as session:
        return (await session.execute(text(sql), params)).all()


async def test_entries_arriving_together_share_writes_and_each_is_stored_as_if_alone(engine_db):
    actor, appts = await sessions(engine_db, 8)
    writer = EntryWriter(engine_db.raw)
    now = utcnow()
    repeated = uuid.uuid4()

    def entry(appt, minutes_ago: float, client_id=None, **values):
        return record_entry(engine_db.statements, actor=actor, appointment_id=appt.id, client_id=client_id or uuid.uuid4(),
                                    values=Measurements(**(values or {"systolic": 122, "diastolic": 78, "heart_rate": 70})),
                                    taken_at=now - timedelta(minutes=minutes_ago), now=now, writer=writer)

    calls = [entry(a, minutes_ago=30 - n) for a in appts for n in range(3)]  # three tablets' worth per session, at once
    calls += [entry(appts[0], 5, repeated), entry(appts[0], 5, repeated)]  # a double tap
    calls += [entry(appts[1], 4, systolic=186, diastolic=90)]  # raises an alert
    results = await asyncio.gather(*calls)

    assert writer.statements < len(calls), "every entry went alone: nothing was shared"
    assert writer.waiting == 0
    taps = results[24:26]
    assert sorted(r.created for r in taps) == [False, True] and taps[0].entry.id == taps[1].entry.id
    per_session = Counter(r.entry.appointment_id for r in results if r.created)
    assert per_session == {a.id: 3 + (a is appts[0]) + (a is appts[1]) for a in appts}

    ids = [r.entry.id for r in results if r.created]
    rows = await stored(engine_db, "SELECT id, appointment_id, systolic, recorded_by FROM clinical_entries WHERE id = ANY(:ids)", ids=ids)
    assert {r.id: (r.appointment_id, r.systolic, r.recorded_by) for r in rows} == {
        r.entry.id: (r.entry.appointment_id, r.entry.systolic, actor.user_id) for r in results if r.created
    }
    audit = await stored(engine_db, "SELECT entity_id, ip, patient_id, changes FROM audit_events WHERE action = 'session.entry' AND entity_id = ANY(:ids)",
                         ids=[str(i) for i in ids])
    assert sorted(int(a.entity_id) for a in audit) == sorted(ids), "each stored entry has exactly one audit event"
    assert {a.ip for a in audit} == {"10.0.0.7"}
    high = results[26]
    assert [a.code for a in high.alerts] == ["bp_high"]
    (event,) = [a for a in audit if int(a.entity_id) == high.entry.id]
    assert event.changes["alerts"] == ["bp_high"] and event.changes["systolic"] == 186
    alerts = await stored(engine_db, "SELECT entry_id, code FROM session_alerts WHERE appointment_id = ANY(:ids)", ids=[a.id for a in appts])
    assert [(a.entry_id, a.code) for a in alerts] == [(high.entry.id, "bp_high")]


async def until(condition, what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


def held_writer(engine_db, writers: int) -> tuple[EntryWriter, asyncio.Event]:
    """A writer whose statements wait until the event is set."""
    opened = asyncio.Event()

    @asynccontextmanager
    async def connection_when_opened():
        await opened.wait()
        async with engine_db.raw() as conn:
            yield conn

    writer = EntryWriter(connection_when_opened)
    writer.WRITERS = writers
    return writer, opened


async def test_an_entry_the_database_refuses_fails_alone_and_the_rest_of_its_batch_is_written(engine_db):
    actor, appts = await sessions(engine_db, 5)
    writer, opened = held_writer(engine_db, 1)
    now = utcnow()

    def entry(appt, note: str):
        return asyncio.create_task(record_entry(engine_db.statements, actor=actor, appointment_id=appt.id, client_id=uuid.uuid4(),
                                                        values=Measurements(heart_rate=72, note=note), now=now, writer=writer))

    first = entry(appts[0], "Calm")
    await until(lambda: writer.in_flight == 1, "the first entry holds the only writer")
    notes = ["Calm", "Pasted from a device\x00log", "Calm", "Calm"]  # Postgres refuses NUL in text
    tasks = [entry(a, note) for a, note in zip(appts[1:], notes)]
    await until(lambda: writer.waiting == 4, "the other four wait, to go as one batch")
    opened.set()
    results = await asyncio.gather(first, *tasks, return_exceptions=True)

    refused = results[2]
    assert isinstance(refused, asyncpg.PostgresError) and refused.sqlstate.startswith("22"), refused
    assert all(r.created for i, r in enumerate(results) if i != 2), results
    assert writer.statements == 1 + 1 + 4  # the first alone, the refused batch, then its four one by one
    entries = await stored(engine_db, "SELECT appointment_id FROM clinical_entries WHERE appointment_id = ANY(:ids)", ids=[a.id for a in appts])
    assert sorted(e.appointment_id for e in entries) == sorted(a.id for i, a in enumerate(appts) if i != 2)
    audit = await stored(engine_db, "SELECT patient_id FROM audit_events WHERE action = 'session.entry' AND patient_id = ANY(:ids)",
                         ids=[a.patient_id for a in appts])
    assert len(audit) == 4


async def test_a_refused_note_is_a_422_through_the_api_and_nothing_is_written(client, factory, db):
    from tests.integration.test_monitoring_session import check_in, cid, count, make_session
    from clinic.monitoring.models import ClinicalEntry

    s = await make_session(client, factory, starts_ago=40, kind="kap", rems=False)
    await check_in(s, 30)
    r = await s.nurse.post(f"{s.path}/assessments", {"client_id": cid(), "note": "a\x00b"})
    assert r.status_code == 422 and r.json()["field"] == "note", r.text
    assert await count(db, ClinicalEntry, appointment_id=s.appt.id) == 0


@pytest.mark.parametrize("writers", [1, 2])
async def test_entries_handed_in_are_written_though_their_callers_stop_waiting_and_shutdown_waits_for_them(engine_db, writers):
    actor, appts = await sessions(engine_db, 6)
    writer, opened = held_writer(engine_db, writers)
    tasks = [asyncio.create_task(record_entry(engine_db.statements, actor=actor, appointment_id=a.id, client_id=uuid.uuid4(),
                                                      values=Measurements(spo2=97), writer=writer)) for a in appts]
    await until(lambda: writer.waiting + writer.in_flight == len(appts), "every entry handed in")
    for t in tasks:
        t.cancel()  # the tablets gave up waiting (a timeout): they will send again with the same client_id
    await asyncio.gather(*tasks, return_exceptions=True)
    opened.set()
    await writer.aclose()
    assert writer.waiting == 0 and writer.in_flight == 0
    entries = await stored(engine_db, "SELECT count(*) AS n FROM clinical_entries WHERE appointment_id = ANY(:ids)", ids=[a.id for a in appts])
    assert entries[0].n == len(appts)


def test_the_fast_path_answers_with_every_column_of_the_stored_rows():
    from clinic.monitoring.models import Alert, AlertView, ClinicalEntry, EntryView

    assert EntryView.__struct_fields__ == tuple(c.name for c in ClinicalEntry.__table__.c)  # type: ignore[attr-defined]
    assert AlertView.__struct_fields__ == tuple(c.name for c in Alert.__table__.c)  # type: ignore[attr-defined]
