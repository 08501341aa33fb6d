"""The client address in the audit trail and the sign-in throttle is the connection's, unless it came through a
proxy listed in TRUSTED_PROXIES: `clinic serve` as an operator runs it, behind no proxy and behind one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import httpx
from sqlalchemy import text

from tests.factories import Factory, bearer
from tests.reliability.helpers import free_port

FORGED = "203.0.113.9"


def serve(env: dict[str, str], port: int) -> subprocess.Popen:
    full = {k: v for k, v in os.environ.items() if k not in ("DATABASE_OWNER_URL", "TRUSTED_PROXIES")}
    full.update(env)
    proc = subprocess.Popen([sys.executable, "-m", "clinic.cli", "serve", "--host", "127.0.0.1", "--port", str(port)], env=full,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"clinic serve exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("clinic serve did not answer within 60 s")


async def _chart_read_ip(engine_db, env: dict[str, str]) -> str:
    f = Factory(engine_db)
    clinic = await f.clinic()
    token = await f.token(await f.user(clinic, "front_desk"))
    patient = await f.patient(clinic)
    port = free_port()
    proc = serve(env, port)
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/api/v1/patients/{patient.id}", headers={**bearer(token), "X-Forwarded-For": FORGED})
        assert r.status_code == 200, r.text
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    async with engine_db.engine.connect() as conn:
        q = text("SELECT ip FROM audit_events WHERE action = 'chart.read' AND patient_id = :p")
        return (await conn.execute(q, {"p": patient.id})).scalar_one()


def _env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    return {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "SECRET_KEY": uuid.uuid4().hex + uuid.uuid4().hex, **extra}


async def test_a_forwarded_for_header_from_an_untrusted_client_is_ignored(engine_db, database_url, redis_url):
    assert await _chart_read_ip(engine_db, _env(database_url, redis_url)) == "127.0.0.1"


async def test_a_listed_proxy_is_believed(engine_db, database_url, redis_url):
    assert await _chart_read_ip(engine_db, _env(database_url, redis_url, TRUSTED_PROXIES="127.0.0.1")) == FORGED
