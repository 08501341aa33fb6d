"""Monitoring HTML routes: the live board, the tablet session page, and the REMS form pages; each calls the same services as the API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import msgspec
from litestar import Request, get, post
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Redirect, ServerSentEvent, Template
from msgspec import Struct

from clinic.auth.permissions import allows
from clinic.db import session_driver
from clinic.errors import RuleBroken
from clinic.forms import decode_form, read_form
from clinic.http import CurrentActor, DbSession
from clinic.monitoring import live, rules, service, vitals
from clinic.monitoring.board import load_board, record_board_read, shows_clinical_detail
from clinic.monitoring.chart import session_chart
from clinic.monitoring.models import ClinicalEntry, DoseKind, DosingEntry
from clinic.outcomes import service as outcomes
from clinic.scheduling.models import SessionKind
from clinic.timeutil import utcnow

MOAAS_SHORT = {5: "Normal", 4: "Lethargic", 3: "Loud or repeated name", 2: "Prodding", 1: "Trapezius squeeze", 0: "No response"}


# ---- the tablet's forms: times are clinic-local HH:MM, decimals may use a comma -----------------------


LABELS = {**rules.FIELD_LABELS, "client_id": "This form's submission id", "submitted_on": "The submission date"}


class CheckInForm(Struct):
    fasting_confirmed: bool = False
    escort_confirmed: bool = False
    escort_name: str | None = None
    escort_phone: str | None = None
    weight_kg: Decimal | None = None
    taken_at: str | None = None


class EscortForm(Struct):
    escort_name: str | None = None
    escort_phone: str | None = None


class EntryForm(rules.Measurements, kw_only=True):
    """A check as the tablet sends it: the measurement fields, with the CADSS answer's items as item_N."""

    client_id: UUID
    taken_at: str | None = None
    check_key: str | None = None


class EntryCorrectionForm(EntryForm, kw_only=True):
    reason: str = ""
    entered_in_error: bool = False


CadssItems = msgspec.defstruct("CadssItems", [(f"item_{n}", int | None, None) for n in rules.CADSS_ITEMS["cadss23"]])


class StartDosingForm(Struct):
    client_id: UUID
    taken_at: str | None = None
    lot_number: str | None = None
    dose_mg: Decimal | None = None
    mg_per_kg: Decimal | None = None


class DoseForm(Struct):
    client_id: UUID
    kind: str = ""
    taken_at: str | None = None
    lot_number: str | None = None


class DoseCorrectionForm(Struct):
    client_id: UUID
    reason: str = ""
    taken_at: str | None = None
    lot_number: str | None = None
    entered_in_error: bool = False


class AcknowledgeForm(Struct):
    note: str = ""


class DischargeForm(Struct):
    ready_to_leave_at: str | None = None
    note: str | None = None


class RemsSubmissionForm(Struct):
    submitted_on: date
    confirmation: str = ""


async def entry_form(request: Request, shape: type[EntryForm]) -> EntryForm:
    """The check with its CADSS items gathered; a CADSS form shown but left unscored records no dissociation."""
    form = await request.form()
    entry = decode_form(form, shape, labels=LABELS)
    entry.dissociation_form = (entry.dissociation_form or "").strip() or None
    if entry.dissociation_form in rules.CADSS_ITEMS:
        scores = decode_form(form, CadssItems, labels=LABELS)
        items = {str(n): s for n in rules.CADSS_ITEMS[entry.dissociation_form] if (s := getattr(scores, f"item_{n}")) is not None}
        entry.dissociation_items = items or None
        entry.dissociation_form = entry.dissociation_form if items else None
    return entry


def local_time(value: str | None, tz: str, now: datetime, *, field: str = "taken_at") -> datetime | None:
    """A wall-clock HH:MM from a tablet: its latest occurrence not after now (so 23:50 entered at 00:10 is yesterday)."""
    if not value:
        return None
    try:
        hh, mm = (int(p) for p in value.strip().split(":")[:2])
        wall = time(hh, mm)
    except ValueError:
        raise RuleBroken("Enter the time as HH:MM.", field=field) from None
    zone = ZoneInfo(tz)
    today = now.astimezone(zone).date()
    instant = datetime.combine(today, wall, zone)
    if instant > now + rules.CLOCK_SKEW:
        instant = datetime.combine(today - timedelta(days=1), wall, zone)
    return instant


async def _clinic_tz(db_session: DbSession, actor: CurrentActor) -> str:
    from clinic.clinics import Clinic

    clinic = await db_session.get(Clinic, actor.clinic_id)
    return clinic.timezone if clinic else "UTC"


# ---- the session page's view model -------------------------------------------------------------------


@dataclass
class TimelineItem:
    at: datetime
    kind: str  # entry | dose | alert | ack | event
    text: str
    who: str = ""
    recorded_at: datetime | None = None
    entry: ClinicalEntry | None = None
    dose: DosingEntry | None = None
    superseded_by: int | None = None
    correction: str = ""
    level: str = ""
    current: bool = True


def entry_summary(e: ClinicalEntry) -> str:
    parts = []
    if e.systolic is not None:
        parts.append(f"BP {e.systolic}/{e.diastolic}")
    if e.heart_rate is not None:
        parts.append(f"HR {e.heart_rate}")
    if e.spo2 is not None:
        parts.append(f"SpO2 {e.spo2}%")
    if e.resp_rate is not None:
        parts.append(f"RR {e.resp_rate}")
    if e.moaas is not None:
        parts.append(f"MOAA/S {e.moaas}")
    if e.dissociation_total is not None:
        parts.append(f"{rules.CADSS_LABELS.get(e.dissociation_form or '', 'CADSS')} {e.dissociation_total}")
    if e.entered_in_error:
        parts.append("withdrawn: entered in error")
    return " · ".join(parts)


def dose_summary(d: DosingEntry, tz: str) -> str:
    if d.entered_in_error:
        return f"Device {d.device_number} withdrawn: entered in error" if d.kind == DoseKind.device else "Dosing entry withdrawn"
    if d.kind == DoseKind.device:
        return f"Device {d.device_number}: {d.dose_mg:.0f} mg, lot {d.lot_number}"
    if d.kind == DoseKind.infusion_start:
        return f"Infusion started: {d.dose_mg} mg ({d.mg_per_kg} mg/kg × {d.weight_kg} kg)"
    if d.kind == DoseKind.infusion_end:
        return "Infusion ended"
    return f"Dose given: {d.dose_mg} mg"


def _who(data: service.SessionData, user_id: int | None) -> str:
    u = data.staff.get(user_id) if user_id else None
    if u is None:
        return ""
    return f"{u.full_name}{', ' + u.credentials if u.credentials else ''}"


def timeline(data: service.SessionData) -> list[TimelineItem]:
    tz = data.tz
    items: list[TimelineItem] = []
    by_entry = {e.supersedes_id: e.id for e in data.entries if e.supersedes_id}
    for e in data.entries:
        correction = f"Correction of entry {e.supersedes_id}: {e.correction_reason}" if e.supersedes_id else ""
        items.append(
            TimelineItem(
                e.taken_at, "entry", entry_summary(e), _who(data, e.recorded_by), e.recorded_at, entry=e,
                superseded_by=by_entry.get(e.id), correction=correction, current=e.id not in by_entry and not e.entered_in_error,
            )
        )
    by_dose = {d.supersedes_id: d.id for d in data.doses if d.supersedes_id}
    for d in data.doses:
        correction = f"Correction of dosing entry {d.supersedes_id}: {d.correction_reason}" if d.supersedes_id else ""
        items.append(
            TimelineItem(
                d.taken_at, "dose", dose_summary(d, tz), _who(data, d.recorded_by), d.recorded_at, dose=d,
                superseded_by=by_dose.get(d.id), correction=correction, current=d.id not in by_dose and not d.entered_in_error,
            )
        )
    taken = {e.id: e.taken_at for e in data.entries}
    for a in data.alerts:
        # placed at the reading that raised it (a back-charted reading raises its alert later)
        items.append(TimelineItem(taken.get(a.entry_id, a.raised_at), "alert", a.message, recorded_at=a.raised_at, level=a.level))
        if a.acknowledged_at:
            items.append(TimelineItem(a.acknowledged_at, "ack", f"{a.level.capitalize()} acknowledged: {a.note}", _who(data, a.acknowledged_by), level=a.level))
    appt = data.appointment
    if appt.checked_in_at:
        items.append(TimelineItem(appt.checked_in_at, "event", "Checked in" + (" · escort confirmed" if appt.escort_confirmed else "")))
    if appt.discharged_at:
        items.append(TimelineItem(appt.discharged_at, "event", "Discharged", _who(data, appt.discharged_by)))
    return sorted(items, key=lambda i: (i.at, i.recorded_at or i.at), reverse=True)


def session_context(state: service.SessionState, request: Request) -> dict[str, Any]:
    data, appt = state.data, state.data.appointment
    tz, now = data.tz, state.now
    user = request.scope.get("user")
    roles = user.roles if user else ()
    readings = data.readings()
    start = min([appt.checked_in_at or appt.starts_at] + [r.taken_at for r in readings])
    minimum = data.protocol.min_monitoring_minutes
    end_candidates = [appt.discharged_at or now]
    if appt.dosing_started_at and not appt.discharged_at:
        end_candidates.append(appt.dosing_started_at + timedelta(minutes=minimum + 5))
    end = max(end_candidates + [r.taken_at for r in readings])
    due = state.next_check if state.next_check and state.next_check.open else None
    upcoming = state.next_check if state.next_check and state.next_check.status == "upcoming" else None
    devices = sorted((d for d in data.current_doses() if d.kind == DoseKind.device), key=lambda d: d.device_number or 0)
    planned_devices = data.planned_device_count()
    spacing = data.protocol.minutes_between_devices
    next_device = None
    if data.kind == SessionKind.esketamine and devices and planned_devices and len(devices) < planned_devices:
        next_device = {"number": len(devices) + 1, "of": planned_devices, "from": devices[-1].taken_at + timedelta(minutes=spacing), "lot": devices[-1].lot_number}
    infusion = next((d for d in data.current_doses() if d.kind == DoseKind.infusion_start), None)
    infusion_end = next((d for d in data.current_doses() if d.kind == DoseKind.infusion_end), None)
    iv_default = None
    if data.protocol.is_iv and appt.weight_kg:
        try:
            per_kg, mg = rules.iv_dose_mg(data.protocol, mg_per_kg=None, weight_kg=appt.weight_kg)
            iv_default = {"per_kg": per_kg, "mg": mg}
        except RuleBroken:
            iv_default = None
    estimate = rules.ready_to_leave_estimate(data.protocol, dosing_started_at=appt.dosing_started_at, readings=readings)
    return {
        "state": state,
        "data": data,
        "appt": appt,
        "patient": data.patient,
        "tz": tz,
        "now": now,
        "due": due,
        "upcoming": upcoming,
        "chart": session_chart(readings, tz=tz, start=start, end=end, dosing_started_at=appt.dosing_started_at, checks=state.schedule, thresholds=data.protocol.thresholds),
        "timeline": timeline(data),
        "can_run": allows("session.run", roles),
        "can_sign": allows("session.sign", roles),
        "next_device": next_device,
        "infusion": infusion,
        "infusion_end": infusion_end,
        "iv_default": iv_default,
        "estimate": estimate,
        "moaas_scale": MOAAS_SHORT,
        "cadss_items": rules.CADSS_ITEMS,
        "cadss_anchors": rules.CADSS_ANCHORS,
        "measure_labels": rules.MEASURE_LABELS,
        "phase_label": rules.PHASE_LABELS.get(state.phase, state.phase),
        "is_esketamine": data.kind == SessionKind.esketamine,
        "is_iv": data.protocol.is_iv,
    }


async def _live(request: Request, db_session: DbSession, actor: CurrentActor, appointment_id: int, *, audit: bool = False, page: bool = False) -> Template:
    state = await service.session_state(db_session, actor=actor, appointment_id=appointment_id, audit=audit)
    context = session_context(state, request)
    # the questionnaires: latest scores in the header, what is due and any safety review above the forms
    context["so"] = await outcomes.session_outcomes(db_session, actor=actor, appointment=state.data.appointment, kind=state.data.kind)
    return Template("monitoring/session.html" if page else "monitoring/_session_live.html", context=context)


# ---- board ---------------------------------------------------------------------------------------------


@get("/board", opt={"permission": "board.read"}, include_in_schema=False)
async def board_page(request: Request, db_session: DbSession, actor: CurrentActor) -> Template:
    board = await load_board(db_session, clinic_id=actor.clinic_id)
    record_board_read(db_session, actor=actor, board=board, view="page")
    return Template("monitoring/board.html", context={"board": board, "tz": board.tz, "clinical": shows_clinical_detail(actor.roles)})


@get("/board/fragment", opt={"permission": "board.read"}, include_in_schema=False)
async def board_fragment(db_session: DbSession, actor: CurrentActor) -> Template:
    board = await load_board(db_session, clinic_id=actor.clinic_id)
    record_board_read(db_session, actor=actor, board=board, view="fragment")
    return Template("monitoring/_board.html", context={"board": board, "tz": board.tz, "clinical": shows_clinical_detail(actor.roles)})


@get("/board/stream", opt={"permission": "board.read"}, include_in_schema=False)
async def board_stream(request: Request, actor: CurrentActor) -> ServerSentEvent:
    # the stream's opening is the read audited (it reconnects every few minutes); a short transaction of its own
    async with request.app.state.db.transaction() as session:
        record_board_read(session, actor=actor, board=await load_board(session, clinic_id=actor.clinic_id), view="stream")
    return live.sse(request, live.board_events(request.app, actor.clinic_id, clinical=shows_clinical_detail(actor.roles)))


# ---- the tablet session page ------------------------------------------------------------------------------


@get("/sessions/{appointment_id:int}", opt={"permission": "session.read"}, include_in_schema=False)
async def session_page(request: Request, db_session: DbSession, actor: CurrentActor, appointment_id: int) -> Template:
    return await _live(request, db_session, actor, appointment_id, audit=True, page=True)


@get("/sessions/{appointment_id:int}/live", opt={"permission": "session.read"}, include_in_schema=False)
async def session_live(request: Request, db_session: DbSession, actor: CurrentActor, appointment_id: int) -> Template:
    """The page refreshing itself (every 30 s and when another tablet writes): part of the page view already audited."""
    return await _live(request, db_session, actor, appointment_id)


@get("/sessions/{appointment_id:int}/stream", opt={"permission": "session.read"}, include_in_schema=False)
async def session_stream(request: Request, actor: CurrentActor, appointment_id: int) -> ServerSentEvent:
    # a short session of its own: a request-scoped one would be held open for the life of the stream
    async with request.app.state.db.sessionmaker() as session:
        await service.load_session(session, clinic_id=actor.clinic_id, appointment_id=appointment_id, entries=False, doses=False, alerts=False)
    return live.sse(request, live.session_events(request.app, actor.clinic_id, appointment_id))


@post("/sessions/{appointment_id:int}/check-in", opt={"permission": "session.run"}, include_in_schema=False, status_code=200)
async def session_check_in(request: Request, db_session: DbSession, actor: CurrentActor, appointment_id: int) -> Template:
    form = await read_form(request, CheckInForm, labels=LABELS)
    tz = await _clinic_tz(db_session, actor)
    await service.check_in(
        db_session,
        actor=actor,
        appointment_id=appointment_id,
        fasting_confirmed=form.fasting_confirmed,
        escort_confirmed=form.escort_confirmed,
        escort_name=form.escort_name,
        escort_phone=form.escort_phone,
        weight_kg=form.weight_kg,
        taken_at=local_time(form.taken_at, tz, utcnow()),
    )
    return await _live(request, db_session, actor, appointment_id)


@post("/sessions/{appointment_id:int}/escort", opt={"permission": "session.run"}, include_in_schema=False, status_code=200)
async def session_escort(request: Request, db_session: DbSession, actor: CurrentActor, appointment_id: int) -> Template:
    form = await read_form(request, EscortForm, labels=LABELS)
    await service.confirm_escort(db_session, actor=actor, appointment_id=appointment_id, escort_name=form.escort_name, escort_phone=form.escort_phone)
    return await _live(request, db_session, actor, appointment_id)


@post("/sessions/{appointment_id:int}/entries", opt={"permission": "session.run"}, include_in_schema=False, status_code=200)
async def session_entry(request: Request, db_session: DbSession, actor: CurrentActor, appointment_id: int) -> Template:
    form = await entry_form(request, EntryForm)
    tz = await _clinic_tz(db_session, actor)
    await vitals.record_entry(
        await session_driver(db_session),
        actor=actor,
        appointment_id=appointment_id,
        client_id=form.client_id,
        values=form,
        taken_at=local_time(form.taken_at, tz, utcnow()),
        check_key=form.check_key,
    )
    return await _live(request, db_session, actor, appointment_id)


@post("/sessions/{appointment_id:int}/entries/{entry_id:int}/correct", opt={"permission": "session.run"}, include_in_schema=False, status_code=200)
async def session_correct_entry(request: Request, db_session: DbSession, actor: CurrentActor, appointment_id: int, entry_id: int) -> Template:
    raw = await request.form()
    form = await entry_form(request, EntryCorrectionForm)
    tz = await _clinic_tz(db_session, actor)
    # the form shows every value: what is left empty is cleared; the CADSS answer only when its form was shown
    changes: dict[str, Any] = {name: getattr(form, name) for name in rules.Measurements.__struct_fields__}
    if "dissociation_form" not in raw:
        del changes["dissociation_form"], changes["dissociation_items"]
    taken = local_time(form.taken_at, tz, utcnow())
    if taken is not None:
        changes["taken_at"] = taken
    await service.correct_entry(
        db_session,
        actor=actor,
        appointment_id=appointment_id,
        entry_id=entry_id,
        client_id=form.client_id,
        reason=form.reason,
        changes=changes,
        entered_in_error=form.entered_in_error,
    )
    return await _live(request, db_session, actor, appointment_id)


@post("/sessions/{appointment_id:int}/start-dosing", opt={"permission": "session.run"}, include_in_schema=False, status_code=200)
async def session_start_dosing(request: Request, db_session: DbSession, actor: CurrentActor, appointment_id: int) -> Template:
    form = await read_form(request, StartDosingForm, labels=LABELS)
    tz = await _clinic_tz(db_session, actor)
    await service.start_dosing(
        db_session,
        actor=actor,
        appointment_id=appointment_id,
        client_id=form.client_id,
        taken_at=local_time(form.taken_at, tz, utcnow()),
        lot_number=form.lot_number,
        dose_mg=form.dose_mg,
        mg_per_kg=form.mg_per_kg,
    )
    return await _live(request, db_session, actor, appointment_id)


@post("/sessions/{appointment_id:int}/dosing", opt={"permission": "session.run"}, include_in_schema=False, status_code=200)
async def session_dose(request: Request, db_session: DbSession, actor: CurrentActor, appointment_id: int) -> Template:
    form = await read_form(request, DoseForm, labels=LABELS)
    tz = await _clinic_tz(db_session, actor)
    await service.record_dose(
        db_session,
        actor=actor,
        appointment_id=appointment_id,
        client_id=form.client_id,
        kind=form.kind,
        taken_at=local_time(form.taken_at, tz, utcnow()),
        lot_number=form.lot_number,
    )
    return await _live(request, db_session, actor, appointment_id)


@post("/sessions/{appointment_id:int}/dosing/{dose_id:int}/correct", opt={"permission": "session.run"}, include_in_schema=False, status_code=200)
async def session_correct_dose(request: Request, db_session: DbSession, actor: CurrentActor, appointment_id: int, dose_id: int) -> Template:
    form = await read_form(request, DoseCorrectionForm, labels=LABELS)
    tz = await _clinic_tz(db_session, actor)
    await service.correct_dose(
        db_session,
        actor=actor,
        appointment_id=appointment_id,
        dose_id=dose_id,
        client_id=form.client_id,
        reason=form.reason,
        taken_at=local_time(form.taken_at, tz, utcnow()),
        lot_number=form.lot_number,
        entered_in_error=form.entered_in_error,
    )
    return await _live(request, db_session, actor, appointment_id)


@post("/sessions/{appointment_id:int}/alerts/{alert_id:int}/acknowledge", opt={"permission": "session.run"}, include_in_schema=False, status_code=200)
async def session_acknowledge(request: Request, db_session: DbSession, actor: CurrentActor, appointment_id: int, alert_id: int) -> Template:
    form = await read_form(request, AcknowledgeForm, labels=LABELS)
    await service.acknowledge_alert(db_session, actor=actor, appointment_id=appointment_id, alert_id=alert_id, note=form.note)
    return await _live(request, db_session, actor, appointment_id)


@post("/sessions/{appointment_id:int}/discharge", opt={"permission": "session.sign"}, include_in_schema=False, status_code=200)
async def session_discharge(request: Request, db_session: DbSession, actor: CurrentActor, appointment_id: int) -> Template:
    form = await read_form(request, DischargeForm, labels=LABELS)
    tz = await _clinic_tz(db_session, actor)
    await service.discharge(
        db_session,
        actor=actor,
        appointment_id=appointment_id,
        queue=request.app.state.queue,
        ready_to_leave_at=local_time(form.ready_to_leave_at, tz, utcnow(), field="ready_to_leave_at"),
        note=form.note,
    )
    return await _live(request, db_session, actor, appointment_id)


# ---- REMS ------------------------------------------------------------------------------------------------


@get("/rems", opt={"permission": "session.read"}, include_in_schema=False)
async def rems_tracker_page(request: Request, db_session: DbSession, actor: CurrentActor) -> Template:
    pending, done, today = await service.rems_tracker(db_session, actor=actor)
    user = request.scope.get("user")
    return Template(
        "monitoring/rems_tracker.html",
        context={"pending": pending, "done": done, "today": today, "can_run": allows("session.run", user.roles if user else ())},
    )


@get("/rems/{appointment_id:int}", opt={"permission": "session.read"}, include_in_schema=False)
async def rems_form_page(request: Request, db_session: DbSession, actor: CurrentActor, appointment_id: int) -> Template:
    state, fields = await service.rems_form(db_session, actor=actor, appointment_id=appointment_id)
    sections: dict[str, list[service.RemsField]] = {}
    for f in fields:
        sections.setdefault(f.section, []).append(f)
    user = request.scope.get("user")
    return Template(
        "monitoring/rems_form.html",
        context={
            "state": state,
            "data": state.data,
            "sections": sections,
            "missing": [f for f in fields if f.missing],
            "form": state.data.rems,
            "tz": state.data.tz,
            "today": state.now.astimezone(ZoneInfo(state.data.tz)).date(),
            "can_run": allows("session.run", user.roles if user else ()),
        },
    )


@post("/rems/{appointment_id:int}/submission", opt={"permission": "session.run"}, include_in_schema=False, status_code=200)
async def rems_submission(request: HTMXRequest, db_session: DbSession, actor: CurrentActor, appointment_id: int) -> Template | Redirect:
    form = await read_form(request, RemsSubmissionForm, labels=LABELS)
    await service.record_rems_submission(db_session, actor=actor, appointment_id=appointment_id, submitted_on=form.submitted_on, confirmation=form.confirmation)
    if not request.htmx:
        return Redirect(path=f"/rems/{appointment_id}")  # the printable form page posts a plain form
    pending, done, today = await service.rems_tracker(db_session, actor=actor)
    return Template("monitoring/_rems_rows.html", context={"pending": pending, "done": done, "today": today, "can_run": True})


routes = [
    board_page,
    board_fragment,
    board_stream,
    session_page,
    session_live,
    session_stream,
    session_check_in,
    session_escort,
    session_entry,
    session_correct_entry,
    session_start_dosing,
    session_dose,
    session_correct_dose,
    session_acknowledge,
    session_discharge,
    rems_tracker_page,
    rems_form_page,
    rems_submission,
]
