"""Demo data for billing."""

from __future__ import annotations


async def seed(session, ctx) -> None:
    """Add billing demo rows inside the seeding transaction (see clinic.seed.SeedContext)."""
