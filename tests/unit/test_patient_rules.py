"""Patient input rules (no I/O)."""

from __future__ import annotations

from datetime import date

import pytest

from clinic.errors import RuleBroken
from clinic.patients.rules import clean_patient

TODAY = date(2026, 3, 2)
BASE = {"first_name": "Ana", "last_name": "Reyes", "date_of_birth": "1980-05-17", "sex": "female", "phone": "555-010-2000"}


@pytest.mark.parametrize("key", ["medication_flags", "diagnosis_codes"])
@pytest.mark.parametrize("value", [True, 7, {"a": 1}])
def test_a_list_field_given_something_else_names_the_field(key, value):
    with pytest.raises(RuleBroken) as err:
        clean_patient({**BASE, key: value}, today=TODAY)
    assert err.value.field == key and err.value.code == "list_format"


def test_a_list_field_takes_a_list_or_comma_separated_text():
    assert clean_patient({**BASE, "diagnosis_codes": "f32.2, F41.1"}, today=TODAY)["diagnosis_codes"] == ["F32.2", "F41.1"]
    assert clean_patient({**BASE, "diagnosis_codes": ["F90.0"]}, today=TODAY)["diagnosis_codes"] == ["F90.0"]
