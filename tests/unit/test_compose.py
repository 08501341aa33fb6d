"""compose.yaml and the Dockerfile stay true to the project (Docker itself does not run in CI)."""

from __future__ import annotations

from pathlib import Path

import yaml

from clinic.cli import main as cli

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_has_the_production_services():
    services = compose()["services"]
    assert {"db", "redis", "migrate", "web", "worker", "mail"} <= set(services)
    assert services["db"]["image"] == "postgres:17" and "healthcheck" in services["db"]
    assert services["redis"]["image"] == "redis:7" and "healthcheck" in services["redis"]
    assert services["migrate"]["restart"] == "no"


def test_compose_commands_exist_in_the_cli():
    services = compose()["services"]
    for name in ("migrate", "web", "worker"):
        command = services[name]["command"]
        assert command[0] == "clinic"
        assert command[1] in cli.commands, f"{name}: clinic {command[1]} does not exist"


def test_web_and_worker_come_back_by_themselves_and_the_worker_is_checked():
    services = compose()["services"]
    for name in ("web", "worker"):
        assert services[name]["restart"] == "unless-stopped"
    check = services["worker"]["healthcheck"]["test"]
    assert check[:2] == ["CMD", "clinic"] and check[2] in cli.commands
    assert "--check" in {p.opts[0] for p in cli.commands[check[2]].params} and check[3:] == ["--check"]


def test_app_services_wait_for_a_healthy_database_and_finished_migration():
    services = compose()["services"]
    for name in ("web", "worker"):
        deps = services[name]["depends_on"]
        assert deps["db"]["condition"] == "service_healthy"
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert env["REDIS_URL"].startswith("redis://")


def test_dockerfile_copies_what_the_app_needs():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for part in ("clinic", "workers", "templates", "migrations", "alembic.ini", "constraints.txt"):
        assert part in dockerfile


def test_no_secret_has_a_published_default():
    text = (ROOT / "compose.yaml").read_text()
    for name in ("SECRET_KEY", "POSTGRES_PASSWORD", "APP_DATABASE_PASSWORD"):
        uses = [line for line in text.splitlines() if "${" + name in line]
        assert uses, name
        assert all("${" + name + ":?" in line for line in uses), f"{name} must be required, never defaulted: {uses}"


def test_web_and_worker_connect_as_the_apps_role_and_only_migrate_as_the_owner():
    services = compose()["services"]
    owner = services["migrate"]["environment"]["DATABASE_OWNER_URL"].split("://", 1)[1].split(":", 1)[0]
    assert owner == services["db"]["environment"]["POSTGRES_USER"]
    app_role = services["migrate"]["environment"]["DATABASE_URL"].split("://", 1)[1].split(":", 1)[0]
    assert app_role != owner
    for name in ("web", "worker"):
        env = services[name]["environment"]
        assert "DATABASE_OWNER_URL" not in env
        assert env["DATABASE_URL"].split("://", 1)[1].split(":", 1)[0] == app_role
