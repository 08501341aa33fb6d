"""create_app(settings): every plugin, dependency, middleware and lifespan hook, visible in one place."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.htmx import HTMXPlugin
from litestar.static_files import create_static_files_router

from clinic import health
from clinic.apidocs import ApiReference
from clinic.auth import admin as auth_admin
from clinic.auth import api as auth_api
from clinic.auth import web as auth_web
from clinic.auth import guard
from clinic.auth.middleware import AuthenticationMiddleware, BearerAwareCSRFMiddleware, csrf_config
from clinic.billing import api as billing_api
from clinic.billing import web as billing_web
from clinic.config import Settings
from clinic.db import Database
from clinic.http import EXCEPTION_HANDLERS, document_errors, provide_actor, provide_clinic, provide_db_session
from clinic.monitoring import api as monitoring_api
from clinic.monitoring import web as monitoring_web
from clinic.monitoring.vitals import ChartMemo, EntryWriter
from clinic.notices import api as notices_api
from clinic.notices import web as notices_web
from clinic.outcomes import api as outcomes_api
from clinic.outcomes import web as outcomes_web
from clinic.patients import api as patients_api
from clinic.patients import web as patients_web
from clinic.queue import Queue
from clinic.scheduling import api as scheduling_api
from clinic.scheduling import web as scheduling_web
from clinic.security import SecurityHeadersMiddleware
from clinic.templating import template_config

STATIC_DIR = Path(__file__).resolve().parent / "static"

log = logging.getLogger("clinic")


def vitals_path(db: Database) -> dict[str, Any]:
    """The vitals fast path's pieces, one per app: the memo of sessions charted lately and the entry writer on db's raw pool."""
    return {"chart_memo": ChartMemo(), "entry_writer": EntryWriter(db.raw)}


def create_app(settings: Settings, *, db: Database | None = None, queue: Queue | None = None) -> Litestar:
    """Build the app. Tests pass a `db` bound to a rolled-back connection; otherwise one is made from settings."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        own_db = db is None
        if own_db:
            app.state.db = Database.connect(settings.database_url)
            app.state.update(vitals_path(app.state.db))
        if queue is None:
            app.state.queue = Queue(settings.redis_url)
        # everything loaded so far (modules, routes, templates, metadata) lives as long as the process: moved out of
        # the collector's way, a full collection no longer walks it and stalls every request for ~100 ms under load
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            # shutdown is best effort: a half-closed socket must not hide the rest of the cleanup
            # entries already handed in are written before the pool closes
            closers = [*app.state.listeners, app.state.entry_writer.aclose]
            if queue is None:
                closers.append(app.state.queue.close)
            if own_db:
                closers.append(app.state.db.dispose)
            for close in closers:
                try:
                    await close()
                except (Exception, asyncio.CancelledError) as exc:
                    log.warning("shutdown step %s failed: %s", getattr(close, "__qualname__", close), type(exc).__name__)

    api = Router(
        path="/api/v1",
        route_handlers=document_errors([
            *patients_api.routes,
            *scheduling_api.routes,
            *monitoring_api.routes,
            *billing_api.routes,
            *notices_api.routes,
            *outcomes_api.routes,
            *auth_api.routes,
        ]),
        security=[{"bearer": []}],
    )
    static = create_static_files_router(path="/static", directories=[STATIC_DIR], opt={"public": True}, include_in_schema=False)

    return Litestar(
        route_handlers=[
            health.healthz,
            static,
            *auth_web.routes,
            *auth_admin.routes,
            *patients_web.routes,
            *scheduling_web.routes,
            *monitoring_web.routes,
            *billing_web.routes,
            *notices_web.routes,
            *outcomes_web.routes,
            api,
        ],
        dependencies={
            "db_session": Provide(provide_db_session),
            "actor": Provide(provide_actor, sync_to_thread=False),
            "clinic": Provide(provide_clinic),
        },
        middleware=[
            SecurityHeadersMiddleware,
            AuthenticationMiddleware,
            DefineMiddleware(BearerAwareCSRFMiddleware, config=csrf_config(settings.secret_key, settings.base_url.startswith("https"))),
            guard.PermissionMiddleware,
        ],
        exception_handlers={**EXCEPTION_HANDLERS, **guard.EXCEPTION_HANDLERS},
        template_config=template_config(),
        plugins=[HTMXPlugin()],
        openapi_config=OpenAPIConfig(
            title="Clinic API",
            version="1.0.0",
            description="Scheduling, supervised-session monitoring and billing for ketamine and esketamine clinics.",
            path="/schema",
            render_plugins=[ApiReference()],
            components=Components(
                security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer", description="clinic create-token")}
            ),
        ),
        lifespan=[lifespan],
        # given db/queue (tests) are usable without running the lifespan
        state=State({"settings": settings, "db": db, "queue": queue, "listeners": [], **(vitals_path(db) if db is not None else {})}),
        debug=settings.debug,
    )
