"""The notice worker killed with SIGKILL at random moments while draining the outbox, then restarted: every notice arrives;
/healthz shows a stopped worker as stale.

A kill can land between the SMTP server accepting a message and the row being marked sent; that notice goes out
again, with the same Message-ID (mail clients fold the two). So duplicates are bounded by the sends in flight at
each kill: kills x concurrent jobs.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter

import pytest

from clinic.notices.outbox import add_notice
from clinic.timeutil import utcnow
from tests.factories import appointment
from tests.reliability.helpers import WorkerProcess, rows, wait_until

SEED = int(os.environ.get("RELIABILITY_SEED", random.randrange(1_000_000)))


@pytest.mark.parametrize("max_jobs,kills", [(1, 3), (4, 3)])
async def test_worker_killed_at_random_points_delivers_every_notice_once_per_message_id(
    engine_db, settings, private_redis, smtp_sink, world, max_jobs, kills
):
    rng = random.Random(SEED + max_jobs)
    n = 120
    patient = world.patients[0]
    appt = await appointment(world.factory, world.clinic, patient, utcnow().replace(microsecond=0))
    original = smtp_sink.handle_DATA

    async def slow(server, session, envelope):
        await asyncio.sleep(0.004)  # a relay's round trip: the kill has a send to land in
        return await original(server, session, envelope)

    smtp_sink.handle_DATA = slow
    async with engine_db.sessionmaker() as s:
        ids = [await add_notice(s, queue=None, clinic_id=world.clinic.id, kind="balance", dedupe_key=f"rel-kill:{world.clinic.id}:{max_jobs}:{i}",
                                to_address=patient.email, patient_id=patient.id, appointment_id=appt.id) for i in range(n)]
        await s.commit()

    def worker() -> WorkerProcess:
        return WorkerProcess(database_url=settings.database_url, redis_url=private_redis.url, smtp_url=smtp_sink.url,
                             max_jobs=max_jobs, job_timeout=2).start()

    plan = []
    loop = asyncio.get_running_loop()
    for k in range(kills):
        w = worker()
        try:
            # a number of messages into the drain, or (one time in four) a moment during start-up, the first
            # sweep or the first sends, whichever comes first: never past a share of the batch, so work is left
            target = len(smtp_sink.messages) + rng.randint(1, n // (kills + 1))
            limit = rng.uniform(0.0, 1.2) if rng.random() < 0.25 else 30.0
            end = loop.time() + limit
            while len(smtp_sink.messages) < target and loop.time() < end:
                await asyncio.sleep(0.002)
            plan.append(f"at {len(smtp_sink.messages)} messages" + (f" (t+{limit:.2f}s)" if limit < 30 else ""))
        finally:
            w.kill()
            w.cleanup()

    unsent = (await rows(engine_db, "SELECT count(*) FROM notices WHERE clinic_id = :c AND status <> 'sent'", c=world.clinic.id))[0][0]
    assert unsent > 0, f"seed {SEED}: the kills ({plan}) came after the drain had finished"
    final = worker()
    try:
        async def all_sent():
            return (await rows(engine_db, "SELECT count(*) FROM notices WHERE clinic_id = :c AND status = 'sent'", c=world.clinic.id))[0][0] == n
        await wait_until(all_sent, timeout=60, interval=0.25, what=f"every notice sent (seed {SEED}, kills {plan})")
    finally:
        log = final.output()
        final.cleanup()

    expected = {f"<notice.{world.clinic.id}.{i}@testserver.local>" for i in ids}
    received = Counter(m["Message-ID"] for m in smtp_sink.messages)
    assert set(received) == expected, f"seed {SEED}: a notice never arrived or arrived under another id"
    duplicates = sum(received.values()) - len(expected)
    print(f"seed {SEED}, max_jobs {max_jobs}, kills {plan}: {duplicates} duplicates")
    assert duplicates <= kills * max_jobs, f"seed {SEED}, kills {plan}: {duplicates} duplicates"
    marked = await rows(engine_db, "SELECT id, message_id, status FROM notices WHERE clinic_id = :c", c=world.clinic.id)
    assert all(status == "sent" and mid == f"<notice.{world.clinic.id}.{nid}@testserver.local>" for nid, mid, status in marked)
    assert "Traceback" not in log, log[-3000:]


async def test_healthz_shows_the_worker_stale_while_it_is_stopped_and_ok_again_after(settings, private_redis, smtp_sink, live_server, http):
    app = live_server(settings.with_(redis_url=private_redis.url, smtp_url=smtp_sink.url))

    async def worker_is(state: str) -> bool:
        r = await http.get(f"{app.url}/healthz")
        assert r.status_code == 200 and r.json()["redis"] == "ok", r.text
        return r.json()["worker"] == state

    def worker() -> WorkerProcess:
        return WorkerProcess(database_url=settings.database_url, redis_url=private_redis.url, smtp_url=smtp_sink.url, heartbeat=2).start()

    assert await worker_is("stale")  # none has run yet
    w = worker()
    try:
        await wait_until(lambda: worker_is("ok"), timeout=30, what="the worker's first heartbeat")
        w.kill()  # no goodbye: the heartbeat lapses within heartbeat + 1 s
        await wait_until(lambda: worker_is("stale"), timeout=6, interval=0.2, what="the killed worker to go stale")
        for _ in range(5):
            assert await worker_is("stale")
            await asyncio.sleep(0.3)
    finally:
        w.cleanup()
    w = worker()
    try:
        await wait_until(lambda: worker_is("ok"), timeout=30, what="a new worker's heartbeat")
        w.proc.terminate()  # a clean stop takes its heartbeat with it: stale at once
        assert w.proc.wait(timeout=20) == 0
        assert await worker_is("stale")
    finally:
        w.cleanup()
