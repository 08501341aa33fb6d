"""The vitals fast path: one vitals or assessment entry from a tablet, judged by the rules and written in one statement.

Every tablet, every check: two statements on the driver connection, no ORM. The gate reads the session's
state, the BP reading before this one (two-in-a-row rule) and a replay of this client_id; the rules run in
Python; then ONE statement (writer.ENTRY_WRITE) bumps appointments.chart_version (which locks the row), inserts
the entry, the alerts it raises and the audit event, and notifies the board. The bump only matches the version
the gate read, so if another write reached the chart in between (a second tablet, a discharge) nothing is
written and the rules run again on the fresh state: writers of one chart are serialised without holding a lock
across round trips, and a lone statement needs no BEGIN/COMMIT of its own. On the API, entries of different
sessions arriving together share that statement and its commit (writer.EntryWriter).
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime

from clinic.audit.service import Actor, jsonable
from clinic.db import Statements
from clinic.errors import Conflict, NotFound
from clinic.monitoring import rules
from clinic.monitoring.models import AlertView, EntryView
from clinic.monitoring.service.entries import EntryResult, Measurements, valid_check_key
from clinic.monitoring.service.session import CURRENT_ENTRY, channel, require_state
from clinic.monitoring.vitals.memo import ChartMemo, after_write
from clinic.monitoring.vitals.writer import EntryWrite, EntryWriter, write_entries
from clinic.scheduling.protocols import protocol_from_json, protocol_json
from clinic.timeutil import utcnow

_ENTRY_GATE = f"""
    SELECT a.id, a.clinic_id, a.patient_id, a.status, a.checked_in_at, a.dosing_started_at, a.discharged_at, a.chart_version,
           {protocol_json("st")}::text AS protocol, c.timezone,
           (SELECT e.id FROM clinical_entries e WHERE e.client_id = $3) AS replay_id,
           prev.id AS prev_id, prev.taken_at AS prev_taken_at, prev.systolic AS prev_systolic, prev.diastolic AS prev_diastolic,
           (SELECT max(e.taken_at) FROM clinical_entries e WHERE e.appointment_id = a.id AND e.systolic IS NOT NULL) AS last_bp_at
    FROM appointments a
    JOIN session_types st ON st.id = a.session_type_id
    JOIN clinics c ON c.id = a.clinic_id
    LEFT JOIN LATERAL (
        SELECT e.id, e.taken_at, e.systolic, e.diastolic FROM clinical_entries e
        WHERE e.appointment_id = a.id AND e.systolic IS NOT NULL AND e.taken_at <= $4 AND {CURRENT_ENTRY}
        ORDER BY e.taken_at DESC, e.id DESC LIMIT 1
    ) prev ON true
    WHERE a.id = $1 AND a.clinic_id = $2
"""
# a chart another write keeps changing (say a storm of retries on one session) is answered with a retry hint
_ENTRY_ATTEMPTS = 5


async def record_entry(
    conn: Statements,
    *,
    actor: Actor,
    appointment_id: int,
    client_id: uuid.UUID,
    values: Measurements,
    taken_at: datetime | None = None,
    check_key: str | None = None,
    now: datetime | None = None,
    memo: ChartMemo | None = None,
    writer: EntryWriter | None = None,
) -> EntryResult:
    """Vitals, MOAA/S, dissociation and/or a note taken at one moment; a repeated client_id returns the first result.

    `conn` is a driver connection (session_driver for a page's session, Database.raw) or anything with its fetchrow
    and fetch (Database.statements): inside a transaction (a page that already read, the demo seed, a test) the
    write joins it, otherwise it commits on its own. With a `writer` the write goes with the entries of other
    tablets that arrive meanwhile (see EntryWriter; then `conn` must not hold a connection of the writer's pool).
    With a `memo`, a session charted lately from this process skips the gate (see ChartMemo)."""
    now = now or utcnow()
    at = taken_at or now
    for attempt in range(_ENTRY_ATTEMPTS):
        memo_hit = memo.get(actor.clinic_id, appointment_id, at) if memo is not None and attempt == 0 else None
        if memo_hit is not None:
            read_at, gate = memo_hit
        else:
            read_at = time.monotonic()
            row = await conn.fetchrow(_ENTRY_GATE, appointment_id, actor.clinic_id, client_id, at)
            if row is None:
                raise NotFound("No such appointment in this clinic.")
            if row["replay_id"] is not None:
                return await _replay(conn, actor=actor, appointment_id=appointment_id, client_id=client_id)
            gate = dict(row)
            gate["protocol"] = protocol_from_json(row["protocol"])  # decoded once per memo entry
        tz, protocol = gate["timezone"], gate["protocol"]
        require_state(status=gate["status"], monitored=protocol.monitored, type_name=protocol.name, discharged_at=gate["discharged_at"], tz=tz, what="entries")
        checked_in = gate["checked_in_at"]
        what = f"check-in ({rules.hm(checked_in, tz)})" if checked_in and at.tzinfo and at < checked_in else "check-in"  # formatted only when said
        rules.check_taken_at(at, now, not_before=checked_in, not_before_what=what)
        cleaned = values.cleaned()
        key = valid_check_key(protocol, check_key)
        reading = rules.Reading(taken_at=at, check_key=key, **{k: cleaned[k] for k in ("systolic", "diastolic", "heart_rate", "spo2", "resp_rate", "moaas", "dissociation_form", "dissociation_total")})
        previous = rules.Reading(taken_at=gate["prev_taken_at"], id=gate["prev_id"], systolic=gate["prev_systolic"], diastolic=gate["prev_diastolic"]) if gate["prev_id"] else None
        dosed = gate["dosing_started_at"]
        drafts = rules.evaluate_alerts(protocol, reading, previous_bp=previous, before_dosing=dosed is None or at < dosed)
        changes = {"appointment_id": gate["id"], "taken_at": at, "check_key": key, **{k: v for k, v in cleaned.items() if v is not None}}
        items = cleaned["dissociation_items"]
        write = EntryWrite(
            gate["id"], gate["clinic_id"], gate["chart_version"], gate["status"], client_id, key, at, actor.user_id, now,
            cleaned["systolic"], cleaned["diastolic"], cleaned["heart_rate"], cleaned["spo2"], cleaned["resp_rate"], cleaned["moaas"],
            cleaned["dissociation_form"], json.dumps(items) if items is not None else None, cleaned["dissociation_total"], cleaned["note"],
            actor.ip, gate["patient_id"], json.dumps(jsonable(changes)), channel(gate["clinic_id"]),
            json.dumps({"appointment_id": gate["id"], "what": "entry"}), tuple((d.level, d.code, d.message) for d in drafts),
        )
        row = await writer.write(write) if writer is not None else (await write_entries(conn, [write]))[0]  # type: ignore[arg-type]
        if not row["gated"] or row["id"] is None:
            if memo is not None:
                memo.forget(actor.clinic_id, appointment_id)
            if not row["gated"]:
                continue  # the chart changed since the gate read it: evaluate again
            # the same submission was stored a moment ago
            return await _replay(conn, actor=actor, appointment_id=appointment_id, client_id=client_id)
        if memo is not None and (after := after_write(gate, row["id"], at, cleaned)) is not None:
            memo.remember(actor.clinic_id, appointment_id, after, read_at)
        # the stored row is what was sent: only its id is new
        entry = EntryView(
            id=row["id"], clinic_id=gate["clinic_id"], appointment_id=gate["id"], client_id=client_id, check_key=key, taken_at=at,
            recorded_by=actor.user_id, recorded_at=now, supersedes_id=None, correction_reason=None, entered_in_error=False, **cleaned,
        )
        by_code = {d.code: d for d in drafts}
        raised = [
            AlertView(id=i, clinic_id=entry.clinic_id, appointment_id=entry.appointment_id, entry_id=entry.id, level=by_code[c].level, code=c,
                      message=by_code[c].message, raised_at=now, acknowledged_by=None, acknowledged_at=None, note=None)
            for i, c in zip(row["alert_ids"] or (), row["alert_codes"] or ())
        ]  # few entries raise any
        return EntryResult(entry, raised, created=True, tz=tz)
    raise Conflict("This session's chart is changing too fast to record this entry; send it again.", code="busy")


# the replay reads the views' columns, in their order
_REPLAY_ENTRY = f"""
    SELECT {", ".join(f"e.{name}" for name in EntryView.__struct_fields__)}, c.timezone
    FROM clinical_entries e JOIN clinics c ON c.id = e.clinic_id WHERE e.client_id = $1
"""
_REPLAY_ALERTS = f"SELECT {', '.join(AlertView.__struct_fields__)} FROM session_alerts WHERE entry_id = $1 ORDER BY id"
_ENTRY_FIELDS = len(EntryView.__struct_fields__)


async def _replay(conn: Statements, *, actor: Actor, appointment_id: int, client_id: uuid.UUID) -> EntryResult:
    """The first result of a repeated submission (what a correction's replay answers, on the driver connection)."""
    row = await conn.fetchrow(_REPLAY_ENTRY, client_id)
    assert row is not None  # only called once the client_id is known to be stored
    if row["clinic_id"] != actor.clinic_id or row["appointment_id"] != appointment_id:
        raise Conflict("This client_id was already used for another entry; generate a new one.", field="client_id", code="client_id_reused")
    alerts = [AlertView(*a) for a in await conn.fetch(_REPLAY_ALERTS, row["id"])]
    return EntryResult(EntryView(*row[:_ENTRY_FIELDS]), alerts, created=False, tz=row["timezone"])
