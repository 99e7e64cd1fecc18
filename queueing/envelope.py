"""The versioned msgpack envelope of an admitted registration on a stream.

Version 2 is a msgpack array, compact because a 2-million backlog lives in
Redis memory:

    [2, registration_id (16 bytes), received_at (Unix ms), key_id, sealed,
     nik_hash (32 bytes), email_hash (32 bytes), idempotency_key or nil,
     address_key_id, sealed_address]

Version 1 is the same without the last two fields; an older door's entries
still decode (their address is None, and only the full blob holds it).

New envelopes carry nil for the idempotency key: it lives in its own Redis
record, and a backlog held in memory need not pay for it twice. Entries an
older door queued with a key still decode.

`sealed` is AES-256-GCM over the msgpack array
[nik, full_name, email, phone, birth_date (ISO)], with the registration id
as associated data, so a sealed blob cannot be moved to another
registration unnoticed. `sealed_address` is the email address alone (UTF-8),
sealed again under a separate address key and bound to the registration id
the same way: the email worker holds that key only, so it can read the
address it writes to and nothing else.
"""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass
from typing import Any

import msgpack

from queueing.errors import EnvelopeError
from queueing.sealing import NONCE_BYTES, KeyedHasher, Sealer

VERSION = 2
# An older door's envelope: no separately sealed address.
VERSION_WITHOUT_ADDRESS = 1
# The only field of a stream entry; short because field names repeat per entry.
STREAM_FIELD = b"m"
_AAD_PREFIX = b"gelombang/v1/"
# Its own prefix: an address blob never passes for a full blob, nor the reverse.
_ADDRESS_AAD_PREFIX = b"gelombang/address/v1/"
# What PostgreSQL must take without refusing: an entry outside these bounds
# would be refused by every store attempt, so it is refused at decode and
# dead-lettered at once (its partition goes on). received_at: the Unix epoch
# up to the end of year 9999 (to_timestamp overflows far beyond, bigint at 2**63).
MAX_RECEIVED_AT_MS = 253_402_300_799_999
# Key ids are 1-32 characters (config/settings.py); text columns take no NUL.
MAX_KEY_ID_LENGTH = 32
# A nonce and a GCM tag at least; the door's 4 KiB body cap bounds the rest.
MIN_SEALED_BYTES = NONCE_BYTES + 16
MAX_SEALED_BYTES = 64 * 1024
# An address is at most 254 characters (ASCII after validation; 4 bytes each
# allowed here all the same), sealed with a nonce and a tag.
MAX_SEALED_ADDRESS_BYTES = 4 * 254 + NONCE_BYTES + 16


# Fields per envelope version.
_FIELD_COUNTS = {VERSION_WITHOUT_ADDRESS: 8, VERSION: 10}


# Not frozen: a frozen dataclass pays about 2 µs per instance in __init__, and
# these are made once per request on the door's hot path. Treat them as values.
@dataclass(slots=True)
class PersonalData:
    """The sealed part of a registration, in the clear (only ever in memory)."""

    nik: str
    full_name: str
    email: str
    phone: str
    birth_date: datetime.date

    def __repr__(self) -> str:
        # Never let a log line or traceback print the values.
        return "PersonalData(<sealed fields redacted>)"


@dataclass(slots=True)
class Envelope:
    """An admitted registration as it travels through the streams."""

    registration_id: bytes  # the 16 bytes of a UUIDv7
    received_at_ms: int
    key_id: str
    sealed: bytes
    nik_hash: bytes
    email_hash: bytes
    idempotency_key: str | None
    # None only in an older door's (version 1) envelope.
    address_key_id: str | None = None
    sealed_address: bytes | None = None

    def encode(self) -> bytes:
        """The msgpack bytes stored in the stream entry."""
        fields = [
            VERSION_WITHOUT_ADDRESS,
            self.registration_id,
            self.received_at_ms,
            self.key_id,
            self.sealed,
            self.nik_hash,
            self.email_hash,
            self.idempotency_key,
        ]
        if self.sealed_address is not None:
            fields[0] = VERSION
            fields += [self.address_key_id, self.sealed_address]
        return msgpack.packb(fields)

    @classmethod
    def decode(cls, data: bytes) -> Envelope:
        """Parse stream bytes, or raise EnvelopeError (never anything else)."""
        try:
            fields: Any = msgpack.unpackb(data, raw=False)
        except Exception as exc:  # msgpack raises several unrelated types
            raise EnvelopeError(f"not msgpack: {type(exc).__name__}") from None
        if (not isinstance(fields, list) or not fields or type(fields[0]) is not int
                or fields[0] not in _FIELD_COUNTS):
            raise EnvelopeError("unknown envelope version")
        if len(fields) != _FIELD_COUNTS[fields[0]]:
            raise EnvelopeError("wrong number of envelope fields")
        _, rid, received, key_id, sealed, nik_hash, email_hash, idem = fields[:8]
        address_key_id, sealed_address = fields[8:] or (None, None)
        if not (
            isinstance(rid, bytes)
            and len(rid) == 16
            and type(received) is int  # not a bool
            and isinstance(key_id, str)
            and isinstance(sealed, bytes)
            and isinstance(nik_hash, bytes)
            and len(nik_hash) == 32
            and isinstance(email_hash, bytes)
            and len(email_hash) == 32
            and (idem is None or isinstance(idem, str))
        ):
            raise EnvelopeError("envelope fields of the wrong type")
        # The messages name the field, never its value.
        if not 0 <= received <= MAX_RECEIVED_AT_MS:
            raise EnvelopeError("received_at out of range")
        if not (0 < len(key_id) <= MAX_KEY_ID_LENGTH and key_id.isprintable()):
            raise EnvelopeError("key_id malformed")
        if not MIN_SEALED_BYTES <= len(sealed) <= MAX_SEALED_BYTES:
            raise EnvelopeError("sealed payload of the wrong length")
        if fields[0] == VERSION:
            if not (isinstance(address_key_id, str) and 0 < len(address_key_id)
                    <= MAX_KEY_ID_LENGTH and address_key_id.isprintable()):
                raise EnvelopeError("address_key_id malformed")
            if not (isinstance(sealed_address, bytes)
                    and MIN_SEALED_BYTES <= len(sealed_address) <= MAX_SEALED_ADDRESS_BYTES):
                raise EnvelopeError("sealed address of the wrong length")
        return cls(rid, received, key_id, sealed, nik_hash, email_hash, idem,
                   address_key_id, sealed_address)

    @property
    def registration_uuid(self) -> uuid.UUID:
        """The registration id as a UUID."""
        return uuid.UUID(bytes=self.registration_id)

    def open(self, sealer: Sealer) -> PersonalData:
        """Decrypt the personal data (raises SealingError on tampering)."""
        return open_sealed(sealer, self.registration_id, self.key_id, self.sealed)


def open_sealed(sealer: Sealer, registration_id: bytes, key_id: str, sealed: bytes
                ) -> PersonalData:
    """Decrypt a registration's sealed personal data, as stored in PostgreSQL.

    Only ever in memory, and only where a worker needs a value (the email
    address to write to, the NIK to check). Raises SealingError on tampering.
    """
    plain = sealer.open(key_id, sealed, _aad(registration_id))
    try:
        nik, name, email, phone, birth = msgpack.unpackb(plain, raw=False)
        return PersonalData(nik, name, email, phone, datetime.date.fromisoformat(birth))
    except Exception as exc:  # authenticated, so only a bug can get here
        raise EnvelopeError(f"sealed payload malformed: {type(exc).__name__}") from None


def open_address(sealer: Sealer, registration_id: bytes, key_id: str, sealed: bytes) -> str:
    """Decrypt a registration's separately sealed email address (the email worker's only view).

    Raises SealingError when the key id is unknown or the blob fails authentication.
    """
    plain = sealer.open(key_id, sealed, _address_aad(registration_id))
    try:
        return plain.decode()
    except UnicodeDecodeError:  # authenticated, so only a bug can get here
        raise EnvelopeError("sealed address malformed") from None


def _aad(registration_id: bytes) -> bytes:
    return _AAD_PREFIX + registration_id


def _address_aad(registration_id: bytes) -> bytes:
    return _ADDRESS_AAD_PREFIX + registration_id


def seal_registration(
    data: PersonalData,
    registration_id: bytes,
    received_at_ms: int,
    sealer: Sealer,
    hasher: KeyedHasher,
    address_sealer: Sealer | None = None,
) -> Envelope:
    """Build the envelope: personal data sealed, NIK and email as keyed hashes, and
    the address sealed on its own under `address_sealer` (None: a version 1 envelope)."""
    fields = _sealed_fields(data, registration_id, received_at_ms, sealer, hasher,
                            address_sealer)
    return Envelope(*fields[1:])


def sealed_entry(
    data: PersonalData,
    registration_id: bytes,
    received_at_ms: int,
    sealer: Sealer,
    hasher: KeyedHasher,
    address_sealer: Sealer | None = None,
) -> tuple[bytes, bytes]:
    """The NIK's keyed hash and the stream entry's bytes of a new registration, as
    `seal_registration(...)` then `.encode()` make them, without the Envelope
    between: the door's hot path needs the hash (its partition) and the bytes only."""
    fields = _sealed_fields(data, registration_id, received_at_ms, sealer, hasher,
                            address_sealer)
    return fields[5], msgpack.packb(fields)


def _sealed_fields(data: PersonalData, registration_id: bytes, received_at_ms: int,
                   sealer: Sealer, hasher: KeyedHasher, address_sealer: Sealer | None
                   ) -> list[Any]:
    """The envelope's fields in wire order (see the module's docstring), sealed once."""
    plain = msgpack.packb(
        [data.nik, data.full_name, data.email, data.phone, data.birth_date.isoformat()]
    )
    fields: list[Any] = [
        VERSION_WITHOUT_ADDRESS, registration_id, received_at_ms, sealer.active_key_id,
        sealer.seal(plain, _aad(registration_id)), hasher.digest(data.nik),
        hasher.digest(data.email),
        None,  # the idempotency key lives in its own Redis record (see above)
    ]
    if address_sealer is not None:
        # One more AES-GCM over ~30 bytes: about 1.5 us a registration (docs/security.md).
        fields[0] = VERSION
        fields += [address_sealer.active_key_id,
                   address_sealer.seal(data.email.encode(), _address_aad(registration_id))]
    return fields


def reseal_sealed(sealer: Sealer, registration_id: bytes, key_id: str, sealed: bytes) -> bytes:
    """The same personal data sealed again with the active key (for key rotation).

    Bound to the same registration id; raises SealingError when the old key is
    unknown or the blob fails authentication. The plaintext never leaves memory.
    """
    aad = _aad(registration_id)
    return sealer.seal(sealer.open(key_id, sealed, aad), aad)


def reseal_address(sealer: Sealer, registration_id: bytes, key_id: str, sealed: bytes) -> bytes:
    """The same address sealed again with the active address key (for key rotation)."""
    aad = _address_aad(registration_id)
    return sealer.seal(sealer.open(key_id, sealed, aad), aad)


def address_from_blob(sealer: Sealer, address_sealer: Sealer, registration_id: bytes,
                      key_id: str, sealed: bytes) -> bytes:
    """The address of a full blob (an older door's row) sealed on its own, for backfill."""
    email = open_sealed(sealer, registration_id, key_id, sealed).email
    return address_sealer.seal(email.encode(), _address_aad(registration_id))
