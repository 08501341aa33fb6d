"""Notice pages: the outbox for billing staff (with retry), the dev mail viewer, and the patient's date-of-birth-gated cost page."""

from __future__ import annotations

from datetime import date
from email.message import EmailMessage

from litestar import Request, get, post
from litestar.response import Redirect, Template
from msgspec import Struct
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from clinic.audit.service import SYSTEM, record
from clinic.billing import service as billing
from clinic.billing.models import CostLink, Estimate
from clinic.clinics import Clinic
from clinic.errors import NotFound, RuleBroken
from clinic.forms import read_form
from clinic.http import CurrentActor, CurrentClinic, DbSession
from clinic.notices import devmail
from clinic.notices import service as notices
from clinic.notices.models import NOTICE_STATES
from clinic.pages import notices_banner
from clinic.patients.models import Patient

HEAD = '<link rel="stylesheet" href="/static/css/billing.css">'


@get("/notices", opt={"permission": "billing.read"}, include_in_schema=False)
async def notice_list(db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, status: str | None = None, done: str | None = None) -> Template:
    status = status if status in NOTICE_STATES else None
    rows = await notices.list_notices(db_session, actor=actor, status=status)
    return Template("notices/list.html", context={
        "head": HEAD, "rows": rows, "status": status, "states": NOTICE_STATES, "clinic": clinic,
        "counts": await notices.counts(db_session, clinic_id=actor.clinic_id),
        **await notices_banner(db_session, clinic),
        "done": "Queued again: it goes out within a minute." if done == "retried" else None,
    })


@post("/notices/{notice_id:int}/retry", opt={"permission": "billing.write"}, include_in_schema=False)
async def notice_retry(request: Request, db_session: DbSession, actor: CurrentActor, notice_id: int) -> Redirect:
    await notices.retry(db_session, actor=actor, notice_id=notice_id, queue=request.app.state.queue)
    return Redirect(path="/notices?status=failed&done=retried")


@get("/dev/mail", opt={"permission": "billing.read"}, include_in_schema=False)
async def dev_mail(request: Request, actor: CurrentActor) -> Template:
    if not request.app.state.settings.dev_mail:
        raise NotFound("Not found.")
    # one sink for every clinic on the server: each sees only its own mail, known by the Message-ID it was sent with
    ours = f"<notice.{actor.clinic_id}."
    mine = [m for m in list(devmail.RECEIVED) if str(m["Message-ID"] or "").startswith(ours)]
    return Template("notices/devmail.html", context={"head": HEAD, "messages": [_view(m) for m in mine]})


def _view(m: EmailMessage) -> dict[str, str]:
    text = m.get_body(("plain",))
    html = m.get_body(("html",))
    return {"subject": m["Subject"], "to": m["To"], "from": m["From"], "date": m["Date"], "message_id": m["Message-ID"],
            "text": text.get_content() if text else "", "html": html.get_content() if html else ""}


# ---- the patient's side: a signed, expiring link that asks for the date of birth ---------------------


def _refusal(problem: str, clinic: Clinic | None, status: int) -> Template:
    return Template("notices/link_problem.html", context={"head": HEAD, "problem": problem, "clinic": clinic}, status_code=status)


@get("/e/{token:str}", opt={"public": True}, include_in_schema=False)
async def cost_link(request: Request, db_session: DbSession, token: str) -> Template:
    link, problem = await notices.open_link(db_session, request.app.state.settings.secret_key, token, kinds=notices.COST_LINK_KINDS)
    clinic = await db_session.get(Clinic, link.clinic_id) if link else None
    if problem:
        return _refusal(problem, clinic, 403 if problem == "locked" else 404)
    return Template("notices/link_dob.html", context={"head": HEAD, "clinic": clinic, "token": token, "error": None,
                                                       "left": notices.MAX_DOB_TRIES - link.failed_attempts})


@post("/e/{token:str}", opt={"public": True}, include_in_schema=False)
async def cost_link_open(request: Request, db_session: DbSession, token: str) -> Template:
    """Wrong dates of birth are counted and committed (the answer is a page, not an error); the fifth locks the link."""
    link, problem = await notices.open_link(db_session, request.app.state.settings.secret_key, token, kinds=notices.COST_LINK_KINDS)
    clinic = await db_session.get(Clinic, link.clinic_id) if link else None
    if problem:
        return _refusal(problem, clinic, 403 if problem == "locked" else 404)
    patient = await db_session.get(Patient, link.patient_id)
    left = notices.try_date_of_birth(db_session, link, patient, await date_of_birth(request))
    if left == 0:
        return _refusal("locked", clinic, 403)
    if left is not None:
        return Template("notices/link_dob.html", status_code=422, context={
            "head": HEAD, "clinic": clinic, "token": token, "left": left, "error": "That date of birth does not match our records.",
        })
    record(db_session, actor=SYSTEM, clinic_id=clinic.id, action="billing.link.open", entity="cost_link", entity_id=link.id,
           patient_id=patient.id, changes={"kind": link.kind})
    return Template("notices/link_view.html", context={"head": HEAD, **await _what_they_see(db_session, link, clinic, patient)})


class DobForm(Struct):
    date_of_birth: date | None = None


async def date_of_birth(request: Request) -> date | None:
    """The date of birth a patient typed on a link's gate (cost or questionnaire)."""
    try:
        return (await read_form(request, DobForm)).date_of_birth
    except RuleBroken:
        return None  # a date that does not parse is a wrong answer, counted like any other


async def _what_they_see(session: AsyncSession, link: CostLink, clinic: Clinic, patient: Patient) -> dict:
    """Upcoming visits, the current estimates and the balance: for the patient, after the date of birth matched."""
    upcoming = await billing.upcoming_appointments(session, clinic=clinic, patient_id=patient.id)
    issued = list((await session.exec(select(Estimate).where(
        Estimate.patient_id == patient.id, col(Estimate.issued_at).is_not(None)).order_by(col(Estimate.issued_at).desc()))).all())
    replaced = await billing.superseded_ids(session, [e.id for e in issued])
    current = [e for e in issued if e.id not in replaced]
    focus = next((e for e in issued if e.id == link.estimate_id), None)
    balance = (await billing.balances(session, clinic_id=clinic.id, patient_ids=[patient.id])).get(patient.id)
    return {
        "clinic": clinic, "patient": patient, "kind": link.kind, "focus": focus, "estimates": current,
        "focus_replaced": focus is not None and focus.id in replaced,
        "upcoming": [(a, st) for a, st in upcoming], "balance": balance.owed_cents if balance else 0, "public": True,
        "today": clinic.today(), "deadline_state": lambda *a: "none",
    }


routes: list = [notice_list, notice_retry, dev_mail, cost_link, cost_link_open]
