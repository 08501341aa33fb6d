"""Delivering one outbox notice over SMTP: claim the row, re-check it still applies, render, send, record the outcome."""

from __future__ import annotations

import asyncio
import binascii
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from email import policy
from email.headerregistry import Address
from email.utils import format_datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from zoneinfo import ZoneInfo

import aiosmtplib
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy import text

from clinic.billing.rules import plain_instructions
from clinic.db import is_unavailable
from clinic.notices import links

log = logging.getLogger("clinic.notices")

EMAIL_DIR = Path(__file__).resolve().parent.parent.parent / "templates" / "emails"
MAX_ATTEMPTS = 5
RETRY_BASE_SECONDS = 30
RETRY_MAX_SECONDS = 3600
STALE_CLAIM_SECONDS = 300

SUBJECTS = {
    "booking_confirmation": "Your visit on {day} is booked",
    "booking_moved": "Your visit has moved to {day}",
    "booking_course": "Your visits from {day} are booked",
    "reminder": "Reminder: your visit on {day}",
    "estimate_ready": "Your cost estimate is ready",
    "gfe": "Your Good Faith Estimate is ready",
    "balance": "Your statement is ready",
    "staff_digest": "Items coming due: estimates and forms",
    # never the instrument, a score or why: the first name, the date, the clinic and a link
    "questionnaire": "A few questions before your visit on {day}",
    "safety_review": "A questionnaire needs a clinician's review",
}

_env = Environment(
    loader=FileSystemLoader(EMAIL_DIR),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,  # templates ship with the code; no stat() per message
)

# one statement claims the row and gathers what the message needs; a second worker finds nothing to claim
CLAIM = text(
    """
    WITH claimed AS (
        UPDATE notices SET status = 'sending', claimed_at = now(), attempts = attempts + 1
        WHERE id = :id AND send_after <= now()
          AND (status = 'pending' OR (status = 'sending' AND claimed_at < now() - make_interval(secs => :stale)))
        RETURNING id, clinic_id, kind, to_address, patient_id, appointment_id, attempts, payload
    )
    SELECT claimed.*, c.display_name, c.timezone, c.phone, c.settings AS clinic_settings,
           p.first_name, p.email AS patient_email, p.notice_channel, p.notices_opted_out,
           a.status AS appointment_status, a.starts_at AS appointment_starts_at,
           st.protocol -> 'instructions' AS instructions
    FROM claimed
    JOIN clinics c ON c.id = claimed.clinic_id
    LEFT JOIN patients p ON p.id = claimed.patient_id
    LEFT JOIN appointments a ON a.id = claimed.appointment_id
    LEFT JOIN session_types st ON st.id = a.session_type_id
    """
)
MARK = text("UPDATE notices SET status = :status, sent_at = :sent_at, message_id = COALESCE(:mid, message_id), last_error = :err, "
            "send_after = COALESCE(:send_after, send_after) WHERE id = :id AND status = 'sending'")


class Retry(Exception):
    """The SMTP server was not reachable or said 'try later'; deliver again after `defer` seconds."""

    def __init__(self, defer: float, reason: str) -> None:
        super().__init__(reason)
        self.defer = defer


@dataclass
class Rendered:
    subject: str
    text: str
    html: str


def message_id(notice_id: int, clinic_id: int, base_url: str) -> str:
    """Stable per notice: a resend after a crash carries the same id, so mail clients fold the two."""
    host = urlparse(base_url).hostname or "clinic.local"
    return f"<notice.{clinic_id}.{notice_id}@{host}>"


def render(kind: str, context: dict[str, Any]) -> Rendered:
    subject_key = kind
    if kind == "booking_confirmation" and context.get("moved"):
        subject_key = "booking_moved"
    elif kind == "booking_confirmation" and len(context.get("visits") or ()) > 1:
        subject_key = "booking_course"
    return Rendered(
        subject=SUBJECTS[subject_key].format(day=context.get("day", "")),
        text=_env.get_template(f"{kind}.txt").render(context),
        html=_env.get_template(f"{kind}.html").render(context),
    )


def context_for(row: Any, base_url: str, secret: str) -> dict[str, Any]:
    settings = row.clinic_settings or {}
    payload = row.payload or {}
    ctx: dict[str, Any] = {
        "first_name": row.first_name or payload.get("staff_name") or "",
        "clinic_name": settings.get("notice_sender_name") or row.display_name,
        "phone": row.phone,
        "moved": bool(payload.get("moved")),
        "link": None,
    }
    if payload.get("link_id") and payload.get("link_expires"):
        purpose = payload.get("link_purpose", "cost")
        token = links.sign(secret, int(payload["link_id"]), datetime.fromisoformat(payload["link_expires"]), purpose)
        ctx["link"] = f"{base_url.rstrip('/')}{links.PATHS[purpose]}{token}"
    elif payload.get("staff_path"):
        ctx["link"] = f"{base_url.rstrip('/')}{payload['staff_path']}"  # a staff page: it asks for a sign-in
    if payload.get("starts_at"):
        local = datetime.fromisoformat(payload["starts_at"]).astimezone(ZoneInfo(row.timezone))
        ctx["day"] = f"{local:%a} {local.day} {local:%b}"
        ctx["when"] = _when(local)
    # a course: one confirmation listing every visit booked with it
    ctx["visits"] = [_when(datetime.fromisoformat(v).astimezone(ZoneInfo(row.timezone))) for v in payload.get("visits") or ()]
    instructions = row.instructions
    if isinstance(instructions, str):
        instructions = json.loads(instructions)
    ctx["instructions"] = plain_instructions(instructions or [])
    if row.kind == "staff_digest":
        ctx |= {k: payload.get(k, 0) for k in ("estimates_late", "estimates_due", "rems_late", "rems_due")}
        ctx["billing_link"] = f"{base_url.rstrip('/')}/billing"
        ctx["rems_link"] = f"{base_url.rstrip('/')}/rems"
    return ctx


def _when(local: datetime) -> str:
    return f"{local:%A} {local.day} {local:%B %Y} at {local:%H:%M}"


def still_applies(row: Any, now: datetime) -> str | None:
    """Why the notice must not go out any more (None when it should)."""
    if row.patient_id is not None:
        if row.notices_opted_out or row.notice_channel != "email" or not row.patient_email:
            return "patient opted out of email notices"
    if row.kind in ("reminder", "booking_confirmation", "questionnaire"):
        if row.appointment_status != "booked":
            return f"visit is {row.appointment_status}"
        if row.appointment_starts_at.isoformat() != (row.payload or {}).get("starts_at"):
            return "visit moved"
        if row.kind in ("reminder", "questionnaire") and row.appointment_starts_at <= now:
            return "visit time passed"
    return None


def _header(name: str, value: str | Address) -> bytes:
    """One header parsed, checked (a CR or LF in a value raises ValueError: no header injection) and folded by the
    email library."""
    return policy.SMTP.fold_binary(name, policy.SMTP.header_store_parse(name, value)[1])


@lru_cache(maxsize=256)
def _from_header(sender_name: str, sender: str) -> bytes:
    # the same few clinics send thousands of notices: their From line is built once
    return _header("From", Address(display_name=sender_name, addr_spec=sender))


def build_message(rendered: Rendered, *, to: str, sender_name: str, sender: str, mid: str) -> bytes:
    """A multipart/alternative (plain text + HTML) message. The headers come from the email library; the body parts
    are written directly: the library's generic MIME machinery costs more CPU than everything else a send does."""
    boundary = f"=_{mid.strip('<>').split('@')[0]}"  # '=_' never occurs in quoted-printable text
    head = b"".join((
        _from_header(sender_name, sender),
        _header("To", to),
        _header("Subject", rendered.subject),
        _header("Message-ID", mid),
        _header("Date", format_datetime(datetime.now(timezone.utc))),
        b"MIME-Version: 1.0\r\nAuto-Submitted: auto-generated\r\n",
        f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'.encode("ascii"),
    ))
    parts = [head]
    for subtype, body in (("plain", rendered.text), ("html", rendered.html)):
        qp = binascii.b2a_qp(body.replace("\r\n", "\n").encode("utf-8")).replace(b"\n", b"\r\n")
        parts.append(
            f'--{boundary}\r\nContent-Type: text/{subtype}; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n".encode("ascii") + qp + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode("ascii"))
    return b"".join(parts)


class SmtpPool:
    """Open SMTP connections reused across notices (one per concurrent job), reopened when the server drops them."""

    def __init__(self, url: str | None, size: int = 10, timeout: float = 10) -> None:
        self.url = url
        self.timeout = timeout
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = asyncio.Semaphore(size)

    def _client(self) -> aiosmtplib.SMTP:
        if not self.url:
            raise aiosmtplib.SMTPConnectError("SMTP_URL is not set")
        u = urlparse(self.url)
        return aiosmtplib.SMTP(hostname=u.hostname, port=u.port or (465 if u.scheme == "smtps" else 25),
                               use_tls=u.scheme == "smtps", username=u.username, password=u.password, timeout=self.timeout)

    async def send(self, sender: str, to: str, msg: bytes) -> None:
        async with self._slots:
            client = self._idle.pop() if self._idle else None
            for attempt in (1, 2):
                if client is None:
                    client = self._client()
                    await client.connect()
                try:
                    await client.sendmail(sender, [to], msg)
                    self._idle.append(client)
                    return
                except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as exc:
                    client.close()
                    client = None
                    if attempt == 2:
                        raise exc
                except BaseException:
                    client.close()
                    raise

    async def close(self) -> None:
        while self._idle:
            c = self._idle.pop()
            try:
                await asyncio.wait_for(c.quit(), timeout=2)
            except Exception:
                c.close()


async def deliver(db, settings, notice_id: int, *, smtp: SmtpPool | None = None, max_attempts: int = MAX_ATTEMPTS,
                  retry_base: float = RETRY_BASE_SECONDS, stale_claim: float = STALE_CLAIM_SECONDS,
                  unrecorded: dict[int, tuple[str, datetime]] | None = None) -> str:
    """Send one notice at most once per claim (own autocommit connections, never a caller's transaction): 'sent', 'cancelled', 'skipped' (not ours or not due), 'failed'; raises Retry.

    `unrecorded` (notice id -> Message-ID and time) keeps sends the relay took while Postgres was away, so a
    later try records them instead of sending them again."""
    if unrecorded and notice_id in unrecorded:
        mid, sent_at = unrecorded[notice_id]
        await _mark(db, notice_id, "sent", mid=mid, sent_at=sent_at)
        del unrecorded[notice_id]
        return "sent"
    async with db.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        row = (await conn.execute(CLAIM, {"id": notice_id, "stale": float(stale_claim)})).first()
    if row is None:
        return "skipped"
    now = datetime.now(timezone.utc)
    mid = message_id(row.id, row.clinic_id, settings.base_url)
    reason = still_applies(row, now)
    if reason:
        await _mark(db, row.id, "cancelled", err=reason)
        return "cancelled"
    try:
        ctx = context_for(row, settings.base_url, settings.secret_key)
        rendered = render(row.kind, ctx)
        host = urlparse(settings.base_url).hostname or "clinic.local"
        sender = (row.clinic_settings or {}).get("notice_from") or f"no-reply@{host}"
        to = row.patient_email or row.to_address
        msg = build_message(rendered, to=to, sender_name=ctx["clinic_name"], sender=sender, mid=mid)
    except Exception as exc:  # a template or data problem will not fix itself by retrying
        await _mark(db, row.id, "failed", err=f"could not render: {type(exc).__name__}")
        log.error("notice %s could not be rendered: %s", row.id, type(exc).__name__)
        return "failed"
    pool = smtp or SmtpPool(settings.smtp_url, size=1)
    try:
        await pool.send(sender, to, msg)
    except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
        code = _smtp_code(exc)
        err = _smtp_problem(exc, code)
        if code is not None and 500 <= code < 600:
            await _mark(db, row.id, "failed", err=err)
            log.warning("notice %s failed: %s", row.id, err)
            return "failed"
        if row.attempts >= max_attempts:
            err = f"gave up after {row.attempts} tries: {err}"
            await _mark(db, row.id, "failed", err=err)
            log.warning("notice %s failed: %s", row.id, err)
            return "failed"
        defer = min(retry_base * 2 ** (row.attempts - 1), RETRY_MAX_SECONDS)
        await _mark(db, row.id, "pending", err=err, send_after=now.timestamp() + defer)
        raise Retry(defer, err) from None
    finally:
        if smtp is None:
            await pool.close()
    sent_at = datetime.now(timezone.utc)
    try:
        await _mark(db, row.id, "sent", mid=mid, sent_at=sent_at)
    except Exception as exc:
        if unrecorded is not None and is_unavailable(exc):
            unrecorded[row.id] = (mid, sent_at)
        raise
    return "sent"


def _smtp_code(exc: BaseException) -> int | None:
    """The relay's reply code, also when it refused the recipient's address (it names no code of its own then)."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        exc = exc.recipients[0]
    code = getattr(exc, "code", None)
    return code if isinstance(code, int) else None


def _smtp_problem(exc: BaseException, code: int | None) -> str:
    """What went wrong, for the person who fixes it at /notices; never the relay's own words, which may quote the address."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        what = "the mail relay refused the address"
    elif code is None:
        what = "could not reach the mail relay" if isinstance(exc, (OSError, asyncio.TimeoutError)) else "the mail relay could not take it"
    elif code >= 500:
        what = "the mail relay refused the message"
    else:
        what = "the mail relay said try later"
    return f"{what} ({type(exc).__name__}{f' {code}' if code is not None else ''})"


async def _mark(db, notice_id: int, status: str, *, err: str | None = None, mid: str | None = None,
                sent_at: datetime | None = None, send_after: float | None = None) -> None:
    async with db.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(MARK, {
            "id": notice_id, "status": status, "err": err, "mid": mid, "sent_at": sent_at,
            "send_after": datetime.fromtimestamp(send_after, timezone.utc) if send_after else None,
        })
