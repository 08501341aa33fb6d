"""Demo data for scheduling."""

from __future__ import annotations


async def seed(session, ctx) -> None:
    """Add scheduling demo rows inside the seeding transaction (see clinic.seed.SeedContext)."""
