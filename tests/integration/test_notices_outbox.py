"""Notices end to end: outbox rows in the booking's transaction, real Redis and arq workers, a real SMTP sink."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import pytest
from arq.connections import create_pool
from arq.worker import Worker
from sqlalchemy import select, text

from clinic.billing import service as billing
from clinic.billing.demo import fee_schedule
from clinic.events import AppointmentBooked, AppointmentCancelled, AppointmentMoved, CourseBooked, SessionDischarged, publish
from clinic.notices import sender
from clinic.notices.models import Notice
from clinic.notices.outbox import add_notice
from clinic.queue import Queue, redis_settings
from clinic.scheduling.models import Appointment
from clinic.timeutil import utcnow
from tests.factories import Factory, appointment
from workers import jobs
from workers.settings import worker_settings

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


async def commit_with(db, fn):
    """One transaction like a request's: commit, then the after-commit work (enqueueing) runs."""
    async with db.sessionmaker() as session:
        out = await fn(session)
        await session.commit()
        for job in session.info.pop("after_commit", []):
            await job()
    return out


async def sweep(settings, db) -> int:
    pool = await create_pool(redis_settings(settings.redis_url))
    try:
        return await jobs.sweep_outbox({"db": db, "redis": pool})
    finally:
        await pool.aclose()


async def drain(settings, db, **kw) -> None:
    """A real arq worker in burst mode: runs what is queued now, then stops."""
    worker = Worker(**(worker_settings(settings, db=db, **kw) | {"burst": True, "poll_delay": 0.05}))
    try:
        await worker.main()
    finally:
        await worker.close()


async def notices_of(db, clinic_id: int) -> list[Notice]:
    async with db.sessionmaker() as s:
        return list((await s.execute(select(Notice).where(Notice.clinic_id == clinic_id).order_by(Notice.id))).scalars().all())


async def setup(engine_db, *, days_ahead: float = 5, **patient_kw):
    f = Factory(engine_db)
    clinic = await f.clinic()
    patient = await f.patient(clinic, first_name="Robin", diagnosis_codes=["F33.2"], **patient_kw)
    starts = utcnow().replace(microsecond=0) + timedelta(days=days_ahead)
    appt = await appointment(f, clinic, patient, starts)
    return f, clinic, patient, appt


def mine(sink, patient) -> list:
    """Messages for this test's patient: the committed database also holds other tests' due notices, which a worker rightly sends."""
    return [m for m in sink.messages if m["To"] == patient.email]


def bodies(msg) -> str:
    parts = [msg["Subject"]]
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            parts.append(part.get_content())
    return "\n".join(parts)


async def test_booking_while_redis_is_down_is_delivered_once_redis_is_back(engine_db, settings, smtp_sink, redis):
    f, clinic, patient, appt = await setup(engine_db)
    dead = Queue("redis://127.0.0.1:1/0")
    await commit_with(engine_db, lambda s: publish(s, AppointmentBooked(appt, patient, clinic), queue=dead))
    await dead.close()
    rows = await notices_of(engine_db, clinic.id)
    assert [(n.kind, n.status) for n in rows] == [("booking_confirmation", "pending"), ("reminder", "pending")]

    # Redis is back: the cron sweep re-enqueues what is due, a worker sends it
    settings = settings.with_(smtp_url=smtp_sink.url)
    # other tests may have left due notices of their own clinics in this committed database
    assert await sweep(settings, engine_db) >= 1
    await drain(settings, engine_db)
    await smtp_sink.wait_for(1)
    messages = mine(smtp_sink, patient)
    assert len(messages) == 1
    msg = messages[0]
    assert msg["To"] == patient.email
    assert "Robin" in bodies(msg) and "is booked" in msg["Subject"]
    assert msg["Message-ID"] == f"<notice.{clinic.id}.{rows[0].id}@testserver.local>"
    after = await notices_of(engine_db, clinic.id)
    assert [n.status for n in after] == ["sent", "pending"]
    assert after[0].message_id == msg["Message-ID"] and after[0].attempts == 1

    # a second sweep and worker find nothing more to send
    await sweep(settings, engine_db)
    await drain(settings, engine_db)
    assert len(mine(smtp_sink, patient)) == 1


async def test_cancelling_before_the_reminder_time_means_no_reminder(engine_db, settings, smtp_sink, redis):
    # reminder due 1 second from now
    f, clinic, patient, appt = await setup(engine_db, days_ahead=2 + 1 / 86400)
    await commit_with(engine_db, lambda s: publish(s, AppointmentBooked(appt, patient, clinic), queue=None))

    async def cancel(s):
        a = await s.get(Appointment, appt.id)
        a.status, a.cancelled_at, a.cancel_reason = "cancelled", utcnow(), "patient request"
        s.add(a)
        await publish(s, AppointmentCancelled(a, patient, clinic), queue=None)

    await commit_with(engine_db, cancel)
    await asyncio.sleep(1.2)
    settings = settings.with_(smtp_url=smtp_sink.url)
    await sweep(settings, engine_db)
    await drain(settings, engine_db)
    kinds = {n.kind: n.status for n in await notices_of(engine_db, clinic.id)}
    # the confirmation was still pending when the visit was cancelled: neither goes out
    assert kinds == {"booking_confirmation": "cancelled", "reminder": "cancelled"}
    await asyncio.sleep(0.2)
    assert mine(smtp_sink, patient) == []


async def test_reminder_rechecks_the_visit_at_send_time(engine_db, settings, smtp_sink, redis):
    """Even if a cancellation somehow skipped the hook, the sender sees the visit is cancelled and sends nothing."""
    f, clinic, patient, appt = await setup(engine_db, days_ahead=2 + 1 / 86400)
    await commit_with(engine_db, lambda s: publish(s, AppointmentBooked(appt, patient, clinic), queue=None))
    async with engine_db.transaction() as s:
        await s.execute(text("UPDATE appointments SET status = 'cancelled' WHERE id = :id"), {"id": appt.id})
    await asyncio.sleep(1.2)
    settings = settings.with_(smtp_url=smtp_sink.url)
    await sweep(settings, engine_db)
    await drain(settings, engine_db)
    rows = await notices_of(engine_db, clinic.id)
    assert {n.status for n in rows} == {"cancelled"}
    assert all(n.last_error == "visit is cancelled" for n in rows)
    assert mine(smtp_sink, patient) == []


async def test_moved_visit_gets_a_new_reminder_and_the_old_one_is_cancelled(engine_db, settings, redis):
    f, clinic, patient, appt = await setup(engine_db)
    await commit_with(engine_db, lambda s: publish(s, AppointmentBooked(appt, patient, clinic), queue=None))
    old = appt.starts_at

    async def move(s):
        a = await s.get(Appointment, appt.id)
        a.starts_at, a.ends_at = old + timedelta(days=2), a.ends_at + timedelta(days=2)
        s.add(a)
        await publish(s, AppointmentMoved(a, patient, clinic), queue=None)

    await commit_with(engine_db, move)
    rows = await notices_of(engine_db, clinic.id)
    reminders = [(n.status, n.send_after) for n in rows if n.kind == "reminder"]
    assert reminders == [("cancelled", old - timedelta(hours=48)), ("pending", old + timedelta(days=2) - timedelta(hours=48))]
    confirmations = [n for n in rows if n.kind == "booking_confirmation"]
    assert [n.payload["moved"] for n in confirmations] == [False, True]

    async def move_back(s):
        a = await s.get(Appointment, appt.id)
        a.starts_at, a.ends_at, a.updated_at = old, a.ends_at - timedelta(days=2), utcnow()
        s.add(a)
        await publish(s, AppointmentMoved(a, patient, clinic), queue=None)

    await commit_with(engine_db, move_back)
    rows = await notices_of(engine_db, clinic.id)
    # back at the first time: that reminder is live again, the other one cancelled, and the patient is told again
    assert [(n.status, n.send_after) for n in rows if n.kind == "reminder"] == [
        ("pending", old - timedelta(hours=48)), ("cancelled", old + timedelta(days=2) - timedelta(hours=48))]
    assert [n.payload["moved"] for n in rows if n.kind == "booking_confirmation"] == [False, True, True]


async def test_opted_out_patient_gets_no_notice_rows(engine_db):
    f, clinic, patient, appt = await setup(engine_db, notices_opted_out=True)
    await commit_with(engine_db, lambda s: publish(s, AppointmentBooked(appt, patient, clinic), queue=None))
    assert await notices_of(engine_db, clinic.id) == []


async def test_no_notice_body_names_the_diagnosis_drug_dose_or_an_amount(engine_db, settings, smtp_sink, redis):
    f = Factory(engine_db)
    clinic = await f.clinic(settings={"reminder_hours": 8 * 24 - 1 / 3600})  # the reminder is due a second after booking
    await f.add(*fee_schedule(clinic.id, date(2020, 1, 1)))
    prescriber = await f.user(clinic, "prescriber")
    patient = await f.patient(clinic, first_name="Robin", diagnosis_codes=["F33.2", "F41.1"])
    past = utcnow() - timedelta(hours=3)
    done = await appointment(f, clinic, patient, past, status="fulfilled", planned_dose_mg=84,
                             facts={"dose_mg": 84}, discharged_at=past + timedelta(hours=2), discharged_by=prescriber.id)
    upcoming = await appointment(f, clinic, patient, utcnow().replace(microsecond=0) + timedelta(days=8, seconds=1))
    q = Queue(settings.redis_url)

    async def work(s):
        await publish(s, AppointmentBooked(upcoming, patient, clinic), queue=q)
        await publish(s, SessionDischarged(done, patient, clinic), queue=q)
        draft = await billing.draft_of(s, patient.id, "gfe")
        await billing.try_issue(s, estimate=draft, clinic=clinic, queue=q)

    await commit_with(engine_db, work)
    await q.close()
    rows = await notices_of(engine_db, clinic.id)
    assert sorted(n.kind for n in rows) == ["balance", "booking_confirmation", "gfe", "reminder"]
    await drain(settings.with_(smtp_url=smtp_sink.url), engine_db)
    messages = await smtp_sink.wait_for(4)
    messages = mine(smtp_sink, patient)
    assert len(messages) == 4
    forbidden = re.compile(r"F33|F41|ketamine|spravato|G208|\bmg\b|\$|\d+\.\d\d|860|840|Example", re.IGNORECASE)
    for msg in messages:
        body = re.sub(r"https?://\S+", "", bodies(msg))  # the signed link's digits are not amounts
        assert not forbidden.search(body), (msg["Subject"], forbidden.search(body).group(0))
        assert "Robin" in body and clinic.phone in body
        assert "/e/" in bodies(msg)  # amounts sit behind the link
    reminder = next(m for m in messages if m["Subject"].startswith("Reminder"))
    assert "Do not eat for 2 hours before your visit." in bodies(reminder)


async def test_staff_digest_counts_what_is_due_without_naming_patients(engine_db, settings, smtp_sink, redis):
    f, clinic, patient, appt = await setup(engine_db, days_ahead=20)
    biller = await f.user(clinic, "billing")
    await f.user(clinic, "front_desk")
    await commit_with(engine_db, lambda s: publish(s, AppointmentBooked(appt, patient, clinic), queue=None))
    pool = await create_pool(redis_settings(settings.redis_url))
    try:
        ctx = {"db": engine_db, "redis": pool, "digest_any_hour": True}
        assert await jobs.staff_digests(ctx) >= 1
        await jobs.staff_digests(ctx)  # once a day: the second run adds nothing for this clinic
    finally:
        await pool.aclose()
    digests = [n for n in await notices_of(engine_db, clinic.id) if n.kind == "staff_digest"]
    assert [n.to_address for n in digests] == [biller.email]
    await drain(settings.with_(smtp_url=smtp_sink.url), engine_db)
    (msg,) = [m for m in await smtp_sink.wait_for(1) if m["To"] == biller.email]
    body = bodies(msg)
    assert "Estimates to issue: 1 due" in body and patient.last_name not in body and "Robin" not in body


async def test_smtp_refusals_retry_with_backoff_then_fail(engine_db, settings, smtp_sink, redis):
    f, clinic, patient, appt = await setup(engine_db)
    nid = await commit_with(engine_db, lambda s: add_notice(
        s, queue=None, clinic_id=clinic.id, kind="balance", dedupe_key=f"test-refused:{appt.id}", to_address=patient.email,
        patient_id=patient.id, appointment_id=appt.id))
    smtp_sink.refuse_with = (451, "try again later")
    settings = settings.with_(smtp_url=smtp_sink.url)
    await sweep(settings, engine_db)
    await drain(settings, engine_db, retry_base=0.05, max_attempts=3)
    (row,) = await notices_of(engine_db, clinic.id)
    assert (row.id, row.status, row.attempts) == (nid, "failed", 3)
    assert row.last_error == "gave up after 3 tries: the mail relay said try later (SMTPDataError 451)"


async def test_permanent_refusal_fails_at_once(engine_db, settings, smtp_sink, redis):
    f, clinic, patient, appt = await setup(engine_db)
    await commit_with(engine_db, lambda s: add_notice(
        s, queue=None, clinic_id=clinic.id, kind="balance", dedupe_key=f"test-550:{appt.id}", to_address=patient.email,
        patient_id=patient.id, appointment_id=appt.id))
    smtp_sink.refuse_with = (550, "no such mailbox")
    settings = settings.with_(smtp_url=smtp_sink.url)
    await sweep(settings, engine_db)
    await drain(settings, engine_db, retry_base=0.05)
    (row,) = await notices_of(engine_db, clinic.id)
    assert (row.status, row.attempts) == ("failed", 1)
    assert row.last_error == "the mail relay refused the message (SMTPDataError 550)"


async def test_a_refused_address_fails_at_once_with_a_reason_that_does_not_quote_it(engine_db, settings, smtp_sink, redis):
    f, clinic, patient, appt = await setup(engine_db)
    await commit_with(engine_db, lambda s: add_notice(
        s, queue=None, clinic_id=clinic.id, kind="balance", dedupe_key=f"test-rcpt:{appt.id}", to_address=patient.email,
        patient_id=patient.id, appointment_id=appt.id))

    async def no_such_mailbox(server, session, envelope, address, rcpt_options):
        return f"550 5.1.1 <{address}>: no such mailbox"

    smtp_sink.handle_RCPT = no_such_mailbox
    settings = settings.with_(smtp_url=smtp_sink.url)
    await sweep(settings, engine_db)
    await drain(settings, engine_db, retry_base=0.05)
    (row,) = await notices_of(engine_db, clinic.id)
    assert (row.status, row.attempts) == ("failed", 1)
    assert row.last_error == "the mail relay refused the address (SMTPRecipientsRefused 550)"


async def test_a_send_the_relay_took_while_postgres_was_away_is_recorded_not_sent_again(engine_db, settings, smtp_sink):
    f, clinic, patient, appt = await setup(engine_db)
    nid = await commit_with(engine_db, lambda s: add_notice(
        s, queue=None, clinic_id=clinic.id, kind="balance", dedupe_key=f"test-unrecorded:{appt.id}", to_address=patient.email,
        patient_id=patient.id, appointment_id=appt.id))
    # claimed long ago and never marked: the sweep hands it out again, and this worker knows the relay took it
    async with engine_db.engine.begin() as conn:
        await conn.execute(text("UPDATE notices SET status = 'sending', attempts = 1, claimed_at = now() - interval '1 hour' WHERE id = :i"), {"i": nid})
    mid, at = f"<notice.{clinic.id}.{nid}@testserver.local>", utcnow().replace(microsecond=0) - timedelta(minutes=50)
    unrecorded = {nid: (mid, at)}
    assert await sender.deliver(engine_db, settings.with_(smtp_url=smtp_sink.url), nid, unrecorded=unrecorded) == "sent"
    assert unrecorded == {} and not mine(smtp_sink, patient)
    (row,) = await notices_of(engine_db, clinic.id)
    assert (row.status, row.message_id, row.sent_at, row.attempts) == ("sent", mid, at, 1)


WORKER = """
import asyncio, sys
from arq.worker import Worker
from clinic.config import Settings
from workers.settings import worker_settings
s = Settings(database_url=sys.argv[1], redis_url=sys.argv[2], smtp_url=sys.argv[3], secret_key="k" * 32,
             base_url="http://testserver.local")
async def main():
    w = Worker(**(worker_settings(s, max_jobs=5, job_timeout=3) | {"poll_delay": 0.05}))
    await w.main()
asyncio.run(main())
"""


def start_worker(settings, smtp_url):
    return subprocess.Popen([sys.executable, "-c", WORKER, settings.database_url, settings.redis_url, smtp_url], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.slow
async def test_worker_killed_mid_batch_and_restarted_delivers_every_notice(engine_db, settings, smtp_sink, redis):
    n = 200
    f, clinic, patient, appt = await setup(engine_db)
    original = smtp_sink.handle_DATA

    async def slow(server, session, envelope):
        await asyncio.sleep(0.01)  # slow enough that the kill lands mid-batch
        return await original(server, session, envelope)

    smtp_sink.handle_DATA = slow
    q = Queue(settings.redis_url)

    async def many(s):
        return [await add_notice(s, queue=q, clinic_id=clinic.id, kind="balance", dedupe_key=f"kill:{clinic.id}:{i}",
                                 to_address=patient.email, patient_id=patient.id, appointment_id=appt.id) for i in range(n)]

    ids = await commit_with(engine_db, many)
    await q.close()
    worker = start_worker(settings, smtp_sink.url)
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + 30
        while len(mine(smtp_sink, patient)) < 20 and loop.time() < end:
            await asyncio.sleep(0.005)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        sent_before = len(mine(smtp_sink, patient))
        assert 20 <= sent_before < n, "the worker was not killed mid-batch"
        unsent = [r for r in await notices_of(engine_db, clinic.id) if r.status != "sent"]
        assert unsent, "every notice was already sent before the kill"

        worker = start_worker(settings, smtp_sink.url)
        end = loop.time() + 45
        while loop.time() < end:
            if all(r.status == "sent" for r in await notices_of(engine_db, clinic.id)):
                break
            await asyncio.sleep(0.25)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    rows = await notices_of(engine_db, clinic.id)
    assert {r.status for r in rows} == {"sent"}
    received = [m["Message-ID"] for m in mine(smtp_sink, patient)]
    expected = {f"<notice.{clinic.id}.{i}@testserver.local>" for i in ids}
    assert set(received) == expected
    # a send cut off by the kill may repeat, but only with its own Message-ID, which mail clients fold
    assert len(received) - len(expected) <= 5


async def test_a_course_is_confirmed_in_one_message_listing_every_visit(engine_db, settings, smtp_sink, redis):
    f, clinic, patient, first = await setup(engine_db, days_ahead=6)
    visits = [first] + [await appointment(f, clinic, patient, first.starts_at + timedelta(days=3 * n + 0.1 * n)) for n in (1, 2, 3)]
    await commit_with(engine_db, lambda s: publish(s, CourseBooked(visits, patient, clinic), queue=None))
    rows = await notices_of(engine_db, clinic.id)
    assert sorted(n.kind for n in rows) == ["booking_confirmation"] + ["reminder"] * 4
    (confirmation,) = [n for n in rows if n.kind == "booking_confirmation"]
    assert confirmation.appointment_id == first.id and len(confirmation.payload["visits"]) == 4

    settings = settings.with_(smtp_url=smtp_sink.url)
    await sweep(settings, engine_db)
    await drain(settings, engine_db)
    await smtp_sink.wait_for(1)
    (msg,) = mine(smtp_sink, patient)  # the reminders wait for their days
    text_ = bodies(msg)
    assert "Your visits from" in msg["Subject"] and "Your 4 visits are booked" in text_
    zone = ZoneInfo(clinic.timezone)
    for v in visits:
        local = v.starts_at.astimezone(zone)
        assert f"{local:%A} {local.day} {local:%B %Y} at {local:%H:%M}" in text_
