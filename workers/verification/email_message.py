"""The verification email: Indonesian text and HTML, one link."""

from __future__ import annotations

import email.policy
import html
import random
import time
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

from workers.verification.smtp import OutgoingMail

SUBJECT = "Verifikasi alamat email pendaftaran Kartu Prakerja"
# Placeholders in the prebuilt message: ASCII, short, and in no real text.
_LINK = "@@LINK@@"
_HTML_LINK = "@@HTML-LINK@@"
_EXPIRY = "@@EXPIRY@@"
_RID = "@@REGISTRATION@@"

_TEXT = """\
Halo,

Terima kasih telah mendaftar Kartu Prakerja. Untuk menyelesaikan
pendaftaran, buka tautan berikut untuk memverifikasi alamat email Anda:

{link}

Tautan ini berlaku sampai {expiry} (UTC). Jika Anda tidak merasa
mendaftar, abaikan email ini.

Nomor pendaftaran: {registration_id}

Salam,
Tim Kartu Prakerja
"""

_HTML = """\
<!doctype html>
<html lang="id"><head><meta charset="utf-8"><title>{subject}</title></head>
<body style="font-family: sans-serif; line-height: 1.5">
<p>Halo,</p>
<p>Terima kasih telah mendaftar Kartu Prakerja. Untuk menyelesaikan
pendaftaran, verifikasi alamat email Anda:</p>
<p><a href="{link}" style="display:inline-block;padding:10px 16px;background:#0b5fff;
color:#fff;text-decoration:none;border-radius:4px">Verifikasi email</a></p>
<p>Atau salin tautan ini ke peramban Anda:<br><code>{link}</code></p>
<p>Tautan ini berlaku sampai {expiry} (UTC). Jika Anda tidak merasa mendaftar,
abaikan email ini.</p>
<p>Nomor pendaftaran: {registration_id}</p>
<p>Salam,<br>Tim Kartu Prakerja</p>
</body></html>
"""


def verification_link(public_base_url: str, token: str) -> str:
    """The link in the email: always the configured base URL, never a request's Host."""
    return f"{public_base_url.rstrip('/')}/v1/verify-email?token={token}"


class VerificationEmails:
    """Makes the verification message for one registration after another.

    The MIME structure, headers and both bodies are built once by the
    `email` package, with placeholders, and flattened to bytes; each message
    then only fills in its link, expiry and ids and prepends its own four
    headers. Building and flattening an EmailMessage per registration cost
    more CPU than everything else the email worker does together
    (docs/benchmarks.md). The address is validated ASCII (`local@domain`),
    so it goes into the To header as it is.
    """

    def __init__(self, sender: str) -> None:
        self.envelope_sender = parseaddr(sender)[1]
        template = EmailMessage(policy=email.policy.SMTP)
        template["Subject"] = SUBJECT
        template["From"] = sender
        template.set_content(_TEXT.format(link=_LINK, expiry=_EXPIRY, registration_id=_RID),
                             cte="7bit")
        template.add_alternative(_HTML.format(link=_HTML_LINK, expiry=_EXPIRY, registration_id=_RID,
                                              subject=html.escape(SUBJECT)),
                                 subtype="html", cte="7bit")
        self._body = template.as_bytes(policy=email.policy.SMTP).decode("ascii")
        # The Date header and the expiry text change once a second (a batch
        # shares them); the random part of a Message-ID needs no secret
        # randomness: the registration id in it makes it unique already.
        self._date_at = -1
        self._date = ""
        self._expiry_at = -1
        self._expiry = ""
        self._random = random.Random()

    def make(self, recipient: str, registration_id: uuid.UUID, link: str,
             expires_at: int) -> OutgoingMail:
        """The message to `recipient` for this registration."""
        if not recipient.isascii() or any(c in recipient for c in "\r\n<>,"):
            raise ValueError("not a validated address")  # never echo it
        if expires_at != self._expiry_at:
            self._expiry_at = expires_at
            self._expiry = datetime.fromtimestamp(expires_at, UTC).strftime("%d-%m-%Y %H:%M")
        expiry = self._expiry
        now = int(time.time())
        if now != self._date_at:
            self._date_at, self._date = now, format_datetime(datetime.fromtimestamp(now, UTC))
        headers = (
            f"To: {recipient}\r\n"
            f"Date: {self._date}\r\n"
            f"Message-ID: <verify.{registration_id}.{self._random.getrandbits(32):08x}"
            "@gelombang.local>\r\n"
            f"X-Gelombang-Registration: {registration_id}\r\n"
        )
        body = (self._body.replace(_LINK, link).replace(_HTML_LINK, html.escape(link))
                .replace(_EXPIRY, expiry).replace(_RID, str(registration_id)))
        return OutgoingMail(self.envelope_sender, recipient,
                            (headers + body).encode("ascii"))
