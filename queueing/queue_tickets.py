"""Waiting room tickets: a signed place in a wave's line (docs/waiting-room.md).

A ticket is `q1.<key id>.<payload>.<mac>`, base64url without padding, where the
payload is msgpack `[wave, ticket id (16 bytes), position (0: not drawn yet),
joined at (Unix seconds)]` and the MAC the first 16 bytes of HMAC-SHA256 under
the queue key the id names (`keys.queue_keys`) over `q1.<key id>.<payload>`.

The signature is what makes a poll cheap: the door reads the place from the
ticket itself and compares it with the line's served counter, which it holds
in memory, so a poll needs no Redis. Nothing else is in a ticket: no NIK, and
the ticket id (`ticket_id`) cannot be linked to a NIK without the hash key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import msgpack

VERSION: Final = "q1"
TICKET_ID_BYTES: Final = 16
_MAC_BYTES: Final = 16
# A wave id (<= 32 chars), a key id (<= 32), the payload and the MAC: well under this.
MAX_TICKET_CHARS: Final = 200


class InvalidTicket(Exception):
    """Malformed, or not signed by a listed queue key."""


@dataclass(frozen=True, slots=True)
class Ticket:
    """What a valid ticket says."""

    wave: str
    ticket_id: bytes
    # 0 while the ticket is in a pre-queue that has not been drawn.
    position: int
    joined_at: int


def ticket_id(wave: str, nik_hash: bytes) -> bytes:
    """One NIK's ticket id in one wave: the same from every tab and device."""
    return hashlib.sha256(wave.encode() + b"\0" + nik_hash).digest()[:TICKET_ID_BYTES]


def lottery_member(seed: bytes, ticket: bytes) -> bytes:
    """A pre-queue joiner's member of the draw: its lottery key, then its ticket id.

    Members of equal score sort by their bytes, so the draw's order is the
    lottery keys' order, which anyone can recompute once the seed is public.
    """
    return hmac.new(seed, ticket, hashlib.sha256).digest()[:16] + ticket


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TicketSigner:
    """Signs tickets under the active queue key; checks them under any listed key."""

    def __init__(self, keys: Mapping[str, bytes], active_key_id: str) -> None:
        if active_key_id not in keys:
            raise ValueError("the active queue key id must name a listed key")
        # The keyed HMAC states, made once: copying one is cheaper than keying anew.
        self._keys = {kid: hmac.new(key, digestmod=hashlib.sha256) for kid, key in keys.items()}
        self._active = active_key_id

    def sign(self, ticket: Ticket) -> str:
        """The ticket's token, under the active key."""
        payload = msgpack.packb(
            [ticket.wave, ticket.ticket_id, ticket.position, ticket.joined_at])
        signed = f"{VERSION}.{self._active}.{_b64(payload)}"
        return f"{signed}.{_b64(self._mac(self._active, signed))}"

    def verify(self, token: str) -> Ticket:
        """What a token says, once its MAC checks out; raises InvalidTicket."""
        if len(token) > MAX_TICKET_CHARS:
            raise InvalidTicket
        signed, _, mac_text = token.rpartition(".")
        version, _, rest = signed.partition(".")
        key_id, _, payload_text = rest.partition(".")
        if version != VERSION or key_id not in self._keys:
            raise InvalidTicket
        try:
            mac = _unb64(mac_text)
            good = hmac.compare_digest(mac, self._mac(key_id, signed))
            if not good:
                raise InvalidTicket
            wave, ticket, position, joined_at = msgpack.unpackb(_unb64(payload_text))
        except (binascii.Error, ValueError, TypeError, msgpack.UnpackException) as exc:
            raise InvalidTicket from exc
        if not (isinstance(wave, str) and isinstance(ticket, bytes)
                and len(ticket) == TICKET_ID_BYTES and isinstance(position, int)
                and position >= 0 and isinstance(joined_at, int)):
            raise InvalidTicket
        return Ticket(wave, ticket, position, joined_at)

    def _mac(self, key_id: str, signed: str) -> bytes:
        keyed = self._keys[key_id].copy()
        keyed.update(signed.encode())
        return keyed.digest()[:_MAC_BYTES]
