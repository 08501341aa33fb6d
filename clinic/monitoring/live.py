"""Live updates for every web process: one LISTEN connection per process, fanned out to SSE streams.

A write sends pg_notify('board_<clinic>') inside its transaction; Postgres delivers it to
every process that listens once the transaction commits. Each subscriber (a board or a
session page) gets its own asyncio.Queue; streams render from their own short sessions,
never from a request's injected one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from litestar import Request
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage

from clinic.auth.streams import while_signed_in
from clinic.monitoring.board import load_board
from clinic.monitoring.service import channel

log = logging.getLogger("clinic.monitoring.live")

RECONNECTED = "__reconnected__"  # told to subscribers after a lost connection: they may have missed events
TICK_SECONDS = 30.0  # overdue checks advance with time even when nobody writes
COALESCE_SECONDS = 0.05  # a burst of notifications becomes one render
STREAM_SECONDS = 300.0  # streams end and reconnect now and then (a revoked login stops at once: clinic.auth.streams)
RETRY_MS = 2000


class BoardListener:
    """The process's one LISTEN connection; started on the first subscriber, re-established if it drops."""

    def __init__(self, dsn: str, *, keepalive_seconds: float = 30.0) -> None:
        self.dsn = dsn
        self.keepalive_seconds = keepalive_seconds
        self._conn: asyncpg.Connection | None = None
        self._subs: dict[str, set[asyncio.Queue[str]]] = defaultdict(set)
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._closed = False

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def subscribe(self, name: str) -> asyncio.Queue[str]:
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=256)
        async with self._lock:
            await self._ensure_connected()
            if not self._subs[name]:
                await self._conn.add_listener(name, self._deliver)  # type: ignore[union-attr]
            self._subs[name].add(queue)
        return queue

    async def unsubscribe(self, name: str, queue: asyncio.Queue[str]) -> None:
        async with self._lock:
            subs = self._subs.get(name)
            if subs is None:
                return
            subs.discard(queue)
            if not subs:
                del self._subs[name]
                if self.connected:
                    with contextlib.suppress(Exception):
                        await self._conn.remove_listener(name, self._deliver)  # type: ignore[union-attr]

    def subscriber_count(self, name: str) -> int:
        return len(self._subs.get(name, ()))

    def _deliver(self, _conn: Any, _pid: int, name: str, payload: str) -> None:
        for queue in list(self._subs.get(name, ())):
            with contextlib.suppress(asyncio.QueueFull):  # a full queue re-renders everything anyway
                queue.put_nowait(payload)

    def _broadcast(self, payload: str) -> None:
        for name in list(self._subs):
            self._deliver(None, 0, name, payload)

    async def _ensure_connected(self) -> None:
        if self.connected:
            return
        if self._closed:
            raise RuntimeError("the board listener is stopped")
        conn = await asyncpg.connect(self.dsn, timeout=5, server_settings={"application_name": "clinic-board-listener"})
        conn.add_termination_listener(self._on_lost)
        for name in self._subs:
            await conn.add_listener(name, self._deliver)
        self._conn = conn
        if self.keepalive_seconds and not any(t.get_name() == "board-keepalive" for t in self._tasks):
            self._spawn(self._keepalive(), "board-keepalive")

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_lost(self, _conn: Any) -> None:
        if self._closed:
            return
        log.warning("board listener lost its connection; reconnecting")
        self._spawn(self._reconnect(), "board-reconnect")

    async def _reconnect(self) -> None:
        delay = 0.25
        while not self._closed:
            try:
                async with self._lock:
                    await self._ensure_connected()
                self._broadcast(RECONNECTED)
                return
            except Exception as exc:  # Postgres away: keep trying, slower
                log.warning("board listener reconnect failed: %s", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _keepalive(self) -> None:
        """A silent half-open TCP connection never fires the termination listener; a ping finds it."""
        while not self._closed:
            await asyncio.sleep(self.keepalive_seconds)
            conn = self._conn
            if conn is None or conn.is_closed():
                continue
            try:
                await asyncio.wait_for(conn.fetchval("SELECT 1"), timeout=5)
            except Exception:
                with contextlib.suppress(Exception):
                    conn.terminate()  # fires _on_lost

    async def stop(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._conn is not None and not self._conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._conn.close(), timeout=2)
        self._conn = None


def board_listener(app: Any) -> BoardListener:
    """The app's listener, created on first use; its stop() runs at shutdown."""
    listener = app.state.get("board_listener")
    if listener is None:
        listener = BoardListener(app.state.db.dsn)
        app.state["board_listener"] = listener
        app.state.listeners.append(listener.stop)
    return listener


async def render_board_fragment(app: Any, clinic_id: int, clinical: bool = True) -> str:
    async with app.state.db.sessionmaker() as session:
        board = await load_board(session, clinic_id=clinic_id)
        template = app.template_engine.get_template("monitoring/_board.html")
        return template.render(board=board, tz=board.tz, clinical=clinical)


async def shared_board_fragment(app: Any, clinic_id: int, *, not_before: float, clinical: bool = True) -> str:
    """One render per clinic for every board of this process woken by the same change.

    A render already under way is shared only if it started after `not_before` (when the
    caller learned of the change), so nobody is handed a board older than what woke it.
    """
    flights: dict[tuple[int, bool], tuple[float, asyncio.Task[str]]] = app.state.get("board_renders")  # type: ignore[assignment]
    if flights is None:
        flights = {}
        app.state["board_renders"] = flights
    loop = asyncio.get_running_loop()
    key = (clinic_id, clinical)  # the clinical board and the front desk's (who is where, the phase) render apart
    current = flights.get(key)
    if current is None or current[0] < not_before or (current[1].done() and loop.time() - current[0] > COALESCE_SECONDS):
        current = (loop.time(), loop.create_task(render_board_fragment(app, clinic_id, clinical)))
        flights[key] = current
    return await asyncio.shield(current[1])


async def _wait(queue: asyncio.Queue[str], timeout: float) -> list[str]:
    """Payloads that arrived within `timeout` (coalescing a burst); empty on a quiet tick."""
    try:
        first = await asyncio.wait_for(queue.get(), timeout=timeout)
    except asyncio.TimeoutError:
        return []
    await asyncio.sleep(COALESCE_SECONDS)
    out = [first]
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


async def board_events(app: Any, clinic_id: int, *, stream_seconds: float = STREAM_SECONDS, clinical: bool = True) -> AsyncIterator[ServerSentEventMessage]:
    """The whole board on connect (a reconnect catches up), then again on every change and every tick."""
    listener = board_listener(app)
    name = channel(clinic_id)
    queue = await listener.subscribe(name)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + stream_seconds
    try:
        first = True
        while first or (left := deadline - loop.time()) > 0:
            if not first:
                await _wait(queue, min(TICK_SECONDS, left))
                if loop.time() >= deadline:
                    break
            # the change reached this process about COALESCE_SECONDS before the wake-up; any render begun since then
            # shows it. A (re)connect may have missed anything, so it shares only a render begun from now on.
            woke = loop.time() if first else loop.time() - COALESCE_SECONDS
            try:
                html = await shared_board_fragment(app, clinic_id, not_before=woke, clinical=clinical)
            except Exception as exc:  # database away: end the stream; the browser reconnects and catches up
                log.warning("board render failed: %s", type(exc).__name__)
                return
            yield ServerSentEventMessage(event="board", data=html, retry=RETRY_MS if first else None)
            first = False
    finally:
        await listener.unsubscribe(name, queue)


async def session_events(app: Any, clinic_id: int, appointment_id: int, *, stream_seconds: float = STREAM_SECONDS) -> AsyncIterator[ServerSentEventMessage]:
    """'changed' whenever something is written on this session from any tablet; the page then refreshes itself."""
    listener = board_listener(app)
    name = channel(clinic_id)
    queue = await listener.subscribe(name)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + stream_seconds
    try:
        yield ServerSentEventMessage(data=None, comment="connected", retry=RETRY_MS)
        while (left := deadline - loop.time()) > 0:
            payloads = await _wait(queue, min(TICK_SECONDS, left))
            if not payloads:
                yield ServerSentEventMessage(data=None, comment="tick")
                continue
            if any(p == RECONNECTED or _appointment_of(p) == appointment_id for p in payloads):
                yield ServerSentEventMessage(event="session", data="changed")
    finally:
        await listener.unsubscribe(name, queue)


def _appointment_of(payload: str) -> int | None:
    try:
        return int(json.loads(payload).get("appointment_id"))
    except (ValueError, TypeError, AttributeError):
        return None


def sse(request: Request, stream: AsyncIterator[ServerSentEventMessage]) -> ServerSentEvent:
    """A stream that stops within seconds of its sign-in ending (clinic.auth.streams)."""
    return ServerSentEvent(while_signed_in(request, stream), headers={"cache-control": "no-store", "x-accel-buffering": "no"})
