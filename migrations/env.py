"""Alembic environment: async engine, the app's metadata, URL from the clinic's settings."""

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

import clinic.models  # noqa: F401  (registers every table)
from clinic.db import metadata

config = context.config
target_metadata = metadata


def database_url() -> str:
    # migrations run as the tables' owner; DATABASE_URL alone is taken as the owner's (clinic.dbroles)
    url = config.attributes.get("database_url") or os.environ.get("DATABASE_OWNER_URL") or os.environ.get("DATABASE_URL")
    if url:
        return url
    # no URL given: the same embedded server `clinic dev` uses
    from clinic.config import Settings
    from clinic.embedded import start

    services = start(Settings.from_env().data_dir, postgres=True, redis=False)
    config.attributes["embedded"] = services
    return services.database_url


def include_object(obj, name, type_, reflected, compare_to):
    return True


def do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = create_async_engine(database_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()
        if "embedded" in config.attributes:
            config.attributes.pop("embedded").stop()


def run_migrations_offline() -> None:
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
    else:
        asyncio.run(run_async_migrations())
