"""Small factories for test data, written through the same sessions the app uses."""

from __future__ import annotations

import itertools
from datetime import date
from typing import Any

from httpx import AsyncClient as AsyncTestClient

from clinic.auth.models import StaffUser
from clinic.auth.rules import hash_password, new_token
from clinic.clinics import Clinic
from clinic.db import Database
from clinic.patients.models import Patient
from clinic.scheduling.models import Chair, SessionType
from clinic.scheduling.protocols import Protocol, default_protocols
from clinic.seed import DEFAULT_SETTINGS, OPENING_HOURS

PASSWORD = "correct-horse-battery"
_seq = itertools.count(1)
_HASH = hash_password(PASSWORD)  # hashing once keeps Argon2 from dominating the suite's time


class Factory:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, *objs: Any) -> None:
        async with self.db.transaction() as s:
            for o in objs:
                s.add(o)
            await s.flush()

    async def clinic(self, *, tz: str = "America/New_York", chairs: int = 2, protocols: bool = True, **kw: Any) -> Clinic:
        c = Clinic(
            name=kw.pop("name", f"Test Clinic {next(_seq)}"),
            display_name=kw.pop("display_name", "Test Clinic"),
            timezone=tz,
            phone="555-0100",
            address="1 Main St, Hartford, CT",
            state="CT",
            npi="1234567893",
            tin="12-3456789",
            opening_hours=kw.pop("opening_hours", OPENING_HOURS),
            settings=kw.pop("settings", dict(DEFAULT_SETTINGS)),
            **kw,
        )
        await self.add(c)
        objs: list[Any] = [Chair(clinic_id=c.id, name=f"Chair {i + 1}", sort_order=i) for i in range(chairs)]
        objs.append(Chair(clinic_id=c.id, name="Room A", kind="room", sort_order=99))
        if protocols:
            for p in default_protocols():
                objs.append(SessionType(clinic_id=c.id, **p))
        await self.add(*objs)
        return c

    async def user(self, clinic: Clinic, *roles: str, email: str | None = None, active: bool = True, **kw: Any) -> StaffUser:
        n = next(_seq)
        u = StaffUser(
            clinic_id=clinic.id,
            email=email or f"{'-'.join(roles) or 'staff'}{n}@test.clinic",
            full_name=kw.pop("full_name", f"Staff {n}"),
            roles=list(roles),
            password_hash=_HASH,
            active=active,
            **kw,
        )
        await self.add(u)
        return u

    async def token(self, user: StaffUser) -> str:
        from clinic.auth.models import ApiToken

        raw, hashed = new_token("ct_")
        await self.add(ApiToken(token_hash=hashed, user_id=user.id, name="test"))
        return raw

    async def patient(self, clinic: Clinic, **kw: Any) -> Patient:
        n = next(_seq)
        p = Patient(
            clinic_id=clinic.id,
            first_name=kw.pop("first_name", "Pat"),
            last_name=kw.pop("last_name", f"Example{n}"),
            date_of_birth=kw.pop("date_of_birth", date(1980, 5, 17)),
            sex=kw.pop("sex", "female"),
            email=kw.pop("email", f"patient{n}@example.org"),
            phone=kw.pop("phone", f"555-01{n:02d}"),
            **kw,
        )
        await self.add(p)
        return p


async def login(client: AsyncTestClient, email: str, password: str = PASSWORD) -> Any:
    """Sign in through the real form, CSRF cookie and all; returns the response to POST /login."""
    await client.get("/login")
    token = client.cookies.get("csrftoken")
    return await client.post(
        "/login",
        data={"email": email, "password": password, "_csrf_token": token},
        follow_redirects=False,
    )


def csrf_headers(client: AsyncTestClient) -> dict[str, str]:
    return {"x-csrftoken": client.cookies.get("csrftoken") or ""}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def staff_on_shift(factory: Factory, clinic: Clinic, days, *, nurses: int = 1, start: str = "08:00", end: str = "18:00") -> dict[str, Any]:
    """Nurses, a prescriber and a therapist on shift for each clinic-local day given (scheduling tests)."""
    from clinic.scheduling.models import Shift
    from clinic.scheduling.rules import parse_hhmm, wall_to_utc

    people = {f"nurse{i}": await factory.user(clinic, "nurse") for i in range(nurses)}
    people["prescriber"] = await factory.user(clinic, "prescriber")
    people["therapist"] = await factory.user(clinic, "prescriber", is_therapist=True)
    shifts = []
    for day in days:
        s, e = wall_to_utc(day, parse_hhmm(start), clinic.timezone), wall_to_utc(day, parse_hhmm(end), clinic.timezone)
        for key, user in people.items():
            role = "therapist" if key == "therapist" else ("prescriber" if key == "prescriber" else "nurse")
            shifts.append(Shift(clinic_id=clinic.id, user_id=user.id, role=role, starts_at=s, ends_at=e))
    await factory.add(*shifts)
    return people


async def appointment(factory: Factory, clinic: Clinic, patient: Patient, starts_at, *, kind: str = "esketamine", status: str = "booked", **kw: Any):
    """An Appointment row written directly, bypassing booking rules (billing and notice tests publish the events themselves)."""
    from datetime import timedelta

    from sqlmodel import select

    from clinic.scheduling.models import Appointment, Chair

    async with factory.db.sessionmaker() as s:
        st = (await s.exec(select(SessionType).where(SessionType.clinic_id == clinic.id, SessionType.kind == kind))).one()
        chair = (await s.exec(select(Chair).where(Chair.clinic_id == clinic.id).order_by(Chair.id))).first()
    appt = Appointment(
        clinic_id=clinic.id, patient_id=patient.id, session_type_id=st.id, chair_id=kw.pop("chair_id", chair.id),
        starts_at=starts_at, ends_at=kw.pop("ends_at", starts_at + timedelta(minutes=Protocol.of(st).hold_minutes(56))), status=status,
        planned_dose_mg=kw.pop("planned_dose_mg", 56 if kind == "esketamine" else None), **kw,
    )
    await factory.add(appt)
    return appt
