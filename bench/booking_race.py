"""Many front desks booking one chair and start at once: exactly one 201 per slot, the rest 409, no 5xx; latency.

Run: python -m bench.booking_race [--concurrency 50] [--rounds 10]   (DATABASE_URL, else embedded Postgres; REDIS_URL optional; a database of its own)
Each round sends `concurrency` bookings of the same chair and start (different patients) through the
HTTP app with a real connection pool, then checks the database holds one live appointment for it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from bench.availability import HOURS, TZ, _clinic, percentile
from bench.common import plain_dsn, with_database


async def _setup(db, *, rounds: int, concurrency: int) -> dict:
    from sqlalchemy import text

    from clinic.auth.rules import new_token
    from clinic.scheduling.rules import wall_to_utc

    today = datetime.now(ZoneInfo(TZ)).date()
    monday = today + timedelta(days=7 - today.weekday())
    async with db.engine.begin() as s:
        cid, _, chairs, _ = await _clinic(s, "Race clinic")
        desk = (await s.execute(text(
            "INSERT INTO staff_users (clinic_id, email, full_name, credentials, roles, is_therapist, password_hash, active, created_at)"
            " VALUES (:c, :e, 'Desk', '', CAST(:r AS varchar[]), false, 'x', true, now()) RETURNING id"),
            {"c": cid, "e": f"desk-{secrets.token_hex(3)}@bench.example", "r": ["front_desk"]})).scalar_one()
        raw, hashed = new_token("ct_")
        await s.execute(text("INSERT INTO api_tokens (token_hash, user_id, name, created_at) VALUES (:h, :u, 'bench', now())"), {"h": hashed, "u": desk})
        for key in range(4):
            user = (await s.execute(text(
                "INSERT INTO staff_users (clinic_id, email, full_name, credentials, roles, is_therapist, password_hash, active, created_at)"
                " VALUES (:c, :e, 'Staff', '', CAST(:r AS varchar[]), :t, 'x', true, now()) RETURNING id"),
                {"c": cid, "e": f"s{key}-{secrets.token_hex(3)}@bench.example", "r": ["nurse" if key < 2 else "prescriber"], "t": key == 3})).scalar_one()
            role = ("nurse", "nurse", "prescriber", "therapist")[key]
            for d in range(7):
                day = monday + timedelta(days=d)
                spans = HOURS.get(str(day.weekday())) or []
                if spans:
                    await s.execute(text("INSERT INTO shifts (clinic_id, user_id, role, starts_at, ends_at) VALUES (:c, :u, :r, :s, :e)"),
                                    {"c": cid, "u": user, "r": role, "s": wall_to_utc(day, datetime.strptime(spans[0][0], "%H:%M").time(), TZ),
                                     "e": wall_to_utc(day, datetime.strptime(spans[0][1], "%H:%M").time(), TZ)})
        patients = (await s.execute(text(
            "INSERT INTO patients (clinic_id, first_name, last_name, date_of_birth, sex, email, phone, notice_channel, notices_opted_out,"
            " medication_flags, diagnosis_codes, extra, created_at)"
            " SELECT :c, 'Racer', 'No' || g, DATE '1980-01-01', 'unknown', 'r' || g || '@bench.example', '555-0100', 'none', true,"
            " '{}', '{}', '{}', now() FROM generate_series(1, :n) g RETURNING id"), {"c": cid, "n": concurrency})).scalars().all()
    # one slot per round: Monday to Friday, 08:00 onwards, IV infusions (95 minutes) on chair 1
    slots = []
    for r in range(rounds):
        day = monday + timedelta(days=r % 5)
        slots.append(wall_to_utc(day, datetime.strptime("08:00", "%H:%M").time(), TZ) + timedelta(minutes=105 * (r // 5)))
    return {"clinic_id": cid, "chair": chairs[0], "token": raw, "patients": list(patients), "slots": slots}


async def run(ctx: dict | None = None) -> dict:
    """ctx may give database_url, redis_url, concurrency (50), rounds (10)."""
    import asyncpg
    import httpx
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from clinic.app import create_app
    from clinic.cli import run_migrations
    from clinic.config import Settings
    from clinic.db import Database, make_sessionmaker
    from clinic.queue import Queue

    ctx = dict(ctx or {})
    concurrency = int(ctx.get("concurrency", 50))
    rounds = int(ctx.get("rounds", 10))
    server_url = ctx.get("database_url") or os.environ.get("DATABASE_URL")
    redis_url = ctx.get("redis_url") or os.environ.get("REDIS_URL")
    started = None
    if not server_url:
        from clinic import embedded

        started = embedded.start(Path(tempfile.mkdtemp(prefix="clinic-bench-")), postgres=True, redis=False)
        server_url = started.database_url
    name = f"clinic_bench_race_{secrets.token_hex(3)}"
    admin_dsn = plain_dsn(with_database(server_url, "postgres"))
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    owner_url = with_database(server_url, name)
    db = None
    app = None
    queue = Queue(redis_url)  # notices are queued after commit; an absent Redis only leaves them to the sweep
    codes: dict[int, int] = {}
    latencies: list[float] = []
    winners_per_round: list[int] = []
    rows_per_slot: list[int] = []
    try:
        database_url = await asyncio.to_thread(run_migrations, owner_url)
        engine = create_async_engine(database_url, pool_size=20, max_overflow=20, pool_timeout=30)
        db = Database(engine=engine, sessionmaker=make_sessionmaker(engine))
        setup = await _setup(db, rounds=rounds, concurrency=concurrency)
        settings = Settings(database_url=database_url, redis_url=redis_url, secret_key="bench-" + secrets.token_hex(16), base_url="http://bench.local")
        app = create_app(settings, db=db, queue=queue)
        headers = {"Authorization": f"Bearer {setup['token']}"}
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        t_all = time.perf_counter()
        async with httpx.AsyncClient(transport=transport, base_url="http://bench.local", timeout=60) as client:

            async def one(patient_id: int, start: datetime) -> int:
                t0 = time.perf_counter()
                r = await client.post("/api/v1/appointments", headers=headers, json={
                    "patient_id": patient_id, "session_type": "ketamine_iv", "chair_id": setup["chair"], "starts_at": start.isoformat()})
                latencies.append((time.perf_counter() - t0) * 1000)
                return r.status_code

            for start in setup["slots"]:
                answers = await asyncio.gather(*(one(p, start) for p in setup["patients"]))
                for c in answers:
                    codes[c] = codes.get(c, 0) + 1
                winners_per_round.append(answers.count(201))
                async with db.engine.connect() as conn:
                    rows_per_slot.append((await conn.execute(text(
                        "SELECT count(*) FROM appointments WHERE chair_id = :ch AND starts_at = :s AND status = 'booked'"),
                        {"ch": setup["chair"], "s": start})).scalar_one())
        seconds = time.perf_counter() - t_all
    finally:
        if app is not None:
            for stop_listener in list(app.state.listeners):  # what the lifespan would stop (the sign-in listener)
                await stop_listener()
        await queue.close()
        if db is not None:
            await db.dispose()
        admin = await asyncpg.connect(admin_dsn)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'DROP ROLE IF EXISTS "{name}_app"')
        await admin.close()
        if started:
            started.stop()
    return {
        "rounds": rounds,
        "concurrency": concurrency,
        "requests": sum(codes.values()),
        "status_codes": dict(sorted(codes.items())),
        "one_winner_every_round": all(w == 1 for w in winners_per_round) and all(n == 1 for n in rows_per_slot),
        "server_errors": sum(n for c, n in codes.items() if c >= 500),
        "p50_ms": round(statistics.median(latencies), 1),
        "p95_ms": round(percentile(latencies, 0.95), 1),
        "max_ms": round(max(latencies), 1),
        "seconds": round(seconds, 2),
        "requests_per_second": round(sum(codes.values()) / seconds, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    result = asyncio.run(run({"concurrency": args.concurrency, "rounds": args.rounds}))
    for k, v in result.items():
        print(f"{k:>24}: {v}")


if __name__ == "__main__":
    main()
