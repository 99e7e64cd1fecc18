"""The per-client-IP limit: a token bucket per address, and who the client is behind proxies.

Off by default. Two limiters when on: one for the POSTs, one for the reads
that may reach PostgreSQL, each with its own figures. Each door process keeps
its own buckets, at most `max_clients` per limiter (the least recently seen
address is forgotten, and starts again with a full bucket), so memory stays
bounded however many addresses send.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Final

from config.settings import ClientLimitSettings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
UNKNOWN_CLIENT: Final = "unknown"
# The RateLimit policy names of the 429 client_limited answers.
POLICY_NAME: Final = '"client"'
READ_POLICY_NAME: Final = '"client_read"'


def _parse(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(
    peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]
) -> str:
    """The client's address: the peer, or behind trusted proxies the right-most untrusted hop.

    Every hop a trusted proxy appends is the address it received the request
    from; hops further left were written by the client and prove nothing. So
    the walk goes right to left and stops at the first address that is not a
    trusted proxy. A hop that is no address ends the walk at the last proxy.
    """
    address = _parse(peer) if peer else None
    if address is None:
        return peer or UNKNOWN_CLIENT
    if not trusted or not any(address in network for network in trusted):
        return str(address)
    hops = [hop for header in forwarded_for for hop in header.split(",")]
    for hop in reversed(hops):
        forwarded = _parse(hop)
        if forwarded is None:
            break
        address = forwarded
        if not any(address in network for network in trusted):
            break
    return str(address)


class ClientLimiter:
    """Token buckets by client address, bounded in number."""

    def __init__(
        self,
        settings: ClientLimitSettings,
        clock: Callable[[], float] = time.monotonic,
        *,
        reads: bool = False,
    ) -> None:
        # The POSTs' buckets, or the reads' (own figures, own RateLimit policy name).
        self.rate = settings.read_rate_per_second if reads else settings.rate_per_second
        self.burst = settings.read_burst if reads else settings.burst
        self.policy = READ_POLICY_NAME if reads else POLICY_NAME
        self.trusted: tuple[Network, ...] = settings.trusted_networks()
        self._max_clients = settings.max_clients
        self._clock = clock
        # address -> (tokens, when they were counted); oldest use first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, client: str) -> int:
        """Spend one token of `client`: 0 when allowed, else whole seconds until one is back."""
        now = self._clock()
        tokens, counted = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - counted) * self.rate)
        if tokens >= 1.0:
            tokens -= 1.0
            wait = 0
        else:
            wait = max(1, math.ceil((1.0 - tokens) / self.rate))
        self._buckets[client] = (tokens, now)
        if len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)
        return wait

    @property
    def window_seconds(self) -> int:
        """The time an empty bucket takes to refill: the RateLimit policy's window."""
        return max(1, math.ceil(self.burst / self.rate))
