"""The running app's database role can neither erase nor rewrite the audit trail or the chart: it is no superuser and
owns no table, so it cannot switch triggers off either; migrations run as the owner and grant it what it needs."""

from __future__ import annotations

import uuid
from datetime import date

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from clinic.billing.models import Estimate
from clinic.monitoring.models import ClinicalEntry
from clinic.timeutil import utcnow
from tests.factories import Factory
from tests.integration.test_cli import run_clinic
from tests.integration.test_monitoring_session import appointment

PERMISSION_DENIED = "42501"


def sqlstate(exc: DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None) or getattr(getattr(exc.orig, "__cause__", None), "sqlstate", None)


async def refused(engine_db, sql: str, **params) -> DBAPIError:
    async with engine_db.engine.connect() as conn:
        with pytest.raises(DBAPIError) as caught:
            async with conn.begin():
                await conn.execute(text(sql), params)
    return caught.value


async def test_the_app_connects_as_a_role_that_is_neither_superuser_nor_owner(db, owner_db):
    async with db.sessionmaker() as s:
        me, superuser = (await s.execute(text("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user"))).one()
        owned = (await s.execute(text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = current_user"))).scalar_one()
    async with owner_db.sessionmaker() as s:
        owner = (await s.execute(text("SELECT current_user"))).scalar_one()
    assert not superuser and owned == 0 and me != owner


async def test_the_app_cannot_delete_the_audit_trail_nor_switch_triggers_off(engine_db):
    for sql in ("DELETE FROM audit_events", "UPDATE audit_events SET action = 'forged'", "TRUNCATE audit_events"):
        assert sqlstate(await refused(engine_db, sql)) == PERMISSION_DENIED, sql
    # replica mode skips every trigger (the append-only ones too): only a superuser may ask for it
    assert sqlstate(await refused(engine_db, "SET session_replication_role = replica")) == PERMISSION_DENIED
    for sql in ("ALTER TABLE audit_events DISABLE TRIGGER USER", "DROP TRIGGER audit_events_no_update_delete ON audit_events",
                "ALTER TABLE estimates DISABLE TRIGGER estimates_issued_no_update_delete"):
        assert sqlstate(await refused(engine_db, sql)) == "42501", sql  # must be the table's owner


async def test_the_app_may_only_add_to_clinical_entries_and_doses(engine_db):
    f = Factory(engine_db)
    clinic = await f.clinic()
    nurse = await f.user(clinic, "nurse")
    patient = await f.patient(clinic)
    appt = await appointment(f, clinic, patient, utcnow(), status="arrived", checked_in_at=utcnow())
    entry = ClinicalEntry(clinic_id=clinic.id, appointment_id=appt.id, client_id=uuid.uuid4(), taken_at=utcnow(), recorded_by=nurse.id, spo2=97)
    await f.add(entry)  # adding is what the app does
    for sql in ("UPDATE clinical_entries SET spo2 = 80 WHERE id = :id", "DELETE FROM clinical_entries WHERE id = :id",
                "UPDATE dosing_entries SET dose_mg = 1 WHERE id = :id", "DELETE FROM dosing_entries WHERE id = :id",
                "DELETE FROM session_alerts WHERE id = :id"):
        assert sqlstate(await refused(engine_db, sql, id=entry.id)) == PERMISSION_DENIED, sql


async def test_an_issued_estimate_stays_as_issued_for_the_app(engine_db):
    f = Factory(engine_db)
    clinic = await f.clinic()
    billing = await f.user(clinic, "billing")
    patient = await f.patient(clinic)
    estimate = Estimate(clinic_id=clinic.id, patient_id=patient.id, kind="gfe", scheduled_on=date.today(), issued_at=utcnow(),
                        issued_by=billing.id, total_cents=100, content={"total_cents": 100})
    await f.add(estimate)
    for sql in ("UPDATE estimates SET total_cents = 0 WHERE id = :id", "DELETE FROM estimates WHERE id = :id"):
        exc = await refused(engine_db, sql, id=estimate.id)
        assert "issued" in str(exc.orig).lower(), sql


async def test_a_table_added_later_by_the_owner_is_usable_by_the_app_without_a_regrant(engine_db, owner_db):
    name = f"later_table_{uuid.uuid4().hex[:8]}"
    async with owner_db.engine.begin() as conn:
        await conn.execute(text(f"CREATE TABLE {name} (id serial PRIMARY KEY, note text)"))
    try:
        async with engine_db.engine.begin() as conn:
            await conn.execute(text(f"INSERT INTO {name} (note) VALUES ('x')"))
            assert (await conn.execute(text(f"SELECT count(*) FROM {name}"))).scalar_one() == 1
    finally:
        async with owner_db.engine.begin() as conn:
            await conn.execute(text(f"DROP TABLE {name}"))


def test_serve_and_worker_refuse_a_superuser_or_owner_database_url(owner_database_url, redis_url):
    env = {"DATABASE_URL": owner_database_url, "REDIS_URL": redis_url, "SECRET_KEY": "k3y-" + uuid.uuid4().hex + uuid.uuid4().hex}
    for command in (("serve", "--port", "0"), ("worker",)):
        r = run_clinic(*command, env=env)
        assert r.returncode == 2, r.stderr
        assert "DATABASE_URL's role is a superuser" in r.stderr and "Traceback" not in r.stderr


def test_migrate_with_one_url_creates_the_apps_role_and_names_it(owner_database_url):
    r = run_clinic("migrate", env={"DATABASE_URL": owner_database_url})
    assert r.returncode == 0, r.stderr
    database = make_url(owner_database_url).database
    assert f"the app connects as the role {database}_app" in r.stdout
