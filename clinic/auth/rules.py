"""Password, token and throttling rules (no I/O)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from clinic.errors import RuleBroken

MIN_PASSWORD_LENGTH = 12
MAX_FAILED_LOGINS = 5
THROTTLE_WINDOW = timedelta(minutes=15)

_hasher = PasswordHash((Argon2Hasher(),))
# verifying against this keeps unknown-email logins as slow as wrong-password ones
_DUMMY_HASH = _hasher.hash("not-a-real-password-just-timing")


def check_password(password: str, *, field: str = "password") -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise RuleBroken(f"Password must be at least {MIN_PASSWORD_LENGTH} characters.", field=field, code="password_short")
    if len(password) > 256:
        raise RuleBroken("Password must be at most 256 characters.", field=field, code="password_long")


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


def is_throttled(failures_for_email: int, failures_for_ip: int) -> bool:
    return failures_for_email >= MAX_FAILED_LOGINS or failures_for_ip >= MAX_FAILED_LOGINS
