"""Engine, the per-request transactional session, and database errors turned into answers people understand."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import MetaData
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
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


@dataclass
class Database:
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]

    @classmethod
    def connect(cls, url: str, *, pool_size: int = 10) -> "Database":
        engine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            pool_timeout=5,
            # fail fast while Postgres is away: a 503 now beats a request hanging for a minute
            connect_args={"timeout": 3, "command_timeout": 30, "server_settings": {"application_name": "clinic"}},
        )
        return cls(engine=engine, sessionmaker=make_sessionmaker(engine))

    @classmethod
    def bound_to(cls, engine: AsyncEngine, connection: AsyncConnection) -> "Database":
        """Sessions that join an outer transaction on one connection (tests roll it back)."""
        sm = async_sessionmaker(
            bind=connection,
            class_=AsyncSession,
            expire_on_commit=False,
            join_transaction_mode="create_savepoint",
        )
        return cls(engine=engine, sessionmaker=sm)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: commit on success, roll back on any error."""
        async with self.sessionmaker() as session:
            async with session.begin():
                yield session

    async def dispose(self) -> None:
        await self.engine.dispose()


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(bind=engine, class_=AsyncSession, expire_on_commit=False)


# Constraint name -> a sentence for the person who hit it. Domains add theirs at import.
CONFLICT_MESSAGES: dict[str, str] = {}


def register_conflicts(messages: dict[str, str]) -> None:
    CONFLICT_MESSAGES.update(messages)


def conflict_message(exc: IntegrityError) -> tuple[str, str | None]:
    """(sentence, constraint name) for an integrity or exclusion violation."""
    orig = getattr(exc, "orig", None)
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
    if not isinstance(exc, DBAPIError) or is_unavailable(exc):
        return False
    state = sqlstate_of(exc)
    return bool(state and state.startswith("22"))


def is_unavailable(exc: BaseException) -> bool:
    """True when the database cannot be reached (as opposed to refusing the statement).

    Follows the driver's exception chain: during a restart asyncpg reports e.g. "the database system is shutting
    down" (57P03) or "connection was closed in the middle of operation" (08003) as a plain DBAPIError.
    """
    for current in _chain(exc):
        if isinstance(current, (OperationalError, InterfaceError, ConnectionError, TimeoutError, OSError)):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        state = getattr(current, "sqlstate", None)
        if isinstance(state, str) and (state.startswith("08") or state in UNAVAILABLE_SQLSTATES):
            return True
    return False
