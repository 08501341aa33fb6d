"""Names that travel beyond the app (a clinic's or a patient's name in an email, a staff name on a page) are one
line of text: no control characters, no line breaks of any kind."""

from __future__ import annotations

import unicodedata

from clinic.errors import RuleBroken

# Cc: control characters (CR, LF, TAB, NUL ...); Zl, Zp: the line and paragraph separators
_NOT_IN_A_NAME = {"Cc", "Zl", "Zp"}


def single_line(value: str, *, field: str, label: str) -> str:
    if any(unicodedata.category(ch) in _NOT_IN_A_NAME for ch in value):
        raise RuleBroken(f"{label} must be one line of text, without line breaks or control characters.", field=field,
                         code="control_characters")
    return value
