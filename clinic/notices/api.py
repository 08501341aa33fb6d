"""notices JSON routes: the outbox as billing staff see it, and retrying a failed notice."""

from __future__ import annotations

from litestar import Request, get, post

from clinic.errors import RuleBroken
from clinic.http import CurrentActor, CurrentClinic, DbSession
from clinic.notices import service
from clinic.notices.models import NOTICE_STATES, Notice
from clinic.notices.schemas import NoticeList, NoticeOut
from clinic.timeutil import both_zones

TAGS = ["notices"]


def notice_json(n: Notice, tz: str) -> NoticeOut:
    # no address and no payload: the list is for tracking delivery, not for reading patients' contact details
    return NoticeOut(id=n.id, kind=n.kind, status=n.status, patient_id=n.patient_id, appointment_id=n.appointment_id,
                     send_after=both_zones(n.send_after, tz), attempts=n.attempts, last_error=n.last_error,
                     message_id=n.message_id, sent_at=both_zones(n.sent_at, tz))


@get("/notices", opt={"permission": "billing.read"}, tags=TAGS, summary="Outbox notices, newest first (status filter)")
async def notice_list(db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, status: str | None = None, limit: int = 200) -> NoticeList:
    if status is not None and status not in NOTICE_STATES:
        raise RuleBroken(f"status is one of {', '.join(NOTICE_STATES)}.", field="status")
    tz = clinic.timezone
    rows = await service.list_notices(db_session, actor=actor, status=status, limit=limit)
    return NoticeList(items=[notice_json(n, tz) for n in rows], counts=await service.counts(db_session, clinic_id=actor.clinic_id))


@post("/notices/{notice_id:int}/retry", opt={"permission": "billing.write"}, tags=TAGS, status_code=200,
      summary="Send a failed notice again (same Message-ID)")
async def notice_retry(request: Request, db_session: DbSession, actor: CurrentActor, clinic: CurrentClinic, notice_id: int) -> NoticeOut:
    n = await service.retry(db_session, actor=actor, notice_id=notice_id, queue=request.app.state.queue)
    tz = clinic.timezone
    return notice_json(n, tz)


routes: list = [notice_list, notice_retry]
