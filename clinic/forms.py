"""HTML forms (and query strings) decoded into msgspec Structs, refusing a value that does not decode with a 422 naming the field."""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal, TypeVar, Union, get_args, get_origin
from uuid import UUID

import msgspec
from litestar import Request

from clinic.errors import RuleBroken

S = TypeVar("S", bound=msgspec.Struct)

TICKED = ("on", "yes", "true", "1")  # what browsers and our templates send for a ticked box
LARGEST = Decimal(10) ** 9  # past any dose, weight or count, and short of what Decimal arithmetic refuses


def _scalars(annotation: Any) -> set[Any]:
    """The types a field may hold, unions flattened: {int, NoneType}, {list}, {Literal}..."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return set().union(*(_scalars(a) for a in get_args(annotation)))
    if origin is Literal:
        return {Literal}
    return {origin or annotation}


async def read_form(request: Request, shape: type[S], *, labels: Mapping[str, str] | None = None) -> S:
    """The request's form as `shape`."""
    return decode_form(await request.form(), shape, labels=labels)


def decode_form(form: Any, shape: type[S], *, labels: Mapping[str, str] | None = None) -> S:
    """`form` (a form or query MultiDict) as `shape`: the values a browser sends, read the way a person typed them.

    Text fields get the text as sent (the rules trim it); a blank number, date or id is left out (its default applies);
    a checkbox is ticked or not; a list field takes every value sent. Anything else that does not decode is a
    RuleBroken naming the field, answered like a refused JSON body."""
    values: dict[str, Any] = {}
    for f in msgspec.structs.fields(shape):
        name, kinds = f.encode_name, _scalars(f.type)
        if name not in form:
            continue
        if list in kinds:
            values[name] = [v.strip() for v in form.getall(name) if isinstance(v, str) and v.strip()]
        elif bool in kinds:
            values[name] = str(form.get(name)).strip().lower() in TICKED
        else:
            raw = form.get(name)
            text = raw if isinstance(raw, str) else ""
            if str in kinds:
                values[name] = text
            elif text.strip():
                # a comma is a decimal point on some tablets' keypads
                values[name] = text.strip().replace(",", ".") if kinds & {Decimal, float} else text.strip()
    try:
        decoded = msgspec.convert(values, shape, strict=False)
    except msgspec.ValidationError as exc:
        raise refusal(str(exc), shape, labels or {}) from None
    for f in msgspec.structs.fields(shape):
        number = getattr(decoded, f.name)
        if isinstance(number, Decimal | float) and not (Decimal(number).is_finite() and abs(Decimal(number)) < LARGEST):
            raise _refused(f.name, _scalars(f.type), labels or {})
    return decoded


def refusal(message: str, shape: type[msgspec.Struct], labels: Mapping[str, str]) -> RuleBroken:
    """msgspec's complaint ("Expected `int`, got `str` - at `$.spo2`") as a sentence about the field."""
    found = re.search(r"at `\$\.([A-Za-z0-9_]+)", message) or re.search(r"missing required field `([^`]+)`", message)
    fields = {f.name: f for f in msgspec.structs.fields(shape)}
    if not found or found.group(1) not in fields:
        return RuleBroken("The form is not valid; reload the page and try again.", code="invalid")
    name = found.group(1)
    if "missing required field" in message and UUID not in _scalars(fields[name].type):
        return RuleBroken(f"{_label(name, labels)} is required.", field=name, code="required")
    return _refused(name, _scalars(fields[name].type), labels)


def _refused(name: str, kinds: set[Any], labels: Mapping[str, str]) -> RuleBroken:
    label = _label(name, labels)
    if UUID in kinds:  # never typed by a person: it came with the page
        return RuleBroken(f"{label} is missing or altered; reload the page and try again.", field=name, code="reload")
    if int in kinds:
        return RuleBroken(f"{label} must be a whole number.", field=name, code="not_a_number")
    if kinds & {Decimal, float}:
        return RuleBroken(f"{label} must be a number.", field=name, code="not_a_number")
    if datetime in kinds:
        return RuleBroken(f"{label} must be a date and time.", field=name, code="datetime_format")
    if date in kinds:
        return RuleBroken(f"{label} must be a date like 2026-12-14.", field=name, code="date_format")
    return RuleBroken(f"Choose {label.lower()} from the list.", field=name, code="not_allowed")


def _label(name: str, labels: Mapping[str, str]) -> str:
    return labels.get(name) or name.replace("_", " ").capitalize()
