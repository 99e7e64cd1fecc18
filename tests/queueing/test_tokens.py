"""Email verification tokens: bound to a registration, signed with a named key, expiring."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from queueing.tokens import MAX_TOKEN_CHARS, ExpiredToken, InvalidToken, TokenSigner

KEY = os.urandom(32)
NOW = 1_800_000_000


def signer_of(key: bytes = KEY, key_id: str = "t1") -> TokenSigner:
    return TokenSigner({key_id: key}, key_id)


def raw_of(token: str) -> bytearray:
    return bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


def token_of(raw: bytes | bytearray) -> str:
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def test_a_token_verifies_its_registration_until_it_expires() -> None:
    signer = signer_of()
    registration_id = uuid.uuid4()
    token = signer.issue(registration_id, NOW + 60)
    assert len(token) <= MAX_TOKEN_CHARS
    assert signer.check(token, NOW) == registration_id
    assert signer.check(token, NOW + 59.9) == registration_id
    with pytest.raises(ExpiredToken) as expired:
        signer.check(token, NOW + 60)
    assert expired.value.registration_id == registration_id


def test_the_longest_key_id_fits_the_token_limit() -> None:
    signer = signer_of(key_id="k" * 32)
    token = signer.issue(uuid.uuid4(), NOW + 60)
    assert len(token) == MAX_TOKEN_CHARS
    signer.check(token, NOW)


def test_the_token_is_url_safe_and_does_not_spell_the_id_in_hex() -> None:
    registration_id = uuid.uuid4()
    token = signer_of().issue(registration_id, NOW)
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert registration_id.hex not in token


def test_a_token_from_another_key_is_invalid_even_when_expired() -> None:
    token = signer_of(os.urandom(32)).issue(uuid.uuid4(), NOW - 10)
    with pytest.raises(InvalidToken):
        signer_of().check(token, NOW)


def test_a_token_signed_with_the_previous_key_stays_valid_after_rotation() -> None:
    registration_id = uuid.uuid4()
    before = signer_of(KEY, "t1").issue(registration_id, NOW + 60)
    new_key = os.urandom(32)
    rotated = TokenSigner({"t1": KEY, "t2": new_key}, "t2")
    after = rotated.issue(registration_id, NOW + 60)
    assert rotated.check(before, NOW) == rotated.check(after, NOW) == registration_id
    # The new token names the new key: a door that does not list it yet refuses it,
    # and once the old key is removed, its links stop verifying.
    with pytest.raises(InvalidToken):
        signer_of(KEY, "t1").check(after, NOW)
    with pytest.raises(InvalidToken):
        signer_of(new_key, "t2").check(before, NOW)


def test_the_key_id_is_signed() -> None:
    # Naming another listed key makes the MAC wrong: ids cannot be swapped.
    signer = TokenSigner({"t1": KEY, "t2": os.urandom(32)}, "t1")
    raw = raw_of(signer.issue(uuid.uuid4(), NOW + 60))
    raw[3] = ord("2")  # "t1" -> "t2"
    with pytest.raises(InvalidToken):
        signer.check(token_of(raw), NOW)


def test_a_version_1_token_without_a_key_id_still_verifies_under_a_listed_key() -> None:
    # Links sent before tokens carried key ids: 1 | id | expiry | MAC under the key.
    registration_id = uuid.uuid4()
    body = struct.pack(">B16sQ", 1, registration_id.bytes, NOW + 60)
    legacy = token_of(body + hmac.new(KEY, body, hashlib.sha256).digest()[:16])
    rotated = TokenSigner({"t1": KEY, "t2": os.urandom(32)}, "t2")
    assert rotated.check(legacy, NOW) == registration_id
    with pytest.raises(InvalidToken):
        signer_of(os.urandom(32)).check(legacy, NOW)


@pytest.mark.parametrize("position", range(44))
def test_any_changed_byte_is_rejected(position: int) -> None:
    signer = signer_of()
    raw = raw_of(signer.issue(uuid.uuid4(), NOW + 60))
    assert len(raw) == 44
    raw[position] ^= 0x20
    with pytest.raises(InvalidToken):
        signer.check(token_of(raw), NOW)


def test_moving_the_expiry_later_breaks_the_signature() -> None:
    signer = signer_of()
    raw = raw_of(signer.issue(uuid.uuid4(), NOW - 1))
    raw[-24:-16] = (NOW + 10**6).to_bytes(8, "big")
    with pytest.raises(InvalidToken):
        signer.check(token_of(raw), NOW)


@pytest.mark.parametrize("token", ["", "abc", "!" * 10, "A" * 55, "A" * 60, "A" * 200,
                                   "ä" * 10])
def test_malformed_tokens_are_invalid(token: str) -> None:
    with pytest.raises(InvalidToken):
        signer_of().check(token, NOW)


@given(st.text(max_size=120))
def test_checking_any_text_raises_only_token_errors(token: str) -> None:
    with pytest.raises((InvalidToken, ExpiredToken)):
        signer_of().check(token, NOW)


@given(st.binary(min_size=41, max_size=74))
def test_checking_any_bytes_raises_only_token_errors(raw: bytes) -> None:
    with pytest.raises((InvalidToken, ExpiredToken)):
        signer_of().check(token_of(raw), NOW)


def test_short_keys_and_bad_ids_are_refused() -> None:
    with pytest.raises(ValueError):
        signer_of(b"k" * 16)
    with pytest.raises(ValueError):
        TokenSigner({"t1": KEY}, "t2")
    with pytest.raises(ValueError):
        signer_of(key_id="k" * 33)
