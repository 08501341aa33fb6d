"""Drain 10,000 outbox notices through real arq workers into a local SMTP sink; count Message-IDs for duplicates.

Run: python -m bench.notices [--count N] [--workers W]   (DATABASE_URL / REDIS_URL, else embedded servers)
Target: under 30 s on a 2-core machine, zero duplicates.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MID = re.compile(rb"^Message-ID:\s*(\S+)", re.MULTILINE | re.IGNORECASE)

WORKER = """
import asyncio, logging, sys
logging.basicConfig(level=logging.WARNING)
from arq.worker import Worker
from clinic.config import Settings
from workers.settings import worker_settings
s = Settings(database_url=sys.argv[1], redis_url=sys.argv[2], smtp_url=sys.argv[3], secret_key="bench" * 8,
             base_url="http://bench.local")
async def main():
    w = Worker(**(worker_settings(s, max_jobs=int(sys.argv[4])) | {"burst": True, "poll_delay": 0.05, "cron_jobs": []}))
    try:
        await w.main()
    finally:
        await w.close()
asyncio.run(main())
"""


class CountingSink:
    """aiosmtpd handler that keeps only each message's Message-ID (the bench measures the sender, not the sink)."""

    def __init__(self) -> None:
        self.ids: list[bytes] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        m = MID.search(envelope.content)
        with self.lock:
            self.ids.append(m.group(1) if m else b"")
        return "250 OK"


async def _prepare(database_url: str, redis_url: str, count: int) -> int:
    """A clinic, a patient and `count` due notices, all queued in Redis (as after-commit enqueueing would)."""
    from arq.connections import create_pool
    from sqlalchemy import text

    from clinic.db import Database
    from clinic.notices.outbox import SEND_JOB, job_id
    from clinic.queue import redis_settings
    from clinic.timeutil import utcnow

    db = Database.connect(database_url, pool_size=2)
    try:
        async with db.transaction() as s:
            clinic_id = (await s.execute(text(
                "INSERT INTO clinics (name, display_name, timezone, phone, address, state, npi, tin, opening_hours, settings, created_at)"
                " VALUES ('Bench', 'Bench Clinic', 'America/New_York', '555-0100', '', 'CT', '', '', '{}', '{}', now()) RETURNING id"
            ))).scalar_one()
            patient_id = (await s.execute(text(
                "INSERT INTO patients (clinic_id, first_name, last_name, date_of_birth, sex, email, notice_channel,"
                " notices_opted_out, medication_flags, diagnosis_codes, extra, created_at)"
                " VALUES (:c, 'Sam', 'Bench', '1980-01-01', 'unknown', 'sam@bench.example', 'email', false, '{}', '{}', '{}', now())"
                " RETURNING id"), {"c": clinic_id})).scalar_one()
            link_expires = (utcnow() + timedelta(days=30)).isoformat()
            ids = (await s.execute(text(
                "INSERT INTO notices (clinic_id, kind, dedupe_key, patient_id, to_address, status, send_after, attempts, payload, created_at)"
                " SELECT CAST(:c AS int), 'balance', 'bench:' || CAST(:c AS text) || ':' || g, :p, 'sam@bench.example', 'pending', now(), 0,"
                " jsonb_build_object('link_id', g, 'link_expires', CAST(:exp AS text)), now()"
                " FROM generate_series(1, :n) g RETURNING id"
            ), {"c": clinic_id, "p": patient_id, "n": count, "exp": link_expires})).scalars().all()
    finally:
        await db.dispose()
    pool = await create_pool(redis_settings(redis_url))
    try:
        for i in range(0, len(ids), 1000):
            await asyncio.gather(*(pool.enqueue_job(SEND_JOB, nid, _job_id=job_id(nid)) for nid in ids[i:i + 1000]))
    finally:
        await pool.aclose()
    return clinic_id


async def _sent(database_url: str, clinic_id: int) -> int:
    from sqlalchemy import text

    from clinic.db import Database

    db = Database.connect(database_url, pool_size=1)
    try:
        async with db.engine.connect() as conn:
            return (await conn.execute(text("SELECT count(*) FROM notices WHERE clinic_id = :c AND status = 'sent'"), {"c": clinic_id})).scalar_one()
    finally:
        await db.dispose()


async def run(ctx: dict | None = None) -> dict:
    """ctx may give database_url (a server; a fresh database is made on it), redis_url, count, workers, max_jobs,
    worker_log (a file for the workers' warnings). The Redis database must not be shared with a running worker."""
    import asyncpg
    from aiosmtpd.controller import Controller
    from redis.asyncio import Redis

    from clinic.cli import run_migrations
    from clinic.notices.devmail import free_port

    ctx = dict(ctx or {})
    count = int(ctx.get("count", 10_000))
    # one worker process: a second one on 2 cores races the first for the same job ids and slows both
    n_workers = int(ctx.get("workers", 1))
    max_jobs = int(ctx.get("max_jobs", 50))
    server_url = ctx.get("database_url") or os.environ.get("DATABASE_URL")
    redis_url = ctx.get("redis_url") or os.environ.get("REDIS_URL")
    started = None
    if not server_url or not redis_url:
        from clinic import embedded

        started = embedded.start(Path(tempfile.mkdtemp(prefix="clinic-bench-")), postgres=not server_url, redis=not redis_url)
        server_url = server_url or started.database_url
        redis_url = redis_url or started.redis_url
    name = f"clinic_bench_{secrets.token_hex(3)}"
    plain = server_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    base = plain.rsplit("/", 1)[0]
    admin = await asyncpg.connect(plain)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    owner_url = server_url.rsplit("/", 1)[0] + "/" + name
    sink = CountingSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    procs: list[subprocess.Popen] = []
    try:
        database_url = await asyncio.to_thread(run_migrations, owner_url)
        await Redis.from_url(redis_url).flushdb()
        clinic_id = await _prepare(database_url, redis_url, count)
        log = open(ctx.get("worker_log", os.devnull), "ab")
        t0 = time.perf_counter()
        self0, children0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        procs = [subprocess.Popen([sys.executable, "-c", WORKER, database_url, redis_url, f"smtp://127.0.0.1:{port}", str(max_jobs)],
                                  cwd=ROOT, stderr=log) for _ in range(n_workers)]
        deadline = t0 + float(ctx.get("timeout", 300))
        while any(p.poll() is None for p in procs) and time.perf_counter() < deadline:
            await asyncio.sleep(0.1)
        seconds = time.perf_counter() - t0
        self1, children1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        sent = await _sent(database_url, clinic_id)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        controller.stop()
        admin = await asyncpg.connect(base + "/postgres")
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'DROP ROLE IF EXISTS "{name}_app"')
        await admin.close()
        if started:
            started.stop()
    ids = Counter(sink.ids)
    return {
        "notices": count,
        "sent": sent,
        "received": len(sink.ids),
        "unique_message_ids": len(ids),
        "duplicates": sum(n - 1 for n in ids.values()),
        "seconds": round(seconds, 2),
        "per_second": round(count / seconds, 1) if seconds else None,
        "worker_cpu_seconds": round(children1.ru_utime + children1.ru_stime - children0.ru_utime - children0.ru_stime, 2),
        "sink_cpu_seconds": round(self1.ru_utime + self1.ru_stime - self0.ru_utime - self0.ru_stime, 2),
        "workers": n_workers,
        "max_jobs": max_jobs,
        "target_seconds": 30,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--max-jobs", type=int, default=50)
    args = ap.parse_args()
    result = asyncio.run(run({"count": args.count, "workers": args.workers, "max_jobs": args.max_jobs}))
    for k, v in result.items():
        print(f"{k:>20}: {v}")


if __name__ == "__main__":
    main()
