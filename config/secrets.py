"""The secret settings: the admin token and the keys, and what makes one acceptable.

Each secret is checked when the settings load, so a placeholder, a typed-in word or
a key reused for two purposes stops the process (exit 3) naming the key, never
showing its value. The checks catch what operators actually paste by mistake
(`REPLACE-...`, `changeme`, a key of zero bytes, one key copied into two
settings); they cannot tell a weak secret that merely looks random.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any

from pydantic import Field, field_validator, model_validator

from config.section import ConfigError
from config.section import Section as _Section

# Case-insensitive fragments of the placeholders in deploy/, the docs and common
# templates. Long enough that a random token holds one with negligible odds.
PLACEHOLDER_MARKERS = ("replace", "changeme", "change-me", "change_me", "placeholder",
                       "example", "your-token", "your_token")
# What the repository's deliberately public values carry (compose.yaml): accepted
# while developing, refused when `security.production` is true.
DEV_ONLY_MARKER = "dev-only"
MIN_TOKEN_CHARS = 32
# 32 hex digits (the smallest random token we accept) show about 14 distinct
# characters; fewer than 10 means a pattern or a word, not randomness.
MIN_TOKEN_DISTINCT = 10
# 32 random bytes show about 30 distinct values; fewer than 16 is zeros, a
# repeated pattern, or a short phrase padded out.
MIN_KEY_DISTINCT = 16
MAX_KEY_ID_CHARS = 32


def check_token(value: str) -> str:
    """A bearer token that looks random: >= 32 visible ASCII characters, no placeholder."""
    if not value:
        return value  # unset: the admin API refuses every call (required in production)
    if len(value) < MIN_TOKEN_CHARS:
        raise ValueError(f"must be at least {MIN_TOKEN_CHARS} random characters")
    if not all("!" <= ch <= "~" for ch in value):
        raise ValueError("must be visible ASCII characters, no spaces")
    if has_placeholder(value):
        raise ValueError("is a placeholder: generate a random token")
    if len(set(value)) < MIN_TOKEN_DISTINCT:
        raise ValueError("does not look random: generate a random token")
    return value


def has_placeholder(text: str) -> bool:
    """Whether a secret holds one of the placeholder fragments."""
    lowered = text.lower()
    return any(marker in lowered for marker in PLACEHOLDER_MARKERS)


def decode_key(value: str, *, minimum: int, exact: int | None = None) -> bytes:
    """The bytes of a base64 key that looks random, or ValueError saying what is wrong."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("must be base64") from exc
    if exact is not None and len(raw) != exact:
        raise ValueError(f"must decode to exactly {exact} bytes")
    if len(raw) < minimum:
        raise ValueError(f"must decode to at least {minimum} bytes")
    if len(set(raw)) < MIN_KEY_DISTINCT or has_placeholder(raw.decode("latin-1")):
        raise ValueError("does not look random: generate random bytes")
    return raw


def _check_key_ids(value: dict[str, str], exact: int | None) -> dict[str, str]:
    for key_id, key in value.items():
        if not key_id or len(key_id.encode()) > MAX_KEY_ID_CHARS:
            raise ValueError(f"key ids are 1-{MAX_KEY_ID_CHARS} characters")
        decode_key(key, minimum=32, exact=exact)
    return value


class KeySettings(_Section):
    active_sealing_key_id: str
    sealing_keys: dict[str, str] = Field(repr=False)
    hash_key: str = Field(repr=False)
    # Sign the email verification tokens (id -> base64 of >= 32 random bytes).
    # New tokens carry the active id; a token of any listed id verifies, so a
    # new key rolls out while links already in mailboxes stay valid.
    active_token_key_id: str = ""
    token_keys: dict[str, str] = Field(default_factory=dict, repr=False)
    # Address keys: id -> base64 of 32 random bytes (AES-256-GCM), rotated like the
    # sealing keys. The door seals the email address a second time under them,
    # so the email worker holds a key that opens the address and nothing else.
    active_address_key_id: str = ""
    address_keys: dict[str, str] = Field(default_factory=dict, repr=False)
    # Queue keys: id -> base64 of >= 32 random bytes (HMAC-SHA256), rotated like the
    # token keys. They sign the waiting room's tickets (docs/waiting-room.md); with
    # none listed, one key derived from the hash key signs them, under the id "h".
    active_queue_key_id: str = ""
    queue_keys: dict[str, str] = Field(default_factory=dict, repr=False)

    @model_validator(mode="before")
    @classmethod
    def _token_key_was_renamed(cls, data: Any) -> Any:
        # A configuration written before key ids: say what to write instead of
        # "extra inputs are not permitted".
        if isinstance(data, dict) and "token_key" in data:
            raise ValueError("token_key: replaced by token_keys (id -> key) and "
                             "active_token_key_id; list the old key there under an id "
                             "and links already sent stay valid (docs/security.md)")
        return data

    @field_validator("sealing_keys", "address_keys")
    @classmethod
    def _sealing_keys_are_aes256(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_key_ids(value, exact=32)

    @field_validator("token_keys", "queue_keys")
    @classmethod
    def _token_keys_are_long(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_key_ids(value, exact=None)

    @field_validator("hash_key")
    @classmethod
    def _hash_key_is_long(cls, value: str) -> str:
        if value:
            decode_key(value, minimum=32)
        return value

    @model_validator(mode="after")
    def _token_keys_complete_and_every_key_distinct(self) -> KeySettings:
        if (self.token_keys or self.active_token_key_id) and (
                self.active_token_key_id not in self.token_keys):
            raise ValueError("active_token_key_id: must name a key listed in keys.token_keys")
        if (self.address_keys or self.active_address_key_id) and (
                self.active_address_key_id not in self.address_keys):
            raise ValueError("active_address_key_id: must name a key listed in "
                             "keys.address_keys")
        if (self.queue_keys or self.active_queue_key_id) and (
                self.active_queue_key_id not in self.queue_keys):
            raise ValueError("active_queue_key_id: must name a key listed in keys.queue_keys")
        # One key for two purposes couples them: a leaked token key would open
        # the blobs, and rotating one would silently rotate the other.
        seen: dict[bytes, str] = {}
        for name, key in self._named_keys():
            raw = base64.b64decode(key)
            if raw in seen:
                raise ValueError(f"{seen[raw]} and {name} are the same key: "
                                 "each must be its own random key")
            seen[raw] = name
        return self

    def _named_keys(self) -> list[tuple[str, str]]:
        named = [(f"keys.sealing_keys.{kid}", key) for kid, key in self.sealing_keys.items()]
        if self.hash_key:
            named.append(("keys.hash_key", self.hash_key))
        named += [(f"keys.token_keys.{kid}", key) for kid, key in self.token_keys.items()]
        named += [(f"keys.address_keys.{kid}", key) for kid, key in self.address_keys.items()]
        named += [(f"keys.queue_keys.{kid}", key) for kid, key in self.queue_keys.items()]
        return named

    def dev_only_keys(self) -> list[str]:
        """The settings whose key is one of the repository's public dev-only values."""
        return [name for name, key in self._named_keys()
                if DEV_ONLY_MARKER in base64.b64decode(key).decode("latin-1").lower()]

    def sealing_key_bytes(self) -> dict[str, bytes]:
        """Every readable sealing key, decoded."""
        return {kid: base64.b64decode(key) for kid, key in self.sealing_keys.items()}

    def address_key_bytes(self) -> dict[str, bytes]:
        """Every readable address key, decoded."""
        return {kid: base64.b64decode(key) for kid, key in self.address_keys.items()}

    def token_key_bytes(self) -> dict[str, bytes]:
        """Every token key (id -> bytes): the active one signs, any of them verifies."""
        if not self.token_keys:
            raise ConfigError("keys.token_keys: required (id -> base64 of >= 32 random bytes)"
                              " with keys.active_token_key_id")
        return {kid: base64.b64decode(key) for kid, key in self.token_keys.items()}

    def queue_key_bytes(self) -> tuple[str, dict[str, bytes]]:
        """The active queue key's id and every queue key (id -> bytes).

        With none configured: one key derived from the hash key (id "h"), so a
        deployment without queue keys still signs tickets, and a restart or a
        sibling door verifies them.
        """
        if self.queue_keys:
            return self.active_queue_key_id, {
                kid: base64.b64decode(key) for kid, key in self.queue_keys.items()}
        derived = hmac.new(self.hash_key_bytes(), b"gelombang waiting room tickets",
                           hashlib.sha256).digest()
        return "h", {"h": derived}

    def hash_key_bytes(self) -> bytes:
        """The HMAC key for NIK and email hashes, decoded."""
        return base64.b64decode(self.hash_key)

    def require(self) -> None:
        """Fail unless sealing and hashing are fully configured."""
        if not self.hash_key:
            raise ConfigError("keys.hash_key: required (base64 of >= 32 random bytes)")
        if self.active_sealing_key_id not in self.sealing_keys:
            raise ConfigError(
                "keys.active_sealing_key_id: must name a key listed in keys.sealing_keys"
            )

    def require_door(self) -> None:
        """Fail unless the door's keys are configured: sealing, address and hash keys."""
        self.require()
        self.require_address()

    def require_address(self) -> None:
        """Fail unless the address keys are configured (the door and the email worker)."""
        if self.active_address_key_id not in self.address_keys:
            raise ConfigError("keys.address_keys: required (id -> base64 of 32 random bytes)"
                              " with keys.active_address_key_id")

    def has_sealing_keys(self) -> bool:
        """Whether the full blobs can be opened here (the email worker may go without)."""
        return self.active_sealing_key_id in self.sealing_keys
