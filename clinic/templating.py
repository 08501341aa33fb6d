"""Jinja2 setup: filters that show times in the clinic's zone, and the role-aware navigation."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from jinja2 import Environment
from litestar.contrib.jinja import JinjaTemplateEngine
from litestar.template.config import TemplateConfig

from clinic.auth.permissions import allows
from clinic.timeutil import hm as local_hm

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"

NAV = (
    ("Board", "/board", "board.read"),
    ("Schedule", "/schedule", "schedule.read"),
    ("Patients", "/patients", "patients.read"),
    ("REMS forms", "/rems", "session.read"),
    ("Outcomes", "/outcomes", "outcomes.clinic"),
    ("Billing", "/billing", "billing.read"),
    ("Notices", "/notices", "billing.read"),
    ("Admin", "/admin", "admin"),  # every /admin/... page highlights it
)


def nav_items(user) -> list[tuple[str, str]]:
    if user is None:
        return []
    return [(label, href) for label, href, perm in NAV if allows(perm, user.roles)]


def local(value: datetime | None, tz: str, fmt: str = "%a %d %b %Y %H:%M") -> str:
    if value is None:
        return ""
    return value.astimezone(ZoneInfo(tz)).strftime(fmt)


def hm(value: datetime | None, tz: str) -> str:
    return "" if value is None else local_hm(value, tz)


def money(cents: int | None) -> str:
    if cents is None:
        return ""
    sign = "-" if cents < 0 else ""
    cents = abs(int(cents))
    return f"{sign}${cents // 100:,}.{cents % 100:02d}"


def configure(env: Environment) -> None:
    env.globals["nav_items"] = nav_items
    env.globals["allows"] = allows  # {% if allows("outcomes.read", roles) %}: a partial shown to several roles
    env.filters["local"] = local
    env.filters["hm"] = hm
    env.filters["money"] = money


def template_config() -> TemplateConfig:
    return TemplateConfig(directory=TEMPLATE_DIR, engine=JinjaTemplateEngine, engine_callback=lambda e: configure(e.engine))
