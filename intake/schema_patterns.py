"""The request fields' rules as JSON Schema patterns, for intake/openapi.json.

Built from the validator's own constants (intake/validation.py, intake/nik.py),
so that a value the document's schema accepts is one the door accepts, wherever a
pattern can say it (issue 17): a schema-driven client, or a fuzzer, then meets 422
only for what no schema can express (a birth date that must match the NIK's, the
age on the day of submission). tests/intake/test_schema_patterns.py checks that
the document holds these patterns, and that they agree with the validator.

Characters are written literally, not as regex escapes: every regex dialect a
JSON Schema tool uses (ECMA-262, Python's `re`, Rust's `regex`) reads a literal
code point the same way, and JSON's `\\uXXXX` keeps the document ASCII.
"""

from __future__ import annotations

import functools
import sys
import unicodedata
from collections.abc import Callable, Iterator
from typing import Final

from intake import nik, validation

_PROVINCES: Final = sorted(nik.PROVINCE_CODES)
# Two digits that are not 00: a regency or district code.
_AREA: Final = "(?:0[1-9]|[1-9][0-9])"
# DDMMYY, with 40 added to the day for women. 29 February needs a leap year: the
# century the door resolves is 1927-2026 (in 2026), where YY % 4 == 0 decides it.
_DATE: Final = (
    "(?:"
    "(?:0[1-9]|1[0-9]|2[0-8]|4[1-9]|5[0-9]|6[0-8])(?:0[1-9]|1[0-2])[0-9]{2}"
    "|(?:29|30|69|70)(?:0[13-9]|1[0-2])[0-9]{2}"
    "|(?:31|71)(?:0[13578]|1[02])[0-9]{2}"
    "|(?:29|69)02(?:[02468][048]|[13579][26])"
    ")"
)
# The name's punctuation besides the space, escaped for a character class.
_PUNCTUATION: Final = ".'\\-"
_SERIAL: Final = "(?:000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})"


def nik_pattern() -> str:
    """The NIK's structure: province, regency and district codes, DDMMYY, serial."""
    provinces = "|".join(_PROVINCES)
    return f"^(?:{provinces}){_AREA}{_AREA}{_DATE}{_SERIAL}$"


def email_pattern() -> str:
    """The validator's dot-atom local part and host-name domain, whole."""
    return f"^{validation._DOT_ATOM.pattern}@{validation._DOMAIN.pattern}$"


def _ranges(accept: Callable[[str], bool]) -> Iterator[tuple[int, int]]:
    start = None
    for code in range(sys.maxunicode + 2):
        inside = code <= sys.maxunicode and accept(chr(code))
        if inside and start is None:
            start = code
        elif not inside and start is not None:
            yield start, code - 1
            start = None


def _class(accept: Callable[[str], bool], extra: str = "") -> str:
    parts = [chr(a) if a == b else f"{chr(a)}-{chr(b)}" for a, b in _ranges(accept)]
    return "[" + "".join(parts) + extra + "]"


def _stable(char: str) -> bool:
    # A character NFC changes is left out: some grow (U+0958 becomes two code
    # points), and the schema could not count the name's length after NFC.
    return unicodedata.normalize("NFC", char) == char


def _letter(char: str) -> bool:
    return unicodedata.category(char)[0] == "L" and _stable(char)


def _name_char(char: str) -> bool:
    return unicodedata.category(char)[0] in "LM" and _stable(char)


@functools.cache
def name_patterns() -> tuple[str, str]:
    """The full name's shape and its letter, two patterns that must both match.

    The shape: what str.strip() removes on either side, then at most
    NAME_MAX_CODE_POINTS units, each a letter, mark, `.`, `'` or `-`, or one
    whole run of spaces (the validator collapses a run to one space). The
    second pattern is a search for one letter anywhere.
    """
    strip = _class(str.isspace)
    name_char = _class(_name_char, extra=_PUNCTUATION)
    units = f"(?:{name_char}| +(?! ))"
    shape = f"^{strip}*{units}{{1,{validation.NAME_MAX_CODE_POINTS}}}{strip}*$"
    return shape, _class(_letter)
