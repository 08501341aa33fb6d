"""/schema/openapi.json documents every /api/v1 answer: the success body and each error status with the one error shape."""

from __future__ import annotations

import pytest

ERROR_REF = "#/components/schemas/ErrorBody"


@pytest.fixture
async def schema(client) -> dict:
    r = await client.get("/schema/openapi.json")
    assert r.status_code == 200
    return r.json()


def api_operations(schema: dict) -> list[tuple[str, str, dict]]:
    return [(method.upper(), path, op) for path, item in schema["paths"].items() if path.startswith("/api/v1/")
            for method, op in item.items() if method in ("get", "post", "put", "patch", "delete")]


def named(schema: dict) -> bool:
    """A body documented by a Struct (a component with its fields), or a list of one: not a bare object or dict."""
    return "$ref" in schema or (schema.get("type") == "array" and "$ref" in schema.get("items", {}))


def expected_errors(method: str, path: str, op: dict) -> set[str]:
    """401 and 403 everywhere; 404 with a path id; 409 on writes; 422 where the client sends a body or query."""
    params = op.get("parameters", [])
    expected = {"401", "403"}
    if any(p["in"] == "path" for p in params):
        expected.add("404")
    if method != "GET":
        expected.add("409")
    if "requestBody" in op or any(p["in"] == "query" for p in params):
        expected.add("422")
    return expected


def test_the_expected_errors_follow_the_operation():
    get_one = {"parameters": [{"in": "path", "name": "patient_id"}]}
    assert expected_errors("GET", "/api/v1/patients/{patient_id}", get_one) == {"401", "403", "404"}
    assert expected_errors("GET", "/api/v1/board", {}) == {"401", "403"}
    assert expected_errors("POST", "/api/v1/patients", {"requestBody": {}}) == {"401", "403", "409", "422"}
    assert expected_errors("GET", "/api/v1/patients", {"parameters": [{"in": "query", "name": "q"}]}) == {"401", "403", "422"}
    assert named({"$ref": "#/components/schemas/PatientOut"}) and named({"type": "array", "items": {"$ref": "#/x"}})
    assert not named({"type": "object", "additionalProperties": {}}) and not named({"type": "array", "items": {"type": "object"}})


async def test_every_api_operation_documents_its_success_body_and_its_errors(schema):
    operations = api_operations(schema)
    assert len(operations) > 60
    problems = []
    for method, path, op in operations:
        responses = op["responses"]
        success = [s for s in responses if s.startswith("2")]
        if not success:
            problems.append(f"{method} {path}: no success status")
        for status in success:
            content = responses[status].get("content") or {}
            if status != "204" and not any(named(media.get("schema") or {}) for media in content.values()):
                problems.append(f"{method} {path}: {status} has no named body schema (a Struct, or a list of one)")
        for status in sorted(expected_errors(method, path, op)):
            answer = responses.get(status)
            if answer is None:
                problems.append(f"{method} {path}: {status} not documented")
            elif answer["content"]["application/json"]["schema"].get("$ref") != ERROR_REF:
                problems.append(f"{method} {path}: {status} is not the ErrorBody shape")
        for status in responses:
            if status.startswith(("4", "5")) and responses[status]["content"]["application/json"]["schema"].get("$ref") != ERROR_REF:
                problems.append(f"{method} {path}: {status} documents another error shape")
    assert not problems, "\n".join(problems)


async def test_the_error_body_says_detail_field_and_code(schema):
    body = schema["components"]["schemas"]["ErrorBody"]
    assert set(body["required"]) == {"status_code", "detail"}
    assert {"detail", "field", "code", "status_code"} <= set(body["properties"])
