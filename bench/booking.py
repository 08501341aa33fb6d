"""Booking POST throughput and p50/p95/p99 at 32 front-desk connections, each booking a distinct free slot, beside the
bare Litestar + asyncpg single-INSERT endpoint of bench/vitals.py in alternating rounds on the same database.

Run: python -m bench.booking [--clients 32] [--seconds 8] [--rounds 4] [--days 120]   (BENCH_DATABASE_URL / DATABASE_URL, BENCH_REDIS_URL / REDIS_URL)
Target: the app's bookings per second at least 0.15x the bare endpoint's inserts, and p99 under 100 ms.

The clinic: 16 chairs open 07:00-19:00 every day, six nurses on shift, IV infusions (95-minute hold) at seven
starts per chair per day, for `days` days from tomorrow. Every slot goes to a new self-pay patient who takes
email, so each booking owes a confirmation, a reminder and a Good Faith Estimate draft. The slots are dealt day
by day in turn (the next booking is on the next day), so the bookings in flight are on different days, as
desks booking different patients are. After the rounds one arq worker (as `clinic worker` runs it, into a local
SMTP sink) works through what the bookings left for it, for at most `drain_seconds`, and the figures say how
many bookings had their confirmation written by then (the follow-up's last step; sending them queues behind). `stack_floor_rps` is the same app answering an
authenticated POST that runs one SELECT 1 in the request's transaction: what every JSON write pays before its own work.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import date, datetime, time as clock, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiosmtpd.controller import Controller

from bench.notices import CountingSink
from bench.vitals import (
    BARE_TABLE, ROOT, SideBySide, beside_bare, bench_database, dsn, free_port, load, post, run_and_print, side_by_side_options,
    stop, vitals_body,
)

TZ = "America/New_York"
CHAIRS = 16
NURSES = 6  # three monitored patients each: room for all 16 chairs at once
OPEN, CLOSE = "07:00", "19:00"
STARTS = ("07:00", "08:45", "10:30", "12:15", "14:00", "15:45", "17:30")  # 95-minute holds on the 15-minute grid
PROTOCOL = "ketamine_iv"

WORKER = """
import asyncio, logging, sys
logging.basicConfig(level=logging.WARNING)
from arq.worker import Worker
from clinic.config import Settings
from workers.settings import worker_settings
s = Settings(database_url=sys.argv[1], redis_url=sys.argv[2], smtp_url=sys.argv[3], secret_key="bench" * 8, base_url="http://bench.local")
async def main():
    await Worker(**(worker_settings(s) | {"cron_jobs": []})).main()  # made inside the loop it runs on
asyncio.run(main())
"""


def slots(days: int, first_day: date) -> list[tuple[datetime, int]]:
    """(start, chair index) for every free slot, the day changing fastest."""
    from clinic.scheduling.rules import wall_to_utc

    out = []
    for at in STARTS:
        t = clock.fromisoformat(at)
        for chair in range(CHAIRS):
            for d in range(days):
                out.append((wall_to_utc(first_day + timedelta(days=d), t, TZ), chair))
    return out


async def seed(url: str, *, days: int) -> dict[str, Any]:
    """The clinic, its protocols, chairs, nurses' shifts for every day, a patient per slot, a front-desk API token."""
    import asyncpg

    from clinic.auth.rules import new_token
    from clinic.scheduling.protocols import default_protocols
    from clinic.scheduling.rules import wall_to_utc

    first_day = datetime.now(ZoneInfo(TZ)).date() + timedelta(days=1)
    wanted = slots(days, first_day)
    conn = await asyncpg.connect(dsn(url))
    try:
        async with conn.transaction():
            hours = {str(d): [[OPEN, CLOSE]] for d in range(7)}
            clinic_id = await conn.fetchval(
                "INSERT INTO clinics (name, display_name, timezone, phone, address, state, npi, tin, opening_hours, settings, created_at)"
                " VALUES ('Bench clinic', 'Bench', $1, '555-0100', '1 Main St', 'CT', '1234567893', '12-3456789', $2::jsonb,"
                " '{\"nurse_ratio\": 3, \"grid_minutes\": 15}', now()) RETURNING id", TZ, json.dumps(hours))
            for p in default_protocols():
                await conn.execute(
                    "INSERT INTO session_types (clinic_id, kind, name, needs_chair, monitored, needs_prescriber, needs_therapist, requires_rems,"
                    " prep_minutes, dosing_minutes, monitoring_minutes, turnover_minutes, protocol, active)"
                    " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13::jsonb,true)",
                    clinic_id, p["kind"], p["name"], p.get("needs_chair", True), p.get("monitored", True), p.get("needs_prescriber", False),
                    p.get("needs_therapist", False), p.get("requires_rems", False), p["prep_minutes"], p["dosing_minutes"],
                    p["monitoring_minutes"], p["turnover_minutes"], json.dumps(p["protocol"]),
                )
            chairs = [await conn.fetchval("INSERT INTO chairs (clinic_id, name, kind, active, sort_order) VALUES ($1, $2, 'chair', true, $3) RETURNING id",
                                          clinic_id, f"Chair {i + 1}", i) for i in range(CHAIRS)]
            staff = await conn.fetch(
                "INSERT INTO staff_users (clinic_id, email, full_name, credentials, roles, is_therapist, password_hash, active, created_at)"
                " SELECT $1, 'staff' || g || '@bench.example', 'Staff ' || g, '', CASE WHEN g = 0 THEN ARRAY['front_desk'] ELSE ARRAY['nurse'] END::varchar[],"
                " false, 'x', true, now() FROM generate_series(0, $2) g ORDER BY g RETURNING id", clinic_id, NURSES)
            desk, nurses = staff[0]["id"], [r["id"] for r in staff[1:]]
            raw, hashed = new_token("ct_")
            await conn.execute("INSERT INTO api_tokens (token_hash, user_id, name, created_at) VALUES ($1, $2, 'bench', now())", hashed, desk)
            await conn.executemany(
                "INSERT INTO shifts (clinic_id, user_id, role, starts_at, ends_at) VALUES ($1, $2, 'nurse', $3, $4)",
                [(clinic_id, n, wall_to_utc(first_day + timedelta(days=d), clock.fromisoformat(OPEN), TZ),
                  wall_to_utc(first_day + timedelta(days=d), clock.fromisoformat(CLOSE), TZ)) for d in range(days) for n in nurses])
            patients = [r["id"] for r in await conn.fetch(
                "INSERT INTO patients (clinic_id, first_name, last_name, date_of_birth, sex, email, phone, notice_channel, notices_opted_out,"
                " medication_flags, diagnosis_codes, extra, created_at)"
                " SELECT $1, 'Pat', 'Bench' || g, DATE '1980-01-01' + g % 9000, 'unknown', 'p' || g || '@bench.example', '555-0100', 'email', false,"
                " '{}', '{F33.2}', '{}', now() FROM generate_series(1, $2) g ORDER BY g RETURNING id", clinic_id, len(wanted))]
            await conn.execute(BARE_TABLE)
    finally:
        await conn.close()
    bookings = [{"patient_id": p, "session_type": PROTOCOL, "chair_id": chairs[c], "starts_at": s.isoformat()}
                for p, (s, c) in zip(patients, wanted)]
    return {"clinic_id": clinic_id, "token": raw, "bookings": bookings}


async def counts(url: str, clinic_id: int) -> dict[str, int]:
    """What the bookings left in the database: appointments and their audit events, notices, estimates."""
    import asyncpg

    conn = await asyncpg.connect(dsn(url))
    try:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM appointments WHERE clinic_id = $1) AS appointments,"
            " (SELECT count(*) FROM audit_events WHERE clinic_id = $1 AND action = 'appointment.book') AS audited,"
            " (SELECT count(DISTINCT appointment_id) FROM notices WHERE clinic_id = $1 AND kind = 'booking_confirmation') AS confirmed,"
            " (SELECT count(*) FROM notices WHERE clinic_id = $1 AND kind = 'booking_confirmation' AND status = 'sent') AS confirmations_sent,"
            " (SELECT count(*) FROM notices WHERE clinic_id = $1 AND kind = 'reminder') AS reminders,"
            " (SELECT count(*) FROM estimates WHERE clinic_id = $1) AS estimates", clinic_id)
        return dict(row)
    finally:
        await conn.close()


async def drain(url: str, redis_url: str, clinic_id: int, booked: int, seconds: float) -> dict[str, Any]:
    """One worker process works off what the bookings left queued, until every booking has its confirmation
    or `seconds` pass."""
    sink = CountingSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    proc = subprocess.Popen([sys.executable, "-c", WORKER, url, redis_url, f"smtp://127.0.0.1:{port}"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.perf_counter()
    try:
        while True:
            now = await counts(url, clinic_id)
            done = now["confirmed"]
            if done >= booked or time.perf_counter() - t0 > seconds:
                break
            await asyncio.sleep(0.25)
    finally:
        stop(proc)
        controller.stop()
    elapsed = time.perf_counter() - t0
    return {"drain_seconds": round(elapsed, 1), "drained": done, "drained_per_second": round(done / elapsed, 1) if elapsed else 0.0,
            "after_drain": now}


async def run(ctx: dict | None = None) -> dict:
    """ctx may give database_url (a server; a fresh database is made on it), redis_url, clients (32), seconds (8 per
    side, in `rounds` alternating rounds, 4), warmup (2), days (120: 13,440 slots), drain_seconds (20)."""
    from redis.asyncio import Redis

    ctx = dict(ctx or {})
    sides = SideBySide.of(ctx)
    days = int(ctx.get("days", 120))
    drain_seconds = float(ctx.get("drain_seconds", 20))
    async with bench_database(ctx, "clinic_bench_booking") as url:
        redis_url = ctx["redis_url"]  # the bench's own: flushed, and the bookings queue their follow-ups there
        await Redis.from_url(redis_url).flushdb()
        seeded = await seed(url, days=days)
        bookings, token = seeded["bookings"], seeded["token"]
        sent = 0

        def app_request(i: int) -> bytes:
            nonlocal sent
            body = bookings[sent]
            sent += 1
            return post("/api/v1/appointments", json.dumps(body).encode(), token)

        def bare_request(i: int) -> bytes:
            return post("/vitals", json.dumps({"appointment_id": i, **vitals_body(i)}).encode())

        def floor_request(i: int) -> bytes:
            return post("/bench/floor", b"{}", token)

        async with beside_bare(url, redis_url) as (app_port, bare_port):
            # each app round may take its share of the free slots, never one twice
            bare, app = await sides.run(bare_port, bare_request, app_port, app_request, app_max_requests=len(bookings) // sides.rounds)
            # what any authenticated JSON write pays before its own work (see bench/vitals.py app_with_floor)
            floor = await load(app_port, floor_request, clients=sides.clients, seconds=sides.seconds / sides.rounds, warmup=0.3,
                               max_requests=sides.max_requests)
        booked = await counts(url, seeded["clinic_id"])
        drained = await drain(url, redis_url, seeded["clinic_id"], booked["appointments"], drain_seconds)
    # only bookings made count (a 503 from a database out of connections is fast, not a booking)
    booked_rps = round(app["statuses"].get(201, 0) / app["_elapsed"], 1) if app["_elapsed"] else 0.0
    ratio = booked_rps / bare["rps"] if bare["rps"] else 0.0
    return {
        "clients": sides.clients,
        "seconds": sides.seconds,
        "app_rps": booked_rps,
        "app_p50_ms": app["p50_ms"],
        "app_p95_ms": app["p95_ms"],
        "app_p99_ms": app["p99_ms"],
        "app_statuses": app["statuses"],
        "bare_rps": bare["rps"],
        "bare_p99_ms": bare["p99_ms"],
        "throughput_ratio": round(ratio, 3),
        "rounds": sides.rounds,
        "app_rounds_rps": app["rounds_rps"],
        "bare_rounds_rps": bare["rounds_rps"],
        "stack_floor_rps": floor["rps"],
        "bookings_sent": sent,
        "at_commit": booked,
        **drained,
        "load_average": round(os.getloadavg()[0], 2),
        "target_ratio": 0.15,
        "target_p99_ms": 100,
        "meets_targets": ratio >= 0.15 and app["p99_ms"] < 100 and set(app["statuses"]) == {201},
    }


def main() -> None:
    ap = side_by_side_options(__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=120, help="days of free slots (112 a day)")
    ap.add_argument("--drain-seconds", type=float, default=20)
    a = ap.parse_args()
    run_and_print(run, {"clients": a.clients, "seconds": a.seconds, "warmup": a.warmup, "rounds": a.rounds, "days": a.days,
                        "drain_seconds": a.drain_seconds})


if __name__ == "__main__":
    main()
