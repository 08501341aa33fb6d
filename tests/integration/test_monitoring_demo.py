"""The demo seed leaves today's board alive: every phase, for esketamine and IV, whenever the demo starts."""

from __future__ import annotations

from sqlmodel import select

from clinic.monitoring.board import load_board
from clinic.monitoring.models import Alert
from clinic.scheduling.models import Appointment
from clinic.seed import seed_demo


async def test_the_demo_board_shows_every_phase_for_both_kinds(db):
    clinic = await seed_demo(db, patients=24, days=3)
    async with db.sessionmaker() as s:
        board = await load_board(s, clinic_id=clinic.id)
        phases: dict[str, set[str]] = {}
        for row in board.chairs:
            for card in row.active + row.later + row.done:
                phases.setdefault(card.protocol.kind, set()).add(card.phase)
        open_alerts = (await s.exec(select(Alert).where(Alert.clinic_id == clinic.id, Alert.acknowledged_at.is_(None)))).all()  # type: ignore[union-attr]
        live = (await s.exec(select(Appointment).where(Appointment.clinic_id == clinic.id, Appointment.status.in_(("arrived", "in_progress"))))).all()  # type: ignore[attr-defined]
    for kind in ("esketamine", "ketamine_iv"):
        assert {"booked", "checked_in", "monitoring", "ready", "discharged"} <= phases[kind], (kind, phases[kind])
    assert {a.code for a in open_alerts} >= {"bp_high", "hr_high", "pre_dose_bp"}
    assert board.overdue_count >= 1 and len(live) >= 6
