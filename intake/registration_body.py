"""The body of POST /v1/registrations, decoded and type-checked in one pass where it can be.

The common body is a JSON object with exactly the contract's six fields,
each of its JSON type. msgspec decodes such a body straight into a
`RegistrationBody` in C: the JSON syntax, the UTF-8, the presence and type of
every field and the absence of any other key are checked in that one pass,
with no intermediate dict and no per-field `isinstance` in Python. Only the
field rules (`intake.validation`) are left to Python.

Any other body fails the typed decode and is decoded again by orjson, as it
was before: the generic path reports every field's `required`, `wrong_type`
or `unknown_field` at once, and orjson's verdict alone decides what is
malformed, so 400 and 422 fall exactly where they did.
"""

from __future__ import annotations

from typing import Final

import msgspec
import orjson

from intake.errors import MalformedBody


class RegistrationBody(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A body with exactly the contract's fields, each of its JSON type (values not checked yet)."""

    # Required, so a missing field fails the typed decode and the generic path names it.
    # msgspec is strict: `1` is not a bool, `true` not a string, as the contract wants.
    nik: str
    full_name: str
    email: str
    phone: str
    birth_date: str
    consent: bool
    # gc=False: only str and bool fields, which cannot form a cycle; the
    # collector need not track one object per request.


_DECODER: Final = msgspec.json.Decoder(RegistrationBody)


def decode_registration(raw: bytes) -> object:
    """A `RegistrationBody`, else whatever JSON value orjson makes of `raw`; MalformedBody if none.

    `intake.validation.validate_registration` takes either.
    """
    try:
        return _DECODER.decode(raw)
    except msgspec.DecodeError:
        # ValidationError (a DecodeError) stops at the first wrong field, before
        # msgspec reads the rest of the document: `{"nik": 1, ` then garbage is
        # a ValidationError, yet malformed. A failed typed decode therefore says
        # nothing about the syntax; orjson, the parser the contract was built on,
        # decides, for the price of a second parse of a body that fails anyway.
        pass
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MalformedBody from None
