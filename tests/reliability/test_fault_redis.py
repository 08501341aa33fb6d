"""Redis stopped while the front desk books and a nurse records vitals: clinical work is saved, notices wait and then go out."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

from clinic.timeutil import utcnow
from tests.factories import appointment
from tests.reliability.conftest import local_iso
from tests.reliability.helpers import WorkerProcess, rows, wait_until


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

    # the notice is in the outbox, not lost with the enqueue that could not happen
    pending = await rows(engine_db, "SELECT id, kind, status FROM notices WHERE appointment_id = :a ORDER BY id", a=booked)
    assert [(k, s) for _, k, s in pending] == [("booking_confirmation", "pending"), ("reminder", "pending")]
    assert await rows(engine_db, "SELECT 1 FROM clinical_entries WHERE appointment_id = :a", a=today_appt.id)

    # Redis returns (empty: nothing was persisted); the app notices by itself, the sweep and a worker send the mail
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
