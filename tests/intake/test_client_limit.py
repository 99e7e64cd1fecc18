"""The per-client-IP limit: who the client is behind proxies, its buckets, and the door's 429."""

from __future__ import annotations

import ipaddress
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from config.settings import ClientLimitSettings, ConfigError, Settings
from intake.client_limit import ClientLimiter, client_address
from loadtest.registrants import RegistrantFactory
from tests.intake.door_helpers import DoorUnderTest, running_door

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


def limit_settings(**changes: object) -> ClientLimitSettings:
    values: dict[str, object] = {"enabled": True, "rate_per_second": 1.0, "burst": 2,
                                 "max_clients": 100, "trusted_proxies": "10.0.0.0/8"}
    values.update(changes)
    return ClientLimitSettings.model_validate(values)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        # A peer that is no trusted proxy is the client; its header proves nothing.
        ("203.0.113.5", ["198.51.100.1"], "203.0.113.5"),
        # Through one proxy: the hop it appended.
        ("10.0.0.2", ["198.51.100.1"], "198.51.100.1"),
        # The client's own (forged) entries sit left of the proxy's: ignored.
        ("10.0.0.2", ["1.1.1.1, 2.2.2.2, 198.51.100.1"], "198.51.100.1"),
        # Through two proxies: trusted hops are skipped from the right.
        ("10.0.0.2", ["1.1.1.1, 198.51.100.1, 10.0.0.9"], "198.51.100.1"),
        # Several header fields count as one list, in order.
        ("10.0.0.2", ["1.1.1.1", "198.51.100.1, 10.0.0.9"], "198.51.100.1"),
        # Only proxies in the header: the left-most of them.
        ("10.0.0.2", ["10.0.0.7, 10.0.0.9"], "10.0.0.7"),
        # No header from a proxy: the proxy itself.
        ("10.0.0.2", [], "10.0.0.2"),
        # Garbage ends the walk at the last proxy.
        ("10.0.0.2", ["1.1.1.1, not-an-ip, 10.0.0.9"], "10.0.0.9"),
        ("10.0.0.2", ["198.51.100.1:443"], "10.0.0.2"),
        # IPv6, and IPv4 seen through a dual-stack socket.
        ("fd00::1", ["2001:db8::7"], "2001:db8::7"),
        ("::ffff:10.0.0.2", ["198.51.100.1"], "198.51.100.1"),
        ("::ffff:203.0.113.5", [], "203.0.113.5"),
        (None, ["198.51.100.1"], "unknown"),
    ],
)
def test_the_client_is_the_right_most_untrusted_address(
    peer: str | None, forwarded: list[str], client: str
) -> None:
    assert client_address(peer, forwarded, PROXIES) == client


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert client_address("10.0.0.2", ["198.51.100.1"], ()) == "10.0.0.2"


def test_a_bucket_allows_burst_then_rate() -> None:
    clock = Clock()
    limiter = ClientLimiter(limit_settings(rate_per_second=0.5, burst=2), clock)
    assert [limiter.take("a"), limiter.take("a")] == [0, 0]
    assert limiter.take("a") == 2  # one token takes 2 s at 0.5/s
    assert limiter.take("b") == 0  # another client has its own bucket
    clock.now += 2.0
    assert limiter.take("a") == 0
    assert limiter.take("a") > 0


def test_buckets_are_bounded_by_max_clients() -> None:
    clock = Clock()
    limiter = ClientLimiter(limit_settings(burst=1, max_clients=3), clock)
    for client in ("a", "b", "c", "d"):
        assert limiter.take(client) == 0
    assert len(limiter) == 3
    # "a" was forgotten (least recently seen): it starts over with a full bucket.
    assert limiter.take("a") == 0
    assert limiter.take("d") > 0


def test_trusted_proxies_must_be_addresses_or_networks() -> None:
    with pytest.raises(ConfigError, match=r"client_limit\.trusted_proxies"):
        Settings.load(client_limit={"trusted_proxies": "10.0.0.0/8, proxy.local"})


async def post(
    client: TestClient,  # type: ignore[type-arg]
    body: bytes,
    headers: dict[str, str],
) -> tuple[int, dict[str, str], Any]:
    response = await client.post(
        "/v1/registrations", data=body, headers={"Content-Type": "application/json", **headers}
    )
    payload = orjson.loads(await response.read())
    return response.status, dict(response.headers), payload


async def test_the_door_answers_429_client_limited_per_forwarded_client(
    test_settings: Settings, redis_client: object
) -> None:
    settings = test_settings.model_copy(update={"client_limit": limit_settings(
        rate_per_second=0.001, burst=2, trusted_proxies="127.0.0.1/32")})
    factory = RegistrantFactory()
    async with running_door(settings) as door:
        statuses = []
        for _ in range(3):
            body = orjson.dumps(factory.make().body())
            status, headers, payload = await post(door.public, body,
                                                  {"X-Forwarded-For": "198.51.100.1"})
            statuses.append(status)
        assert statuses == [202, 202, 429]
        assert payload["error"]["code"] == "client_limited"
        assert set(payload["error"]) == {"code", "message"}
        assert int(headers["Retry-After"]) >= 1
        assert headers["RateLimit-Policy"].startswith('"client";q=2;')
        assert headers["RateLimit"].startswith('"client";r=0;t=')
        # The limit comes first: even a malformed request from that client is limited.
        status, _, payload = await post(door.public, b"{", {"X-Forwarded-For": "198.51.100.1"})
        assert status == 429
        # Another client behind the same proxy has its own bucket.
        status, _, _ = await post(door.public, orjson.dumps(factory.make().body()),
                                  {"X-Forwarded-For": "198.51.100.2"})
        assert status == 202


async def test_the_limit_is_off_by_default(door_under_test: DoorUnderTest) -> None:
    door = door_under_test.door
    assert door.settings.client_limit.enabled is False
    assert door.client_limiter is None
    statuses = set()
    for _ in range(30):
        status, _, _ = await post(door_under_test.public, b"{",
                                  {"X-Forwarded-For": "198.51.100.1"})
        statuses.add(status)
    assert statuses == {400}


def test_the_reads_bucket_has_its_own_figures() -> None:
    clock = Clock()
    settings = limit_settings(rate_per_second=1.0, burst=1, read_rate_per_second=0.5,
                              read_burst=3)
    reads = ClientLimiter(settings, clock, reads=True)
    assert (reads.rate, reads.burst, reads.policy) == (0.5, 3, '"client_read"')
    assert [reads.take("a") for _ in range(4)] == [0, 0, 0, 2]
    with pytest.raises(ConfigError, match=r"client_limit\.read_burst"):
        Settings.load(client_limit={"read_burst": 0})


async def test_status_reads_and_email_links_have_their_own_bucket_per_client(
    test_settings: Settings, redis_client: object
) -> None:
    settings = test_settings.model_copy(update={"client_limit": limit_settings(
        rate_per_second=0.001, burst=1, read_rate_per_second=0.001, read_burst=3,
        trusted_proxies="127.0.0.1/32")})
    client = {"X-Forwarded-For": "198.51.100.1"}
    unknown = "/v1/registrations/0190b6a2-c1d2-7e5f-8a3b-4c5d6e7f8091"
    async with running_door(settings) as door:
        reads = []
        for path in (unknown, unknown, "/v1/verify-email?token=x", unknown):
            async with door.public.get(path, headers={**client, "Accept": "application/json"}
                                       ) as reply:
                reads.append((reply.status, (await reply.json())["error"]["code"],
                              dict(reply.headers)))
        async with door.public.get("/v1/verify-email?token=x", headers=client) as reply:
            page = reply.status, reply.content_type, await reply.text()
        # Another client has a full bucket; this client's POSTs have theirs.
        async with door.public.get(unknown, headers={"X-Forwarded-For": "198.51.100.2"}
                                   ) as reply:
            other = reply.status
        status, _, _ = await post(door.public, orjson.dumps(RegistrantFactory().make().body()),
                                  client)

    assert [(s, code) for s, code, _ in reads] == [
        (404, "not_found"), (404, "not_found"), (400, "invalid_token"), (429, "client_limited")]
    headers = reads[3][2]
    assert int(headers["Retry-After"]) >= 1
    assert headers["RateLimit-Policy"].startswith('"client_read";q=3;')
    assert headers["RateLimit"].startswith('"client_read";r=0;t=')
    assert page[:2] == (429, "text/html") and "Terlalu banyak permintaan" in page[2]
    assert other == 404
    assert status == 202
