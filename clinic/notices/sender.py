"""Delivering one outbox notice over SMTP."""

from __future__ import annotations


async def deliver(db, settings, notice_id: int) -> str:
    raise NotImplementedError
