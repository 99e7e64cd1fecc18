"""The exceptions of the intake package, under one root.

Each is named after what happened; the HTTP edge turns a RequestRefused into
the contract's answer in one place (`intake.responses.refusal`).
"""

from __future__ import annotations

from collections.abc import Mapping


class IntakeError(Exception):
    """Root of every error raised by the intake package."""


class RequestRefused(IntakeError):
    """The contract refuses the request before any work is done for it."""

    def __init__(self, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(type(self).__name__)
        # Headers the answer carries (Retry-After and the RateLimit fields).
        self.headers = headers


class BodyTooLarge(RequestRefused):
    """The request body is over 4 KiB, as declared or as it arrived."""


class BodyTimedOut(RequestRefused):
    """The request body did not arrive within `public.body_timeout_seconds`."""


class ClientLimited(RequestRefused):
    """This client address's bucket is empty; the headers say when to come back."""


class NeverIssued(RequestRefused):
    """A path names no registration: not a canonical UUID, or an id never issued here."""


class MalformedBody(RequestRefused):
    """The request body is not JSON (the contract's 400 `malformed_json`)."""


class InvalidIdempotencyKey(RequestRefused):
    """Idempotency-Key is not 1-64 characters of A-Z, a-z, 0-9, _ or -."""


class InvalidRegistration(RequestRefused):
    """The body is JSON, and some of its fields break the contract's rules (422).

    `fields` maps each failing field to its code; `unknown_fields` counts the
    keys the contract does not know (never quoted: a key is client input too).
    """

    def __init__(self, fields: Mapping[str, str], unknown_fields: int) -> None:
        super().__init__()
        self.fields = fields
        self.unknown_fields = unknown_fields


class AdmissionChangeRefused(IntakeError):
    """A change of the admission settings was refused for its content.

    `fields` maps each bad field to its problem code (`body` when the body is
    not an object); a field name the API does not know is the client's text.
    """

    def __init__(self, fields: Mapping[str, str]) -> None:
        super().__init__("admission change refused")
        self.fields = fields
