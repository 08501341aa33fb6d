"""Many front desks at once, at random: bookings, moves and cancellations racing for three chairs.

Afterwards the database holds no overlapping live appointments (checked with a self-join, independent of the
constraints that should have caused it) and exactly the outcome of every operation the API said it accepted.
"""

from __future__ import annotations

import asyncio
import os
import random
from datetime import datetime
from zoneinfo import ZoneInfo

from clinic.app import create_app
from tests.conftest import app_client
from tests.reliability.conftest import NY, make_world
from tests.reliability.helpers import rows

SEED = int(os.environ.get("RELIABILITY_SEED", random.randrange(1_000_000)))
UTC = ZoneInfo("UTC")
WAVES, PER_WAVE = 6, 18

OVERLAPS = """
SELECT a.id, b.id, CASE WHEN a.chair_id = b.chair_id THEN 'chair' ELSE 'patient' END
FROM appointments a JOIN appointments b
  ON a.clinic_id = b.clinic_id AND a.id < b.id
 AND (a.chair_id = b.chair_id OR a.patient_id = b.patient_id)
 AND tstzrange(a.starts_at, a.ends_at) && tstzrange(b.starts_at, b.ends_at)
WHERE a.clinic_id = :c AND a.status NOT IN ('cancelled', 'noshow') AND b.status NOT IN ('cancelled', 'noshow')
"""


def utc(value: dict) -> datetime:
    return datetime.fromisoformat(value["utc"]).astimezone(UTC)


async def test_random_storm_of_book_move_cancel_leaves_no_overlap_and_every_accepted_change(settings, engine_db, queue):
    rng = random.Random(SEED)
    world = await make_world(engine_db, chairs=3, patients=10, nurses=4)
    h = world.h("front_desk")
    day = world.day
    starts = [datetime(day.year, day.month, day.day, hh, mm, tzinfo=NY) for hh in range(8, 15) for mm in (0, 15, 30, 45)]
    known: dict[int, dict] = {}  # appointment id -> what the API said about it last
    tally = {"book": [0, 0], "move": [0, 0], "cancel": [0, 0]}  # accepted, refused
    app = create_app(settings, db=engine_db, queue=queue)

    async with app_client(app) as c:
        async def book():
            body = {"patient_id": rng.choice(world.patients).id, "chair_id": rng.choice(world.chairs),
                    "starts_at": rng.choice(starts).isoformat()}
            body |= {"session_type": "esketamine", "planned_dose_mg": 56} if rng.random() < 0.5 else {"session_type": "ketamine_iv"}
            return "book", None, await c.post("/api/v1/appointments", headers=h, json=body)

        async def move(aid):
            body = {"starts_at": rng.choice(starts).isoformat(), "chair_id": rng.choice(world.chairs)}
            return "move", aid, await c.post(f"/api/v1/appointments/{aid}/move", headers=h, json=body)

        async def cancel(aid):
            return "cancel", aid, await c.post(f"/api/v1/appointments/{aid}/cancel", headers=h, json={"reason": "patient request"})

        for _ in range(WAVES):
            live = [aid for aid, a in known.items() if a["status"] == "booked"]
            rng.shuffle(live)
            ops = []
            for _ in range(PER_WAVE):
                roll = rng.random()
                # one operation per existing appointment per wave, so each accepted answer is that appointment's final word
                if roll < 0.3 and live:
                    ops.append(move(live.pop()))
                elif roll < 0.45 and live:
                    ops.append(cancel(live.pop()))
                else:
                    ops.append(book())
            for kind, aid, r in await asyncio.gather(*ops):
                assert r.status_code in (200, 201, 409), (SEED, kind, r.status_code, r.text)
                if r.status_code == 409:
                    tally[kind][1] += 1
                    body = r.json()
                    assert body["detail"] and body.get("code"), (SEED, body)
                    continue
                tally[kind][0] += 1
                a = r.json()
                known[a["id"]] = {"status": a["status"], "chair_id": a["chair_id"], "starts_at": utc(a["starts_at"]), "ends_at": utc(a["ends_at"]),
                                  "patient_id": a["patient_id"]}
                assert a["status"] == ("cancelled" if kind == "cancel" else "booked"), (SEED, kind, a)

    overlaps = await rows(engine_db, OVERLAPS, c=world.clinic.id)
    assert not overlaps, f"seed {SEED}: overlapping live appointments {overlaps}"
    saved = {r.id: {"status": r.status, "chair_id": r.chair_id, "starts_at": r.starts_at, "ends_at": r.ends_at, "patient_id": r.patient_id}
             for r in await rows(engine_db, "SELECT id, status, chair_id, starts_at, ends_at, patient_id FROM appointments WHERE clinic_id = :c", c=world.clinic.id)}
    assert saved == known, f"seed {SEED}: the database differs from what the API accepted"
    # the storm really raced: every kind of operation was both accepted and refused somewhere
    assert tally["book"][0] >= 5 and tally["book"][1] >= 5 and tally["move"][0] >= 1 and tally["cancel"][0] >= 3, (SEED, tally)
