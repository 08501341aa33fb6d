"""The live board across web processes: two app instances, each with its own LISTEN connection, over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import date, timedelta

import httpx
import pytest
import uvicorn
from sqlalchemy import text

from clinic.app import create_app
from clinic.monitoring import live
from clinic.timeutil import utcnow
from tests.factories import Factory, appointment, bearer


@contextlib.asynccontextmanager
async def served(app) -> AsyncIterator[str]:
    """A real uvicorn server for `app` on a free loopback port (its lifespan stops the app's listener)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


async def events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs of a text/event-stream."""
    name, data = "message", []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield name, "\n".join(data)
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


async def next_event(stream: AsyncIterator[tuple[str, str]], wanted: str, timeout: float) -> tuple[float, str]:
    start = time.monotonic()
    async with asyncio.timeout(timeout):
        async for name, data in stream:
            if name == wanted:
                return time.monotonic() - start, data
    raise AssertionError("stream ended")


@pytest.fixture
async def live_session(engine_db):
    """A checked-in esketamine session in a fresh clinic, committed (the listener sees only committed work)."""
    f = Factory(engine_db)
    clinic = await f.clinic(chairs=2)
    nurse = await f.user(clinic, "nurse")
    patient = await f.patient(clinic, first_name="Morgan", last_name="Lee", rems_enrolled_on=date(2024, 1, 1), rems_patient_id="RP-1")
    appt = await appointment(f, clinic, patient, utcnow() - timedelta(minutes=20), status="arrived", checked_in_at=utcnow() - timedelta(minutes=15), escort_confirmed=True)
    return clinic, appt, await f.token(nurse)


async def test_an_entry_on_one_web_process_reaches_a_board_on_another_within_two_seconds(settings, engine_db, queue, live_session):
    clinic, appt, token = live_session
    app_a = create_app(settings, db=engine_db, queue=queue)
    app_b = create_app(settings, db=engine_db, queue=queue)
    async with served(app_a) as url_a, served(app_b) as url_b:
        async with httpx.AsyncClient(base_url=url_a, headers=bearer(token)) as tablet, httpx.AsyncClient(base_url=url_b, headers=bearer(token), timeout=10) as wall:
            async with wall.stream("GET", "/board/stream") as r:
                assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
                stream = events(r)
                _, first = await next_event(stream, "board", 5)
                assert "Morgan L." in first and "SpO2 89%" not in first
                posted = await tablet.post(f"/api/v1/appointments/{appt.id}/vitals", json={"client_id": str(uuid.uuid4()), "spo2": 89, "systolic": 126, "diastolic": 80})
                assert posted.status_code == 201
                elapsed, board = await next_event(stream, "board", 2.5)
                assert elapsed < 2.0
                assert "SpO2 89% is below 92%" in board and "urgent" in board
    assert app_a.state.get("board_listener") is None  # process A served no board: it never opened a LISTEN connection
    assert app_b.state["board_listener"].connected is False  # stopped at shutdown


async def test_a_reconnecting_board_catches_up_with_what_it_missed(settings, engine_db, queue, live_session):
    clinic, appt, token = live_session
    app = create_app(settings, db=engine_db, queue=queue)
    async with served(app) as url, httpx.AsyncClient(base_url=url, headers=bearer(token), timeout=10) as c:
        async with c.stream("GET", "/board/stream") as r:
            _, first = await next_event(events(r), "board", 5)
            assert "HR 131" not in first and "Heart rate 131" not in first
        # the board is away while a nurse charts
        assert (await c.post(f"/api/v1/appointments/{appt.id}/vitals", json={"client_id": str(uuid.uuid4()), "heart_rate": 131})).status_code == 201
        async with c.stream("GET", "/board/stream") as r:
            _, again = await next_event(events(r), "board", 5)
            assert "Heart rate 131/min is above 120/min" in again


async def test_the_board_redraws_on_a_timer_so_overdue_checks_appear_without_entries(settings, engine_db, queue, live_session, monkeypatch):
    clinic, appt, _ = live_session
    monkeypatch.setattr(live, "TICK_SECONDS", 0.2)
    app = create_app(settings, db=engine_db, queue=queue)
    got = []
    stream = live.board_events(app, clinic.id, stream_seconds=1.0)
    async for message in stream:
        got.append(message.event)
    assert got.count("board") >= 3  # the first render and at least two ticks, with nothing written
    for stop in app.state.listeners:
        await stop()


async def test_the_listener_survives_a_dropped_connection(settings, engine_db, queue, live_session):
    clinic, appt, _ = live_session
    app = create_app(settings, db=engine_db, queue=queue)
    listener = live.board_listener(app)
    channel = f"board_{clinic.id}"
    q = await listener.subscribe(channel)
    try:
        pid = listener._conn.get_server_pid()  # type: ignore[union-attr]
        async with engine_db.engine.connect() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            await conn.commit()
        async with asyncio.timeout(5):
            assert await q.get() == live.RECONNECTED  # subscribers are told to redraw: they may have missed something
        async with engine_db.engine.connect() as conn:
            await conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": channel, "p": '{"appointment_id": 1}'})
            await conn.commit()
        async with asyncio.timeout(5):
            assert await q.get() == '{"appointment_id": 1}'
    finally:
        await listener.unsubscribe(channel, q)
        await listener.stop()


async def test_a_session_page_stream_only_reacts_to_its_own_session(settings, engine_db, queue, live_session):
    clinic, appt, token = live_session
    app = create_app(settings, db=engine_db, queue=queue)
    stream = live.session_events(app, clinic.id, appt.id, stream_seconds=3)
    first = await stream.__anext__()
    assert first.comment == "connected"
    async with engine_db.engine.connect() as conn:
        await conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": f"board_{clinic.id}", "p": '{"appointment_id": -1}'})
        await conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": f"board_{clinic.id}", "p": '{"appointment_id": %d}' % appt.id})
        await conn.commit()
    message = await asyncio.wait_for(stream.__anext__(), timeout=3)
    assert message.event == "session" and message.data == "changed"
    await stream.aclose()
    for stop in app.state.listeners:
        await stop()


async def test_a_rolled_back_write_notifies_no_one(settings, engine_db, queue, live_session):
    clinic, appt, _ = live_session
    app = create_app(settings, db=engine_db, queue=queue)
    listener = live.board_listener(app)
    q = await listener.subscribe(f"board_{clinic.id}")
    try:
        async with engine_db.engine.connect() as conn:
            await conn.execute(text("SELECT pg_notify(:c, 'x')"), {"c": f"board_{clinic.id}"})
            await conn.rollback()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(q.get(), timeout=0.5)
    finally:
        await listener.stop()


async def test_boards_woken_by_one_change_share_one_render(settings, engine_db, queue, live_session, monkeypatch):
    clinic, appt, token = live_session
    app = create_app(settings, db=engine_db, queue=queue)
    renders = 0
    real = live.render_board_fragment

    async def counting(app_, clinic_id, *view):
        nonlocal renders
        renders += 1
        return await real(app_, clinic_id, *view)

    monkeypatch.setattr(live, "render_board_fragment", counting)
    streams = [live.board_events(app, clinic.id, stream_seconds=5) for _ in range(4)]
    firsts = await asyncio.gather(*(s.__anext__() for s in streams))
    assert all("Morgan L." in m.data for m in firsts)
    before = renders
    async with engine_db.engine.connect() as conn:
        await conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": f"board_{clinic.id}", "p": '{"appointment_id": %d}' % appt.id})
        await conn.commit()
    updates = await asyncio.wait_for(asyncio.gather(*(s.__anext__() for s in streams)), timeout=5)
    assert len(updates) == 4 and renders - before == 1
    for s in streams:
        await s.aclose()
    for stop in app.state.listeners:
        await stop()
