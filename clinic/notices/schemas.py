"""Notices' JSON shapes under /api/v1: the outbox as billing staff track it (no address, no content)."""

from __future__ import annotations

from msgspec import Struct

from clinic.notices.models import NoticeKind, NoticeStatus
from clinic.timeutil import Instant


class NoticeOut(Struct):
    id: int
    kind: NoticeKind
    status: NoticeStatus
    patient_id: int | None
    appointment_id: int | None
    send_after: Instant
    attempts: int
    last_error: str | None
    message_id: str | None
    sent_at: Instant | None


class NoticeList(Struct):
    items: list[NoticeOut]
    # how many notices are in each status
    counts: dict[str, int]
