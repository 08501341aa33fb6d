"""/board render time with 40 active sessions, against a real uvicorn server of the app.

Run: python -m bench.board [--sessions 40] [--requests 200]   (BENCH_DATABASE_URL / DATABASE_URL name a Postgres server, else an embedded one)
Target: p95 under 40 ms for the board page. Requests are sequential (one wall screen), so each time is one render:
two queries, the rules for every session, and the template; the SSE fragment and the JSON twin are timed too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

from bench.vitals import HttpConnection, bench_database, dsn, free_port, percentile, seed_sessions, start_app_server, stop, wait_ready


async def _add_alerts(url: str, appointments: list[int]) -> None:
    """Every fifth session has an open alert, as a busy morning would."""
    import asyncpg

    conn = await asyncpg.connect(dsn(url))
    try:
        for appt in appointments[::5]:
            await conn.execute(
                "INSERT INTO session_alerts (clinic_id, appointment_id, level, code, message, raised_at)"
                " SELECT clinic_id, id, 'alert', 'hr_high', 'Heart rate 126/min is above 120/min.', now() FROM appointments WHERE id = $1",
                appt,
            )
    finally:
        await conn.close()


async def _time(port: int, path: str, token: str, *, requests: int, budget_s: float) -> dict[str, Any]:
    conn = await HttpConnection.open(port)
    raw = f"GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    for _ in range(10):  # warm caches and the connection pool
        await conn.request(raw)
    times: list[float] = []
    size = 0
    deadline = time.perf_counter() + budget_s
    status = 0
    while len(times) < requests and time.perf_counter() < deadline:
        t0 = time.perf_counter()
        status, body = await conn.request(raw)
        times.append(time.perf_counter() - t0)
        size = len(body)
        if status != 200:
            raise RuntimeError(f"{path} answered {status}: {body[:300]!r}")
    conn.close()
    return {
        "requests": len(times),
        "p50_ms": round(percentile(times, 50) * 1000, 2),
        "p95_ms": round(percentile(times, 95) * 1000, 2),
        "p99_ms": round(percentile(times, 99) * 1000, 2),
        "bytes": size,
    }


async def run(ctx: dict | None = None) -> dict:
    """ctx may give database_url (a server; a fresh database is made on it), sessions (40), requests (200), entries per session (8)."""
    ctx = dict(ctx or {})
    sessions = int(ctx.get("sessions", 40))
    requests = int(ctx.get("requests", 200))
    entries = int(ctx.get("entries", 8))
    async with bench_database(ctx, "clinic_bench_board") as url:
        seeded = await seed_sessions(url, sessions=sessions, dosed_minutes_ago=20, entries=entries)
        await _add_alerts(url, seeded["appointments"])
        port = free_port()
        proc = start_app_server(url, port, ctx.get("redis_url"))
        try:
            await wait_ready(port, "/healthz", proc)
            token = seeded["token"]
            page = await _time(port, "/board", token, requests=requests, budget_s=30)
            fragment = await _time(port, "/board/fragment", token, requests=requests // 2, budget_s=15)
            api = await _time(port, "/api/v1/board", token, requests=requests // 2, budget_s=15)
        finally:
            stop(proc)
    return {
        "active_sessions": sessions,
        "entries_per_session": entries,
        "requests": page["requests"],
        "board_p50_ms": page["p50_ms"],
        "board_p95_ms": page["p95_ms"],
        "board_p99_ms": page["p99_ms"],
        "board_bytes": page["bytes"],
        "fragment_p95_ms": fragment["p95_ms"],
        "json_p95_ms": api["p95_ms"],
        "load_average": round(os.getloadavg()[0], 2),
        "target_p95_ms": 40,
        "meets_target": page["p95_ms"] < 40,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=40)
    ap.add_argument("--requests", type=int, default=200)
    args = ap.parse_args()
    result = asyncio.run(run({"sessions": args.sessions, "requests": args.requests}))
    for k, v in result.items():
        print(f"{k:>20}: {v}")


if __name__ == "__main__":
    main()
