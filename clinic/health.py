"""GET /healthz: Postgres must answer; Redis down is reported but still healthy (clinical work never waits on it)."""

from __future__ import annotations

import asyncio

from litestar import Request, Response, get
from sqlalchemy import text


@get("/healthz", opt={"public": True}, tags=["health"])
async def healthz(request: Request) -> Response:
    state = request.app.state
    body = {"db": "ok", "redis": "ok"}
    status = 200
    try:
        async with state.db.engine.connect() as conn:
            await asyncio.wait_for(conn.execute(text("SELECT 1")), timeout=2)
    except Exception:
        body["db"] = "down"
        status = 503
    try:
        await asyncio.wait_for(state.queue.ping(), timeout=1.5)
    except Exception:
        await state.queue._reset()
        body["redis"] = "down"
    return Response(content=body, status_code=status)
