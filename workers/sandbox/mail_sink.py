"""`gelombang mail-sink`: a real SMTP server that keeps every message as a file.

The dev stack and the tests send verification email over real SMTP, to this
server on loopback. Each accepted message becomes one `.eml` file in the
mail folder (`GELOMBANG_MAILDIR`, else `email.maildir`), written under a
temporary name and renamed, so a reader never sees half a message. A person
opens the link in the file; a test parses it.

`--reject-domain` and `--defer-domain` make it answer RCPT for addresses of
a domain with a permanent (550) or temporary (451) failure, for trying the
sender's failure handling without a real relay.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import uvloop
from aiosmtpd.smtp import SMTP, Envelope, Session

from config.log_format import configure_logging
from config.settings import Settings

log = logging.getLogger("gelombang.mail_sink")

MAILDIR_ENV: Final = "GELOMBANG_MAILDIR"
# Verification mails are a few KiB; anything near this is not ours.
MAX_MESSAGE_BYTES: Final = 1 << 20


class MaildirHandler:
    """aiosmtpd hooks: accept recipients unless told not to, store each message."""

    def __init__(self, maildir: Path, reject_domains: Iterable[str] = (),
                 defer_domains: Iterable[str] = ()) -> None:
        self.maildir = maildir
        self.reject_domains = {d.lower() for d in reject_domains}
        self.defer_domains = {d.lower() for d in defer_domains}
        self.received = 0

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        # aiosmtpd reads commands one line at a time from its stream, so
        # pipelined commands (RFC 2920) are answered in order: say so, as a
        # real relay (Postfix) does, and senders may pipeline.
        session.host_name = hostname
        return [responses[0], "250-PIPELINING", *responses[1:]]

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        domain = address.rpartition("@")[2].lower()
        if domain in self.reject_domains:
            return "550 5.1.1 Mailbox unavailable (mail sink: rejected domain)"
        if domain in self.defer_domains:
            return "451 4.3.0 Try again later (mail sink: deferred domain)"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        recipients = ", ".join(envelope.rcpt_tos)
        stamped = f"X-Sink-Rcpt-To: {recipients}\r\n".encode() + content
        name = f"{time.time_ns()}-{uuid.uuid4().hex}"
        part = self.maildir / f".{name}.part"
        part.write_bytes(stamped)
        os.replace(part, self.maildir / f"{name}.eml")
        self.received += 1
        return "250 OK: stored"


def maildir_from(settings: Settings, explicit: str | None = None) -> Path:
    """The mail folder: the option, else GELOMBANG_MAILDIR, else email.maildir."""
    return Path(explicit or os.environ.get(MAILDIR_ENV) or settings.email.maildir)


async def start_mail_sink(host: str, port: int, handler: MaildirHandler) -> asyncio.Server:
    """Listen on host:port; the caller closes the returned server."""
    handler.maildir.mkdir(parents=True, exist_ok=True)
    # aiosmtpd logs every command at INFO, recipient addresses included.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: SMTP(handler, data_size_limit=MAX_MESSAGE_BYTES, enable_SMTPUTF8=True,
                     hostname="mail-sink.gelombang.local", loop=loop),
        host=host, port=port)


def register(subparsers: Any) -> None:
    """Add the `mail-sink` subcommand."""
    parser = subparsers.add_parser("mail-sink", help="a local SMTP server writing .eml files")
    parser.add_argument("--host", default=None, help="default: email.smtp_host")
    parser.add_argument("--port", type=int, default=None, help="default: email.smtp_port")
    parser.add_argument("--maildir", default=None,
                        help=f"default: ${MAILDIR_ENV}, else email.maildir")
    parser.add_argument("--reject-domain", action="append", default=[],
                        help="answer 550 to recipients of this domain (repeatable)")
    parser.add_argument("--defer-domain", action="append", default=[],
                        help="answer 451 to recipients of this domain (repeatable)")
    parser.set_defaults(handler=run_mail_sink)


def run_mail_sink(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT."""
    settings = Settings.load()
    configure_logging(settings, "mail-sink")
    handler = MaildirHandler(maildir_from(settings, args.maildir), args.reject_domain,
                             args.defer_domain)
    host = args.host or settings.email.smtp_host
    port = settings.email.smtp_port if args.port is None else args.port
    uvloop.run(_serve(host, port, handler))
    return 0


async def _serve(host: str, port: int, handler: MaildirHandler) -> None:
    server = await start_mail_sink(host, port, handler)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    log.info("mail sink on %s:%d, writing to %s", host, port, handler.maildir)
    await stopping.wait()
    server.close()
    try:
        # Senders keep connections open for reuse; do not wait on them long.
        await asyncio.wait_for(server.wait_closed(), 2.0)
    except TimeoutError:
        pass
    log.info("mail sink stopped after %d messages", handler.received)
