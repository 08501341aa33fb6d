"""The shared form decoder: browser values into typed Structs, or a 422 naming the field (never a 500)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from uuid import UUID, uuid4

import pytest
from litestar.datastructures import FormMultiDict
from msgspec import Struct

from clinic.errors import RuleBroken
from clinic.forms import decode_form


class Check(Struct):
    client_id: UUID
    systolic: int | None = None
    weight_kg: Decimal | None = None
    fasting_confirmed: bool = False
    note: str | None = None
    day: date | None = None
    roles: list[str] = []
    visits: int = 1


def decode(**fields: str | list[str]) -> Check:
    items = [(k, v) for k, vs in fields.items() for v in (vs if isinstance(vs, list) else [vs])]
    return decode_form(FormMultiDict(items), Check, labels={"systolic": "Systolic BP"})


def refused(**fields: str | list[str]) -> RuleBroken:
    with pytest.raises(RuleBroken) as caught:
        decode(**fields)
    return caught.value


CID = str(uuid4())


def test_values_decode_the_way_a_person_typed_them():
    got = decode(client_id=CID, systolic="120", weight_kg="70,5", fasting_confirmed="on", note="  as typed ", day="2026-12-14",
                 roles=["nurse", " ", "admin"])
    assert got == Check(client_id=UUID(CID), systolic=120, weight_kg=Decimal("70.5"), fasting_confirmed=True, note="  as typed ",
                        day=date(2026, 12, 14), roles=["nurse", "admin"])


def test_a_blank_number_or_date_takes_its_default_and_blank_text_stays_blank():
    got = decode(client_id=CID, systolic=" ", day="", visits="", note="")
    assert (got.systolic, got.day, got.visits, got.note) == (None, None, 1, "")


def test_a_box_is_ticked_only_by_what_browsers_send_for_ticked():
    assert decode(client_id=CID, fasting_confirmed="yes").fasting_confirmed
    assert not decode(client_id=CID, fasting_confirmed="no").fasting_confirmed
    assert not decode(client_id=CID).fasting_confirmed


@pytest.mark.parametrize("value", ["³", "١٢", "１２", "12o", "1,5", "0x1F", "1.5", "9" * 5000])
def test_a_whole_number_that_does_not_decode_is_a_422_naming_the_field(value):
    problem = refused(client_id=CID, systolic=value)
    assert (problem.status_code, problem.field, problem.code) == (422, "systolic", "not_a_number")
    assert problem.detail == "Systolic BP must be a whole number."


def test_a_whole_number_past_any_range_decodes_and_is_left_to_the_rules():
    assert decode(client_id=CID, systolic="99999999999999999999999").systolic == 10**23 - 1


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-inf", "1e309", "1000000000", "seventy", "²"])
def test_a_decimal_must_be_a_finite_number_a_column_can_hold(value):
    problem = refused(client_id=CID, weight_kg=value)
    assert (problem.field, problem.code) == ("weight_kg", "not_a_number")


def test_the_largest_decimal_accepted_is_just_under_a_billion():
    assert decode(client_id=CID, weight_kg="999999999.9").weight_kg == Decimal("999999999.9")


@pytest.mark.parametrize("value", ["2026-02-30", "2026-13-01", "14/12/2026", "0000-01-01"])
def test_a_date_that_does_not_exist_is_refused(value):
    problem = refused(client_id=CID, day=value)
    assert (problem.field, problem.code) == ("day", "date_format")


@pytest.mark.parametrize("fields", [{}, {"client_id": ""}, {"client_id": "not-a-uuid"}])
def test_a_missing_or_altered_submission_id_asks_to_reload(fields):
    problem = refused(**fields)
    assert (problem.field, problem.code) == ("client_id", "reload")
    assert "reload the page" in problem.detail


def test_a_required_value_left_out_is_named():
    class Submitted(Struct):
        submitted_on: date

    with pytest.raises(RuleBroken) as caught:
        decode_form(FormMultiDict([]), Submitted)
    assert (caught.value.field, caught.value.code, caught.value.detail) == ("submitted_on", "required", "Submitted on is required.")


def test_query_strings_decode_the_same_way():
    from litestar.datastructures import MultiDict

    assert decode_form(MultiDict([("client_id", CID), ("systolic", "118")]), Check).systolic == 118
