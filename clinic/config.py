"""Settings read from the environment (the contract in DESIGN.md)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, replace
from urllib.parse import urlparse


class ConfigError(ValueError):
    """A setting is malformed; the message says which and how to fix it."""


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    redis_url: str | None = None
    smtp_url: str | None = None
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    base_url: str = "http://localhost:8000"
    data_dir: str = ".clinic"
    idle_timeout_minutes: int = 15
    debug: bool = False
    # in dev the SMTP sink runs in-process and /dev/mail shows what was sent
    dev_mail: bool = False

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        s = cls(
            database_url=env.get("DATABASE_URL") or None,
            redis_url=env.get("REDIS_URL") or None,
            smtp_url=env.get("SMTP_URL") or None,
            secret_key=env.get("SECRET_KEY") or secrets.token_urlsafe(32),
            base_url=(env.get("BASE_URL") or "http://localhost:8000").rstrip("/"),
            data_dir=env.get("CLINIC_DATA_DIR") or ".clinic",
            idle_timeout_minutes=int(env.get("IDLE_TIMEOUT_MINUTES") or 15),
        )
        s.validate()
        return s

    def with_(self, **changes) -> "Settings":
        return replace(self, **changes)

    def validate(self) -> None:
        if self.database_url:
            check_database_url(self.database_url)
        if self.redis_url:
            u = urlparse(self.redis_url)
            if u.scheme not in {"redis", "rediss", "unix"}:
                raise ConfigError(
                    f"REDIS_URL must look like redis://host:6379/0 (got scheme {u.scheme!r})"
                )
        if self.smtp_url:
            u = urlparse(self.smtp_url)
            if u.scheme not in {"smtp", "smtps"} or not u.hostname:
                raise ConfigError("SMTP_URL must look like smtp://host:1025")


def check_database_url(url: str) -> None:
    u = urlparse(url)
    if u.scheme != "postgresql+asyncpg":
        raise ConfigError(
            "DATABASE_URL must look like postgresql+asyncpg://user:password@host:5432/dbname "
            f"(got scheme {u.scheme!r})"
        )
    if not (u.hostname or "host=" in u.query):
        raise ConfigError("DATABASE_URL has no host: use postgresql+asyncpg://user@host:5432/dbname")
    if not u.path.strip("/"):
        raise ConfigError("DATABASE_URL has no database name: add /dbname after the host")
