"""intake/registration_lane.py: plain registrations answered past aiohttp's request objects,
in order with everything else on the connection, with aiohttp's answers and shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web

from config.settings import Settings
from intake import hot_path, registration_lane
from intake.door import Door
from intake.registrations import decide, register
from loadtest.registrants import RegistrantFactory
from queueing.admission import Decision, Outcome
from tests.intake.door_helpers import DoorUnderTest, running_door

Answer = tuple[int, dict[str, str], bytes]


class Connection:
    """One raw keep-alive connection to the door's public port."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_alone(self, data: bytes) -> None:
        """Send, and give the door a moment to read it: what is sent next is another read."""
        await self.send(data)
        await asyncio.sleep(0.1)

    async def answer(self, within: float = 10.0) -> Answer:
        """The next answer: status, headers (lower-case names) and body."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), within)
        status_line, *lines = head.decode().split("\r\n")[:-2]
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers, body

    async def nothing_yet(self) -> bool:
        """Whether no answer byte arrives within a moment."""
        try:
            await asyncio.wait_for(self.reader.read(1), 0.3)
        except TimeoutError:
            return True
        return False

    async def closed_by_the_door(self, within: float = 10.0) -> bool:
        return await asyncio.wait_for(self.reader.read(), within) == b""


@pytest.fixture
async def connection(door_under_test: DoorUnderTest) -> AsyncIterator[Connection]:
    server = door_under_test.public.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    yield Connection(reader, writer)
    writer.close()


def plain(body: bytes, *fields: str) -> bytes:
    """A plain registration POST: what the lane answers."""
    head = ["POST /v1/registrations HTTP/1.1", "Host: door", "Content-Type: application/json",
            f"Content-Length: {len(body)}", *fields]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def aiohttps(body: bytes, *fields: str) -> bytes:
    """The same registration, which the lane leaves to aiohttp (Content-Encoding)."""
    return plain(body, "Content-Encoding: identity", *fields)


HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: door\r\n\r\n"


@pytest.fixture
def aiohttps_registrations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts the registrations that went aiohttp's way (and answers them as before)."""
    taken: list[str] = []

    async def counted(door: Door, request: web.BaseRequest) -> web.Response:
        taken.append(request.method)
        return await register(door, request)

    monkeypatch.setattr(hot_path, "register", counted)
    return taken


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event, list[Decision]]:
    """Holds every lane decision until the event is set; keeps the decisions made."""
    opened = asyncio.Event()
    decided: list[Decision] = []

    async def held(*args: object) -> Decision:
        await opened.wait()
        decision = await decide(*args)  # type: ignore[arg-type]
        decided.append(decision)
        return decision

    monkeypatch.setattr(registration_lane, "decide", held)
    return opened, decided


def body_of(registrants: RegistrantFactory) -> bytes:
    return orjson.dumps(registrants.make().body())


async def test_a_plain_registration_is_the_lanes_and_answered_202_as_the_contract_says(
        connection: Connection, registrants: RegistrantFactory,
        aiohttps_registrations: list[str]) -> None:
    await connection.send(plain(body_of(registrants)))
    status, headers, body = await connection.answer()
    assert status == 202
    assert aiohttps_registrations == []
    answer = orjson.loads(body)
    assert answer["status"] == "queued"
    assert answer["status_url"] == f"/v1/registrations/{answer['registration_id']}"
    assert headers["location"] == answer["status_url"]
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert {"date", "server"} <= headers.keys()
    assert "connection" not in headers  # kept alive: the next one is answered too
    await connection.send(plain(body_of(registrants)))
    assert (await connection.answer())[0] == 202


@pytest.mark.parametrize("case", ["valid", "invalid_field", "malformed", "bad_key", "replayed"])
async def test_the_lane_answers_what_aiohttps_way_answers(
        connection: Connection, registrants: RegistrantFactory,
        aiohttps_registrations: list[str], case: str) -> None:
    answers = []
    for way in (plain, aiohttps):
        fields: tuple[str, ...] = ()
        body = body_of(registrants)
        if case == "invalid_field":
            body = orjson.dumps({**registrants.make().body(), "email": "nope"})
        elif case == "malformed":
            body = b'{"nik": '
        elif case == "bad_key":
            fields = ("Idempotency-Key: not a key!",)
        elif case == "replayed":
            fields = (f"Idempotency-Key: replay-{way.__name__}",)
            await connection.send(way(body, *fields))
            await connection.answer()
        await connection.send(way(body, *fields))
        answers.append(await connection.answer())
    assert len(aiohttps_registrations) == 2 if case == "replayed" else 1
    (lane_status, lane_headers, lane_body), (status, headers, body) = answers
    assert lane_status == status
    assert lane_headers.keys() == headers.keys()
    for name in headers.keys() - {"date", "location", "content-length"}:
        assert lane_headers[name] == headers[name]
    if status == 202:
        assert orjson.loads(lane_body).keys() == orjson.loads(body).keys()
    else:
        assert lane_body == body


async def test_what_arrives_during_a_lane_answer_is_answered_after_it(
        connection: Connection, registrants: RegistrantFactory,
        gate: tuple[asyncio.Event, list[Decision]]) -> None:
    opened, decided = gate
    await connection.send_alone(plain(body_of(registrants)))  # the lane's read
    await connection.send(HEALTHZ)
    assert await connection.nothing_yet()  # the health check waits behind the registration
    opened.set()
    assert (await connection.answer())[0] == 202
    assert (await connection.answer())[0] == 200
    assert [d.outcome for d in decided] == [Outcome.ADMITTED]


async def test_a_connection_comes_back_to_the_lane_once_aiohttp_has_answered(
        connection: Connection, registrants: RegistrantFactory,
        aiohttps_registrations: list[str]) -> None:
    await connection.send(HEALTHZ)
    assert (await connection.answer())[0] == 200
    # A body in two reads is aiohttp's to read...
    whole = plain(body_of(registrants))
    await connection.send_alone(whole[:-5])
    await connection.send(whole[-5:])
    assert (await connection.answer())[0] == 202
    assert aiohttps_registrations == ["POST"]
    # ...and once it is answered, the connection is between requests again.
    await connection.send(plain(body_of(registrants)))
    assert (await connection.answer())[0] == 202
    assert aiohttps_registrations == ["POST"]


async def test_a_request_whose_end_the_lane_cannot_tell_leaves_the_connection_to_aiohttp(
        connection: Connection, registrants: RegistrantFactory,
        aiohttps_registrations: list[str]) -> None:
    body = body_of(registrants)
    chunked = (b"POST /v1/registrations HTTP/1.1\r\nHost: door\r\nContent-Type: application/json"
               b"\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    await connection.send(chunked)
    assert (await connection.answer())[0] == 202
    await connection.send(plain(body_of(registrants)))
    assert (await connection.answer())[0] == 202
    assert aiohttps_registrations == ["POST", "POST"]


async def test_pipelined_registrations_are_answered_in_order(
        connection: Connection, registrants: RegistrantFactory,
        aiohttps_registrations: list[str]) -> None:
    keys = [f"pipelined-{n}" for n in range(3)]
    first = plain(body_of(registrants), f"Idempotency-Key: {keys[0]}")
    rest = b"".join(plain(body_of(registrants), f"Idempotency-Key: {k}") for k in keys[1:])
    await connection.send(first + rest)  # one read: aiohttp's, in its order
    ids = [orjson.loads((await connection.answer())[2])["registration_id"] for _ in keys]
    for key, registration_id in zip(keys, ids, strict=True):  # each key's own answer, in order
        await connection.send(plain(body_of(registrants), f"Idempotency-Key: {key}"))
        assert orjson.loads((await connection.answer())[2])["registration_id"] == registration_id
    assert len(aiohttps_registrations) == 3


async def test_a_client_asking_to_close_gets_its_answer_and_the_connection_closed(
        connection: Connection, registrants: RegistrantFactory) -> None:
    await connection.send(plain(body_of(registrants), "Connection: close"))
    status, headers, _ = await connection.answer()
    assert status == 202
    assert headers["connection"] == "close"
    assert await connection.closed_by_the_door()


async def test_shutdown_waits_for_a_lane_answer_in_hand(
        door_under_test: DoorUnderTest, connection: Connection,
        registrants: RegistrantFactory, gate: tuple[asyncio.Event, list[Decision]]) -> None:
    opened, _ = gate
    await connection.send_alone(plain(body_of(registrants)))
    closing = asyncio.create_task(door_under_test.public.server.close())
    await asyncio.sleep(0.3)
    assert not closing.done()  # the answer in hand holds the shutdown
    opened.set()
    status, headers, _ = await connection.answer()
    assert status == 202
    assert headers["connection"] == "close"
    await asyncio.wait_for(closing, 10)
    assert await connection.closed_by_the_door()


async def test_a_registration_whose_client_left_is_still_decided(
        connection: Connection, registrants: RegistrantFactory,
        gate: tuple[asyncio.Event, list[Decision]]) -> None:
    opened, decided = gate
    await connection.send_alone(plain(body_of(registrants)))
    connection.writer.close()
    await asyncio.sleep(0.1)
    opened.set()
    for _ in range(100):
        if decided:
            break
        await asyncio.sleep(0.05)
    assert [d.outcome for d in decided] == [Outcome.ADMITTED]


async def test_an_idle_connection_is_closed_after_a_lane_answer_as_after_any(
        test_settings: Settings, redis_client: object, registrants: RegistrantFactory) -> None:
    public = test_settings.public.model_copy(update={"idle_timeout_seconds": 0.5})
    async with running_door(test_settings.model_copy(update={"public": public})) as door:
        server = door.public.server
        reader, writer = await asyncio.open_connection(server.host, server.port)
        connection = Connection(reader, writer)
        await connection.send(plain(body_of(registrants)))
        assert (await connection.answer())[0] == 202
        assert await connection.closed_by_the_door(within=5)
        writer.close()


async def test_a_client_sending_far_ahead_is_read_on_after_its_answer_and_answered_in_full(
        connection: Connection, registrants: RegistrantFactory,
        gate: tuple[asyncio.Event, list[Decision]]) -> None:
    opened, _ = gate
    await connection.send_alone(plain(body_of(registrants)))
    # Far more than the lane holds while it answers (64 KiB): reading pauses, and
    # goes on once the answer is out.
    ahead = [plain(body_of(registrants), f"Idempotency-Key: ahead-{n}") for n in range(300)]
    assert sum(map(len, ahead)) > registration_lane.HELD_BYTES_MAX
    connection.writer.write(b"".join(ahead))
    assert await connection.nothing_yet()
    opened.set()
    statuses = [(await connection.answer())[0] for _ in range(1 + len(ahead))]
    assert statuses == [202] * (1 + len(ahead))
