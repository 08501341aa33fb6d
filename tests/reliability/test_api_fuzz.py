"""Schemathesis against /schema/openapi.json: every /api/v1 operation, valid and invalid input, no 5xx, answers match the schema.

The operations are read from the running app's schema, so a route added later is fuzzed without touching this
file. Each operation is called with the token of a role its permission allows (admin where it may), against its
own database holding the demo clinic (every session phase, billing, notices), so valid ids reach real rows.
"""

from __future__ import annotations

import asyncio
import json
import os
import zlib
from dataclasses import dataclass, field

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.failures import AcceptedNegativeData
from schemathesis.core.result import Ok
from schemathesis.checks import CHECKS as REGISTERED_CHECKS
from schemathesis.specs.openapi.checks import negative_data_rejection
from sqlalchemy import text

from clinic.app import create_app
from clinic.auth.permissions import PERMISSIONS, allows
from clinic.db import Database
from tests.reliability.conftest import OWN_IDS, ROLE_PREFERENCE, demo_database
from tests.reliability.helpers import LiveServer

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "10"))


def _only_numbers_for_instants(case) -> bool:
    """Litestar parses query values with msgspec, which reads a bare number as a Unix timestamp: lenient, harmless."""
    mutations = list(getattr(getattr(case.meta.phase, "data", None), "mutations", None) or ())
    if not mutations:
        return False
    for m in mutations:
        if m.parameter_location.name != "QUERY" or m.parameter is None:
            return False
        param = next((p for p in case.operation.query if p.name == m.parameter), None)
        value = (case.query or {}).get(m.parameter)
        if param is None or "date" not in json.dumps(param.definition) or isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
    return True


def negative_data_rejected(ctx, response, case):
    try:
        return negative_data_rejection(ctx, response, case)
    except AcceptedNegativeData:
        if _only_numbers_for_instants(case):
            return None
        raise


# every check schemathesis has (as `--checks all`) but two that need every operation to document each answer it gives
# and each constraint its rules apply; those wait for the typed API
AWAITING_DOCUMENTED_ANSWERS = {"status_code_conformance", "positive_data_acceptance"}
CHECKS = [negative_data_rejected if check is negative_data_rejection else check
          for check in REGISTERED_CHECKS.get_all() if check.__name__ not in AWAITING_DOCUMENTED_ANSWERS]

CONFIG = schemathesis.Config.from_dict({
    # the bearer token is ours to send (per role); unknown query parameters are ignored, as HTTP APIs do
    "generation": {"with-security-parameters": False, "allow-extra-parameters": False},
    "request-timeout": 20,
})


@dataclass
class FuzzTarget:
    url: str
    tokens: dict[str, str]
    # operation "METHOD /path/{param}" -> permission declared on its route
    permissions: dict[str, str]
    # path parameter name -> real ids in the fuzzed clinic
    ids: dict[str, list[int]] = field(default_factory=dict)
    session: requests.Session = field(default_factory=requests.Session)
    # operation -> status codes it answered, to show the fuzzing reached the handlers
    answers: dict[str, list[int]] = field(default_factory=dict)


def _plain(path: str) -> str:
    """/api/v1/patients/{patient_id:int} -> /api/v1/patients/{patient_id}"""
    out, depth, skip = [], 0, False
    for ch in path:
        if ch == "{":
            depth, skip = depth + 1, False
        elif ch == "}":
            depth, skip = depth - 1, False
        elif ch == ":" and depth:
            skip = True
            continue
        if not skip:
            out.append(ch)
    return "".join(out)


def route_permissions(app) -> dict[str, str]:
    from litestar.routes import HTTPRoute

    found = {}
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            for method, (handler, _) in route.route_handler_map.items():
                found[f"{method} {_plain(route.path)}"] = handler.opt.get("permission") or ("public" if handler.opt.get("public") else "")
    return found


def _table_for(param: str) -> list[str]:
    special = {"user_id": "staff_users", "staff_id": "staff_users", "token_id": "api_tokens"}
    if param in special:
        return [special[param]]
    stem = param.removesuffix("_id")
    return [stem + "s", stem + "es", stem]


async def known_ids(db: Database, params: set[str]) -> dict[str, list[int]]:
    from sqlmodel import SQLModel

    out: dict[str, list[int]] = {}
    async with db.engine.connect() as conn:
        for name in sorted(params):
            for table in _table_for(name):
                if table in SQLModel.metadata.tables:
                    ids = [r[0] for r in await conn.execute(text(f"SELECT id FROM {table} WHERE id < :own ORDER BY id LIMIT 40"), {"own": OWN_IDS})]
                    if ids:
                        out[name] = ids
                    break
    return out


@pytest.fixture(scope="module")
async def fuzz_target(_servers, redis_url):
    """The demo clinic in a database of its own, a token per role, and the app serving it under uvicorn."""
    async with demo_database(_servers[0], redis_url) as demo:
        app = create_app(demo.settings)
        perms = route_permissions(app)
        params = {p.strip("{}") for key in perms for p in key.split("/") if p.startswith("{")}
        target = FuzzTarget(url="", tokens=demo.tokens, permissions=perms, ids=await known_ids(demo.db, params))
        server = LiveServer(app).start()
        target.url = server.url
        try:
            yield target
        finally:
            server.stop()


def role_for(permission: str) -> str:
    if permission == "public":
        return "admin"
    for role in ROLE_PREFERENCE:
        if allows(permission, [role]):
            return role
    raise AssertionError(f"no role holds permission {permission!r} (known: {sorted(PERMISSIONS)})")


def call(target: FuzzTarget, case) -> None:
    key = f"{case.method.upper()} {case.operation.path}"
    permission = target.permissions[key]
    # every other example aims at a real row of the clinic, so handlers get past "not found" into their rules
    digest = zlib.crc32(repr(sorted((case.path_parameters or {}).items())).encode() + repr(case.body).encode()[:2000])
    if digest % 2 == 0:
        for name, value in list((case.path_parameters or {}).items()):
            real = target.ids.get(name)
            if real and isinstance(value, int):
                case.path_parameters[name] = real[digest % len(real)]
    headers = {"Authorization": f"Bearer {target.tokens[role_for(permission)]}"}
    response = case.call_and_validate(base_url=target.url, session=target.session, headers=headers, checks=CHECKS)
    target.answers.setdefault(key, []).append(response.status_code)


def fuzz_operation(target: FuzzTarget, operation, mode: GenerationMode) -> None:
    @settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        call(target, case)

    run()


async def test_every_api_operation_survives_fuzzing(fuzz_target):
    schema = schemathesis.openapi.from_url(f"{fuzz_target.url}/schema/openapi.json", config=CONFIG)
    operations, failures = [], []
    for result in schema.get_all_operations():
        if not isinstance(result, Ok):
            failures.append(f"schema error: {result.err()}")
            continue
        op = result.ok()
        if op.path.startswith("/api/v1/"):
            operations.append(op)
    in_schema = {f"{op.method.upper()} {op.path}" for op in operations}
    routed = {k for k in fuzz_target.permissions if k.split(" ", 1)[1].startswith("/api/v1/") and not k.startswith(("OPTIONS", "HEAD"))}
    assert routed == in_schema, f"API routes missing from the schema: {sorted(routed - in_schema)}; schema without a route: {sorted(in_schema - routed)}"

    def run_all() -> None:
        for op in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                try:
                    fuzz_operation(fuzz_target, op, mode)
                except Unsatisfiable:
                    if mode is GenerationMode.POSITIVE:
                        raise
                    # an operation without parameters or body has no invalid input to send
                except (Exception, BaseExceptionGroup) as exc:  # collect every operation's finding, then report them together
                    failures.append(f"--- {op.method.upper()} {op.path} ({mode.value})\n{str(exc)[:2500]}")

    await asyncio.to_thread(run_all)
    assert not failures, f"{len(failures)} finding(s) over {len(operations)} operations:\n" + "\n".join(failures)
    assert set(fuzz_target.answers) == in_schema, f"never called: {sorted(in_schema - set(fuzz_target.answers))}"
    # valid input with real ids got past validation into the handlers for most operations
    succeeded = sorted(k for k, codes in fuzz_target.answers.items() if any(200 <= c < 300 for c in codes))
    print(f"{sum(map(len, fuzz_target.answers.values()))} requests; {len(succeeded)}/{len(in_schema)} operations answered 2xx")
    assert len(succeeded) >= len(in_schema) // 2, f"only these operations ever succeeded: {succeeded}"
