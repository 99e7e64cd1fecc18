"""Email verification tokens: signed, expiring, bound to one registration.

A token is base64url (no padding) of

    version (1 byte) | registration id (16) | expiry, unix seconds (8) | MAC (16)

where the MAC is HMAC-SHA256 under `keys.token_key`, truncated to 128 bits,
over everything before it. Nothing is stored to check a token: the signature
proves the worker made it, the id says which registration it verifies and the
expiry is inside what was signed. So no token, plaintext or hashed, is at rest
anywhere, and a leaked database cannot forge or replay one.

The email worker issues tokens and the door checks them; both import this
module, so the format has one definition.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
import uuid
from typing import Final

VERSION: Final = 1
_BODY: Final = struct.Struct(">B16sQ")
_MAC_BYTES: Final = 16
_TOKEN_BYTES: Final = _BODY.size + _MAC_BYTES
# base64url of 41 bytes without padding; anything longer is rejected unread.
MAX_TOKEN_CHARS: Final = 56


class InvalidToken(Exception):
    """Missing, malformed, or not signed with our key."""


class ExpiredToken(Exception):
    """Correctly signed, but past its expiry."""

    def __init__(self, registration_id: uuid.UUID) -> None:
        super().__init__("token expired")
        self.registration_id = registration_id


class TokenSigner:
    """Issues and checks tokens under one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the token key must be at least 32 bytes")
        self._key = key

    def issue(self, registration_id: uuid.UUID, expires_at: int) -> str:
        """A token for this registration, valid until `expires_at` (unix seconds)."""
        body = _BODY.pack(VERSION, registration_id.bytes, expires_at)
        raw = body + self._mac(body)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def check(self, token: str, now: float) -> uuid.UUID:
        """The registration a valid token verifies.

        Raises InvalidToken, or ExpiredToken when only the time is wrong: the
        signature is checked first, so a forged token never reads as expired.
        """
        if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
            raise InvalidToken("malformed")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise InvalidToken("malformed") from None
        if len(raw) != _TOKEN_BYTES:
            raise InvalidToken("malformed")
        body, mac = raw[:_BODY.size], raw[_BODY.size:]
        if not hmac.compare_digest(mac, self._mac(body)):
            raise InvalidToken("bad signature")
        version, id_bytes, expires_at = _BODY.unpack(body)
        if version != VERSION:
            raise InvalidToken("unknown version")
        registration_id = uuid.UUID(bytes=id_bytes)
        if now >= expires_at:
            raise ExpiredToken(registration_id)
        return registration_id

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:_MAC_BYTES]
