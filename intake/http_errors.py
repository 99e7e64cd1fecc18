"""The HTTP layer's own error log, without the bytes of the bad request.

aiohttp answers a request it cannot parse (a malformed or oversized header)
before any handler runs, and logs the parser's exception at ERROR with a
traceback whose message quotes the offending bytes: a header carrying a NIK
or an email would be copied into the log. The door hands aiohttp this
logger instead, which keeps the event and the exception's type, never its
message.
"""

from __future__ import annotations

import logging
from typing import Final

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
