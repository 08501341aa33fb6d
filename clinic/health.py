"""GET /healthz: Postgres must answer; Redis down or a stale worker is reported but still healthy (clinical work never waits on them)."""

from __future__ import annotations

import asyncio

from litestar import Request, Response, get
from sqlalchemy import text


@get("/healthz", opt={"public": True}, tags=["health"])
async def healthz(request: Request) -> Response:
    state = request.app.state
    body = {"db": "ok", "redis": "ok", "worker": "stale"}
    status = 200
    try:
        async with state.db.engine.connect() as conn:
            await asyncio.wait_for(conn.execute(text("SELECT 1")), timeout=2)
    except Exception:
        body["db"] = "down"
        status = 503
    try:
        # one round trip answers both: Redis is there, and a worker has renewed its heartbeat in it
        if await asyncio.wait_for(state.queue.worker_alive(), timeout=1.5):
            body["worker"] = "ok"
    except Exception:
        await state.queue._reset()
        body["redis"] = "down"
    return Response(content=body, status_code=status)
