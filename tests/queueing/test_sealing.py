"""Sealing and keyed hashes."""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from queueing.errors import SealingError
from queueing.sealing import KeyedHasher, Sealer

KEY_A = os.urandom(32)
KEY_B = os.urandom(32)


def test_sealed_value_opens_with_its_key_and_associated_data() -> None:
    sealer = Sealer({"a": KEY_A}, "a")
    sealed = sealer.seal(b"secret", b"context")
    assert b"secret" not in sealed
    assert sealer.open("a", sealed, b"context") == b"secret"


def test_same_plaintext_seals_differently_each_time() -> None:
    sealer = Sealer({"a": KEY_A}, "a")
    assert sealer.seal(b"x", b"") != sealer.seal(b"x", b"")


@pytest.mark.parametrize("position", [0, 12, -1])
def test_any_flipped_bit_is_detected(position: int) -> None:
    sealer = Sealer({"a": KEY_A}, "a")
    sealed = bytearray(sealer.seal(b"secret", b"context"))
    sealed[position] ^= 0x01
    with pytest.raises(SealingError):
        sealer.open("a", bytes(sealed), b"context")


def test_other_associated_data_is_rejected() -> None:
    sealer = Sealer({"a": KEY_A}, "a")
    with pytest.raises(SealingError):
        sealer.open("a", sealer.seal(b"secret", b"one"), b"two")


def test_rotation_keeps_old_data_readable() -> None:
    old = Sealer({"a": KEY_A}, "a")
    sealed_before = old.seal(b"before", b"")
    rotated = Sealer({"a": KEY_A, "b": KEY_B}, "b")
    assert rotated.active_key_id == "b"
    assert rotated.open("a", sealed_before, b"") == b"before"
    sealed_after = rotated.seal(b"after", b"")
    with pytest.raises(SealingError):
        old.open("b", sealed_after, b"")  # unknown key id to the old keyring
    with pytest.raises(SealingError):
        rotated.open("a", sealed_after, b"")  # wrong key for the data


def test_truncated_value_is_rejected() -> None:
    with pytest.raises(SealingError):
        Sealer({"a": KEY_A}, "a").open("a", b"short", b"")


def test_active_key_must_exist() -> None:
    with pytest.raises(ValueError, match="active"):
        Sealer({"a": KEY_A}, "b")


@settings(max_examples=200, deadline=None)
@given(key=st.binary(min_size=32, max_size=200), value=st.text(max_size=300))
def test_keyed_hash_is_hmac_sha256(key: bytes, value: str) -> None:
    expected = hmac.new(key, value.encode(), hashlib.sha256).digest()
    assert KeyedHasher(key).digest(value) == expected


def test_hash_key_must_be_long() -> None:
    with pytest.raises(ValueError, match="32"):
        KeyedHasher(b"short")


@settings(max_examples=200, deadline=None)
@given(plaintext=st.binary(max_size=200), data=st.data())
def test_any_change_to_a_sealed_value_is_detected(plaintext: bytes, data: st.DataObject) -> None:
    sealer = Sealer({"a": KEY_A}, "a")
    sealed = bytearray(sealer.seal(plaintext, b"context"))
    position = data.draw(st.integers(0, len(sealed) - 1))
    sealed[position] ^= data.draw(st.integers(1, 255))
    with pytest.raises(SealingError):
        sealer.open("a", bytes(sealed), b"context")
