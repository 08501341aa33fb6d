"""Vitals POST throughput and p50/p95/p99 at 32 concurrent tablets against a real uvicorn server of the app,
beside a bare Litestar + asyncpg single-INSERT endpoint measured in the same run on the same database.

Run: python -m bench.vitals [--clients 32] [--seconds 8] [--rounds 4]   (BENCH_DATABASE_URL / DATABASE_URL name a Postgres server, else an embedded one)
Target: the app's throughput at least half the bare endpoint's, and p99 under 50 ms.
Each tablet posts to its own checked-in session over one keep-alive loopback connection, as a ward of tablets would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import app_url, fresh_database, plain_dsn, servers

ROOT = Path(__file__).resolve().parent.parent
BARE_TABLE = """
CREATE TABLE bench_bare_vitals (
    id serial PRIMARY KEY, appointment_id int NOT NULL, client_id uuid NOT NULL UNIQUE,
    systolic int, diastolic int, heart_rate int, spo2 int, taken_at timestamptz NOT NULL
)"""


# ---- a fresh database on the server ---------------------------------------------------------------------


@contextlib.asynccontextmanager
async def bench_database(ctx: dict[str, Any], prefix: str) -> AsyncIterator[str]:
    """A database of this run's own (created, migrated, dropped) on the runner's server, or on servers started here."""
    if ctx.get("database_url"):
        async with fresh_database(ctx["database_url"], prefix) as url:
            yield url
        return
    async with servers() as base:
        ctx.setdefault("redis_url", base["redis_url"])
        async with fresh_database(base["database_url"], prefix) as url:
            yield url


def dsn(url: str) -> str:
    return plain_dsn(url)


async def seed_sessions(url: str, *, sessions: int, kind: str = "esketamine", dosed_minutes_ago: int | None = None, entries: int = 0) -> dict[str, Any]:
    """A clinic with `sessions` chairs, each holding a checked-in (or dosing) session; a nurse API token."""
    import asyncpg

    from clinic.auth.rules import new_token
    from clinic.scheduling.protocols import default_protocols

    conn = await asyncpg.connect(dsn(url))
    try:
        async with conn.transaction():
            clinic_id = await conn.fetchval(
                "INSERT INTO clinics (name, display_name, timezone, phone, address, state, npi, tin, opening_hours, settings, created_at)"
                " VALUES ('Bench clinic', 'Bench', 'America/New_York', '555-0100', '1 Main St', 'CT', '', '', '{}', '{}', now()) RETURNING id"
            )
            types = {}
            for p in default_protocols():
                types[p["kind"]] = await conn.fetchval(
                    "INSERT INTO session_types (clinic_id, kind, name, needs_chair, monitored, needs_prescriber, needs_therapist, requires_rems,"
                    " prep_minutes, dosing_minutes, monitoring_minutes, turnover_minutes, protocol, active)"
                    " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13::jsonb,true) RETURNING id",
                    clinic_id, p["kind"], p["name"], p.get("needs_chair", True), p.get("monitored", True), p.get("needs_prescriber", False),
                    p.get("needs_therapist", False), p.get("requires_rems", False), p["prep_minutes"], p["dosing_minutes"],
                    p["monitoring_minutes"], p["turnover_minutes"], json.dumps(p["protocol"]),
                )
            nurse = await conn.fetchval(
                "INSERT INTO staff_users (clinic_id, email, full_name, credentials, roles, is_therapist, password_hash, active, created_at)"
                " VALUES ($1, $2, 'Bench Nurse', 'RN', ARRAY['nurse']::varchar[], false, 'x', true, now()) RETURNING id",
                clinic_id, f"nurse-{secrets.token_hex(3)}@bench.example",
            )
            raw, hashed = new_token("ct_")
            await conn.execute("INSERT INTO api_tokens (token_hash, user_id, name, created_at) VALUES ($1, $2, 'bench', now())", hashed, nurse)
            appointments = []
            for i in range(sessions):
                chair = await conn.fetchval("INSERT INTO chairs (clinic_id, name, kind, active, sort_order) VALUES ($1, $2, 'chair', true, $3) RETURNING id", clinic_id, f"Chair {i + 1}", i)
                patient = await conn.fetchval(
                    "INSERT INTO patients (clinic_id, first_name, last_name, date_of_birth, sex, notice_channel, notices_opted_out,"
                    " rems_enrolled_on, rems_patient_id, medication_flags, diagnosis_codes, extra, created_at)"
                    " VALUES ($1, $2, $3, '1980-01-01', 'female', 'email', false, '2024-01-01', 'RP1', '{}', '{}', '{}', now()) RETURNING id",
                    clinic_id, f"Pat{i}", f"Bench{i}",
                )
                status = "in_progress" if dosed_minutes_ago is not None else "arrived"
                appt = await conn.fetchval(
                    "INSERT INTO appointments (clinic_id, patient_id, session_type_id, chair_id, starts_at, ends_at, status, planned_dose_mg,"
                    " escort_name, escort_confirmed, created_at, updated_at, late_cancel, checked_in_at, dosing_started_at, fasting_confirmed, facts)"
                    " VALUES ($1,$2,$3,$4, now() - interval '3 hours', now() + interval '3 hours', $5, 56, 'Escort', true, now(), now(), false,"
                    "  now() - interval '150 minutes', $6, true, '{}') RETURNING id",
                    clinic_id, patient, types[kind], chair, status,
                    None if dosed_minutes_ago is None else await conn.fetchval("SELECT now() - make_interval(mins => $1)", dosed_minutes_ago + i % 60),
                )
                if dosed_minutes_ago is not None:
                    await conn.execute(
                        "INSERT INTO dosing_entries (clinic_id, appointment_id, client_id, kind, taken_at, recorded_by, recorded_at, device_number, dose_mg, lot_number, entered_in_error)"
                        " SELECT $1, $2, gen_random_uuid(), 'device', dosing_started_at, $3, now(), 1, 28, 'L1', false FROM appointments WHERE id = $2",
                        clinic_id, appt, nurse,
                    )
                for n in range(entries):
                    await conn.execute(
                        "INSERT INTO clinical_entries (clinic_id, appointment_id, client_id, taken_at, recorded_by, recorded_at, systolic, diastolic,"
                        " heart_rate, spo2, moaas, entered_in_error) SELECT $1, $2, gen_random_uuid(), checked_in_at + make_interval(mins => $3), $4, now(),"
                        " 120 + $5, 80, 72, 98, 5, false FROM appointments WHERE id = $2",
                        clinic_id, appt, 5 + n * 12, nurse, n % 7,
                    )
                appointments.append(appt)
            await conn.execute(BARE_TABLE)
    finally:
        await conn.close()
    return {"clinic_id": clinic_id, "token": raw, "appointments": appointments}


# ---- servers ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app_server(url: str, port: int, redis_url: str | None = None) -> subprocess.Popen:
    """The app on the database at `url` (the owner's), connected as its own role as in production."""
    env = os.environ | {
        "DATABASE_URL": app_url(url),
        # the vitals path never touches Redis; the app only needs a well-formed URL to start
        "REDIS_URL": redis_url or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/15",
        "SECRET_KEY": "bench-secret-" + "x" * 24,
        "BASE_URL": f"http://127.0.0.1:{port}",
        "LOG_LEVEL": "WARNING",
    }
    cmd = [sys.executable, "-m", "uvicorn", "bench.vitals:app_with_floor", "--factory", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def app_with_floor():
    """The app exactly as `clinic serve` builds it, plus one diagnostic route: an authenticated POST that runs
    SELECT 1 in the request's transaction. It measures what every JSON write pays before any clinical work
    (auth lookup, CSRF check, guard, session, BEGIN/COMMIT), so the report can say where the time goes."""
    from litestar import post as post_route
    from sqlalchemy import text

    from clinic.app import create_app
    from clinic.config import Settings
    from clinic.http import CurrentActor, DbSession

    @post_route("/bench/floor", opt={"permission": "session.run"}, include_in_schema=False, signature_namespace={"DbSession": DbSession, "CurrentActor": CurrentActor})
    async def floor(db_session: DbSession, actor: CurrentActor, data: dict[str, Any]) -> dict[str, Any]:
        await db_session.execute(text("SELECT 1"))
        return {"ok": True}

    app = create_app(Settings.from_env())
    app.register(floor)
    return app


def start_bare_server(url: str, port: int) -> subprocess.Popen:
    """The bare endpoint, as the same role as the app (the owner's default privileges grant it the bare table)."""
    cmd = [sys.executable, "-m", "bench.vitals", "--serve-bare", str(port)]
    return subprocess.Popen(cmd, cwd=ROOT, env=os.environ | {"BENCH_DSN": dsn(app_url(url))}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def serve_bare(port: int) -> None:
    """The comparison: JSON in, one INSERT through an asyncpg pool, JSON out; no auth, no rules, no audit."""
    import asyncpg
    import uvicorn
    from litestar import Litestar, get, post

    state: dict[str, Any] = {}

    async def startup() -> None:
        state["pool"] = await asyncpg.create_pool(os.environ["BENCH_DSN"], min_size=10, max_size=10)

    @post("/vitals")
    async def vitals(data: dict[str, Any]) -> dict[str, Any]:
        row = await state["pool"].fetchrow(
            "INSERT INTO bench_bare_vitals (appointment_id, client_id, systolic, diastolic, heart_rate, spo2, taken_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, now()) RETURNING id, taken_at",
            data["appointment_id"], uuid.UUID(data["client_id"]), data.get("systolic"), data.get("diastolic"), data.get("heart_rate"), data.get("spo2"),
        )
        return {"id": row["id"], "taken_at": row["taken_at"].isoformat(), **data}

    @get("/ping")
    async def ping() -> str:
        return "ok"

    app = Litestar([vitals, ping], on_startup=[startup])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


async def wait_ready(port: int, path: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on {port} exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
        try:
            c = await HttpConnection.open(port)
            status, _ = await c.request(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
            c.close()
            if status == 200:
                return
        except OSError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"server on {port} did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


# ---- a lean HTTP/1.1 keep-alive client (the load generator must not eat the CPU it measures) ----------------


class HttpConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> "HttpConnection":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:].strip())
                break
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        self.writer.close()


def post(path: str, body: bytes, token: str | None = None) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\n{auth}Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


async def load(port: int, make_request, *, clients: int, seconds: float, warmup: float, max_requests: int) -> dict[str, Any]:
    """`clients` connections posting back to back; latencies after the warm-up count."""
    conns = [await HttpConnection.open(port) for _ in range(clients)]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds
    sent = 0

    async def tablet(i: int) -> None:
        nonlocal sent
        conn = conns[i]
        while True:
            now = time.perf_counter()
            if now >= stop_at or sent >= max_requests:
                return
            sent += 1
            raw = make_request(i)
            t0 = time.perf_counter()
            status, _ = await conn.request(raw)
            t1 = time.perf_counter()
            if t0 >= measure_from:
                latencies.append(t1 - t0)
                statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(tablet(i) for i in range(clients)))
    elapsed = min(time.perf_counter(), stop_at) - measure_from
    for c in conns:
        c.close()
    return summary(latencies, elapsed, statuses)


def summary(latencies: list[float], elapsed: float, statuses: dict[int, int]) -> dict[str, Any]:
    return {
        "requests": len(latencies),
        "rps": round(len(latencies) / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p95_ms": round(percentile(latencies, 95) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "statuses": statuses,
        "_latencies": latencies,
        "_elapsed": elapsed,
    }


def pooled(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One figure from several rounds: every latency counts, throughput is all requests over all measured time."""
    statuses: dict[int, int] = {}
    for r in rounds:
        for k, n in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + n
    out = summary([x for r in rounds for x in r["_latencies"]], sum(r["_elapsed"] for r in rounds), statuses)
    out["rounds_rps"] = [r["rps"] for r in rounds]
    return out


@dataclass(frozen=True)
class SideBySide:
    """The app beside the bare endpoint: `clients` connections, `seconds` per side in `rounds` alternating rounds
    (a burst of other work on the machine falls on both sides, not on one), at most `max_requests` a round."""

    clients: int
    seconds: float
    warmup: float
    rounds: int
    max_requests: int

    @classmethod
    def of(cls, ctx: dict[str, Any]) -> "SideBySide":
        return cls(clients=int(ctx.get("clients", 32)), seconds=float(ctx.get("seconds", 8)), warmup=float(ctx.get("warmup", 2)),
                   rounds=int(ctx.get("rounds", 4)), max_requests=int(ctx.get("max_requests", 200_000)))

    async def run(self, bare_port: int, bare_request, app_port: int, app_request,
                  app_max_requests: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Both sides pooled over the rounds; `app_max_requests` bounds each of the app's rounds instead of max_requests."""
        bare_rounds, app_rounds = [], []
        for n in range(self.rounds):
            each = {"clients": self.clients, "seconds": self.seconds / self.rounds, "warmup": self.warmup if n == 0 else 0.3}
            bare_rounds.append(await load(bare_port, bare_request, max_requests=self.max_requests, **each))
            app_rounds.append(await load(app_port, app_request, max_requests=app_max_requests or self.max_requests, **each))
        return pooled(bare_rounds), pooled(app_rounds)


@contextlib.asynccontextmanager
async def beside_bare(url: str, redis_url: str | None) -> AsyncIterator[tuple[int, int]]:
    """The app under uvicorn and the bare endpoint, both on `url`'s database, ready: (app port, bare port)."""
    app_port, bare_port = free_port(), free_port()
    app_proc, bare_proc = start_app_server(url, app_port, redis_url), start_bare_server(url, bare_port)
    try:
        await wait_ready(app_port, "/healthz", app_proc)
        await wait_ready(bare_port, "/ping", bare_proc)
        yield app_port, bare_port
    finally:
        stop(app_proc)
        stop(bare_proc)


def vitals_body(i: int) -> dict[str, Any]:
    return {"client_id": str(uuid.uuid4()), "systolic": 118 + i % 20, "diastolic": 76 + i % 10, "heart_rate": 70 + i % 15, "spo2": 97 + i % 3}


async def run(ctx: dict | None = None) -> dict:
    """ctx may give database_url (a server; a fresh database is made on it), clients (32), seconds (8 per side, in
    `rounds` alternating rounds, 4), warmup (2)."""
    import asyncpg

    ctx = dict(ctx or {})
    sides = SideBySide.of(ctx)
    clients, seconds, warmup, rounds, max_requests = sides.clients, sides.seconds, sides.warmup, sides.rounds, sides.max_requests
    async with bench_database(ctx, "clinic_bench_vitals") as url:
        seeded = await seed_sessions(url, sessions=clients)
        async with beside_bare(url, ctx.get("redis_url")) as (app_port, bare_port):
            appts, token = seeded["appointments"], seeded["token"]

            def bare_request(i: int) -> bytes:
                return post("/vitals", json.dumps({"appointment_id": appts[i], **vitals_body(i)}).encode())

            def app_request(i: int) -> bytes:
                return post(f"/api/v1/appointments/{appts[i]}/vitals", json.dumps(vitals_body(i)).encode(), token)

            def floor_request(i: int) -> bytes:
                return post("/bench/floor", b"{}", token)

            bare, app = await sides.run(bare_port, bare_request, app_port, app_request)
            floor = await load(app_port, floor_request, clients=clients, seconds=seconds / 2, warmup=warmup / 2, max_requests=max_requests)
        conn = await asyncpg.connect(dsn(url))
        try:
            stored = await conn.fetchval("SELECT count(*) FROM clinical_entries")
            audited = await conn.fetchval("SELECT count(*) FROM audit_events WHERE action = 'session.entry'")
        finally:
            await conn.close()
    ratio = app["rps"] / bare["rps"] if bare["rps"] else 0.0
    return {
        "clients": clients,
        "seconds": seconds,
        "app_rps": app["rps"],
        "app_p50_ms": app["p50_ms"],
        "app_p95_ms": app["p95_ms"],
        "app_p99_ms": app["p99_ms"],
        "app_statuses": app["statuses"],
        "bare_rps": bare["rps"],
        "bare_p50_ms": bare["p50_ms"],
        "bare_p95_ms": bare["p95_ms"],
        "bare_p99_ms": bare["p99_ms"],
        "throughput_ratio": round(ratio, 2),
        "rounds": rounds,
        "app_rounds_rps": app["rounds_rps"],
        "bare_rounds_rps": bare["rounds_rps"],
        "stack_floor_rps": floor["rps"],
        "stack_floor_p99_ms": floor["p99_ms"],
        "entries_stored": stored,
        "entries_audited": audited,
        "load_average": round(os.getloadavg()[0], 2),
        "target_ratio": 0.5,
        "target_p99_ms": 50,
        "meets_targets": ratio >= 0.5 and app["p99_ms"] < 50 and set(app["statuses"]) == {201},
    }


def side_by_side_options(description: str) -> argparse.ArgumentParser:
    """The command line of a benchmark run beside the bare endpoint."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--rounds", type=int, default=4, help="alternating bare/app rounds the seconds are split into")
    return ap


def run_and_print(run, ctx: dict[str, Any]) -> None:
    """Run a benchmark alone, on uvloop when it is installed (the load generator must not eat the CPU it measures)."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    for k, v in asyncio.run(run(ctx)).items():
        print(f"{k:>20}: {v}")


def main() -> None:
    ap = side_by_side_options(__doc__.splitlines()[0])
    ap.add_argument("--serve-bare", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_bare is not None:
        serve_bare(args.serve_bare)
        return
    run_and_print(run, {"clients": args.clients, "seconds": args.seconds, "warmup": args.warmup, "rounds": args.rounds})


if __name__ == "__main__":
    main()
