"""Email verification tokens: bound to a registration, signed, expiring."""

from __future__ import annotations

import base64
import os
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from queueing.tokens import MAX_TOKEN_CHARS, ExpiredToken, InvalidToken, TokenSigner

KEY = os.urandom(32)
NOW = 1_800_000_000


def test_a_token_verifies_its_registration_until_it_expires() -> None:
    signer = TokenSigner(KEY)
    registration_id = uuid.uuid4()
    token = signer.issue(registration_id, NOW + 60)
    assert len(token) <= MAX_TOKEN_CHARS
    assert signer.check(token, NOW) == registration_id
    assert signer.check(token, NOW + 59.9) == registration_id
    with pytest.raises(ExpiredToken) as expired:
        signer.check(token, NOW + 60)
    assert expired.value.registration_id == registration_id


def test_the_token_is_url_safe_and_does_not_spell_the_id_in_hex() -> None:
    registration_id = uuid.uuid4()
    token = TokenSigner(KEY).issue(registration_id, NOW)
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert registration_id.hex not in token


def test_a_token_from_another_key_is_invalid_even_when_expired() -> None:
    token = TokenSigner(os.urandom(32)).issue(uuid.uuid4(), NOW - 10)
    with pytest.raises(InvalidToken):
        TokenSigner(KEY).check(token, NOW)


@pytest.mark.parametrize("position", range(41))
def test_any_changed_byte_is_rejected(position: int) -> None:
    signer = TokenSigner(KEY)
    raw = bytearray(base64.urlsafe_b64decode(signer.issue(uuid.uuid4(), NOW + 60) + "==="[:1]))
    raw[position] ^= 0x20
    tampered = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(InvalidToken):
        signer.check(tampered, NOW)


def test_moving_the_expiry_later_breaks_the_signature() -> None:
    signer = TokenSigner(KEY)
    raw = bytearray(base64.urlsafe_b64decode(signer.issue(uuid.uuid4(), NOW - 1) + "="))
    raw[17:25] = (NOW + 10**6).to_bytes(8, "big")
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(InvalidToken):
        signer.check(forged, NOW)


@pytest.mark.parametrize("token", ["", "abc", "!" * 10, "A" * 55, "A" * 200, "ä" * 10])
def test_malformed_tokens_are_invalid(token: str) -> None:
    with pytest.raises(InvalidToken):
        TokenSigner(KEY).check(token, NOW)


@given(st.text(max_size=80))
def test_checking_any_text_raises_only_token_errors(token: str) -> None:
    with pytest.raises((InvalidToken, ExpiredToken)):
        TokenSigner(KEY).check(token, NOW)


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenSigner(b"k" * 16)
