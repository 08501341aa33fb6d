"""The mail relay says 'try later', is unreachable, or refuses for good: notices back off and arrive, or fail visibly and can be retried."""

from __future__ import annotations

import time

from clinic.notices.outbox import add_notice
from clinic.timeutil import utcnow
from tests.factories import appointment
from tests.reliability.helpers import WorkerProcess, rows, wait_until
from tests.smtp_sink import SmtpSink

RETRY_BASE = 0.4


async def one_notice(engine_db, world, tag: str) -> int:
    patient = world.patients[0]
    appt = await appointment(world.factory, world.clinic, patient, utcnow().replace(microsecond=0))
    async with engine_db.sessionmaker() as s:
        nid = await add_notice(s, queue=None, clinic_id=world.clinic.id, kind="balance", dedupe_key=f"rel-smtp:{tag}:{appt.id}",
                               to_address=patient.email, patient_id=patient.id, appointment_id=appt.id)
        await s.commit()
    return nid


def refusing(sink: SmtpSink, times: int, code: int, text: str) -> list[float]:
    """The first `times` DATA commands get `code`; returns the list the attempt times are recorded in."""
    original = sink.handle_DATA
    seen: list[float] = []

    async def handle(server, session, envelope):
        seen.append(time.monotonic())
        if len(seen) <= times:
            return f"{code} {text}"
        return await original(server, session, envelope)

    sink.handle_DATA = handle
    return seen


def worker_for(settings, redis, sink, **kw) -> WorkerProcess:
    return WorkerProcess(database_url=settings.database_url, redis_url=redis.url, smtp_url=sink.url, retry_base=RETRY_BASE, **kw).start()


async def status_of(engine_db, nid: int):
    return (await rows(engine_db, "SELECT status, attempts, last_error, message_id, send_after FROM notices WHERE id = :i", i=nid))[0]


async def test_temporary_refusals_back_off_exponentially_then_deliver(engine_db, settings, private_redis, smtp_sink, world):
    nid = await one_notice(engine_db, world, "4xx")
    attempts = refusing(smtp_sink, 3, 451, "4.3.0 mailbox busy, try later")
    w = worker_for(settings, private_redis, smtp_sink)
    try:
        async def sent():
            return (await status_of(engine_db, nid)).status == "sent"
        await wait_until(sent, timeout=30, what="delivery after three 451s")
    finally:
        w.cleanup()
    row = await status_of(engine_db, nid)
    assert row.attempts == 4 and row.message_id == f"<notice.{world.clinic.id}.{nid}@testserver.local>"
    assert len(attempts) == 4 and len(smtp_sink.messages) == 1
    gaps = [b - a for a, b in zip(attempts, attempts[1:])]
    # 0.4 s, 0.8 s, 1.6 s: each wait at least the backoff and longer than the one before
    for i, gap in enumerate(gaps):
        assert gap >= RETRY_BASE * 2**i * 0.9, gaps
    assert gaps[0] < gaps[1] < gaps[2], gaps


async def test_unreachable_relay_is_retried_until_it_answers(engine_db, settings, private_redis, world):
    nid = await one_notice(engine_db, world, "down")
    sink = SmtpSink()  # its port is chosen, nothing listens on it yet
    w = worker_for(settings, private_redis, sink)
    try:
        async def tried_twice():
            row = await status_of(engine_db, nid)
            return row.status == "pending" and row.attempts >= 2 and row.last_error
        await wait_until(tried_twice, timeout=20, what="two failed connection attempts")
        sink.start()
        try:
            async def sent():
                return (await status_of(engine_db, nid)).status == "sent"
            await wait_until(sent, timeout=30, what="delivery once the relay is back")
            assert len(sink.messages) == 1
        finally:
            sink.stop()
    finally:
        w.cleanup()


async def test_permanent_refusal_fails_visibly_and_a_retry_delivers(engine_db, settings, private_redis, smtp_sink, world, live_server, http):
    nid = await one_notice(engine_db, world, "5xx")
    attempts = refusing(smtp_sink, 1, 550, "5.1.1 no such mailbox")
    app = live_server(settings.with_(redis_url=private_redis.url, smtp_url=smtp_sink.url))
    w = worker_for(settings, private_redis, smtp_sink)
    try:
        async def failed():
            return (await status_of(engine_db, nid)).status == "failed"
        await wait_until(failed, timeout=20, what="the notice to be marked failed")
        row = await status_of(engine_db, nid)
        assert row.attempts == 1 and "550" in row.last_error, "a permanent refusal is not retried blindly"
        assert len(attempts) == 1 and not smtp_sink.messages

        # billing staff see it among the failed notices, on the page and in the API, and send it again
        listed = (await http.get(f"{app.url}/api/v1/notices", params={"status": "failed"}, headers=world.h("billing"))).json()
        assert [(n["id"], n["status"], n["attempts"]) for n in listed["items"]] == [(nid, "failed", 1)]
        assert "550" in listed["items"][0]["last_error"] and listed["counts"]["failed"] == 1
        page = await http.get(f"{app.url}/notices", params={"status": "failed"}, headers=world.h("billing"))
        assert page.status_code == 200 and f'action="/notices/{nid}/retry"' in page.text
        r = await http.post(f"{app.url}/api/v1/notices/{nid}/retry", headers=world.h("billing"))
        assert r.status_code == 200 and r.json()["status"] == "pending", r.text

        async def sent():
            return (await status_of(engine_db, nid)).status == "sent"
        await wait_until(sent, timeout=20, what="the retried notice to be sent")
    finally:
        w.cleanup()
    assert [m["Message-ID"] for m in smtp_sink.messages] == [f"<notice.{world.clinic.id}.{nid}@testserver.local>"]
    assert await rows(engine_db, "SELECT action FROM audit_events WHERE entity = 'notice' AND entity_id = :i", i=str(nid)) == [("notice.retry",)]
