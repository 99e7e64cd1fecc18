"""The HTTP layer's own errors, without the bytes of the bad request.

aiohttp answers a request it cannot parse (a malformed or oversized header)
before any handler or middleware runs: it logs the parser's exception at ERROR
with a traceback whose message quotes the offending bytes, and answers 400 with
that same message as plain text. A header carrying a NIK or an email would be
copied into the log and sent back. The door hands aiohttp a logger that keeps
the event and the exception's type, never its message, and a request handler
whose error answer is the contract's JSON, which quotes nothing.
"""

from __future__ import annotations

import logging
from typing import Final

from aiohttp import web

from intake.responses import error_response

HTTP_LOGGER_NAME: Final = "gelombang.http"


class WithoutRequestBytes(logging.Filter):
    """Reduce a record to its message and the exception's type."""

    def filter(self, record: logging.LogRecord) -> bool:
        # The formatted message names an event and a client address at most;
        # the exception's message is what quotes the request's bytes.
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f" ({type(record.exc_info[1]).__name__})"
        record.msg, record.args = text, None
        record.exc_info, record.exc_text = None, None
        return True


def http_logger() -> logging.Logger:
    """The logger to give aiohttp's request handler (`logger=`)."""
    logger = logging.getLogger(HTTP_LOGGER_NAME)
    if not any(isinstance(f, WithoutRequestBytes) for f in logger.filters):
        logger.addFilter(WithoutRequestBytes())
    return logger


class ContractRequestHandler(web.RequestHandler):
    """aiohttp's connection handler, whose own error answers are the contract's JSON.

    aiohttp 3.14 routes a request its parser refused straight to `handle_error`,
    past the application and its middlewares; overriding it is the one place to
    change that answer (aiohttp's development branch, for 4.0, hands such requests
    to the application instead).
    """

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """400 `malformed_request` (or 500 `internal_error`), and the connection closed."""
        # aiohttp's own handling logs the event (through WithoutRequestBytes) and
        # refuses when part of an answer was already sent; its text answer, which
        # quotes `message`, is dropped.
        super().handle_error(request, status, exc, message)
        if status < 500:
            response = error_response(status, "malformed_request")
        else:
            response = error_response(500, "internal_error")
        # What the parser refused leaves the connection's framing unknown.
        response.force_close()
        return response

