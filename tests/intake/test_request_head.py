"""intake/request_head.py: which bytes are a plain registration POST, and where requests end."""

from __future__ import annotations

import pytest

from intake.request_head import Framing, framed_requests, registration_request

BODY = b'{"nik":"x"}'


def request(*fields: bytes, body: bytes = BODY, start: bytes = b"POST /v1/registrations HTTP/1.1",
            length: int | None = None) -> bytes:
    """A request's bytes: its start line, a Content-Length (unless given among the
    fields) and a JSON type, the other fields, the body."""
    lines = [start, *fields]
    if not any(field.lower().startswith(b"content-length:") for field in fields):
        lines.append(b"Content-Length: %d" % (len(body) if length is None else length))
    if not any(field.lower().startswith(b"content-type:") for field in fields):
        lines.append(b"Content-Type: application/json")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def plain(data: bytes) -> bool:
    return registration_request(data, 8190, 32, 4096) is not None


def test_a_plain_registration_is_read_with_the_headers_the_registration_path_needs() -> None:
    read = registration_request(
        request(b"Host: door", b"idempotency-key: k-1", b"Authorization:  Queue q1.t ",
                b"X-Forwarded-For: 10.0.0.1", b"x-forwarded-for: 10.0.0.2, 10.0.0.3",
                b"Content-Type: Application/JSON; charset=utf-8", b"Connection: keep-alive"),
        8190, 32, 4096)
    assert read is not None
    assert read.body == BODY
    assert read.idempotency_key == "k-1"
    assert read.authorization == "Queue q1.t"
    assert read.forwarded_for == ["10.0.0.1", "10.0.0.2, 10.0.0.3"]
    assert read.closes is False


def test_a_client_closing_after_its_answer_is_read_as_such() -> None:
    read = registration_request(request(b"Connection: Close"), 8190, 32, 4096)
    assert read is not None and read.closes is True
    read = registration_request(request(b"Host: door"), 8190, 32, 4096)
    assert read is not None and read.idempotency_key is None and read.closes is False


@pytest.mark.parametrize("data", [
    request(start=b"POST /v1/registrations?x=1 HTTP/1.1"),
    request(start=b"POST /v1/registrations/ HTTP/1.1"),
    request(start=b"POST /v1/%72egistrations HTTP/1.1"),
    request(start=b"PUT /v1/registrations HTTP/1.1"),
    request(start=b"post /v1/registrations HTTP/1.1"),
    request(start=b"POST /v1/registrations HTTP/1.0"),
    request(start=b"POST  /v1/registrations HTTP/1.1"),
    request(b"Transfer-Encoding: chunked"),
    request(b"Expect: 100-continue"),
    request(b"Upgrade: websocket", b"Connection: upgrade"),
    request(b"Connection: Upgrade"),
    request(b"Content-Encoding: gzip"),
    request(b"Content-Encoding: identity"),
    request(b"Idempotency-Key: a", b"Idempotency-Key: b"),
    request(b"Content-Length: 11", b"Content-Length: 11"),
    request(b"Content-Length: +11"),
    request(b"Content-Length: 0x0b"),
    request(b"Content-Length: 000000011"),
    request(b"Content-Type: text/plain"),
    request(b"Content-Type: application/json-seq"),
    request(b"Content-Type: \"application/json\""),
    request(b"Content-Type: application/json", b"Content-Type: application/json"),
    request(b"X-Name: caf\xc3\xa9"),  # not ASCII
    request(b"X-Bad\x00: 1"),
    request(b"X-Bad: a\rb"),
    request(b"X-Folded: a", b" folded"),
    request(b"No-Colon"),
    request(b"Bad Name: 1"),
    request(length=len(BODY) + 1),  # the body is not whole yet
    request(length=len(BODY) - 1),  # bytes behind the body: a second request
    request() + request(),  # pipelined
    request(body=b"{" + b" " * 5000 + b"}"),  # over the body limit: aiohttp's 413
    request(*[b"X-Field-%d: 1" % i for i in range(40)]),  # over max_headers
    request(b"X-Long: " + b"a" * 9000),  # over the head limit
    b"POST /v1/registrations HTTP/1.1\r\n\r\n",
    b"POST /v1/registrations HTTP/1.1\r\nContent-Length: 2\r\nContent-Type: application/json\r\n",
    b"",
])
def test_anything_not_plain_is_left_to_aiohttp(data: bytes) -> None:
    assert not plain(data)


def test_the_lanes_inputs_are_plain_requests() -> None:
    assert plain(request())
    assert plain(request(b"Authorization: Bearer x", b"X-Request-Id: 42", body=b"{}"))


@pytest.mark.parametrize(("data", "framing"), [
    (b"", Framing(0, 0)),
    (b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n", Framing(1, 34)),
    (b"GET /healthz HTTP/1.1\r\nHost: a\r\n", Framing(0, 0)),  # the head is not whole
    (request(), Framing(1, len(request()))),
    (request() + request()[:20], Framing(1, len(request()))),
    (request(length=len(BODY) + 5), Framing(0, 0)),  # the body is not whole
    (request() + b"GET / HTTP/1.1\r\n\r\n", Framing(2, len(request()) + 18)),
    (request(b"Transfer-Encoding: chunked"), Framing(0, 0, known=False)),
    (b"GET / HTTP/1.1\r\n\r\n" + request(b"Upgrade: h2c"), Framing(1, 18, known=False)),
    (request(b"Content-Length: 11", b"Content-Length: 11"), Framing(0, 0, known=False)),
    (request(b"Content-Length: -1"), Framing(0, 0, known=False)),
    (b"CONNECT a:443 HTTP/1.1\r\n\r\n", Framing(0, 0, known=False)),
    (b"garbage\r\n\r\n", Framing(0, 0, known=False)),
    (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", Framing(0, 0, known=False)),
])
def test_framing_counts_the_whole_requests_and_knows_when_it_cannot(
        data: bytes, framing: Framing) -> None:
    assert framed_requests(data) == framing
