"""Sending many messages over a few reused SMTP sessions, pipelined where the relay allows.

Why not aiosmtplib's `sendmail`: it waits for each command's reply before
the next (MAIL, RCPT, DATA, the content: four round trips a message), and
its protocol drops replies that arrive while none is awaited, so it cannot
pipeline. Here, when the relay's EHLO offers PIPELINING (RFC 2920), a
message's content and end-of-data travel with the next message's MAIL, RCPT
and DATA in one write: one round trip a message, and one `write` instead of
four. DATA stays the last command of a group, as the RFC requires, so no
content is ever sent before the relay said 354. Without PIPELINING each
command waits for its reply.

A session is TCP (or implicit TLS), EHLO, STARTTLS when configured, AUTH
PLAIN when a user is set; it is opened on first use and reopened after a
failure.

Outcomes per message: `sent`; `refused` (5xx for that message: permanent);
`deferred` (4xx for that message: try it later, counted against it); and
`unsent` (the session broke or the relay is away: not the message's fault,
tried again without counting). A message whose end-of-data was written but
whose reply was lost to a broken connection is `unsent` too, so it may be
delivered twice: at least once, never zero times.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from config.settings import EmailSettings

log = logging.getLogger("gelombang.smtp")

Outcome = Literal["sent", "refused", "deferred", "unsent"]
READ_TIMEOUT_SECONDS: Final = 30.0


@dataclass(frozen=True, slots=True)
class OutgoingMail:
    """A message ready for SMTP: envelope sender and recipient, and its bytes."""

    sender: str
    recipient: str
    data: bytes

    def __repr__(self) -> str:
        return f"OutgoingMail({len(self.data)} bytes, <recipient redacted>)"


@dataclass(frozen=True, slots=True)
class SendResult:
    """What became of one message; `detail` carries a code and a step, never an address."""

    outcome: Outcome
    detail: str = ""


class SmtpError(Exception):
    """The session cannot go on (broken, refused at greeting, EHLO or AUTH)."""


def _transaction(mail: OutgoingMail) -> bytes:
    return f"MAIL FROM:<{mail.sender}>\r\nRCPT TO:<{mail.recipient}>\r\nDATA\r\n".encode()


def _content(mail: OutgoingMail) -> bytes:
    data = mail.data
    # Dot-stuffing (RFC 5321 4.5.2): a line starting with "." gets another.
    if data.startswith(b"."):
        data = b"." + data
    if b"\n." in data:
        data = data.replace(b"\n.", b"\n..")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def _failure(code: int, step: str) -> SendResult:
    return SendResult("refused" if code >= 500 else "deferred", f"{step} {code}")


class SmtpSession:
    """One connection to the relay, sending one batch at a time."""

    def __init__(self, settings: EmailSettings) -> None:
        self._settings = settings
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.pipelining = False

    @property
    def is_open(self) -> bool:
        """Whether the session is connected (and was not broken)."""
        return self._writer is not None and not self._writer.is_closing()

    async def open(self) -> None:
        """Connect, greet, EHLO, STARTTLS and AUTH as configured."""
        async with asyncio.timeout(READ_TIMEOUT_SECONDS):
            await self._open()

    async def _open(self) -> None:
        settings = self._settings
        context = ssl.create_default_context() if settings.smtp_tls != "none" else None
        self._reader, self._writer = await asyncio.open_connection(
            settings.smtp_host, settings.smtp_port,
            ssl=context if settings.smtp_tls == "tls" else None)
        await self._expect(220, "greeting")
        extensions = await self._ehlo()
        if settings.smtp_tls == "starttls":
            self._writer.write(b"STARTTLS\r\n")
            await self._expect(220, "STARTTLS")
            assert context is not None
            await self._writer.start_tls(context, server_hostname=settings.smtp_host)
            extensions = await self._ehlo()
        if settings.smtp_username:
            secret = f"\0{settings.smtp_username}\0{settings.smtp_password}".encode()
            self._writer.write(b"AUTH PLAIN " + base64.b64encode(secret) + b"\r\n")
            await self._expect(235, "AUTH")
        self.pipelining = "PIPELINING" in extensions

    async def send(self, mails: Sequence[OutgoingMail]) -> list[SendResult]:
        """Send the messages in order; every one gets a result (raises nothing)."""
        results: list[SendResult] = []
        try:
            if not self.is_open:
                await self.open()
            # One deadline, moved on per message: a context per reply cost a
            # tenth of the worker's time.
            async with asyncio.timeout(None) as deadline:
                loop = asyncio.get_running_loop()
                if self.pipelining:
                    await self._send_pipelined(mails, results, deadline, loop)
                else:
                    for mail in mails:
                        deadline.reschedule(loop.time() + READ_TIMEOUT_SECONDS)
                        results.append(await self._send_one(mail))
        except (OSError, TimeoutError, SmtpError, asyncio.IncompleteReadError, ValueError) as exc:
            self.close()
            detail = type(exc).__name__
            results.extend(SendResult("unsent", detail) for _ in mails[len(results):])
        return results

    async def _send_pipelined(self, mails: Sequence[OutgoingMail], results: list[SendResult],
                              deadline: asyncio.Timeout,
                              loop: asyncio.AbstractEventLoop) -> None:
        writer = self._writer
        assert writer is not None
        writer.write(_transaction(mails[0]))
        for index, mail in enumerate(mails):
            deadline.reschedule(loop.time() + READ_TIMEOUT_SECONDS)
            # This message's MAIL, RCPT and DATA are written: their replies first.
            refused = await self._transaction_replies()
            following = _transaction(mails[index + 1]) if index + 1 < len(mails) else b""
            if refused is not None:
                results.append(refused)
                # Failed part-way: RSET ends the transaction (RSET may stand
                # anywhere in a group), then the next message's commands.
                writer.write(b"RSET\r\n" + following)
                await self._expect(250, "RSET")
                continue
            # This content and end-of-data, then the next message's commands:
            # one write. The end-of-data reply ends the transaction either way.
            writer.write(_content(mail) + following)
            code, _ = await self._reply()
            results.append(SendResult("sent") if code == 250 else _failure(code, "data"))

    async def _transaction_replies(self) -> SendResult | None:
        """The replies to MAIL, RCPT and DATA; None when DATA may follow."""
        mail_code, _ = await self._reply()
        rcpt_code, _ = await self._reply()
        data_code, _ = await self._reply()
        if mail_code != 250:
            return _failure(mail_code, "mail")
        if rcpt_code not in (250, 251):
            return _failure(rcpt_code, "recipient refused")
        if data_code != 354:
            return _failure(data_code, "data")
        return None

    async def _send_one(self, mail: OutgoingMail) -> SendResult:
        writer = self._writer
        assert writer is not None
        steps = ((f"MAIL FROM:<{mail.sender}>\r\n".encode(), (250,), "mail"),
                 (f"RCPT TO:<{mail.recipient}>\r\n".encode(), (250, 251), "recipient refused"),
                 (b"DATA\r\n", (354,), "data"))
        for command, wanted, step in steps:
            writer.write(command)
            code, _ = await self._reply()
            if code not in wanted:
                writer.write(b"RSET\r\n")
                await self._expect(250, "RSET")
                return _failure(code, step)
        writer.write(_content(mail))
        code, _ = await self._reply()
        return SendResult("sent") if code == 250 else _failure(code, "data")

    async def _ehlo(self) -> set[str]:
        assert self._writer is not None
        self._writer.write(b"EHLO gelombang.local\r\n")
        code, lines = await self._reply()
        if code != 250:
            raise SmtpError(f"EHLO {code}")
        return {line.split(" ", 1)[0].upper() for line in lines[1:]}

    async def _expect(self, wanted: int, step: str) -> None:
        code, _ = await self._reply()
        if code != wanted:
            raise SmtpError(f"{step} {code}")

    async def _reply(self) -> tuple[int, list[str]]:
        """One (possibly multi-line) reply: its code and its lines' texts (the caller
        bounds the wait)."""
        assert self._reader is not None
        lines: list[str] = []
        while True:
            line = await self._reader.readuntil(b"\n")
            if len(line) < 4:
                raise SmtpError("short reply")
            lines.append(line[4:].decode("ascii", "replace").strip())
            if line[3:4] != b"-":
                return int(line[:3]), lines

    def close(self) -> None:
        """Drop the connection (reopened on next use)."""
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def quit(self) -> None:
        """Say QUIT and close."""
        if self.is_open:
            assert self._writer is not None
            try:
                self._writer.write(b"QUIT\r\n")
                async with asyncio.timeout(2.0):
                    await self._reply()
            except (OSError, TimeoutError, SmtpError, asyncio.IncompleteReadError):
                pass
        self.close()


class SmtpPool:
    """`email.connections` sessions; a batch is split over them and sent at once."""

    def __init__(self, settings: EmailSettings) -> None:
        self._sessions = [SmtpSession(settings) for _ in range(settings.connections)]
        self._free: asyncio.Queue[SmtpSession] = asyncio.Queue()
        for session in self._sessions:
            self._free.put_nowait(session)

    async def send(self, mails: Sequence[OutgoingMail]) -> list[SendResult]:
        """A result for every message, in order."""
        if not mails:
            return []
        share = -(-len(mails) // len(self._sessions))
        parts = [mails[start:start + share] for start in range(0, len(mails), share)]
        sent = await asyncio.gather(*(self._send_on_free(part) for part in parts))
        return [result for part in sent for result in part]

    async def _send_on_free(self, mails: Sequence[OutgoingMail]) -> list[SendResult]:
        session = await self._free.get()
        try:
            return await session.send(mails)
        finally:
            self._free.put_nowait(session)

    async def close(self) -> None:
        """Say QUIT on every open session."""
        await asyncio.gather(*(session.quit() for session in self._sessions))
