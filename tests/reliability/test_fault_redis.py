"""Redis stopped while the front desk books, nurses record vitals and prescribers discharge: clinical work is saved, the
worker waits in the same process, and every notice goes out once Redis is back."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import date, timedelta

import httpx
import pytest

from clinic.billing.demo import fee_schedule
from clinic.db import run_after_commit
from clinic.notices.outbox import add_notice
from clinic.queue import Queue
from clinic.timeutil import utcnow
from tests.factories import appointment
from tests.integration.test_monitoring_session import make_session, monitored_to_discharge
from tests.reliability.conftest import local_iso, make_world
from tests.reliability.helpers import ROOT, WorkerProcess, free_port, rows, scalar, wait_until


async def test_redis_outage_delays_notices_and_loses_nothing(engine_db, settings, private_redis, smtp_sink, live_server, http, world):
    settings = settings.with_(redis_url=private_redis.url, smtp_url=smtp_sink.url)
    app = live_server(settings)
    patient = world.patients[0]
    today_appt = await appointment(world.factory, world.clinic, patient, utcnow().replace(microsecond=0) - timedelta(minutes=5))

    assert (await http.get(f"{app.url}/healthz")).json() == {"db": "ok", "redis": "ok", "worker": "stale"}
    private_redis.stop()

    # the front desk books while Redis is away: saved, answered at once
    t0 = time.monotonic()
    r = await http.post(f"{app.url}/api/v1/appointments", headers=world.h("front_desk"), json={
        "patient_id": patient.id, "session_type": "esketamine", "chair_id": world.chairs[0],
        "starts_at": local_iso(world.day, 10), "planned_dose_mg": 56, "escort_name": "Sam Rivera"})
    booking_seconds = time.monotonic() - t0
    assert r.status_code == 201, r.text
    booked = r.json()["id"]
    assert booking_seconds < 3, f"booking waited {booking_seconds:.1f}s on a dead Redis"

    # a nurse checks today's patient in and records vitals while Redis is away
    r = await http.post(f"{app.url}/api/v1/appointments/{today_appt.id}/check-in", headers=world.h("nurse"),
                        json={"fasting_confirmed": True, "escort_confirmed": True, "escort_name": "Sam Rivera"})
    assert r.status_code == 200, r.text
    t0 = time.monotonic()
    r = await http.post(f"{app.url}/api/v1/appointments/{today_appt.id}/vitals", headers=world.h("nurse"),
                        json={"client_id": str(uuid.uuid4()), "systolic": 128, "diastolic": 82, "heart_rate": 74, "spo2": 98, "resp_rate": 14})
    assert r.status_code == 201, r.text
    assert time.monotonic() - t0 < 3

    health = await http.get(f"{app.url}/healthz")
    assert health.status_code == 200 and health.json() == {"db": "ok", "redis": "down", "worker": "stale"}

    # the booking's follow-up (its notices and estimate) is in the outbox, not lost with the enqueue that could not happen
    pending = await rows(engine_db, "SELECT kind, done_at FROM schedule_changes WHERE appointment_id = :a", a=booked)
    assert pending == [("booked", None)]
    assert await rows(engine_db, "SELECT 1 FROM clinical_entries WHERE appointment_id = :a", a=today_appt.id)

    # Redis returns (empty: nothing was persisted); the app notices by itself; the sweep queues the follow-up, a worker
    # writes the notices and sends the mail
    private_redis.start()
    async def redis_ok():
        return (await http.get(f"{app.url}/healthz")).json()["redis"] == "ok"
    await wait_until(redis_ok, timeout=10, what="/healthz to see Redis again")

    worker = WorkerProcess(database_url=settings.database_url, redis_url=private_redis.url, smtp_url=smtp_sink.url).start()
    try:
        async def confirmation_sent():
            return await rows(engine_db, "SELECT message_id FROM notices WHERE appointment_id = :a AND kind = 'booking_confirmation' AND status = 'sent'", a=booked)
        sent = await wait_until(confirmation_sent, timeout=30, what="the booking confirmation to be sent")
    finally:
        worker.cleanup()
    messages = [m for m in smtp_sink.messages if m["Message-ID"] == sent[0][0]]
    assert len(messages) == 1 and messages[0]["To"] == patient.email
    # the reminder is for 48 h before the visit: still waiting, not lost
    reminder = await rows(engine_db, "SELECT status FROM notices WHERE appointment_id = :a AND kind = 'reminder'", a=booked)
    assert reminder == [("pending",)]
    assert await rows(engine_db, "SELECT kind FROM schedule_changes WHERE appointment_id = :a AND done_at IS NOT NULL", a=booked) == [("booked",)]


# ---- the worker itself through the outage -----------------------------------------------------------------------


def received(sink, clinic_id: int) -> Counter:
    """Messages per Message-ID for this test's clinic (the committed database also holds other tests' due notices)."""
    return Counter(m["Message-ID"] for m in sink.messages if m["Message-ID"].startswith(f"<notice.{clinic_id}."))


@pytest.mark.parametrize("outage", [10, 60])
async def test_the_worker_rides_out_a_redis_outage_and_sends_every_notice_once(
    engine_db, settings, private_redis, smtp_sink, live_server, http, outage
):
    world = await make_world(engine_db, chairs=4, patients=6)
    await world.factory.add(*fee_schedule(world.clinic.id, date(2020, 1, 1)))
    settings = settings.with_(redis_url=private_redis.url, smtp_url=smtp_sink.url)
    app = live_server(settings)
    original = smtp_sink.handle_DATA

    async def relay(server, session, envelope):
        await asyncio.sleep(0.01)  # a relay's round trip: Redis goes away with sends in flight
        return await original(server, session, envelope)

    smtp_sink.handle_DATA = relay
    # two sessions today, every check done, waiting for the prescriber's discharge
    async with httpx.AsyncClient(base_url=app.url, timeout=15) as api:
        sessions = [await make_session(api, world.factory, clinic=world.clinic, chair=i) for i in range(2)]
        for s in sessions:
            await monitored_to_discharge(s, 130)
        slots = iter([(chair, hh) for hh in (9, 13) for chair in world.chairs])

        async def book(patient) -> None:
            chair, hh = next(slots)
            r = await api.post("/api/v1/appointments", headers=world.h("front_desk"), json={
                "patient_id": patient.id, "session_type": "esketamine", "chair_id": chair, "starts_at": local_iso(world.day, hh),
                "planned_dose_mg": 56, "escort_name": "Sam Rivera"})
            assert r.status_code == 201, r.text

        worker = WorkerProcess(database_url=settings.database_url, redis_url=private_redis.url, smtp_url=smtp_sink.url).start()
        try:
            async def worker_ok():
                return (await http.get(f"{app.url}/healthz")).json()["worker"] == "ok"
            await wait_until(worker_ok, timeout=30, what="the worker's first heartbeat")
            pid = worker.proc.pid
            # a batch in the outbox, queued after commit; Redis goes away while the worker is sending it
            patient = world.patients[0]
            queue = Queue(private_redis.url)
            async with engine_db.sessionmaker() as s:
                for i in range(40):
                    await add_notice(s, queue=queue, clinic_id=world.clinic.id, kind="balance", dedupe_key=f"rel-redis:{world.clinic.id}:{i}",
                                     to_address=patient.email, patient_id=patient.id, appointment_id=sessions[0].appt.id)
                await s.commit()
                await run_after_commit(s)
            await queue.close()
            await book(world.patients[0])
            loop = asyncio.get_running_loop()
            end = loop.time() + 20
            while sum(received(smtp_sink, world.clinic.id).values()) < 8 and loop.time() < end:
                await asyncio.sleep(0.005)
            private_redis.stop()
            down_at = loop.time()

            # the front desk books and the prescriber discharges while Redis is away; the worker waits
            for n, patient in enumerate(world.patients[1:5]):
                await book(patient)
                if n < len(sessions):
                    r = await sessions[n].prescriber.post(f"{sessions[n].path}/discharge", {"note": "Alert, oriented, escort present."})
                    assert r.status_code == 200, r.text
                await asyncio.sleep(outage / 5)
                assert worker.alive, worker.output()[-3000:]
            health = (await http.get(f"{app.url}/healthz")).json()
            assert (health["redis"], health["worker"]) == ("down", "stale")
            await asyncio.sleep(max(down_at + outage - loop.time(), 0))
            assert worker.alive, worker.output()[-3000:]
            private_redis.start()

            await wait_until(worker_ok, timeout=30, what="the same worker to beat again")
            await book(world.patients[5])

            async def followed_up():  # each booking's confirmation is written by the worker's follow-up
                return await scalar(engine_db, "SELECT count(*) FROM schedule_changes WHERE clinic_id = :c AND done_at IS NULL", c=world.clinic.id) == 0
            await wait_until(followed_up, timeout=60, interval=0.25, what="every booking followed up")
            ids = [r[0] for r in await rows(engine_db, "SELECT id FROM notices WHERE clinic_id = :c AND send_after <= now()", c=world.clinic.id)]
            assert len(ids) == 40 + 6 + 2  # the batch, a confirmation per booking, a balance per discharge

            async def all_sent():
                return await scalar(engine_db, "SELECT count(*) FROM notices WHERE clinic_id = :c AND send_after <= now() AND status = 'sent'",
                                    c=world.clinic.id) == len(ids)
            await wait_until(all_sent, timeout=60, interval=0.25, what="every notice sent after the outage")
            assert worker.alive and worker.proc.pid == pid
        finally:
            log = worker.output()
            worker.cleanup()
    assert received(smtp_sink, world.clinic.id) == Counter({f"<notice.{world.clinic.id}.{i}@testserver.local>": 1 for i in ids})
    # the outage is told once as it starts and once as it ends, not once per try
    assert log.count("Redis unavailable") == 1 and log.count("Redis is back") == 1, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


async def test_clinic_dev_keeps_serving_pages_while_its_worker_is_restarted(engine_db, owner_database_url, settings, private_redis, smtp_sink,
                                                                           http, world, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, DATABASE_OWNER_URL=owner_database_url, DATABASE_URL=settings.database_url, REDIS_URL=private_redis.url, SMTP_URL=smtp_sink.url,
               SECRET_KEY=settings.secret_key, BASE_URL="http://testserver.local", CLINIC_DATA_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
    out = tmp_path / "dev.log"
    with out.open("wb") as sink:
        dev = subprocess.Popen([sys.executable, "-m", "clinic.cli", "dev", "--port", str(port)], cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        async def health():
            try:
                return (await http.get(f"{url}/healthz")).json()
            except httpx.TransportError:
                assert dev.poll() is None, out.read_text()
                return {}

        async def worker_ok():
            return (await health()).get("worker") == "ok"
        await wait_until(worker_ok, timeout=60, interval=0.25, what="clinic dev to serve with its worker beating")

        private_redis.stop()
        loop = asyncio.get_running_loop()
        end = loop.time() + 5
        while loop.time() < end:  # the worker stops and is started again and again; the pages keep coming
            assert (await http.get(f"{url}/login")).status_code == 200
            h = await health()
            assert (h.get("redis"), h.get("worker")) == ("down", "stale"), h
            await asyncio.sleep(0.25)
        assert "Redis unavailable" in out.read_text()
        patient = world.patients[0]
        appt = await appointment(world.factory, world.clinic, patient, utcnow().replace(microsecond=0))
        async with engine_db.sessionmaker() as s:  # written while no worker can take it
            nid = await add_notice(s, queue=None, clinic_id=world.clinic.id, kind="balance", dedupe_key=f"rel-dev:{appt.id}",
                                   to_address=patient.email, patient_id=patient.id, appointment_id=appt.id)
            await s.commit()
        private_redis.start()

        await wait_until(worker_ok, timeout=30, interval=0.25, what="the restarted worker's heartbeat")
        async def sent():
            return await scalar(engine_db, "SELECT status FROM notices WHERE id = :i", i=nid) == "sent"
        await wait_until(sent, timeout=30, interval=0.25, what="the notice written during the outage to be sent")
        assert dev.poll() is None
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            code = dev.wait(timeout=30)
        except subprocess.TimeoutExpired:
            dev.kill()
            raise
    log = out.read_text()
    assert code == 0, log[-3000:]
    assert log.count("Redis unavailable") == 1 and log.count("Redis is back") == 1, log[-3000:]
    assert [m["Message-ID"] for m in smtp_sink.messages if m["Message-ID"] == f"<notice.{world.clinic.id}.{nid}@testserver.local>"]
