"""Engine, the per-request transactional session, and database errors turned into answers people understand."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
from sqlalchemy import MetaData, event
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

# One naming convention so constraint names are stable and migrations are reviewable.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata: MetaData = SQLModel.metadata

log = logging.getLogger("clinic.db")


@dataclass
class Database:
    """The ORM's engine and sessions for the breadth of the app, and a small asyncpg pool (raw) for the two
    statements on the busiest path: the sign-in lookup every request makes and the vitals entry."""

    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    # set when every session joins one outer transaction (tests); raw() then uses that connection too
    bound: AsyncConnection | None = None
    raw_pool_size: int = 10
    _raw_pool: asyncpg.Pool | None = field(default=None, repr=False)
    _raw_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    _raw_turns: asyncio.Semaphore = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._raw_turns = asyncio.Semaphore(self.raw_pool_size)

    @classmethod
    def connect(cls, url: str, *, pool_size: int = 10) -> "Database":
        engine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            # no pre-ping: it costs three round trips per checkout (BEGIN, ping, ROLLBACK); a connection the
            # server closed is caught for free on checkout (below), and a failure on use invalidates the pool
            pool_pre_ping=False,
            pool_timeout=5,
            # fail fast while Postgres is away: a 503 now beats a request hanging for a minute
            connect_args=CONNECT_ARGS,
        )
        event.listen(engine.sync_engine, "checkout", _refuse_closed)
        return cls(engine=engine, sessionmaker=make_sessionmaker(engine), raw_pool_size=pool_size)

    @classmethod
    def bound_to(cls, engine: AsyncEngine, connection: AsyncConnection) -> "Database":
        """Sessions that join an outer transaction on one connection (tests roll it back)."""
        sm = async_sessionmaker(
            bind=connection,
            class_=AsyncSession,
            expire_on_commit=False,
            join_transaction_mode="create_savepoint",
        )
        return cls(engine=engine, sessionmaker=sm, bound=connection)

    @asynccontextmanager
    async def raw(self) -> AsyncIterator[asyncpg.Connection]:
        """A driver connection with no ORM around it; outside a transaction each statement commits on its own.

        Checking a connection out of the ORM's pool costs more CPU than the statement the sign-in lookup sends,
        so these come from a pool of their own (same server, same timeouts, same JSON codecs)."""
        if self.bound is not None:
            await self.bound.exec_driver_sql("SELECT 1")  # the outer transaction's BEGIN is lazy; make sure it was sent
            conn = await driver_connection(self.bound)
            async with conn.transaction():  # a savepoint: a refused statement must not abort the outer transaction
                yield conn
            return
        pool = self._raw_pool or await self._open_raw_pool()
        # waiting turns are first come, first served: asyncpg's own queue lets a newcomer take a connection
        # a woken waiter was about to get, which under load leaves a few requests waiting far longer than the rest
        if self._raw_turns.locked():
            async with asyncio.timeout(5):
                await self._raw_turns.acquire()
        else:
            await self._raw_turns.acquire()  # free: returns at once
        try:
            # no timeout of its own: a turn guarantees a free connection (or one being made, with connect's timeout)
            async with pool.acquire() as conn:
                yield conn
        finally:
            self._raw_turns.release()

    @property
    def statements(self) -> "PooledStatements":
        """fetchrow / fetch, each on a raw connection held for that statement only."""
        return PooledStatements(self)

    @property
    def dsn(self) -> str:
        """The server URL as asyncpg takes it (for connections of its own: listeners, the raw pool)."""
        return self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

    async def _open_raw_pool(self) -> asyncpg.Pool:
        async with self._raw_lock:
            if self._raw_pool is None:
                # min_size 0: nothing connects until a request needs it (a database that is away answers 503 then)
                self._raw_pool = await asyncpg.create_pool(
                    self.dsn, min_size=0, max_size=self.raw_pool_size, init=_json_codecs, reset=_nothing_to_reset,
                    # no idle timeout: it arms and cancels a timer on every release and acquire; ten connections may stay
                    max_inactive_connection_lifetime=0, **CONNECT_ARGS
                )
            return self._raw_pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: commit on success, roll back on any error; after the commit, the jobs registered with
        after_commit (enqueue a notice, forget a sign-in), so nothing is sent for a change that was not saved."""
        async with self.sessionmaker() as session:
            try:
                yield session
            except BaseException:
                await session.rollback()
                raise
            await session.commit()
            await run_after_commit(session)

    async def dispose(self) -> None:
        if self._raw_pool is not None:
            pool, self._raw_pool = self._raw_pool, None
            await pool.close()
        await self.engine.dispose()


def after_commit(session: AsyncSession, job: Callable[[], Awaitable[Any]]) -> None:
    """Run `job` once the session's unit of work has committed (never if it rolls back)."""
    session.info.setdefault("after_commit", []).append(job)


async def run_after_commit(session: AsyncSession) -> None:
    for job in session.info.pop("after_commit", []):
        try:
            await job()
        except Exception as exc:  # a queue outage must not fail a saved change; the outbox sweep catches up
            log.warning("after-commit job failed: %s", type(exc).__name__)


class Statements(Protocol):
    """What a reader of the hot path needs of a connection (an asyncpg.Connection has it)."""

    async def fetchrow(self, query: str, *args: Any) -> Any: ...

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...


@dataclass(frozen=True)
class PooledStatements:
    """Statements each on a raw connection of its own, for a caller that must not hold one while it waits on
    something else (the vitals entry waiting for its write to go with others')."""

    db: Database

    async def fetchrow(self, query: str, *args: Any) -> Any:
        async with self.db.raw() as conn:
            return await conn.fetchrow(query, *args)

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        async with self.db.raw() as conn:
            return await conn.fetch(query, *args)


CONNECT_ARGS: dict[str, Any] = {"timeout": 3, "command_timeout": 30, "server_settings": {"application_name": "clinic"}}


async def _json_codecs(conn: asyncpg.Connection) -> None:
    """What the ORM's asyncpg dialect sets up: JSON comes back as Python objects and goes in as JSON text."""
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=str, decoder=json.loads, schema="pg_catalog", format="text")


async def _nothing_to_reset(conn: asyncpg.Connection) -> None:
    """asyncpg's own reset sends RESET ALL / UNLISTEN * / CLOSE ALL on every release, a round trip per request;
    these connections never change session state, and an open transaction is rolled back before this runs."""


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(bind=engine, class_=AsyncSession, expire_on_commit=False)


def _refuse_closed(dbapi_connection, connection_record, connection_proxy) -> None:
    """A pooled connection whose server went away (restart, idle kill) is replaced on checkout, at no cost:
    asyncpg already knows the socket closed."""
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("connection closed by the server")


async def driver_connection(conn: AsyncConnection) -> asyncpg.Connection:
    return (await conn.get_raw_connection()).driver_connection


async def session_driver(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under a session. Statements sent on it join the session's transaction when one
    is open (a page that already read, a test's outer transaction) and otherwise commit one by one."""
    return await driver_connection(await session.connection())


# Constraint name -> a sentence for the person who hit it. Domains add theirs at import.
CONFLICT_MESSAGES: dict[str, str] = {}


def register_conflicts(messages: dict[str, str]) -> None:
    CONFLICT_MESSAGES.update(messages)


def conflict_message(exc: IntegrityError) -> tuple[str, str | None]:
    """(sentence, constraint name) for an integrity or exclusion violation."""
    orig = getattr(exc, "orig", None) or exc  # a SQLAlchemy wrapper, or asyncpg's own error on the raw path
    name = getattr(orig, "constraint_name", None) or getattr(getattr(orig, "__cause__", None), "constraint_name", None)
    if not name:
        m = re.search(r'constraint "([^"]+)"', str(orig))
        name = m.group(1) if m else None
    if name and name in CONFLICT_MESSAGES:
        return CONFLICT_MESSAGES[name], name
    return "This change conflicts with data already saved; reload and try again.", name


# SQLSTATEs that mean "the server is away", not "the statement is wrong": connection exceptions (08xxx),
# shutdown and start-up (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now), too many connections
UNAVAILABLE_SQLSTATES = ("57P01", "57P02", "57P03", "53300")


def _chain(exc: BaseException):
    """The exception and the driver errors beneath it (SQLAlchemy wrapper -> adapter -> asyncpg)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = getattr(current, "orig", None) or current.__cause__


def sqlstate_of(exc: BaseException) -> str | None:
    for e in _chain(exc):
        state = getattr(e, "sqlstate", None)
        if isinstance(state, str):
            return state
    return None


def is_bad_value(exc: BaseException) -> bool:
    """True when Postgres refused a value itself (SQLSTATE class 22: out of range, too long, malformed)."""
    if not isinstance(exc, (DBAPIError, asyncpg.PostgresError)) or is_unavailable(exc):
        return False
    state = sqlstate_of(exc)
    return bool(state and state.startswith("22"))


def is_unavailable(exc: BaseException) -> bool:
    """True when the database cannot be reached (as opposed to refusing the statement).

    Follows the driver's exception chain: during a restart asyncpg reports e.g. "the database system is shutting
    down" (57P03) or "connection was closed in the middle of operation" (08003) as a plain DBAPIError.
    """
    for current in _chain(exc):
        # PoolTimeout: every connection is busy (or being re-made after a restart); a 503 with Retry-After, not a 500
        # InternalClientError: the driver lost track of a connection the server cut mid-reply (seen during restarts)
        if isinstance(current, (OperationalError, InterfaceError, asyncpg.InterfaceError, asyncpg.InternalClientError, ConnectionError,
                                TimeoutError, OSError, PoolTimeout)):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        state = getattr(current, "sqlstate", None)
        if isinstance(state, str) and (state.startswith("08") or state in UNAVAILABLE_SQLSTATES):
            return True
    return False
