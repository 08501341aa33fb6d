"""The `clinic` command as an operator meets it: one clear line for bad configuration, not a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest


def run_clinic(*args: str, env: dict[str, str] | None = None, timeout: int = 60) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATABASE_OWNER_URL", "REDIS_URL", "SECRET_KEY")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "clinic.cli", *args], capture_output=True, text=True, env=full_env, timeout=timeout
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://user@localhost/clinic", "DATABASE_URL must look like postgresql+asyncpg://"),
        ("postgresql+asyncpg://user@127.0.0.1:1/clinic", "cannot reach Postgres at 127.0.0.1:1/clinic"),
    ],
)
def test_bad_database_url_gives_one_clear_line(url, expected):
    r = run_clinic("migrate", env={"DATABASE_URL": url})
    assert r.returncode == 2
    assert expected in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_database_is_named(owner_database_url):
    from tests.conftest import _with_db

    missing = _with_db(owner_database_url, "no_such_database_here")
    r = run_clinic("migrate", env={"DATABASE_URL": missing})
    assert r.returncode == 2
    assert "no_such_database_here does not exist" in r.stderr
    assert "Traceback" not in r.stderr


def test_port_in_use_is_reported_before_anything_starts():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run_clinic("dev", "--port", str(port))
    assert r.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in r.stderr
    assert "Traceback" not in r.stderr


def test_migrate_is_idempotent_and_check_is_clean(owner_database_url, database_url):
    r = run_clinic("migrate", env={"DATABASE_OWNER_URL": owner_database_url, "DATABASE_URL": database_url})
    assert r.returncode == 0, r.stderr
    check = subprocess.run(
        [sys.executable, "-m", "alembic", "check"],
        capture_output=True, text=True, env={**os.environ, "DATABASE_OWNER_URL": owner_database_url}, timeout=60,
    )
    assert check.returncode == 0, check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr


async def test_worker_check_answers_the_compose_healthcheck_from_the_heartbeat(redis_url, redis):
    from clinic.queue import WORKER_HEARTBEAT_KEY

    stale = run_clinic("worker", "--check", env={"REDIS_URL": redis_url})
    assert stale.returncode == 1 and "no heartbeat" in stale.stderr
    await redis.set(WORKER_HEARTBEAT_KEY, b"beat", px=10_000)  # what a running worker keeps renewing
    assert run_clinic("worker", "--check", env={"REDIS_URL": redis_url}).returncode == 0
    down = run_clinic("worker", "--check", env={"REDIS_URL": "redis://127.0.0.1:1/0"})
    assert down.returncode == 1 and "Redis did not answer" in down.stderr and "Traceback" not in down.stderr


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (None, "SECRET_KEY is not set"),
        ("change-me-to-a-long-random-string", "SECRET_KEY is a published example value"),
        ("short-key", "SECRET_KEY is too short or too repetitive"),
        ("x" * 64, "SECRET_KEY is too short or too repetitive"),
    ],
)
def test_serve_and_worker_refuse_a_missing_short_or_known_secret_key(key, expected, database_url, redis_url):
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url}
    if key is not None:
        env["SECRET_KEY"] = key
    for command in (("serve", "--port", "0"), ("worker",)):
        r = run_clinic(*command, env=env)
        assert r.returncode == 2, r.stderr
        assert expected in r.stderr and "Traceback" not in r.stderr


def test_dev_keeps_the_key_it_generated(tmp_path):
    from clinic.cli import kept_secret

    first = kept_secret(str(tmp_path), "secret-key")
    assert len(first) >= 32 and kept_secret(str(tmp_path), "secret-key") == first
    assert (tmp_path / "secret-key").stat().st_mode & 0o077 == 0  # only its owner can read it
