"""Availability-search latency for a 4-week range with 10k and then 1M appointments in the database.

Run: python -m bench.availability [--total 1000000] [--runs 100]   (DATABASE_URL: a server, else embedded; databases of its own are made and dropped)
Target: p95 under 50 ms at 1M appointments, and at most 1.5x the 10k figure.

The measured clinic has 6 chairs, a room, two nurses, a prescriber and a therapist on shift, and a
4-week window half booked (chairs 1-3 hold back-to-back esketamine sessions). Its history and
other clinics' appointments are bulk-inserted with generate_series (the first 10k through the live
exclusion constraints; for the rest the constraints and indexes are dropped and rebuilt, which checks every row), so the
search must stay on the (clinic_id, starts_at) index to keep its speed. Each search is the service
call a request makes (7 queries + the rules) in a fresh session; `query_ms` is Postgres's own
execution time for the appointments query.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bench.common import plain_dsn, with_database

TZ = "America/New_York"
HOURS = {str(d): [["08:00", "18:00"]] for d in range(5)} | {"5": [["09:00", "13:00"]], "6": []}
SETTINGS = {"nurse_ratio": 3, "grid_minutes": 15, "late_cancel_hours": 24}
CHAIRS = 6
SLOTS = 4  # history: four back-to-back 150-minute holds per chair per day
PER_OTHER_CLINIC = 10_000
WINDOW_DAYS = 28
# as created by migration 0001
EXCLUSIONS = (("ex_appointments_chair_overlap", "chair_id"), ("ex_appointments_patient_overlap", "patient_id"))
INDEXES = (("ix_appointments_chair_id", "chair_id"), ("ix_appointments_clinic_starts", "clinic_id, starts_at"),
           ("ix_appointments_course_id", "course_id"), ("ix_appointments_patient_id", "patient_id"))


def percentile(values: list[float], p: float) -> float:
    xs = sorted(values)
    k = (len(xs) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


async def _clinic(s, name: str) -> tuple[int, int, list[int], int]:
    """A clinic with chairs, protocols and a patient pool; returns (clinic, esketamine type, chair ids, first patient id)."""
    import json

    from sqlalchemy import text

    from clinic.scheduling.protocols import default_protocols

    cid = (await s.execute(text(
        "INSERT INTO clinics (name, display_name, timezone, phone, address, state, npi, tin, opening_hours, settings, created_at)"
        " VALUES (:n, :n, :tz, '', '', 'CT', '', '', CAST(:h AS jsonb), CAST(:s AS jsonb), now()) RETURNING id"),
        {"n": name, "tz": TZ, "h": json.dumps(HOURS), "s": json.dumps(SETTINGS)})).scalar_one()
    chairs = []
    for i in range(CHAIRS):
        chairs.append((await s.execute(text(
            "INSERT INTO chairs (clinic_id, name, kind, active, sort_order) VALUES (:c, :n, 'chair', true, :o) RETURNING id"),
            {"c": cid, "n": f"Chair {i + 1}", "o": i})).scalar_one())
    await s.execute(text("INSERT INTO chairs (clinic_id, name, kind, active, sort_order) VALUES (:c, 'Room', 'room', true, 99)"), {"c": cid})
    esk = None
    for p in default_protocols():
        st = (await s.execute(text(
            "INSERT INTO session_types (clinic_id, kind, name, needs_chair, monitored, needs_prescriber, needs_therapist, requires_rems,"
            " prep_minutes, dosing_minutes, monitoring_minutes, turnover_minutes, protocol, active)"
            " VALUES (:c, :kind, :name, :nc, :mon, :np, :nt, :rems, :prep, :dose, :monit, :turn, CAST(:proto AS jsonb), true) RETURNING id"),
            {"c": cid, "kind": p["kind"], "name": p["name"], "nc": p.get("needs_chair", True), "mon": p.get("monitored", True),
             "np": p.get("needs_prescriber", False), "nt": p.get("needs_therapist", False), "rems": p.get("requires_rems", False),
             "prep": p["prep_minutes"], "dose": p["dosing_minutes"], "monit": p["monitoring_minutes"], "turn": p["turnover_minutes"],
             "proto": json.dumps(p["protocol"])})).scalar_one()
        if p["kind"] == "esketamine":
            esk = st
    first_patient = (await s.execute(text(
        "INSERT INTO patients (clinic_id, first_name, last_name, date_of_birth, sex, email, phone, notice_channel, notices_opted_out,"
        " rems_enrolled_on, rems_patient_id, medication_flags, diagnosis_codes, extra, created_at)"
        " SELECT :c, 'Pat', 'Bench' || g, DATE '1980-01-01' + g, 'unknown', 'p' || g || '@bench.example', '555-0100', 'email', false,"
        " DATE '2024-01-01', 'RP-' || lpad(g::text, 6, '0'), '{}', '{}', '{}', now() FROM generate_series(1, :n) g RETURNING id"),
        {"c": cid, "n": CHAIRS * SLOTS + 8})).scalars().all()[0]
    return cid, esk, chairs, first_patient


async def _history(s, *, clinic_id: int, st: int, first_chair: int, first_patient: int, rows: int, before: date, skip_days: int = 0) -> int:
    """`rows` past appointments, four per chair per day going back from `before` (after `skip_days` already filled);
    one patient per chair and slot, so nothing overlaps."""
    from sqlalchemy import text

    per_day = CHAIRS * SLOTS
    days = -(-rows // per_day)
    await s.execute(text(
        "INSERT INTO appointments (clinic_id, patient_id, session_type_id, chair_id, starts_at, ends_at, status, escort_confirmed,"
        " created_at, updated_at, late_cancel, fasting_confirmed, facts)"
        " SELECT :c, :p + c * :slots + k, :st, :ch + c, t, t + interval '150 minutes', 'fulfilled', false, t, t, false, false, '{}'"
        " FROM (SELECT d, c, k, (CAST(:before AS date) - d) + time '13:00' + k * interval '150 minutes' AS t"
        "       FROM generate_series(:skip + 1, :skip + :days) d, generate_series(0, :chairs - 1) c, generate_series(0, :slots - 1) k) g"
        " ORDER BY d, c, k LIMIT :rows"),
        {"c": clinic_id, "p": first_patient, "slots": SLOTS, "st": st, "ch": first_chair, "before": before, "days": days,
         "chairs": CHAIRS, "rows": rows, "skip": skip_days})
    return rows


async def _window(s, *, clinic_id: int, st: int, chairs: list[int], first_patient: int, staff: dict[str, int], monday: date) -> int:
    """Shifts on every open day of the window, and chairs 1-3 booked with esketamine from opening time."""
    from sqlalchemy import text

    from clinic.scheduling.rules import ClinicCalendar, wall_to_utc

    cal = ClinicCalendar.build(tz=TZ, opening_hours=HOURS, settings=SETTINGS)
    n = 0
    for i in range(WINDOW_DAYS):
        day = monday + timedelta(days=i)
        spans = cal.hours.get(day.weekday(), ())
        if not spans:
            continue
        open_at, close_at = wall_to_utc(day, spans[0][0], TZ), wall_to_utc(day, spans[-1][1], TZ)
        for key, role in (("nurse1", "nurse"), ("nurse2", "nurse"), ("prescriber", "prescriber"), ("therapist", "therapist")):
            await s.execute(text("INSERT INTO shifts (clinic_id, user_id, role, starts_at, ends_at) VALUES (:c, :u, :r, :s, :e)"),
                            {"c": clinic_id, "u": staff[key], "r": role, "s": open_at, "e": close_at})
        t = open_at
        k = 0
        while t + timedelta(minutes=140) <= close_at:
            for j in range(3):
                await s.execute(text(
                    "INSERT INTO appointments (clinic_id, patient_id, session_type_id, chair_id, starts_at, ends_at, status, planned_dose_mg,"
                    " escort_confirmed, created_at, updated_at, late_cancel, fasting_confirmed, facts)"
                    " VALUES (:c, :p, :st, :ch, :s, :e, 'booked', 56, false, now(), now(), false, false, '{}')"),
                    {"c": clinic_id, "p": first_patient + j * SLOTS + k, "st": st, "ch": chairs[j], "s": t, "e": t + timedelta(minutes=150)})
                n += 1
            t += timedelta(minutes=150)
            k += 1
    return n


@dataclass
class Scenario:
    db: Any
    clinic_id: int
    patients: list[int]
    monday: date
    times: list[float]
    candidates: int = 0
    load: dict[str, float] = field(default_factory=dict)


async def _search(sc: Scenario, rng: random.Random) -> float:
    """One availability search as a request makes it: a fresh session, the service call, 4 weeks, a returning patient."""
    from clinic.audit.service import Actor
    from clinic.scheduling import service

    actor = Actor(user_id=None, clinic_id=sc.clinic_id, roles=("front_desk",))
    t0 = time.perf_counter()
    async with sc.db.sessionmaker() as s:
        result = await service.find_availability(s, actor=actor, session_type="esketamine", day_from=sc.monday,
                                                 day_to=sc.monday + timedelta(days=WINDOW_DAYS - 1), patient_id=rng.choice(sc.patients), dose_mg=56)
    sc.candidates = len(result.candidates)
    return (time.perf_counter() - t0) * 1000


async def _facts(sc: Scenario) -> dict:
    """The appointments query's plan and Postgres's own time for it, and the table's size."""
    from sqlalchemy import text

    lo = datetime.combine(sc.monday, datetime.min.time(), tzinfo=ZoneInfo(TZ))
    hi = lo + timedelta(days=WINDOW_DAYS)
    async with sc.db.engine.connect() as conn:
        plan = "\n".join(r[0] for r in (await conn.execute(text(
            "EXPLAIN (ANALYZE, BUFFERS) SELECT a.id FROM appointments a JOIN session_types st ON st.id = a.session_type_id"
            " WHERE a.clinic_id = :c AND a.starts_at >= CAST(:lo AS timestamptz) - interval '1 day' AND a.starts_at < :hi AND a.ends_at > :lo"
            " AND a.status IN ('booked','arrived','in_progress','fulfilled')"), {"c": sc.clinic_id, "lo": lo, "hi": hi})).all())
        total = (await conn.execute(text("SELECT count(*) FROM appointments"))).scalar_one()
    executed = [line for line in plan.splitlines() if line.strip().startswith("Execution Time")]
    return {
        "appointments": total,
        "query_ms": float(executed[0].split(":")[1].split()[0]) if executed else None,
        "index_backed": "ix_appointments_clinic_starts" in plan,
    }


async def _build(database_url: str, *, total: int, small: int, name: str) -> Scenario:
    """A migrated database holding the measured clinic and `total` appointments in all."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from clinic.cli import run_migrations
    from clinic.db import Database, make_sessionmaker

    await asyncio.to_thread(run_migrations, database_url)  # the load below alters tables: it runs as the owner
    scenario_times: dict[str, float] = {}
    # bulk loads and index builds outlast the app's 30-second statement limit
    engine = create_async_engine(database_url, pool_size=2, connect_args={"command_timeout": 1800})
    db = Database(engine=engine, sessionmaker=make_sessionmaker(engine))
    today = datetime.now(ZoneInfo(TZ)).date()
    monday = today + timedelta(days=7 - today.weekday())
    async with db.engine.begin() as s:
        cid, esk, chairs, first_patient = await _clinic(s, "Measured clinic")
        staff = {}
        for key in ("nurse1", "nurse2", "prescriber", "therapist"):
            staff[key] = (await s.execute(text(
                "INSERT INTO staff_users (clinic_id, email, full_name, credentials, roles, is_therapist, password_hash, active, created_at)"
                " VALUES (:c, :e, :n, '', CAST(:r AS varchar[]), :t, 'x', true, now()) RETURNING id"),
                {"c": cid, "e": f"{key}-{name}@bench.example", "n": key, "r": ["nurse" if key.startswith("nurse") else "prescriber"],
                 "t": key == "therapist"})).scalar_one()
        window = await _window(s, clinic_id=cid, st=esk, chairs=chairs, first_patient=first_patient, staff=staff, monday=monday)
        first_rows = max(min(small, total) - window, 0)
        await _history(s, clinic_id=cid, st=esk, first_chair=chairs[0], first_patient=first_patient, rows=first_rows, before=monday)
    current = window + first_rows
    if current < total:
        # more history for the measured clinic (to a tenth of the total, at most 100k), the rest in other clinics of 10k each;
        # indexes and exclusion constraints are rebuilt after the load (which checks every row) rather than row by row
        async with db.engine.begin() as s:
            for constraint, _ in EXCLUSIONS:
                await s.execute(text(f"ALTER TABLE appointments DROP CONSTRAINT {constraint}"))
            for index, _ in INDEXES:
                await s.execute(text(f"DROP INDEX {index}"))
        t_insert = time.perf_counter()
        own_more = max(min(100_000, total // 10) - current, 0)
        async with db.engine.begin() as s:
            await _history(s, clinic_id=cid, st=esk, first_chair=chairs[0], first_patient=first_patient, rows=own_more,
                           before=monday, skip_days=-(-first_rows // (CHAIRS * SLOTS)))
        current += own_more
        i = 0
        while current < total:
            rows = min(PER_OTHER_CLINIC, total - current)
            async with db.engine.begin() as s:
                ocid, ost, ochairs, opat = await _clinic(s, f"Other clinic {i}")
                await _history(s, clinic_id=ocid, st=ost, first_chair=ochairs[0], first_patient=opat, rows=rows,
                               before=monday + timedelta(days=WINDOW_DAYS))
            current += rows
            i += 1
        scenario_times["insert_seconds"] = round(time.perf_counter() - t_insert, 1)
        t_index = time.perf_counter()
        async with db.engine.begin() as s:
            # as fast as Postgres builds them: memory for the sorts, the indexes the migrations made, then the constraints
            await s.execute(text("SET LOCAL maintenance_work_mem = '256MB'"))
            for index, columns in INDEXES:
                await s.execute(text(f"CREATE INDEX {index} ON appointments ({columns})"))
            for constraint, column in EXCLUSIONS:
                await s.execute(text(
                    f"ALTER TABLE appointments ADD CONSTRAINT {constraint} EXCLUDE USING gist (int8range({column}, {column}, '[]') WITH &&,"
                    " tstzrange(starts_at, ends_at) WITH &&) WHERE (status NOT IN ('cancelled', 'noshow'))"))
        scenario_times["index_seconds"] = round(time.perf_counter() - t_index, 1)
    async with db.engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE"))
    patients = list(range(first_patient + CHAIRS * SLOTS, first_patient + CHAIRS * SLOTS + 8))
    return Scenario(db=db, clinic_id=cid, patients=patients, monday=monday, times=[], load=scenario_times)


async def run(ctx: dict | None = None) -> dict:
    """ctx may give database_url (a server; two fresh databases are made on it), total (1,000,000), small (10,000), runs (100).

    Both databases stay up and the searches alternate between them, so a busy machine slows both alike.
    """
    import asyncpg

    import clinic.scheduling.service  # noqa: F401  (imported before the long load, not in the middle of measuring)

    ctx = dict(ctx or {})
    total = int(ctx.get("total", 1_000_000))
    small = int(ctx.get("small", 10_000))
    runs = int(ctx.get("runs", 100))
    server_url = ctx.get("database_url") or os.environ.get("DATABASE_URL")
    started = None
    if not server_url:
        from clinic import embedded

        started = embedded.start(Path(tempfile.mkdtemp(prefix="clinic-bench-")), postgres=True, redis=False)
        server_url = started.database_url
    admin_dsn = plain_dsn(with_database(server_url, "postgres"))
    names = {k: f"clinic_bench_avail_{k}_{secrets.token_hex(3)}" for k in ("small", "large")}
    admin = await asyncpg.connect(admin_dsn)
    for n in names.values():
        await admin.execute(f'CREATE DATABASE "{n}"')
    await admin.close()
    url = {k: with_database(server_url, n) for k, n in names.items()}
    scenarios: dict[str, Scenario] = {}
    try:
        scenarios["small"] = await _build(url["small"], total=small, small=small, name=names["small"])
        t0 = time.perf_counter()
        scenarios["large"] = await _build(url["large"], total=total, small=small, name=names["large"])
        load_seconds = time.perf_counter() - t0
        rng = random.Random(5)
        order = ["small", "large"]
        for i in range(runs + 5):
            for key in order if i % 2 == 0 else reversed(order):
                ms = await _search(scenarios[key], rng)
                if i >= 5:  # the first rounds warm pools and caches
                    scenarios[key].times.append(ms)
        facts = {k: await _facts(sc) for k, sc in scenarios.items()}
    finally:
        for sc in scenarios.values():
            await sc.db.dispose()
        admin = await asyncpg.connect(admin_dsn)
        for n in names.values():
            await admin.execute(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)')
            await admin.execute(f'DROP ROLE IF EXISTS "{n}_app"')
        await admin.close()
        if started:
            started.stop()
    s_t, l_t = scenarios["small"].times, scenarios["large"].times
    return {
        "range_days": WINDOW_DAYS,
        "runs_each": runs,
        "small_appointments": facts["small"]["appointments"],
        "small_p50_ms": round(statistics.median(s_t), 2),
        "small_p95_ms": round(percentile(s_t, 0.95), 2),
        "large_appointments": facts["large"]["appointments"],
        "large_p50_ms": round(statistics.median(l_t), 2),
        "large_p95_ms": round(percentile(l_t, 0.95), 2),
        "large_max_ms": round(max(l_t), 2),
        "p95_growth": round(percentile(l_t, 0.95) / percentile(s_t, 0.95), 2),
        "small_query_ms": facts["small"]["query_ms"],
        "large_query_ms": facts["large"]["query_ms"],
        "index_backed": facts["small"]["index_backed"] and facts["large"]["index_backed"],
        "candidates_per_search": scenarios["large"].candidates,
        "bulk_load_seconds": round(load_seconds, 1),
        "bulk_insert_seconds": scenarios["large"].load.get("insert_seconds"),
        "index_build_seconds": scenarios["large"].load.get("index_seconds"),
        "load_average": round(os.getloadavg()[0], 2),
        "target_p95_ms": 50,
        "target_growth": 1.5,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--total", type=int, default=1_000_000)
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=100)
    args = ap.parse_args()
    result = asyncio.run(run({"total": args.total, "small": args.small, "runs": args.runs}))
    for k, v in result.items():
        print(f"{k:>24}: {v}")


if __name__ == "__main__":
    main()
