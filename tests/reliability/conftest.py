"""Fixtures for the reliability tests: a committed clinic of each test's own, private servers to break, the app under uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from clinic.app import create_app
from clinic.auth.models import StaffUser
from clinic.auth.permissions import ALL_ROLES
from clinic.clinics import Clinic
from clinic.config import Settings
from clinic.patients.models import Patient
from tests.factories import Factory, bearer, staff_on_shift
from tests.reliability.helpers import LiveServer, PrivateRedis

NY = ZoneInfo("America/New_York")


def booking_day(weeks: int = 3) -> date:
    """A Tuesday a few weeks ahead: open, not in the past, clear of today's sessions."""
    today = datetime.now(NY).date()
    return today + timedelta(days=(7 - today.weekday()) % 7 + 7 * weeks + 1)


def local_iso(day: date, hh: int, mm: int = 0) -> str:
    return datetime(day.year, day.month, day.day, hh, mm, tzinfo=NY).isoformat()


@dataclass
class World:
    """One clinic in the committed database, a user and an API token per role, patients, and staff on shift."""

    factory: Factory
    clinic: Clinic
    users: dict[str, StaffUser]
    tokens: dict[str, str]
    patients: list[Patient]
    day: date
    chairs: list[int] = field(default_factory=list)

    def h(self, role: str) -> dict[str, str]:
        return bearer(self.tokens[role])


async def make_world(engine_db, *, chairs: int = 2, patients: int = 1, nurses: int = 3, days: list[date] | None = None,
                     **patient_kw: Any) -> World:
    from sqlalchemy import text

    f = Factory(engine_db)
    clinic = await f.clinic(chairs=chairs)
    users = {role: await f.user(clinic, role) for role in sorted(ALL_ROLES)}
    tokens = {role: await f.token(u) for role, u in users.items()}
    day = booking_day()
    await staff_on_shift(f, clinic, days or [day], nurses=nurses)
    patient_kw.setdefault("rems_enrolled_on", date(2025, 1, 2))
    people = [await f.patient(clinic, rems_patient_id=f"RP-{i:06d}", **patient_kw) for i in range(patients)]
    async with engine_db.engine.connect() as conn:
        found = await conn.execute(text("SELECT id FROM chairs WHERE clinic_id = :c AND kind = 'chair' ORDER BY sort_order, id"), {"c": clinic.id})
        chair_ids = [r[0] for r in found]
    return World(f, clinic, users, tokens, people, day, chair_ids)


@pytest.fixture
async def world(engine_db) -> World:
    return await make_world(engine_db)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    r = PrivateRedis()
    r.start()
    yield r
    r.cleanup()


@pytest.fixture
def live_server() -> Iterator[Callable[[Settings], LiveServer]]:
    """Start the app (its own pools, from settings, as in production) under uvicorn; stopped after the test."""
    started: list[LiveServer] = []

    def start(settings: Settings) -> LiveServer:
        server = LiveServer(create_app(settings)).start()
        started.append(server)
        return server

    yield start
    for s in started:
        s.stop()


@pytest.fixture
async def http() -> AsyncIterator[Any]:
    import httpx

    async with httpx.AsyncClient(timeout=15) as c:
        yield c


# ---- a database of its own holding the demo clinic (every session phase, billing, notices) ----------------

# our own users and tokens sit far above anything a sequence hands out, so fuzzed ids never deactivate or revoke them
OWN_IDS = 1_900_000_000
ROLE_PREFERENCE = ("admin", "front_desk", "nurse", "prescriber", "billing")


@dataclass
class Demo:
    url: str
    db: Any
    settings: Settings
    clinic_id: int
    tokens: dict[str, str]  # role -> bearer token
    sessions: dict[str, str]  # role -> session cookie value


@asynccontextmanager
async def demo_database(server_url: str, redis_url: str, *, patients: int = 10, days: int = 3) -> AsyncIterator[Demo]:
    """Create, migrate and seed a database for one test module; dropped afterwards whatever the tests did to it."""
    from clinic.auth.models import ApiToken, WebSession
    from clinic.auth.rules import new_token
    from clinic.db import Database
    from clinic.seed import seed_demo
    from tests.conftest import migrated_database

    async with migrated_database(server_url, "clinic_rel") as (_, url):
        db = Database.connect(url, pool_size=5)
        try:
            clinic = await seed_demo(db, patients=patients, days=days)
            f = Factory(db)
            tokens, sessions = {}, {}
            for i, role in enumerate(ROLE_PREFERENCE):
                user = await f.user(clinic, role, id=OWN_IDS + i, email=f"reliability-{role}@fuzz.clinic")
                bearer_raw, bearer_hash = new_token("ct_")
                session_raw, session_hash = new_token()
                await f.add(ApiToken(id=OWN_IDS + i, token_hash=bearer_hash, user_id=user.id, name="reliability"),
                            WebSession(id=OWN_IDS + i, token_hash=session_hash, user_id=user.id))
                tokens[role], sessions[role] = bearer_raw, session_raw
            settings = Settings(database_url=url, redis_url=redis_url, secret_key="reliability-secret-key-" + "x" * 16,
                                base_url="http://testserver.local")
            yield Demo(url, db, settings, clinic.id, tokens, sessions)
        finally:
            await db.dispose()
