"""Sealing of personal data (AES-256-GCM) and keyed hashes (HMAC-SHA256).

Personal data is sealed before it leaves the door process, so Redis and
PostgreSQL only ever hold ciphertext. Each sealed value names the key id it
was sealed with: a new active key can be rolled out while data sealed with
older keys stays readable. Deduplication needs equality, not the values, so
NIK and email travel as keyed hashes under a separate key; without that key
the hashes cannot be reversed by enumerating the (small) NIK space.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from queueing.errors import SealingError

NONCE_BYTES = 12
_SHA256_BLOCK = 64


class Sealer:
    """Seals with the active key; opens with any key it knows."""

    __slots__ = ("_active", "_active_id", "_ciphers")

    def __init__(self, keys: Mapping[str, bytes], active_key_id: str) -> None:
        if active_key_id not in keys:
            raise ValueError("the active sealing key id is not among the keys")
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self._active_id = active_key_id
        self._active = self._ciphers[active_key_id]

    @property
    def active_key_id(self) -> str:
        """The key id new data is sealed with."""
        return self._active_id

    def seal(self, plaintext: bytes, associated_data: bytes) -> bytes:
        """Encrypt and authenticate; the result is nonce || ciphertext || tag."""
        # Random 96-bit nonces: safe far beyond 42 million messages per key.
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._active.encrypt(nonce, plaintext, associated_data)

    def open(self, key_id: str, sealed: bytes, associated_data: bytes) -> bytes:
        """Decrypt and verify, or raise SealingError."""
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise SealingError(f"unknown sealing key id {key_id!r}")
        if len(sealed) < NONCE_BYTES + 16:
            raise SealingError("sealed value is too short")
        try:
            return cipher.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated_data)
        except InvalidTag:
            raise SealingError("sealed value failed authentication") from None


class KeyedHasher:
    """HMAC-SHA256 of identifiers, for equality checks without the values."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the hash key must be at least 32 bytes")
        # HMAC as RFC 2104 defines it, with the keyed inner and outer SHA-256
        # states computed once: the hmac module re-does that work per call,
        # which doubles the cost on the door's hot path.
        block = key if len(key) <= _SHA256_BLOCK else hashlib.sha256(key).digest()
        block = block.ljust(_SHA256_BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def digest(self, value: str) -> bytes:
        """The 32-byte HMAC-SHA256 of a value (already normalised by the caller)."""
        inner = self._inner.copy()
        inner.update(value.encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()
