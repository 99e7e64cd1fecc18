"""Email verification tokens: signed, expiring, bound to one registration.

A token is base64url (no padding) of

    version 2 (1 byte) | key id length (1) | key id (1-32 bytes, UTF-8)
    | registration id (16) | expiry, unix seconds (8) | MAC (16)

where the MAC is HMAC-SHA256 under the token key that id names
(`keys.token_keys`), truncated to 128 bits, over everything before it. The
key id lets the key rotate: the email worker signs with the active key, the
door verifies with whichever listed key the token names, so links already in
mailboxes stay valid while their key is still listed. Version 1 tokens (no key
id, issued before ids existed) are still accepted, checked against every
listed key: at most a few HMACs, and only until their 48 hours run out.

Nothing is stored to check a token: the signature proves the worker made it,
the id says which registration it verifies and the expiry is inside what was
signed. So no token, plaintext or hashed, is at rest anywhere, and a leaked
database cannot forge or replay one.

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
from collections.abc import Mapping
from typing import Final

VERSION: Final = 2
LEGACY_VERSION: Final = 1
_TAIL: Final = struct.Struct(">16sQ")  # registration id, expiry
_MAC_BYTES: Final = 16
_LEGACY_BYTES: Final = 1 + _TAIL.size + _MAC_BYTES
MAX_KEY_ID_BYTES: Final = 32
_MAX_TOKEN_BYTES: Final = 2 + MAX_KEY_ID_BYTES + _TAIL.size + _MAC_BYTES
# base64url of the longest token (74 bytes) without padding; longer is rejected unread.
MAX_TOKEN_CHARS: Final = 99


class InvalidToken(Exception):
    """Missing, malformed, or not signed with our key."""


class ExpiredToken(Exception):
    """Correctly signed, but past its expiry."""

    def __init__(self, registration_id: uuid.UUID) -> None:
        super().__init__("token expired")
        self.registration_id = registration_id


class TokenSigner:
    """Issues tokens under the active key; checks them under any key it knows."""

    def __init__(self, keys: Mapping[str, bytes], active_key_id: str) -> None:
        if active_key_id not in keys:
            raise ValueError("the active token key id is not among the keys")
        for key_id, key in keys.items():
            if len(key) < 32:
                raise ValueError("a token key must be at least 32 bytes")
            if not 1 <= len(key_id.encode()) <= MAX_KEY_ID_BYTES:
                raise ValueError(f"token key ids are 1-{MAX_KEY_ID_BYTES} bytes")
        self._keys = {key_id.encode(): key for key_id, key in keys.items()}
        self._active_id = active_key_id.encode()

    @property
    def active_key_id(self) -> str:
        """The key id new tokens carry."""
        return self._active_id.decode()

    def issue(self, registration_id: uuid.UUID, expires_at: int) -> str:
        """A token for this registration, valid until `expires_at` (unix seconds)."""
        key_id = self._active_id
        body = (bytes((VERSION, len(key_id))) + key_id
                + _TAIL.pack(registration_id.bytes, expires_at))
        raw = body + _mac(self._keys[key_id], body)
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
        if len(raw) < _LEGACY_BYTES:
            raise InvalidToken("malformed")
        body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if raw[0] == VERSION:
            key = self._keys.get(body[2:2 + body[1]])
            if len(body) != 2 + body[1] + _TAIL.size or key is None:
                raise InvalidToken("malformed or unknown key id")
            candidates = [key]
        elif raw[0] == LEGACY_VERSION and len(raw) == _LEGACY_BYTES:
            candidates = list(self._keys.values())  # no key id: any listed key
        else:
            raise InvalidToken("unknown version")
        if not any(hmac.compare_digest(mac, _mac(key, body)) for key in candidates):
            raise InvalidToken("bad signature")
        id_bytes, expires_at = _TAIL.unpack(body[-_TAIL.size:])
        registration_id = uuid.UUID(bytes=id_bytes)
        if now >= expires_at:
            raise ExpiredToken(registration_id)
        return registration_id


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()[:_MAC_BYTES]
