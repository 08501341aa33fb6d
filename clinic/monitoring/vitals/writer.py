"""The vitals entry write, and the writer that lets entries arriving together share one statement and one commit.

Every entry is judged on its own: record_entry (entry.py) reads its chart's state and runs the rules. What entries
share is the write. Under load the commit is the dearest part of an entry, and a transaction that sends NOTIFY
commits holding a lock that every other notifying transaction of the server waits for, so one commit per entry
caps the entries per second of the whole clinic. EntryWriter therefore sends the entries that arrived while a write
was in flight as one statement: for each entry the chart's version is checked, the entry, its alerts and its audit
event are inserted and the board is notified, exactly as if it had been written alone. A batch never holds two
entries of one session (or one client_id), and one entry the database refuses does not fail the others: the batch
is then written again one entry at a time, so each caller gets its own answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

import asyncpg

from clinic.monitoring.service.entries import alert_not_open

log = logging.getLogger(__name__)


class EntryWrite(NamedTuple):
    """One entry as the write statement takes it; `alerts` are the rules' (level, code, message) drafts."""

    appointment_id: int
    clinic_id: int
    chart_version: int  # the version the rules were evaluated on: a newer chart takes nothing
    status: str
    client_id: UUID
    check_key: str | None
    taken_at: datetime
    recorded_by: int
    recorded_at: datetime
    systolic: int | None
    diastolic: int | None
    heart_rate: int | None
    spo2: int | None
    resp_rate: int | None
    moaas: int | None
    dissociation_form: str | None
    dissociation_items: str | None  # JSON text
    dissociation_total: int | None
    note: str | None
    ip: str | None
    patient_id: int
    changes: str  # the audit event's JSON text
    channel: str
    payload: str  # the board notice
    alerts: tuple[tuple[str, str, str], ...] = ()


_SCALARS = len(EntryWrite._fields) - 1  # every field but alerts is one array of the statement

# One statement per batch: each entry's chart version is bumped only if it still matches (which also locks the
# session's row), its entry is inserted only then, its alerts only if no alert of that code is still open on the
# session, then its audit event and the board's notice. Per entry: gated (the version matched), the entry's id
# (NULL when gated but the client_id was stored before: a repeat), and the alerts raised.
ENTRY_WRITE = f"""
    WITH batch AS (
        SELECT * FROM unnest($1::int[], $2::int[], $3::int[], $4::text[], $5::uuid[], $6::text[], $7::timestamptz[], $8::int[],
                             $9::timestamptz[], $10::int[], $11::int[], $12::int[], $13::int[], $14::int[], $15::int[], $16::text[],
                             $17::text[], $18::int[], $19::text[], $20::text[], $21::int[], $22::text[], $23::text[], $24::text[])
            WITH ORDINALITY AS b(appointment_id, clinic_id, chart_version, status, client_id, check_key, taken_at, recorded_by,
                                 recorded_at, systolic, diastolic, heart_rate, spo2, resp_rate, moaas, dissociation_form,
                                 dissociation_items, dissociation_total, note, ip, patient_id, changes, channel, payload, n)
    ), chart AS (
        UPDATE appointments a SET chart_version = a.chart_version + 1
        FROM batch b
        WHERE a.id = b.appointment_id AND a.clinic_id = b.clinic_id AND a.chart_version = b.chart_version AND a.status = b.status
        RETURNING b.n
    ), inserted AS (
        INSERT INTO clinical_entries (clinic_id, appointment_id, client_id, check_key, taken_at, recorded_by, recorded_at, entered_in_error,
                                      systolic, diastolic, heart_rate, spo2, resp_rate, moaas, dissociation_form, dissociation_items,
                                      dissociation_total, note)
        SELECT b.clinic_id, b.appointment_id, b.client_id, b.check_key, b.taken_at, b.recorded_by, b.recorded_at, false,
               b.systolic, b.diastolic, b.heart_rate, b.spo2, b.resp_rate, b.moaas, b.dissociation_form, b.dissociation_items::jsonb,
               b.dissociation_total, b.note
        FROM batch b JOIN chart c ON c.n = b.n
        ORDER BY b.n
        ON CONFLICT (client_id) DO NOTHING
        RETURNING id, appointment_id, client_id
    ), raised AS (
        INSERT INTO session_alerts (clinic_id, appointment_id, entry_id, level, code, message, raised_at)
        SELECT b.clinic_id, i.appointment_id, i.id, d.level, d.code, d.message, b.recorded_at
        FROM unnest($25::int[], $26::text[], $27::text[], $28::text[]) WITH ORDINALITY AS d(n, level, code, message, k)
        JOIN batch b ON b.n = d.n
        JOIN inserted i ON i.client_id = b.client_id
        WHERE {alert_not_open("i.appointment_id", "d.code")}
        ORDER BY d.k
        RETURNING id, entry_id, code
    ), audited AS (
        INSERT INTO audit_events (clinic_id, at, user_id, ip, action, entity, entity_id, patient_id, changes)
        SELECT b.clinic_id, b.recorded_at, b.recorded_by, b.ip, 'session.entry', 'clinical_entry', i.id::text, b.patient_id,
               b.changes::jsonb || jsonb_build_object(
                   'alerts', coalesce((SELECT jsonb_agg(r.code ORDER BY r.id) FROM raised r WHERE r.entry_id = i.id), '[]'::jsonb))
        FROM inserted i JOIN batch b ON b.client_id = i.client_id
        ORDER BY b.n
    )
    SELECT b.n, c.n IS NOT NULL AS gated, i.id,
           (SELECT array_agg(r.id ORDER BY r.id) FROM raised r WHERE r.entry_id = i.id) AS alert_ids,
           (SELECT array_agg(r.code ORDER BY r.id) FROM raised r WHERE r.entry_id = i.id) AS alert_codes,
           CASE WHEN i.id IS NOT NULL THEN pg_notify(b.channel, b.payload) END AS notified
    FROM batch b LEFT JOIN chart c ON c.n = b.n LEFT JOIN inserted i ON i.client_id = b.client_id
    ORDER BY b.n
"""


async def write_entries(conn: asyncpg.Connection, entries: Sequence[EntryWrite]) -> list[asyncpg.Record]:
    """Write `entries` (distinct sessions, distinct client_ids) in one statement; one result row per entry, in order.
    Outside a transaction the statement commits on its own; inside one it joins it."""
    columns: list[list[Any]] = [[] for _ in range(_SCALARS)]
    alert_n: list[int] = []
    levels: list[str] = []
    codes: list[str] = []
    messages: list[str] = []
    for n, entry in enumerate(entries, 1):
        for column, value in zip(columns, entry):
            column.append(value)
        for level, code, message in entry.alerts:
            alert_n.append(n)
            levels.append(level)
            codes.append(code)
            messages.append(message)
    return await conn.fetch(ENTRY_WRITE, *columns, alert_n, levels, codes, messages)


# an entry handed in, and the future its caller waits on
_Waiting = tuple[EntryWrite, "asyncio.Future[asyncpg.Record]"]


class EntryWriter:
    """Entries of one process, written together: while a write is in flight, new entries wait and go in the next
    statement with every other entry that arrived meanwhile (at most BATCH). A lone entry is written at once.

    `connection` gives a driver connection for one write (Database.raw). A caller must not hold a connection of
    the same pool while it waits here. An entry is written even if its caller stopped waiting (a tablet that
    timed out sends it again with the same client_id and gets the stored result)."""

    BATCH = 64
    WRITERS = 2  # one statement executing while the other commits

    def __init__(self, connection: Callable[[], AbstractAsyncContextManager[asyncpg.Connection]]) -> None:
        self._connection = connection
        self._waiting: deque[_Waiting] = deque()
        # the sessions and client_ids of the batches being written (one of each per entry)
        self._sessions: set[int] = set()
        self._client_ids: set[UUID] = set()
        self._writers: set[asyncio.Task[None]] = set()
        self.statements = 0  # statements sent (batches and single retries): how much the entries shared

    @property
    def waiting(self) -> int:
        """Entries handed in and not yet taken into a statement."""
        return len(self._waiting)

    @property
    def in_flight(self) -> int:
        """Entries in the statements being written."""
        return len(self._sessions)

    async def write(self, entry: EntryWrite) -> asyncpg.Record:
        """The entry's result row (see ENTRY_WRITE); raises what the database raised for this entry."""
        future: asyncio.Future[asyncpg.Record] = asyncio.get_running_loop().create_future()
        self._waiting.append((entry, future))
        if len(self._writers) < self.WRITERS:
            self._start_writer()
        return await future

    async def aclose(self) -> None:
        """Wait for the entries already handed in to be written (shutdown)."""
        while self._writers:
            await asyncio.gather(*self._writers, return_exceptions=True)

    def _start_writer(self) -> None:
        task = asyncio.get_running_loop().create_task(self._write_while_waiting())
        self._writers.add(task)

    async def _write_while_waiting(self) -> None:
        try:
            while batch := self._take():
                sessions = {entry.appointment_id for entry, _ in batch}
                client_ids = {entry.client_id for entry, _ in batch}
                self._sessions |= sessions
                self._client_ids |= client_ids
                try:
                    await self._write(batch)
                finally:
                    self._sessions -= sessions
                    self._client_ids -= client_ids
        finally:
            self._writers.discard(asyncio.current_task())  # type: ignore[arg-type]
            # entries held back while their session was in another writer's batch are that writer's to take next;
            # were this the last writer (it failed), a new one takes them
            if self._waiting and not self._writers:
                self._start_writer()

    def _take(self) -> list[_Waiting]:
        """The next batch, in arrival order: entries whose session or client_id is already in a batch wait."""
        batch: list[_Waiting] = []
        held: list[_Waiting] = []
        sessions, client_ids = set(self._sessions), set(self._client_ids)
        while self._waiting and len(batch) < self.BATCH:
            item = self._waiting.popleft()
            entry = item[0]
            if entry.appointment_id in sessions or entry.client_id in client_ids:
                held.append(item)
            else:
                sessions.add(entry.appointment_id)
                client_ids.add(entry.client_id)
                batch.append(item)
        self._waiting.extendleft(reversed(held))
        # in session order, so batches of two processes that share sessions tend to lock them in the same order;
        # a deadlock Postgres breaks refuses one statement, whose entries are then written one by one
        batch.sort(key=lambda item: item[0].appointment_id)
        return batch

    async def _write(self, batch: list[_Waiting]) -> None:
        try:
            async with self._connection() as conn:
                self.statements += 1
                rows = await write_entries(conn, [entry for entry, _ in batch])
        except (asyncpg.PostgresError, asyncpg.DataError) as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc=exc)
                return
            # the database refused something in the batch (nothing of it was written): each entry alone, so the
            # one at fault gets the refusal and the others are written
            log.info("an entry batch of %d was refused (%s); writing its entries one by one", len(batch), type(exc).__name__)
            for item in batch:
                await self._write([item])
            return
        except Exception as exc:  # the connection, a timeout: every caller hears it
            for _, future in batch:
                _settle(future, exc=exc)
            return
        except BaseException:  # shutdown cancelled the write
            for _, future in batch:
                _settle(future, exc=ConnectionError("The write was interrupted."))
            raise
        for (_, future), row in zip(batch, rows):
            _settle(future, row=row)


def _settle(future: asyncio.Future[asyncpg.Record], *, row: asyncpg.Record | None = None, exc: BaseException | None = None) -> None:
    if future.done():  # the caller stopped waiting (the entry was still written, or refused)
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(row)  # type: ignore[arg-type]
