"""Reused SMTP connections to the relay, and what a failure means.

Opening an SMTP session (TCP, greeting, EHLO, STARTTLS, AUTH) costs several
round trips; a worker keeps `email.connections` sessions open and sends
message after message on them. A broken session is closed and reopened on
its next use.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiosmtplib

from config.settings import EmailSettings
from workers.email_message import OutgoingMail


@dataclass(frozen=True, slots=True)
class SmtpFailure(Exception):
    """A send that did not go through; `summary` carries a code and a class, no address."""

    permanent: bool
    summary: str

    def __str__(self) -> str:
        return self.summary


def classify(exc: BaseException) -> SmtpFailure:
    """5xx replies are permanent; 4xx replies and broken connections are temporary."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [refused.code for refused in exc.recipients]
        permanent = bool(codes) and all(500 <= code < 600 for code in codes)
        return SmtpFailure(permanent, f"recipient refused {codes}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return SmtpFailure(500 <= exc.code < 600, f"{type(exc).__name__} {exc.code}")
    return SmtpFailure(False, type(exc).__name__)


class SmtpPool:
    """`email.connections` sessions to the relay, each used by one send at a time."""

    def __init__(self, settings: EmailSettings) -> None:
        self._all = [
            aiosmtplib.SMTP(
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                use_tls=settings.smtp_tls == "tls",
                start_tls=True if settings.smtp_tls == "starttls" else False,
                username=settings.smtp_username or None,
                password=settings.smtp_password or None,
                timeout=30.0,
            )
            for _ in range(settings.connections)
        ]
        self._free: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
        for client in self._all:
            self._free.put_nowait(client)

    async def send(self, mail: OutgoingMail) -> None:
        """Send on a free session (opened if needed); raises SmtpFailure."""
        client = await self._free.get()
        try:
            if not client.is_connected:
                await client.connect()
            await client.sendmail(mail.sender, [mail.recipient], mail.data)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            # Reopened on next use: after a failure the session's state is unknown.
            client.close()
            raise classify(exc) from None
        finally:
            self._free.put_nowait(client)

    async def close(self) -> None:
        """Say QUIT on every open session."""
        for client in self._all:
            if client.is_connected:
                try:
                    await asyncio.wait_for(client.quit(), 2.0)
                except (aiosmtplib.SMTPException, OSError, TimeoutError):
                    client.close()
