"""Reading a plain registration POST's bytes without aiohttp, and where requests end.

The door's registration lane (intake/registration_lane.py) answers the common
registration itself: a whole `POST /v1/registrations HTTP/1.1` request in one
read, JSON body, Content-Length framing. `registration_request` accepts only
that strict subset and returns None for anything else: any other path, method
or version, a query string, a header it does not read plainly (Transfer-Encoding,
Expect, Upgrade, Content-Encoding, a repeated framing or read header, a byte
outside printable ASCII), a body over the limit or not whole, a second request
behind the first. aiohttp then parses those bytes as it always did, so every
refusal and odd case keeps aiohttp's answer; nothing that is not plain is
guessed at here.

`framed_requests` tells how many whole requests a run of bytes holds, so the
lane knows when a connection that aiohttp served is back between two requests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

PREFIX: Final = b"POST /v1/registrations HTTP/1.1\r\n"
_HEAD_END: Final = b"\r\n\r\n"
# Header lines: a token, a colon, printable ASCII or tabs; lines joined by CRLF.
_FIELD: Final = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t -~]*"
_FIELDS: Final = re.compile(rb"(?:%s)(?:\r\n%s)*" % (_FIELD, _FIELD))
# Headers whose meaning the lane leaves to aiohttp (framing, decoding, protocol changes).
_NOT_PLAIN: Final = frozenset({b"transfer-encoding", b"expect", b"upgrade", b"content-encoding",
                               b"trailer", b"te"})
# Headers read here, each of which must come once: a repeat is left to aiohttp's rules.
_READ_ONCE: Final = frozenset({b"content-length", b"content-type", b"idempotency-key",
                               b"authorization", b"connection"})
_CONTENT_LENGTH_DIGITS: Final = 5


@dataclass(slots=True)
class RegistrationRequest:
    """A plain registration POST: what the registration path reads of it."""

    body: bytes
    idempotency_key: str | None
    authorization: str | None
    forwarded_for: list[str]
    # The client asked to close the connection after the answer.
    closes: bool


def registration_request(data: bytes, max_head_bytes: int, max_headers: int,
                         max_body_bytes: int) -> RegistrationRequest | None:
    """The plain registration POST `data` is exactly, or None (see the module's doc)."""
    if not data.startswith(PREFIX):
        return None
    start = len(PREFIX)
    end = data.find(_HEAD_END, start - 2)
    if end < start or end > max_head_bytes:
        return None
    head = data[start:end]
    if not _FIELDS.fullmatch(head):
        return None
    lines = head.split(b"\r\n")
    if len(lines) > max_headers:
        return None
    fields = _plain_fields(lines)
    if fields is None:
        return None
    read, forwarded = fields
    length = read.get(b"content-length")
    if length is None or not length.isdigit() or len(length) > _CONTENT_LENGTH_DIGITS:
        return None
    size = int(length)
    if size > max_body_bytes or len(data) != end + 4 + size:
        return None
    media_type = read.get(b"content-type", b"").partition(b";")[0].strip(b" \t").lower()
    if media_type != b"application/json":
        return None  # aiohttp's way answers 415 (or reads what it makes of the type)
    connection = {token.strip(b" \t") for token in read.get(b"connection", b"").lower().split(b",")}
    if b"upgrade" in connection:
        return None
    key = read.get(b"idempotency-key")
    authorization = read.get(b"authorization")
    return RegistrationRequest(
        body=data[end + 4:],
        idempotency_key=None if key is None else key.decode("ascii"),
        authorization=None if authorization is None else authorization.decode("ascii"),
        forwarded_for=forwarded,
        closes=b"close" in connection,
    )


def _plain_fields(lines: list[bytes]) -> tuple[dict[bytes, bytes], list[str]] | None:
    """The header values read here (by lower-case name) and the X-Forwarded-For values,
    or None when a header is not plain."""
    read: dict[bytes, bytes] = {}
    forwarded: list[str] = []
    for line in lines:
        raw_name, _, raw_value = line.partition(b":")
        name = raw_name.lower()
        value = raw_value.strip(b" \t")
        if name in _READ_ONCE:
            if name in read:
                return None
            read[name] = value
        elif name == b"x-forwarded-for":
            forwarded.append(value.decode("ascii"))
        elif name in _NOT_PLAIN:
            return None
    return read, forwarded


@dataclass(slots=True)
class Framing:
    """How a run of request bytes divides into requests."""

    whole: int  # whole requests at its start
    used: int  # the bytes they take; the rest begins a request not whole yet
    # False: a request whose end cannot be told from Content-Length alone
    # (chunked, an upgrade, an unreadable head); nothing after it can be framed.
    known: bool = True


def framed_requests(data: bytes | bytearray) -> Framing:
    """Whole requests at the start of `data`, by their heads and Content-Length."""
    whole = used = 0
    while used < len(data):
        end = data.find(_HEAD_END, used)
        if end < 0:
            break
        length = _body_length(bytes(data[used:end]))
        if length is None:
            return Framing(whole, used, known=False)
        if len(data) < end + 4 + length:
            break
        whole += 1
        used = end + 4 + length
    return Framing(whole, used)


def _body_length(head: bytes) -> int | None:
    """The body length a request head declares (0 without a body), or None when unsure."""
    request_line, _, fields = head.partition(b"\r\n")
    if request_line.count(b" ") != 2 or request_line.upper().startswith(b"CONNECT "):
        return None
    length: int | None = 0
    seen_length = False
    for line in fields.split(b"\r\n") if fields else ():
        name, colon, value = line.partition(b":")
        if not colon:
            return None
        name = name.strip().lower()
        if name in (b"transfer-encoding", b"upgrade"):
            return None
        if name == b"content-length":
            value = value.strip(b" \t")
            if seen_length or not value.isdigit():
                return None
            seen_length, length = True, int(value)
    return length
