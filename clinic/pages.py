"""Page helpers every domain's HTML routes share: the labels and badges of kinds and statuses, the base context, a
day from the query string, who may do what, the answer after a successful write, and the notices banner."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from litestar import Response
from litestar.plugins.htmx import ClientRedirect, HTMXRequest
from litestar.response import Redirect
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.auth.permissions import allows
from clinic.clinics import Clinic
from clinic.errors import RuleBroken
from clinic.notices import service as notices
from clinic.scheduling.models import AppointmentStatus, SessionKind
from clinic.timeutil import utcnow

KIND_LABELS = {SessionKind.esketamine: "Esketamine", SessionKind.ketamine_iv: "IV ketamine", SessionKind.kap: "KAP",
               SessionKind.integration: "Integration", SessionKind.consult: "Consult"}
STATUS_BADGES = {AppointmentStatus.booked: "due", AppointmentStatus.arrived: "warn", AppointmentStatus.in_progress: "warn",
                 AppointmentStatus.fulfilled: "ok", AppointmentStatus.cancelled: "bad", AppointmentStatus.noshow: "bad"}
STATUS_LABELS = {AppointmentStatus.booked: "Booked", AppointmentStatus.arrived: "Arrived", AppointmentStatus.in_progress: "In session",
                 AppointmentStatus.fulfilled: "Discharged", AppointmentStatus.cancelled: "Cancelled", AppointmentStatus.noshow: "No-show"}


def go(request: HTMXRequest, url: str) -> Response:
    """After a successful write: htmx follows HX-Redirect, a plain form a 303."""
    if request.htmx:
        redirect = ClientRedirect(url)
        redirect.status_code = 200  # not the route's 201: nothing is shown, the browser goes to `url`
        return redirect
    return Redirect(path=url, status_code=303)


def parse_day(value: str | None, tz: str) -> date:
    if value:
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise RuleBroken("The date must look like 2026-12-14.", field="date", code="date_format") from None
    return utcnow().astimezone(ZoneInfo(tz)).date()


def week_start(day: date) -> date:
    return day - timedelta(days=day.weekday())


def base_context(clinic: Clinic, **kw: Any) -> dict[str, Any]:
    return {"clinic": clinic, "tz": clinic.timezone, "kind_labels": KIND_LABELS, "status_badges": STATUS_BADGES,
            "status_labels": STATUS_LABELS, **kw}


def can(request: HTMXRequest, permission: str) -> bool:
    user = request.scope.get("user")
    return bool(user and allows(permission, user.roles))



async def notices_banner(session: AsyncSession, clinic: Clinic) -> dict[str, Any]:
    """What the billing, admin and notices pages say about the clinic's notices: how many failed, since when they wait."""
    failed = (await notices.counts(session, clinic_id=clinic.id)).get("failed", 0)
    return {"failed_notices": failed, "notices_delayed_since": await notices.delayed_since(session, clinic=clinic)}
