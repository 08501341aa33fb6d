"""Login throttling: 5 failures for an account or from an address within 15 minutes -> 429 until the window passes."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text

from clinic.auth.models import LoginAttempt
from clinic.timeutil import utcnow
from tests.factories import PASSWORD, login


async def _fail(client, email: str, n: int) -> list[int]:
    return [(await login(client, email, "wrong-password-123")).status_code for _ in range(n)]


async def _audit_actions(db, action: str) -> list:
    async with db.sessionmaker() as s:
        q = text("SELECT clinic_id, user_id, entity_id, ip, changes FROM audit_events WHERE action = :a ORDER BY id")
        return list((await s.execute(q, {"a": action})).all())


async def test_five_failures_for_an_account_lock_it_even_with_the_right_password(client, factory, db):
    clinic = await factory.clinic()
    nurse = await factory.user(clinic, "nurse")
    assert await _fail(client, nurse.email, 5) == [401] * 5

    r = await login(client, nurse.email, PASSWORD)
    assert r.status_code == 429
    assert "Too many failed sign-ins" in r.text
    assert client.cookies.get("clinic_session") is None

    failed = await _audit_actions(db, "auth.login_failed")
    assert len(failed) == 5 and all(row.clinic_id == clinic.id and row.entity_id == str(nurse.id) for row in failed)
    assert all(row.ip == "127.0.0.1" for row in failed)
    (throttled,) = await _audit_actions(db, "auth.login_throttled")
    assert throttled.clinic_id == clinic.id and throttled.changes["by"] == "account"
    assert "wrong-password" not in str(failed) + str(throttled)  # passwords are never recorded


async def test_four_failures_still_let_the_right_password_in(client, factory):
    clinic = await factory.clinic()
    nurse = await factory.user(clinic, "nurse")
    await _fail(client, nurse.email, 4)
    assert (await login(client, nurse.email, PASSWORD)).status_code == 303


async def test_five_failures_from_one_address_lock_every_account_from_it(client, factory, db):
    clinic = await factory.clinic()
    nurse = await factory.user(clinic, "nurse")
    for i in range(5):  # spraying different (unknown) accounts
        assert (await login(client, f"guess{i}@example.org", "wrong-password-123")).status_code == 401
    r = await login(client, nurse.email, PASSWORD)
    assert r.status_code == 429
    (throttled,) = await _audit_actions(db, "auth.login_throttled")
    assert throttled.changes["by"] == "address"


async def test_the_lock_lifts_when_the_failures_age_out_of_the_window(client, factory, db):
    clinic = await factory.clinic()
    nurse = await factory.user(clinic, "nurse")
    async with db.transaction() as s:
        # five failures just over 15 minutes ago, and four inside the window
        for minutes in (16, 16, 17, 18, 30):
            s.add(LoginAttempt(email=nurse.email, ip="10.0.0.9", at=utcnow() - timedelta(minutes=minutes)))
        for minutes in (1, 2, 3, 14):
            s.add(LoginAttempt(email=nurse.email, ip="10.0.0.9", at=utcnow() - timedelta(minutes=minutes)))
    assert (await login(client, nurse.email, PASSWORD)).status_code == 303

    async with db.transaction() as s:
        s.add(LoginAttempt(email=nurse.email, ip="10.0.0.9", at=utcnow() - timedelta(minutes=14, seconds=50)))
    client.cookies.clear()
    assert (await login(client, nurse.email, PASSWORD)).status_code == 429

    # once the oldest in-window failure is older than 15 minutes, the account opens again
    async with db.sessionmaker() as s:
        await s.execute(text("UPDATE login_attempts SET at = at - interval '1 minute' WHERE email = :e AND at < now() - interval '14 minutes'"), {"e": nurse.email})
        await s.commit()
    assert (await login(client, nurse.email, PASSWORD)).status_code == 303


async def test_throttled_answers_do_not_extend_the_lock(client, factory, db):
    clinic = await factory.clinic()
    nurse = await factory.user(clinic, "nurse")
    await _fail(client, nurse.email, 5)
    assert await _fail(client, nurse.email, 3) == [429] * 3
    async with db.sessionmaker() as s:
        count = (await s.execute(text("SELECT count(*) FROM login_attempts WHERE email = :e"), {"e": nurse.email})).scalar_one()
    assert count == 5


async def test_unknown_email_wrong_password_and_deactivated_account_look_the_same(client, factory):
    clinic = await factory.clinic()
    nurse = await factory.user(clinic, "nurse")
    gone = await factory.user(clinic, "nurse", active=False)
    answers = [
        await login(client, nurse.email, "wrong-password-123"),
        await login(client, "nobody@example.org", "wrong-password-123"),
        await login(client, gone.email, PASSWORD),
    ]
    assert {r.status_code for r in answers} == {401}
    bodies = {r.text.replace(nurse.email, "E").replace("nobody@example.org", "E").replace(gone.email, "E") for r in answers}
    assert len(bodies) == 1


async def test_email_case_and_spaces_count_as_one_account(client, factory):
    clinic = await factory.clinic()
    nurse = await factory.user(clinic, "nurse")
    for variant in (nurse.email.upper(), f"  {nurse.email}", nurse.email.title(), nurse.email, nurse.email.upper()):
        await login(client, variant, "wrong-password-123")
    assert (await login(client, nurse.email, PASSWORD)).status_code == 429


async def test_the_hourly_prune_drops_stale_sign_in_rows_and_keeps_what_a_sign_in_still_uses(client, factory, db, settings):
    from workers import jobs

    clinic = await factory.clinic()
    nurse = await factory.user(clinic, "nurse")
    await _fail(client, nurse.email, 2)  # recent failures: the throttle still counts them
    assert (await login(client, nurse.email, PASSWORD)).status_code == 303  # a live browser session
    now = utcnow()
    async with db.transaction() as s:
        await s.execute(text("INSERT INTO login_attempts (email, ip, at, success) VALUES ('old@example.org', '10.0.0.9', :at, false)"),
                        {"at": now - timedelta(days=2)})
        for ended, seen in ((now - timedelta(days=8), now - timedelta(days=8)), (None, now - timedelta(days=9)), (now - timedelta(days=2), now - timedelta(days=2))):
            await s.execute(text("INSERT INTO web_sessions (token_hash, user_id, created_at, last_seen_at, ended_at) VALUES (md5(random()::text), :u, :seen, :seen, :ended)"),
                            {"u": nurse.id, "seen": seen, "ended": ended})
    assert await jobs.prune_sign_ins({"db": db, "settings": settings}) >= 3
    async with db.sessionmaker() as s:
        attempts = (await s.execute(text("SELECT email FROM login_attempts WHERE email IN (:a, 'old@example.org')"), {"a": nurse.email})).scalars().all()
        sessions = (await s.execute(text("SELECT ended_at IS NULL AS live, last_seen_at > :day AS recent FROM web_sessions WHERE user_id = :u"),
                                    {"u": nurse.id, "day": now - timedelta(days=1)})).all()
    assert sorted(attempts) == [nurse.email] * 3  # two failures and the success of today; the two-day-old row is gone
    assert sorted((r.live, r.recent) for r in sessions) == [(False, False), (True, True)]  # ended 2 days ago, and today's
    assert (await client.get("/board")).status_code == 200  # still signed in
