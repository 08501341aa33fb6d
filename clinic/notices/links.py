"""Signed, expiring links from a notice to what the patient may see (or answer) after giving their date of birth.

Each purpose signs differently, so a token made for one page (costs, a questionnaire, the opened-questionnaire cookie)
is refused by every other."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, timezone


class LinkProblem(ValueError):
    """A link that was altered, is malformed, or has expired (then `link_id` is set: the signature was good)."""

    def __init__(self, reason: str, link_id: int | None = None) -> None:
        super().__init__(reason)
        self.link_id = link_id


PATHS = {"cost": "/e/", "questionnaire": "/q/"}  # where a notice's link of each purpose leads


def _sig(secret: str, link_id: int, expires: int, purpose: str) -> str:
    mac = hmac.new(secret.encode(), f"{purpose}-link:{link_id}.{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:18]).decode().rstrip("=")


def sign(secret: str, link_id: int, expires_at: datetime, purpose: str = "cost") -> str:
    expires = int(expires_at.timestamp())
    return f"{link_id}.{expires}.{_sig(secret, link_id, expires, purpose)}"


def verify(secret: str, token: str, now: datetime | None = None, purpose: str = "cost") -> int:
    """The link id, or LinkProblem("tampered" | "expired")."""
    parts = token.split(".")
    # ASCII only: "٣".isdigit() is true, and compare_digest raises on non-ASCII text instead of saying "no"
    if len(parts) != 3 or not token.isascii() or not parts[0].isdigit() or not parts[1].isdigit() or len(token) > 200:
        raise LinkProblem("tampered")
    link_id, expires = int(parts[0]), int(parts[1])
    if not hmac.compare_digest(parts[2], _sig(secret, link_id, expires, purpose)):
        raise LinkProblem("tampered")
    if (now or datetime.now(timezone.utc)).timestamp() >= expires:
        raise LinkProblem("expired", link_id)
    return link_id
