"""The database's two roles: the owner that migrates, and the runtime role the app connects as, granted only what it needs.

The runtime role is neither a superuser nor the tables' owner, so it cannot drop a trigger, switch triggers off
(`session_replication_role`) or alter a table: the append-only rules the migrations put in triggers hold against the
running app itself. On top of them, it may only read and add to the audit trail and to clinical and dosing entries.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from sqlalchemy.engine import make_url

from clinic.config import ConfigError

# what the runtime role may do, table by table; every other table gets TABLE_DEFAULT
TABLE_DEFAULT = "SELECT, INSERT, UPDATE, DELETE"
TABLE_GRANTS = {
    # the audit trail and the chart's entries are append-only: a correction is a new row
    "audit_events": "SELECT, INSERT",
    "clinical_entries": "SELECT, INSERT",
    "dosing_entries": "SELECT, INSERT",
    # an alert is acknowledged once (UPDATE, trigger-guarded), never removed
    "session_alerts": "SELECT, INSERT, UPDATE",
    # a patient's answers are append-only too, and so are baseline waivers; a safety review gains its review once
    "outcome_measures": "SELECT, INSERT",
    "baseline_waivers": "SELECT, INSERT",
    "safety_reviews": "SELECT, INSERT, UPDATE",
    # the migrations' own bookkeeping
    "alembic_version": "SELECT",
}


@dataclass(frozen=True)
class RuntimeRole:
    name: str
    password: str | None


def runtime_role_of(url: str) -> RuntimeRole:
    u = make_url(url)
    if not u.username:
        raise ConfigError("DATABASE_URL names no user: use postgresql+asyncpg://user:password@host:5432/dbname")
    return RuntimeRole(u.username, u.password)


def default_runtime_url(owner_url: str, password: str | None = None) -> str:
    """The runtime role's URL when only the owner's is given: the same server and database, user `<database>_app`."""
    u = make_url(owner_url)
    return u.set(username=f"{u.database}_app", password=password).render_as_string(hide_password=False)


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def grant_runtime_role(owner_url: str, runtime_url: str) -> str:
    """Create the runtime role if missing (with the URL's password, if any) and give it exactly its grants on every
    table there is now; default privileges cover tables the owner creates later. Returns the role's name."""
    role = runtime_role_of(runtime_url)
    conn = await asyncpg.connect(asyncpg_dsn(owner_url), timeout=10)
    try:
        owner = await conn.fetchval("SELECT current_user")
        if role.name == owner:
            raise ConfigError(
                f"migrations and the app would both sign in as {role.name!r}: migrations need the tables' owner "
                "(DATABASE_OWNER_URL, or DATABASE_URL alone) and the app a role of its own (DATABASE_URL)."
            )
        found = await conn.fetchrow("SELECT rolsuper FROM pg_roles WHERE rolname = $1", role.name)
        if found is None:
            await conn.execute(await _sql(conn, "CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS", role.name))
        elif found["rolsuper"]:
            raise ConfigError(f"the app's database role {role.name!r} is a superuser: give the app a role without superuser rights.")
        if role.password:
            await conn.execute(await _sql(conn, "ALTER ROLE %I PASSWORD %L", role.name, role.password))
        async with conn.transaction():
            await conn.execute(await _sql(conn, "GRANT CONNECT ON DATABASE %I TO %I", await conn.fetchval("SELECT current_database()"), role.name))
            await conn.execute(await _sql(conn, "GRANT USAGE ON SCHEMA public TO %I", role.name))
            # start from nothing, so a grant taken away here is taken away in the database too
            await conn.execute(await _sql(conn, "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM %I", role.name))
            tables = [r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
            for table in tables:
                await conn.execute(await _sql(conn, f"GRANT {TABLE_GRANTS.get(table, TABLE_DEFAULT)} ON %I TO %I", table, role.name))
            await conn.execute(await _sql(conn, "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO %I", role.name))
            # a table added by `alembic upgrade` run by hand is usable before the next `clinic migrate` regrants
            await conn.execute(await _sql(conn, f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT {TABLE_DEFAULT} ON TABLES TO %I", role.name))
            await conn.execute(await _sql(conn, "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO %I", role.name))
        return role.name
    finally:
        await conn.close()


async def _sql(conn: asyncpg.Connection, template: str, *args: str) -> str:
    """A statement with identifiers and literals quoted by the server (format's %I and %L)."""
    return await conn.fetchval(f"SELECT format($1, {', '.join(f'${i + 2}::text' for i in range(len(args)))})", template, *args)


async def is_privileged(url: str) -> str | None:
    """Why the role `url` signs in as must not run the app (a superuser, or the owner of a table), or None."""
    conn = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        if await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
            return "is a superuser"
        owned = await conn.fetchval("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tableowner = current_user LIMIT 1")
        return f"owns the table {owned}" if owned else None
    finally:
        await conn.close()
