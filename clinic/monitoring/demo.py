"""Demo data for monitoring."""

from __future__ import annotations


async def seed(session, ctx) -> None:
    """Add monitoring demo rows inside the seeding transaction (see clinic.seed.SeedContext)."""
