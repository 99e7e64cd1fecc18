"""The stream envelope."""

from __future__ import annotations

import dataclasses
import datetime
import os

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from queueing.envelope import (
    VERSION_WITHOUT_ADDRESS,
    Envelope,
    PersonalData,
    open_address,
    open_sealed,
    seal_registration,
    sealed_entry,
)
from queueing.errors import EnvelopeError, SealingError
from queueing.ids import uuid7_bytes
from queueing.sealing import KeyedHasher, Sealer

SEALER = Sealer({"k1": os.urandom(32)}, "k1")
ADDRESSES = Sealer({"a1": os.urandom(32)}, "a1")
HASHER = KeyedHasher(os.urandom(32))
PERSON = PersonalData("3171014501900001", "Siti Aminah", "siti@example.co.id",
                      "+6281234567890", datetime.date(1990, 1, 5))


def _envelope(person: PersonalData = PERSON, key: str | None = None) -> Envelope:
    envelope = seal_registration(person, uuid7_bytes(), 1_700_000_000_000, SEALER, HASHER,
                                 ADDRESSES)
    # A key as an older door's entries carry it: they must still decode.
    return dataclasses.replace(envelope, idempotency_key=key)


def test_round_trip_restores_every_field() -> None:
    envelope = _envelope(key="idem-1")
    decoded = Envelope.decode(envelope.encode())
    assert decoded == envelope
    assert decoded.open(SEALER) == PERSON


def test_personal_data_is_not_in_the_bytes() -> None:
    data = _envelope().encode()
    for value in (PERSON.nik, PERSON.full_name, PERSON.email, PERSON.phone, "1990-01-05"):
        assert value.encode() not in data


def test_hashes_identify_nik_and_email() -> None:
    one, two = _envelope(), _envelope()
    assert one.nik_hash == two.nik_hash == HASHER.digest(PERSON.nik)
    assert one.email_hash == HASHER.digest(PERSON.email)
    assert one.registration_id != two.registration_id


def test_sealed_data_cannot_move_to_another_registration() -> None:
    one, two = _envelope(), _envelope()
    swapped = Envelope(two.registration_id, one.received_at_ms, one.key_id, one.sealed,
                       one.nik_hash, one.email_hash, None)
    with pytest.raises(SealingError):
        swapped.open(SEALER)


def test_repr_never_shows_personal_data() -> None:
    assert PERSON.nik not in repr(PERSON)
    assert PERSON.email not in repr(PERSON)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        msgpack.packb([2, b"x"]),
        msgpack.packb({"v": 1}),
        msgpack.packb([1, b"short", 1, "k", b"", b"x" * 32, b"y" * 32, None]),
        msgpack.packb([1, b"r" * 16, "t", "k", b"", b"x" * 32, b"y" * 32, None]),
        msgpack.packb([1, b"r" * 16, 1, "k", b"", b"x" * 32, b"y" * 32]),
    ],
)
def test_bad_bytes_raise_envelope_error(data: bytes) -> None:
    with pytest.raises(EnvelopeError):
        Envelope.decode(data)


def _fields(**changes: object) -> bytes:
    """A valid envelope's msgpack array with some fields replaced."""
    envelope = dataclasses.replace(_envelope(), **changes)  # type: ignore[arg-type]
    return envelope.encode()


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"received_at_ms": 2**62}, "received_at out of range"),  # to_timestamp overflows
        ({"received_at_ms": 2**64 - 1}, "received_at out of range"),  # not a bigint
        ({"received_at_ms": -1}, "received_at out of range"),
        ({"received_at_ms": True}, "envelope fields of the wrong type"),
        ({"key_id": ""}, "key_id malformed"),
        ({"key_id": "k\x001"}, "key_id malformed"),  # a text column takes no NUL
        ({"key_id": "k" * 33}, "key_id malformed"),
        ({"sealed": b""}, "sealed payload of the wrong length"),
        ({"sealed": b"s" * (64 * 1024 + 1)}, "sealed payload of the wrong length"),
        ({"address_key_id": ""}, "address_key_id malformed"),
        ({"address_key_id": "a\x001"}, "address_key_id malformed"),
        ({"address_key_id": None}, "address_key_id malformed"),
        ({"sealed_address": b"s" * 27}, "sealed address of the wrong length"),
        ({"sealed_address": b"s" * 1045}, "sealed address of the wrong length"),
    ],
)
def test_values_postgresql_would_refuse_are_refused_at_decode(
    changes: dict[str, object], why: str,
) -> None:
    with pytest.raises(EnvelopeError) as refused:
        Envelope.decode(_fields(**changes))
    assert str(refused.value) == why


def test_the_last_millisecond_of_year_9999_decodes() -> None:
    assert Envelope.decode(_fields(received_at_ms=253_402_300_799_999)).received_at_ms == (
        253_402_300_799_999)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_decode_never_raises_anything_else(data: bytes) -> None:
    try:
        Envelope.decode(data)
    except EnvelopeError:
        pass


@settings(max_examples=100, deadline=None)
@given(
    nik=st.text(min_size=1, max_size=20),
    name=st.text(max_size=100),
    email=st.text(max_size=254),
    key=st.none() | st.text(min_size=1, max_size=64),
)
def test_any_values_round_trip(nik: str, name: str, email: str, key: str | None) -> None:
    person = PersonalData(nik, name, email, "+628123456789", datetime.date(2000, 2, 29))
    envelope = _envelope(person, key)
    decoded = Envelope.decode(envelope.encode())
    assert decoded.open(SEALER) == person
    assert decoded.address_key_id is not None and decoded.sealed_address is not None
    assert open_address(ADDRESSES, decoded.registration_id, decoded.address_key_id,
                        decoded.sealed_address) == email


# Item 16: the address sealed on its own, for the email worker.

def test_the_address_opens_with_the_address_key_alone() -> None:
    envelope = Envelope.decode(_envelope().encode())
    assert envelope.address_key_id == "a1" and envelope.sealed_address is not None
    opened = open_address(ADDRESSES, envelope.registration_id, "a1", envelope.sealed_address)
    assert opened == PERSON.email
    # The address keys open nothing else: not the full blob, under any key id.
    with pytest.raises(SealingError):
        open_sealed(ADDRESSES, envelope.registration_id, envelope.key_id, envelope.sealed)
    with pytest.raises(SealingError):
        open_sealed(ADDRESSES, envelope.registration_id, "a1", envelope.sealed)
    # Nor does the sealing key pass an address blob for its own.
    with pytest.raises(SealingError):
        open_address(SEALER, envelope.registration_id, "k1", envelope.sealed_address)


def test_a_sealed_address_cannot_move_to_another_registration() -> None:
    one, two = _envelope(), _envelope()
    assert one.sealed_address is not None
    with pytest.raises(SealingError):
        open_address(ADDRESSES, two.registration_id, "a1", one.sealed_address)


def test_an_older_doors_envelope_without_the_address_still_decodes() -> None:
    older = seal_registration(PERSON, uuid7_bytes(), 1_700_000_000_000, SEALER, HASHER)
    data = older.encode()
    assert msgpack.unpackb(data)[0] == VERSION_WITHOUT_ADDRESS and len(msgpack.unpackb(data)) == 8
    decoded = Envelope.decode(data)
    assert (decoded.address_key_id, decoded.sealed_address) == (None, None)
    assert decoded.open(SEALER) == PERSON


def test_the_sealed_address_adds_one_small_blob() -> None:
    with_address, without = _envelope(), seal_registration(
        PERSON, uuid7_bytes(), 1_700_000_000_000, SEALER, HASHER)
    # The address, a nonce and a tag, its key id and msgpack's few bytes of framing.
    extra = len(with_address.encode()) - len(without.encode())
    assert extra == len(PERSON.email) + 12 + 16 + len("a1") + 3


@pytest.mark.parametrize("addresses", [ADDRESSES, None])
def test_a_sealed_entry_is_what_an_encoded_envelope_would_be(addresses: Sealer | None) -> None:
    rid = uuid7_bytes()
    nik_hash, entry = sealed_entry(PERSON, rid, 1_700_000_000_000, SEALER, HASHER, addresses)
    decoded = Envelope.decode(entry)
    made = seal_registration(PERSON, rid, 1_700_000_000_000, SEALER, HASHER, addresses)
    # Every field but the sealed blobs (their nonces are random) is the same; the
    # blobs open to the same data under the same binding.
    assert dataclasses.replace(made, sealed=decoded.sealed,
                               sealed_address=decoded.sealed_address) == decoded
    assert nik_hash == decoded.nik_hash == HASHER.digest(PERSON.nik)
    assert decoded.open(SEALER) == PERSON
    assert msgpack.unpackb(entry)[0] == (2 if addresses else VERSION_WITHOUT_ADDRESS)
    if addresses is not None:
        assert decoded.sealed_address is not None and decoded.address_key_id == "a1"
        assert open_address(ADDRESSES, rid, "a1", decoded.sealed_address) == PERSON.email
