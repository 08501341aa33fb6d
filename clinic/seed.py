"""Demo data: a clinic, its staff with known demo logins, then each domain's demo seed in order."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlmodel import select

from clinic.audit.service import SYSTEM
from clinic.auth.models import StaffUser
from clinic.auth.rules import hash_password
from clinic.clinics import Clinic
from clinic.db import Database

DEMO_PASSWORD = "demo-password-123"
DEMO_STAFF = (
    ("frontdesk@demo.clinic", "Fran Desk", ["front_desk"], "", False),
    ("nurse@demo.clinic", "Nora Nurse", ["nurse"], "RN", False),
    ("nurse2@demo.clinic", "Ned Nurse", ["nurse"], "RN", False),
    ("prescriber@demo.clinic", "Dr. Priya Patel", ["prescriber"], "MD", False),
    ("therapist@demo.clinic", "Theo Therapist", ["prescriber"], "PhD", True),
    ("billing@demo.clinic", "Bill Ing", ["billing"], "", False),
    ("admin@demo.clinic", "Ada Admin", ["admin"], "", False),
)
OPENING_HOURS = {str(d): [["08:00", "18:00"]] for d in range(5)} | {"5": [["09:00", "13:00"]], "6": []}
DEFAULT_SETTINGS = {
    "nurse_ratio": 3,
    "grid_minutes": 15,
    "reminder_hours": 48,
    "late_cancel_hours": 24,
    "rems_form_due_days": 7,
}


@dataclass
class SeedContext:
    clinic: Clinic
    staff: dict[str, StaffUser]
    rng: random.Random
    patients: int
    days: int
    progress: Callable[[str, int], None] = lambda label, n: None
    shared: dict = field(default_factory=dict)


async def is_seeded(db: Database) -> bool:
    async with db.sessionmaker() as session:
        return (await session.exec(select(Clinic.id).limit(1))).first() is not None


async def seed_demo(db: Database, *, patients: int = 30, days: int = 14, progress=None, seed: int = 7) -> Clinic:
    from clinic.billing import demo as billing_demo
    from clinic.monitoring import demo as monitoring_demo
    from clinic.outcomes import demo as outcomes_demo
    from clinic.scheduling import demo as scheduling_demo

    progress = progress or (lambda label, n: None)
    async with db.transaction() as session:
        clinic = Clinic(
            name="Riverside Mood Clinic",
            display_name="Riverside Clinic",
            timezone="America/New_York",
            phone="(555) 010-2030",
            address="120 River Street, Suite 4, Hartford, CT 06103",
            state="CT",
            npi="1234567893",
            tin="12-3456789",
            opening_hours=OPENING_HOURS,
            settings=dict(DEFAULT_SETTINGS),
        )
        session.add(clinic)
        await session.flush()
        staff = {}
        pw = hash_password(DEMO_PASSWORD)
        for email, name, roles, creds, therapist in DEMO_STAFF:
            user = StaffUser(
                clinic_id=clinic.id, email=email, full_name=name, roles=roles, credentials=creds,
                password_hash=pw, is_therapist=therapist, npi="1588667638" if "prescriber" in roles else None,
            )
            session.add(user)
            staff[email.split("@")[0]] = user
        await session.flush()
        progress("staff", len(staff))
        ctx = SeedContext(clinic=clinic, staff=staff, rng=random.Random(seed), patients=patients, days=days, progress=progress)
        ctx.shared["actor"] = SYSTEM.__class__(user_id=staff["admin"].id, clinic_id=clinic.id, roles=("admin",), name="demo seed")
        for step in (scheduling_demo.seed, billing_demo.seed_prices, monitoring_demo.seed, billing_demo.seed, outcomes_demo.seed):
            await step(session, ctx)
    return clinic
