"""Password, NPI, email, token and idle rules (no I/O)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from clinic.auth.middleware import idle_minutes
from clinic.auth.rules import (
    check_email,
    check_npi,
    check_password,
    hash_password,
    is_idle_expired,
    RecentFailures,
    Throttled,
    sign_in_throttle,
    new_token,
    token_hash,
    verify_password,
)
from clinic.auth.web import safe_next
from clinic.errors import RuleBroken

T0 = datetime(2030, 1, 7, 9, 0, tzinfo=timezone.utc)


def refusal(check, value) -> RuleBroken | None:
    try:
        check(value)
    except RuleBroken as exc:
        return exc
    return None


def test_password_length_rules():
    assert refusal(check_password, "x" * 11).detail == "Password must be at least 12 characters."
    assert refusal(check_password, "x" * 11).field == "password"
    assert refusal(check_password, "k7#Qm2!vRx9p") is None
    assert refusal(check_password, "x" * 256) is None
    assert refusal(check_password, "x" * 257) is not None


def test_common_and_breached_passwords_are_refused_whatever_their_length():
    for known in ("aaaaaaaaaaaa", "password1234", "qwertyuiop12", "xxxxxxxxxxxx"):
        refused = refusal(check_password, known)
        assert refused is not None and refused.code == "password_common" and refused.field == "password", known
    assert refusal(check_password, "correct-horse-battery") is None


def test_argon2_hash_verifies_only_the_right_password():
    h = hash_password("correct-horse-battery")
    assert h.startswith("$argon2")
    assert verify_password("correct-horse-battery", h)
    assert not verify_password("correct-horse-batterY", h)
    assert not verify_password("anything", None)  # unknown account
    assert not verify_password("anything", "not-a-hash")


def test_npi_check_digit():
    assert refusal(check_npi, "") is None
    assert refusal(check_npi, "1234567893") is None  # the CMS example
    assert refusal(check_npi, "1234567890") is not None
    assert refusal(check_npi, "123456789") is not None
    assert refusal(check_npi, "12345678a3") is not None


@given(st.from_regex(r"[0-9]{9}", fullmatch=True))
def test_exactly_one_check_digit_makes_an_npi_valid(prefix):
    assert sum(refusal(check_npi, prefix + str(d)) is None for d in range(10)) == 1


def test_email_shape():
    assert refusal(check_email, "nurse@clinic.example") is None
    for bad in ("", "nurse", "@clinic.example", "nurse@", "nurse@clinic", "nu rse@clinic.example", "a@.example"):
        assert refusal(check_email, bad) is not None, bad


def test_tokens_are_random_and_stored_as_hashes():
    raw1, h1 = new_token("ct_")
    raw2, h2 = new_token("ct_")
    assert raw1 != raw2 and raw1.startswith("ct_") and len(raw1) > 40
    assert h1 == token_hash(raw1) and len(h1) == 64 and raw1 not in h1


def test_idle_expiry_boundary():
    assert not is_idle_expired(T0, T0 + timedelta(minutes=15), 15)
    assert is_idle_expired(T0, T0 + timedelta(minutes=15, seconds=1), 15)


def test_clinic_idle_setting_is_used_only_when_sane():
    assert idle_minutes(None, 15) == 15
    assert idle_minutes("10", 15) == 10
    assert idle_minutes("0", 15) == 15
    assert idle_minutes("ten", 15) == 15
    assert idle_minutes("100000", 15) == 15
    # a clinic may only shorten the server's limit
    assert idle_minutes("16", 15) == 15 and idle_minutes("15", 15) == 15 and idle_minutes("1", 15) == 1


def _recent(**kw) -> RecentFailures:
    base = dict(pair=0, pair_first=None, address=0, address_last=None, account=0, account_last=None)
    return RecentFailures(**{**base, **kw})


def test_one_account_from_one_address_stops_at_five_failures_until_the_first_ages_out():
    first = T0 - timedelta(minutes=10)
    four = _recent(pair=4, pair_first=first, address=4, address_last=T0, account=4, account_last=T0)
    assert sign_in_throttle(four, T0) is None
    five = _recent(pair=5, pair_first=first, address=5, address_last=T0 - timedelta(minutes=9), account=5, account_last=T0 - timedelta(minutes=9))
    assert sign_in_throttle(five, T0) == Throttled("account_and_address", 5 * 60)
    assert sign_in_throttle(five, first + timedelta(minutes=15)) is None


def test_an_address_or_an_account_past_five_failures_waits_longer_after_each():
    for by in ("address", "account"):
        def at(n: int, seconds_ago: float) -> RecentFailures:
            return _recent(**{by: n, f"{by}_last": T0 - timedelta(seconds=seconds_ago)})

        assert sign_in_throttle(at(4, 0), T0) is None  # four free failures
        assert sign_in_throttle(at(5, 0), T0) == Throttled(by, 2)
        assert sign_in_throttle(at(5, 1.5), T0) == Throttled(by, 1)
        assert sign_in_throttle(at(5, 2), T0) is None
        assert sign_in_throttle(at(6, 3.9), T0) == Throttled(by, 1) and sign_in_throttle(at(6, 4), T0) is None
        assert sign_in_throttle(at(8, 15), T0) == Throttled(by, 1) and sign_in_throttle(at(8, 16), T0) is None


def test_the_wait_stops_growing_at_fifteen_minutes_per_address_and_one_per_account():
    many = _recent(address=40, address_last=T0, account=40, account_last=T0 - timedelta(minutes=20))
    assert sign_in_throttle(many, T0) == Throttled("address", 15 * 60)
    person = _recent(address=1, address_last=T0, account=40, account_last=T0)
    assert sign_in_throttle(person, T0) == Throttled("account", 60)  # the real person never waits more than a minute
    assert sign_in_throttle(person, T0 + timedelta(seconds=60)) is None


def test_next_stays_on_this_site():
    assert safe_next("/schedule?date=2030-01-07") == "/schedule?date=2030-01-07"
    for bad in (None, "", "schedule", "//evil.example", "https://evil.example/x", "/\\evil.example", "/x\r\nSet-Cookie: a=b", "javascript:alert(1)"):
        assert safe_next(bad) is None, bad
