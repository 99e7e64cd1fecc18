"""The one-pass decode (msgspec) against the path it replaced: orjson, then every check in Python.

The door must answer every body as it did before: 400 `malformed_json` for
the same bytes, the same 422 field codes in the same order with the same
`unknown_fields`, the same normalised registration. Each test compares the
new path with the old one, kept below as it was (commit 61f72c1), on bodies
that are valid, nearly valid, mistyped, padded with extra or repeated keys,
re-encoded, and broken at the byte level.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from intake.errors import MalformedBody
from intake.nik import nik_birth_date
from intake.registration_body import RegistrationBody, decode_registration
from intake.validation import (
    KNOWN_FIELDS,
    MUST_BE_TRUE,
    REQUIRED,
    UNKNOWN,
    UNKNOWN_FIELD,
    WRONG_TYPE,
    FieldInvalid,
    check_birth_date,
    normalise_email,
    normalise_name,
    normalise_phone,
    unknown_field_count,
    validate_registration,
)
from loadtest.registrants import RegistrantFactory
from queueing.envelope import PersonalData

TODAY = datetime.date(2026, 11, 22)
# ("malformed_json",) | ("invalid", [(field, code), ...], unknown_fields) | ("valid", data)
Outcome = tuple[Any, ...]


def new_door(raw: bytes) -> Outcome:
    """What the door decides about a body now (intake/registrations.py's calls)."""
    try:
        body = decode_registration(raw)
    except MalformedBody:
        return ("malformed_json",)
    result = validate_registration(body, TODAY)
    if isinstance(result, PersonalData):
        return ("valid", result)
    unknown = unknown_field_count(body) if UNKNOWN in result else 0
    return ("invalid", list(result.items()), unknown)


def old_door(raw: bytes) -> Outcome:
    """What the door decided before the one-pass decode."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ("malformed_json",)
    result = _old_validate(body, TODAY)
    if isinstance(result, PersonalData):
        return ("valid", result)
    unknown = sum(1 for name in body if name not in KNOWN_FIELDS) if UNKNOWN in result else 0
    return ("invalid", list(result.items()), unknown)


# --- the oracle: the validator before the one-pass decode, verbatim but for names -----------

def _old_validate(body: Any, today: datetime.date) -> PersonalData | dict[str, str]:
    if not isinstance(body, dict):
        return {"body": WRONG_TYPE}
    failures: dict[str, str] = {}
    if not set(KNOWN_FIELDS).issuperset(body):
        failures[UNKNOWN] = UNKNOWN_FIELD
    nik_value = _old_string(body, "nik", failures)
    nik_date: datetime.date | None = None
    if nik_value is not None:
        parsed = nik_birth_date(nik_value, today)
        if isinstance(parsed, str):
            failures["nik"] = parsed
        else:
            nik_date = parsed
    full_name = _old_normalised(body, "full_name", normalise_name, failures)
    email = _old_normalised(body, "email", normalise_email, failures)
    phone = _old_normalised(body, "phone", normalise_phone, failures)
    birth_date: datetime.date | None = None
    birth_text = _old_string(body, "birth_date", failures)
    if birth_text is not None:
        checked = check_birth_date(birth_text, nik_date, today)
        if isinstance(checked, str):
            failures["birth_date"] = checked
        else:
            birth_date = checked
    consent = body.get("consent")
    if "consent" not in body:
        failures["consent"] = REQUIRED
    elif not isinstance(consent, bool):
        failures["consent"] = WRONG_TYPE
    elif not consent:
        failures["consent"] = MUST_BE_TRUE
    if failures:
        return failures
    assert nik_value is not None and full_name is not None and email is not None
    assert phone is not None and birth_date is not None
    return PersonalData(nik_value, full_name, email, phone, birth_date)


def _old_string(body: dict[str, Any], name: str, failures: dict[str, str]) -> str | None:
    if name not in body:
        failures[name] = REQUIRED
        return None
    value = body[name]
    if not isinstance(value, str):
        failures[name] = WRONG_TYPE
        return None
    return value


def _old_normalised(body: dict[str, Any], name: str, normalise: Any,
                    failures: dict[str, str]) -> str | None:
    value = _old_string(body, name, failures)
    if value is None:
        return None
    try:
        result: str = normalise(value)
    except FieldInvalid as invalid:
        failures[name] = invalid.code
        return None
    return result


# --- bodies -----------------------------------------------------------------------------------

def valid_body(seed: int = 0) -> dict[str, Any]:
    """A made-up registrant's body."""
    return RegistrantFactory(seed=seed, today=TODAY).make().body()


def pairs_bytes(pairs: list[tuple[str, Any]], ascii_only: bool = False, spaced: bool = False
                ) -> bytes:
    """A JSON object written pair by pair, so that a key may repeat."""
    def dump(value: Any) -> bytes:
        # ascii_only escapes every non-ASCII character (astral ones as surrogate pairs);
        # json, not orjson, writes integers past 64 bits.
        return json.dumps(value, ensure_ascii=ascii_only).encode()
    sep = b", " if spaced else b","
    colon = b": " if spaced else b":"
    return b"{" + sep.join(dump(k) + colon + dump(v) for k, v in pairs) + b"}"


@dataclass(frozen=True)
class Case:
    """A body's bytes and how they were made; its repr names the steps, never the values."""

    raw: bytes
    steps: tuple[str, ...]

    def __repr__(self) -> str:
        return f"Case(steps={self.steps!r}, {len(self.raw)} bytes)"


_strings = (
    st.text(max_size=24)
    | st.from_regex(r"[0-9]{16}", fullmatch=True)
    | st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", fullmatch=True)
    | st.from_regex(r"(\+62|62|0)8[0-9 -]{8,13}", fullmatch=True)
    | st.from_regex(r"[a-z.]{1,8}@[a-z]{1,6}\.(co\.id|com)", fullmatch=True)
    | st.sampled_from(["", " ", "  Siti   Ayu ", "Se\u0301no", "x\u0000y", "\U0001f600", "A"])
)
_wrong_types = (
    st.none()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.lists(st.integers(0, 9), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(0, 9), max_size=2)
)
_values = st.one_of(_strings, _wrong_types, st.booleans())


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """Bodies near the valid one: fields changed, dropped, added, repeated; then re-encoded."""
    body = valid_body(draw(st.integers(0, 10**6)))
    pairs = list(body.items())
    steps: list[str] = []
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["replace", "drop", "extra", "repeat", "consent"]))
        index = draw(st.integers(0, max(0, len(pairs) - 1)))
        if op == "replace" and pairs:
            value = draw(_values)
            pairs[index] = (pairs[index][0], value)
            steps.append(f"replace {pairs[index][0]} by a {type(value).__name__}")
        elif op == "drop" and pairs:
            steps.append(f"drop {pairs.pop(index)[0]}")
            continue
        elif op == "extra":
            pairs.insert(index, (draw(st.text(max_size=8)), draw(_values)))
            steps.append(f"extra key at {index}")
        elif op == "repeat" and pairs:
            # orjson keeps the last of repeated keys; the typed decode must too.
            key = pairs[index][0]
            where = draw(st.sampled_from(["before", "after"]))
            value = draw(_values | st.just(body.get(key)))
            pairs.insert(index if where == "before" else len(pairs), (key, value))
            steps.append(f"repeat {key} {where}")
        elif op == "consent":
            value = draw(st.sampled_from([True, False, 1, 0, "true", None, 1.0]))
            pairs.append(("consent", value))
            steps.append(f"consent as {value!r}")
    if draw(st.booleans()):
        pairs.reverse()
        steps.append("reversed")
    ascii_only, spaced = draw(st.booleans()), draw(st.booleans())
    steps.append(f"ascii_only={ascii_only} spaced={spaced}")
    raw = pairs_bytes(pairs, ascii_only, spaced)
    raw, broken = draw(_byte_damage(raw))
    return Case(raw, (*steps, *broken))


@st.composite
def _byte_damage(draw: st.DrawFn, raw: bytes) -> tuple[bytes, tuple[str, ...]]:
    """Mostly nothing; else a change at the byte level that may make the JSON malformed."""
    kind = draw(st.sampled_from(["none"] * 6 + [
        "bom", "trailing", "truncate", "insert", "non_object", "non_json_number", "whitespace",
    ]))
    at = draw(st.integers(0, len(raw)))
    if kind == "bom":
        return b"\xef\xbb\xbf" + raw, (kind,)
    if kind == "trailing":
        return raw + draw(st.sampled_from([b" ", b"\n", b"x", b"{}", b",", b"\x00"])), (kind,)
    if kind == "truncate":
        return raw[:at], (f"truncate at {at}",)
    if kind == "insert":
        byte = draw(st.sampled_from([b"\xff", b"\x80", b"\xc3", b"\x00", b"\\", b'"',
                                     b"\xed\xa0\x80"]))
        return raw[:at] + byte + raw[at:], (f"insert {byte!r} at {at}",)
    if kind == "non_object":
        return b"[" + raw + b"]", (kind,)
    if kind == "non_json_number":
        # The first value becomes something orjson refuses (or turns into a float).
        number = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"01",
                                       b"123456789012345678901234567890", b"-0", b"1E5"]))
        colon = raw.find(b":")
        comma = raw.find(b",", colon)
        end = comma if comma > 0 else len(raw) - 1
        return raw[:colon + 1] + number + raw[end:], (f"first value {number!r}",)
    if kind == "whitespace":
        return draw(st.sampled_from([b" ", b"\t", b"\r\n", b"\x0c"])) + raw, (kind,)
    return raw, ()


# --- properties -------------------------------------------------------------------------------

@settings(max_examples=600, deadline=None)
@given(cases())
def test_the_door_decides_every_body_as_before(case: Case) -> None:
    new = new_door(case.raw)
    event("fast path" if _is_typed(case.raw) else "generic path")
    event(str(new[0]))
    assert new == old_door(case.raw)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64) | st.text(max_size=40).map(str.encode))
def test_any_bytes_are_decided_as_before(raw: bytes) -> None:
    assert new_door(raw) == old_door(raw)


@given(st.integers(0, 10**6))
def test_a_valid_body_takes_the_typed_path_and_is_normalised_as_before(seed: int) -> None:
    raw = orjson.dumps(valid_body(seed))
    assert isinstance(decode_registration(raw), RegistrationBody)
    new = new_door(raw)
    assert new[0] == "valid"
    assert new == old_door(raw)


def _is_typed(raw: bytes) -> bool:
    try:
        return isinstance(decode_registration(raw), RegistrationBody)
    except MalformedBody:
        return False


# --- the JSON edge cases, one by one --------------------------------------------------------

def _with(field: str, value_json: bytes, base: dict[str, Any] | None = None) -> bytes:
    body = valid_body() if base is None else base
    return pairs_bytes(list(body.items())).replace(
        b'"' + field.encode() + b'":' + orjson.dumps(body[field]),
        b'"' + field.encode() + b'":' + value_json,
    )


_VALID = orjson.dumps(valid_body())
EDGE_CASES: list[tuple[str, bytes, Outcome | None]] = [
    ("byte order mark", b"\xef\xbb\xbf" + _VALID, ("malformed_json",)),
    ("surrounding whitespace", b" \r\n\t" + _VALID + b"\n", None),
    ("form feed is not JSON whitespace", b"\x0c" + _VALID, ("malformed_json",)),
    ("trailing comma", _VALID[:-1] + b",}", ("malformed_json",)),
    ("two documents", _VALID + b"{}", ("malformed_json",)),
    ("empty body", b"", ("malformed_json",)),
    ("consent 1 is not a bool", _with("consent", b"1"), ("invalid", [("consent", WRONG_TYPE)], 0)),
    ("consent 0", _with("consent", b"0"), ("invalid", [("consent", WRONG_TYPE)], 0)),
    ("consent false", _with("consent", b"false"), ("invalid", [("consent", MUST_BE_TRUE)], 0)),
    ("consent null", _with("consent", b"null"), ("invalid", [("consent", WRONG_TYPE)], 0)),
    ("huge int", _with("nik", b"3201014506990001000000000"), ("invalid", [("nik", WRONG_TYPE)], 0)),
    ("float", _with("phone", b"81234567890.0"), ("invalid", [("phone", WRONG_TYPE)], 0)),
    ("NaN", _with("phone", b"NaN"), ("malformed_json",)),
    ("1e400", _with("phone", b"1e400"), ("malformed_json",)),
    ("lone surrogate", _with("full_name", b'"\\ud800"'), ("malformed_json",)),
    ("escaped surrogate pair", _with("full_name", b'"\\ud83d\\ude00"'),
     ("invalid", [("full_name", "invalid_characters")], 0)),
    ("invalid UTF-8", _with("full_name", b'"Sit\xff"'), ("malformed_json",)),
    ("UTF-8 of a surrogate", _with("full_name", b'"Si\xed\xa0\x80"'), ("malformed_json",)),
    ("raw control character", _with("full_name", b'"Si\x01ti"'), ("malformed_json",)),
    ("escaped key", _VALID.replace(b'"nik"', b'"n\\u0069k"'), None),
    ("mistyped, then malformed", b'{"nik": 1, "full_name": ', ("malformed_json",)),
    ("unknown key, then malformed", b'{"x": 1, ', ("malformed_json",)),
    ("not an object", b"[]", ("invalid", [("body", WRONG_TYPE)], 0)),
    ("null", b"null", ("invalid", [("body", WRONG_TYPE)], 0)),
]


@pytest.mark.parametrize(("raw", "expected"), [(raw, expected) for _, raw, expected in EDGE_CASES],
                         ids=[name for name, _, _ in EDGE_CASES])
def test_json_edge_cases_are_decided_as_before(raw: bytes, expected: Outcome | None) -> None:
    new = new_door(raw)
    assert new == old_door(raw)
    if expected is None:
        assert new[0] == "valid"
    else:
        assert new == expected


def test_repeated_keys_keep_the_last_value_on_both_paths() -> None:
    body = valid_body()
    typed = pairs_bytes([("nik", "x"), *body.items()])
    assert isinstance(decode_registration(typed), RegistrationBody)
    assert new_door(typed)[0] == "valid"
    mistyped_last = pairs_bytes([*body.items(), ("nik", 5)])
    assert new_door(mistyped_last) == ("invalid", [("nik", WRONG_TYPE)], 0)
    mistyped_first = pairs_bytes([("nik", 5), *body.items()])
    assert new_door(mistyped_first)[0] == "valid"


def test_failures_keep_the_check_order_on_the_generic_path() -> None:
    # Type failures found before a rule failure of an earlier field, keys in another
    # order: the 422 still lists the fields in the order they are checked, as before.
    body = valid_body()
    del body["phone"], body["consent"]
    raw = orjson.dumps({"consent": "yes", "y": 2, **body, "nik": "1", "email": 5, "x": 1})
    assert new_door(raw) == ("invalid", [
        (UNKNOWN, UNKNOWN_FIELD), ("nik", "invalid_format"), ("email", WRONG_TYPE),
        ("phone", REQUIRED), ("consent", WRONG_TYPE)], 2)
    assert new_door(raw) == old_door(raw)


def test_every_known_field_is_a_field_of_the_typed_body() -> None:
    assert RegistrationBody.__struct_fields__ == KNOWN_FIELDS
