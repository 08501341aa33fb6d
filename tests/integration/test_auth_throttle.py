"""Sign-in throttling (clinic.auth.rules.sign_in_throttle): five failures for one account from one address stop that
pair for 15 minutes; past five failures an address, or an account, waits longer after each; never a hard lock on the
account itself, so an attacker cannot shut a prescriber out. Atomic under concurrency."""

from __future__ import annotations

import asyncio
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


async def test_five_failures_for_an_account_from_one_address_stop_it_there_even_with_the_right_password(client, factory, db):
    clinic = await factory.clinic()
    nurse = await factory.user(clinic, "nurse")
    assert await _fail(client, nurse.email, 5) == [401] * 5

    r = await login(client, nurse.email, PASSWORD)
    assert r.status_code == 429
    assert "Too many failed sign-ins" in r.text
    assert 14 * 60 < int(r.headers["retry-after"]) <= 15 * 60
    assert client.cookies.get("clinic_session") is None

    failed = await _audit_actions(db, "auth.login_failed")
    assert len(failed) == 5 and all(row.clinic_id == clinic.id and row.entity_id == str(nurse.id) for row in failed)
    assert all(row.ip == "127.0.0.1" for row in failed)
    (throttled,) = await _audit_actions(db, "auth.login_throttled")
    assert throttled.clinic_id == clinic.id and throttled.changes["by"] == "account_and_address"
    assert "wrong-password" not in str(failed) + str(throttled)  # passwords are never recorded


async def test_an_attacker_elsewhere_does_not_lock_the_person_out(factory, settings, db, queue):
    from clinic.app import create_app
    from tests.conftest import app_client

    clinic = await factory.clinic()
    prescriber = await factory.user(clinic, "prescriber")
    async with db.transaction() as s:  # an attacker's address has used up its tries on this account, just now
        for _ in range(5):
            s.add(LoginAttempt(email=prescriber.email, ip="198.51.100.7", at=utcnow() - timedelta(seconds=30)))
    async with app_client(create_app(settings, db=db, queue=queue)) as at_the_clinic:
        assert (await login(at_the_clinic, prescriber.email, PASSWORD)).status_code == 303


async def test_four_failures_still_let_the_right_password_in(client, factory):
    clinic = await factory.clinic()
    nurse = await factory.user(clinic, "nurse")
    await _fail(client, nurse.email, 4)
    assert (await login(client, nurse.email, PASSWORD)).status_code == 303


async def test_past_five_failures_an_address_waits_longer_after_each(client, factory, db):
    clinic = await factory.clinic()
    nurse = await factory.user(clinic, "nurse")
    for i in range(5):  # spraying different (unknown) accounts
        assert (await login(client, f"guess{i}@example.org", "wrong-password-123")).status_code == 401
    r = await login(client, nurse.email, PASSWORD)
    assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 2
    (throttled,) = await _audit_actions(db, "auth.login_throttled")
    assert throttled.changes["by"] == "address"
    async with db.sessionmaker() as s:  # the wait has passed: one more try, then a longer wait
        await s.execute(text("UPDATE login_attempts SET at = at - interval '3 seconds' WHERE ip = '127.0.0.1'"))
        await s.commit()
    assert (await login(client, "guess5@example.org", "wrong-password-123")).status_code == 401
    r = await login(client, nurse.email, PASSWORD)
    assert r.status_code == 429 and 3 <= int(r.headers["retry-after"]) <= 4


async def test_the_stop_lifts_when_the_failures_age_out_of_the_window(client, factory, db):
    clinic = await factory.clinic()
    nurse = await factory.user(clinic, "nurse")
    async with db.transaction() as s:
        # five failures from this address just over 15 minutes ago, and four inside the window
        for minutes in (16, 16, 17, 18, 30):
            s.add(LoginAttempt(email=nurse.email, ip="127.0.0.1", at=utcnow() - timedelta(minutes=minutes)))
        for minutes in (2, 3, 4, 14):
            s.add(LoginAttempt(email=nurse.email, ip="127.0.0.1", at=utcnow() - timedelta(minutes=minutes)))
    assert (await login(client, nurse.email, PASSWORD)).status_code == 303

    async with db.transaction() as s:
        s.add(LoginAttempt(email=nurse.email, ip="127.0.0.1", at=utcnow() - timedelta(minutes=14, seconds=50)))
    client.cookies.clear()
    assert (await login(client, nurse.email, PASSWORD)).status_code == 429

    # once the oldest in-window failure is older than 15 minutes, the pair opens again
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


async def _attempts(app, tries: list[tuple[str, str]]) -> list[int]:
    """Wrong-password sign-ins sent all at once, each from its (address, account)."""
    import httpx
    from litestar.middleware.csrf import generate_csrf_token

    csrf = generate_csrf_token(secret=app.state.settings.secret_key)

    async def one(ip: str, email: str) -> int:
        transport = httpx.ASGITransport(app=app, client=(ip, 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as c:
            r = await c.post("/login", data={"email": email, "password": "wrong-password-123", "_csrf_token": csrf},
                             cookies={"csrftoken": csrf})
            return r.status_code

    return list(await asyncio.gather(*(one(ip, email) for ip, email in tries)))


async def _checked(engine_db, sql: str, **params) -> int:
    async with engine_db.sessionmaker() as s:
        return (await s.execute(text(f"SELECT count(*) FROM login_attempts WHERE {sql}"), params)).scalar_one()


async def test_concurrent_wrong_passwords_check_at_most_five_per_account_and_per_address(engine_db, settings, queue):
    from clinic.app import create_app
    from tests.conftest import app_client
    from tests.factories import Factory

    nurse = await Factory(engine_db).user(await Factory(engine_db).clinic(), "nurse")
    async with app_client(create_app(settings, db=engine_db, queue=queue)) as _:
        app = _._transport.app
        # 15 at once for one account from one address, 15 for one account from 15 addresses, 40 from one address
        same = await _attempts(app, [("192.0.2.10", nurse.email)] * 15)
        spread = await _attempts(app, [(f"192.0.2.{100 + i}", "spread@example.org") for i in range(15)])
        sprayed = await _attempts(app, [("192.0.2.20", f"spray{i}@example.org") for i in range(40)])
    for answers in (same, spread, sprayed):
        # 503: a busy database server (shared with other work) may send a few away to retry; never a 500
        assert set(answers) <= {401, 429, 503} and 1 <= answers.count(401) <= 5, answers
    assert await _checked(engine_db, "email = :e", e=nurse.email) <= 5
    assert await _checked(engine_db, "email = 'spread@example.org'") <= 5
    assert await _checked(engine_db, "ip = '192.0.2.20'") <= 5


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
