"""GET /api/v1/appointments/{id}/fhir: a FHIR R4 Bundle an EHR can take, validated with fhir.resources.

fhir.resources ships R4B (4.3), the R4 line's current release; Bundle, Patient, Appointment,
Encounter and Observation are structurally the same there as in R4 (4.0.1).
"""

from __future__ import annotations

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation

from tests.integration.test_monitoring_session import check_in, make_session, monitored_to_discharge, vitals


def codes(resource) -> set[str]:
    return {c.code for c in resource.code.coding}


async def test_the_session_bundle_validates_and_carries_coded_vital_signs(client, factory):
    s = await make_session(client, factory, starts_ago=170)
    await monitored_to_discharge(s, 130)
    await vitals(s, 2, heart_rate=76, resp_rate=14)
    assert (await s.prescriber.post(f"{s.path}/discharge", {})).status_code == 200
    r = await s.nurse.get(f"{s.path}/fhir")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+json")
    bundle = Bundle.model_validate(r.json())
    assert bundle.type == "collection"
    by_type: dict[str, list] = {}
    for entry in bundle.entry:
        by_type.setdefault(entry.resource.__resource_type__, []).append(entry.resource)
        assert entry.fullUrl.startswith("urn:uuid:")
    patient = by_type["Patient"][0]
    assert patient.name[0].family == "Rivera" and str(patient.birthDate) == "1980-05-17" and patient.gender == "female"
    assert by_type["Appointment"][0].status == "fulfilled"
    encounter = by_type["Encounter"][0]
    assert encounter.status == "finished" and encounter.period.end is not None
    refs = {e.fullUrl for e in bundle.entry}
    observations: list[Observation] = by_type["Observation"]
    for obs in observations:
        assert obs.subject.reference in refs and obs.encounter.reference in refs and obs.status == "final"
        assert obs.effectiveDateTime is not None
    vital = [o for o in observations if o.category[0].coding[0].code == "vital-signs"]
    bp = [o for o in vital if "85354-9" in codes(o)]
    assert len(bp) == 3  # pre-dose, 40 minutes, before discharge (the later HR/RR reading has no BP)
    assert {c.code.coding[0].code for c in bp[0].component} == {"8480-6", "8462-4"}
    for comp in bp[0].component:
        assert comp.valueQuantity.system == "http://unitsofmeasure.org" and comp.valueQuantity.code == "mm[Hg]"
    spo2 = [o for o in vital if {"2708-6", "59408-5"} <= codes(o)]
    assert spo2 and all(o.valueQuantity.code == "%" for o in spo2)
    hr = [o for o in vital if "8867-4" in codes(o)]
    assert hr and hr[-1].valueQuantity.value == 76 and hr[-1].valueQuantity.code == "/min"
    rr = [o for o in vital if "9279-1" in codes(o)]
    assert rr and rr[0].valueQuantity.value == 14 and rr[0].valueQuantity.code == "/min"
    surveys = [o for o in observations if o.category[0].coding[0].code == "survey"]
    assert any(o.valueInteger == 5 for o in surveys)


async def test_a_corrected_reading_is_exported_once_as_amended(client, factory):
    s = await make_session(client, factory, starts_ago=40)
    await check_in(s, 10)
    first = await vitals(s, 1, spo2=88)
    import uuid

    fixed = await s.nurse.post(f"{s.path}/entries/{first['id']}/corrections", {"client_id": str(uuid.uuid4()), "reason": "Cold fingers; re-read", "spo2": 96})
    assert fixed.status_code == 201
    bundle = Bundle.model_validate((await s.nurse.get(f"{s.path}/fhir")).json())
    obs = [e.resource for e in bundle.entry if e.resource.__resource_type__ == "Observation"]
    assert len(obs) == 1 and obs[0].status == "amended" and obs[0].valueQuantity.value == 96
    assert bundle.entry[2].resource.status == "arrived"  # Encounter of a checked-in session


async def test_the_export_is_an_audited_read_and_needs_session_read(client, factory, db):
    from sqlalchemy import select

    from clinic.audit.models import AuditEvent
    from tests.factories import bearer

    s = await make_session(client, factory)
    assert (await s.nurse.get(f"{s.path}/fhir")).status_code == 200
    billing = await factory.user(s.clinic, "billing")
    r = await client.get(f"/api/v1{s.path}/fhir", headers=bearer(await factory.token(billing)))
    assert r.status_code == 403
    async with db.sessionmaker() as x:
        actions = (await x.execute(select(AuditEvent.action).where(AuditEvent.patient_id == s.patient.id))).scalars().all()
    assert actions == ["session.fhir_export"]
