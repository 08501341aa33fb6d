"""A tablet on flaky Wi-Fi: answers lost, requests cut halfway, double taps; whatever happens, one row per entry.

The tablet page keeps a submission's client_id until the server confirms it (monitoring.js), so every retry below
resends the same client_id, exactly as the page does.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import httpx

from clinic.timeutil import utcnow
from tests.factories import appointment, login
from tests.reliability.helpers import FlakyProxy, rows


async def submit_until_confirmed(client: httpx.AsyncClient, url: str, *, attempts: int = 4, **kw) -> httpx.Response:
    """What the page does: resend the same submission until an answer arrives."""
    last: Exception | None = None
    for _ in range(attempts):
        try:
            return await client.post(url, **kw)
        except httpx.TransportError as exc:
            last = exc
    raise AssertionError(f"no answer after {attempts} tries: {last!r}")


async def checked_in(world, http, app_url):
    patient = world.patients[0]
    appt = await appointment(world.factory, world.clinic, patient, utcnow().replace(microsecond=0) - timedelta(minutes=10))
    r = await http.post(f"{app_url}/api/v1/appointments/{appt.id}/check-in", headers=world.h("nurse"),
                        json={"fasting_confirmed": True, "escort_confirmed": True, "escort_name": "Sam Rivera"})
    assert r.status_code == 200, r.text
    return appt


async def test_tablet_form_resubmissions_after_lost_answers_write_one_row_each(engine_db, settings, live_server, http, world):
    app = live_server(settings)
    appt = await checked_in(world, http, app.url)
    proxy = await FlakyProxy(app.port).start()
    # each request on a new connection, as after a Wi-Fi drop: the proxy's plan applies request by request
    tablet = httpx.AsyncClient(base_url=proxy.url, timeout=10, limits=httpx.Limits(max_keepalive_connections=0))
    try:
        assert (await login(tablet, world.users["nurse"].email)).status_code == 303
        headers = {"x-csrftoken": tablet.cookies["csrftoken"], "HX-Request": "true"}
        url = f"/sessions/{appt.id}/entries"
        entries = []
        faults = [["drop_response"], ["drop_response", "drop_response"], ["cut_request"], ["cut_request", "drop_response"], []]
        for i, plan in enumerate(faults):
            cid = str(uuid.uuid4())
            entries.append((cid, 120 + i))
            proxy.plan = list(plan)
            r = await submit_until_confirmed(tablet, url, headers=headers, data={
                "client_id": cid, "systolic": str(120 + i), "diastolic": "80", "heart_rate": "70", "spo2": "98", "resp_rate": "14"})
            assert r.status_code == 200, r.text
            # the answer that finally arrives is the first one's, and a further retry changes nothing
            r2 = await tablet.post(url, headers=headers, data={"client_id": cid, "systolic": "199", "diastolic": "80"})
            assert r2.status_code == 200

        # a double tap: the same submission twice at once
        cid = str(uuid.uuid4())
        entries.append((cid, 131))
        both = await asyncio.gather(*(tablet.post(url, headers=headers, data={"client_id": cid, "systolic": "131", "diastolic": "85"}) for _ in range(2)))
        assert [r.status_code for r in both] == [200, 200]
    finally:
        await tablet.aclose()
        await proxy.stop()
    assert "drop_response" in proxy.seen and "cut_request" in proxy.seen
    saved = await rows(engine_db, "SELECT client_id::text, systolic FROM clinical_entries WHERE appointment_id = :a ORDER BY id", a=appt.id)
    assert sorted(saved) == sorted(entries), "one row per entry, holding what was first sent"


async def test_api_resubmission_answers_with_the_first_result(engine_db, settings, live_server, http, world):
    app = live_server(settings)
    appt = await checked_in(world, http, app.url)
    proxy = await FlakyProxy(app.port).start()
    nurse = world.h("nurse")
    url = f"/api/v1/appointments/{appt.id}/vitals"
    body = {"client_id": str(uuid.uuid4()), "systolic": 124, "diastolic": 78, "heart_rate": 72, "spo2": 97, "resp_rate": 15}
    try:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as c:
            proxy.plan = ["drop_response", "drop_response"]
            first = await submit_until_confirmed(c, url, headers=nurse, json=body)
            again = await c.post(url, headers=nurse, json=body | {"systolic": 180})
            racing = await asyncio.gather(*(c.post(url, headers=nurse, json=body) for _ in range(5)))
    finally:
        await proxy.stop()
    # the lost first answer was a 201; the tablet is told 200 ("already saved") with that same row
    assert first.status_code == 200 and again.status_code == 200 and {r.status_code for r in racing} == {200}
    assert first.json()["id"] == again.json()["id"] == racing[0].json()["id"]
    assert again.json()["systolic"] == 124
    assert await rows(engine_db, "SELECT count(*) FROM clinical_entries WHERE appointment_id = :a", a=appt.id) == [(1,)]
