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
    # the tables' owner, for migrations; the app itself connects as database_url's role (clinic.dbroles)
    database_owner_url: str | None = None
    redis_url: str | None = None
    smtp_url: str | None = None
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    base_url: str = "http://localhost:8000"
    data_dir: str = ".clinic"
    idle_timeout_minutes: int = 15
    debug: bool = False
    # in dev the SMTP sink runs in-process and /dev/mail shows what was sent
    dev_mail: bool = False
    # addresses of reverse proxies whose X-Forwarded-For is believed; nobody's by default
    trusted_proxies: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        s = cls(
            database_url=env.get("DATABASE_URL") or None,
            database_owner_url=env.get("DATABASE_OWNER_URL") or None,
            redis_url=env.get("REDIS_URL") or None,
            smtp_url=env.get("SMTP_URL") or None,
            secret_key=env.get("SECRET_KEY") or secrets.token_urlsafe(32),
            base_url=(env.get("BASE_URL") or "http://localhost:8000").rstrip("/"),
            data_dir=env.get("CLINIC_DATA_DIR") or ".clinic",
            idle_timeout_minutes=_minutes(env.get("IDLE_TIMEOUT_MINUTES")),
            trusted_proxies=tuple(p.strip() for p in (env.get("TRUSTED_PROXIES") or "").split(",") if p.strip()),
        )
        s.validate()
        return s

    def with_(self, **changes) -> "Settings":
        return replace(self, **changes)

    def validate(self) -> None:
        for url in (self.database_url, self.database_owner_url):
            if url:
                check_database_url(url)
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


def _minutes(value: str | None) -> int:
    try:
        minutes = int(value or 15)
    except ValueError:
        raise ConfigError("IDLE_TIMEOUT_MINUTES must be a whole number of minutes, e.g. 15") from None
    if not 1 <= minutes <= 720:
        raise ConfigError("IDLE_TIMEOUT_MINUTES must be between 1 and 720")
    return minutes


MIN_SECRET_KEY_LENGTH = 32
# keys that were ever printed in this project's files or are typical placeholders: anyone could sign with them
KNOWN_SECRET_KEYS = frozenset({
    "change-me-to-a-long-random-string", "changeme", "change-me", "secret", "secret-key", "your-secret-key", "dev", "development",
})


def check_secret_key(key: str | None) -> None:
    """A production SECRET_KEY: set, long, not a published one, not a repeated pattern."""
    how = "generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
    if not key:
        raise ConfigError(f"SECRET_KEY is not set: it signs CSRF tokens and cost links; {how}")
    if key.strip().lower() in KNOWN_SECRET_KEYS:
        raise ConfigError(f"SECRET_KEY is a published example value: anyone could sign links with it; {how}")
    if len(key) < MIN_SECRET_KEY_LENGTH or len(set(key)) < 12:
        raise ConfigError(f"SECRET_KEY is too short or too repetitive (at least {MIN_SECRET_KEY_LENGTH} varied characters); {how}")


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
