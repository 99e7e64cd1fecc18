"""The verification email: Indonesian text and HTML, one link."""

from __future__ import annotations

import html
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

SUBJECT = "Verifikasi alamat email pendaftaran Kartu Prakerja"

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


def verification_email(sender: str, recipient: str, registration_id: uuid.UUID, link: str,
                       expires_at: int) -> EmailMessage:
    """The message for one registration; its Message-ID names the registration, so a
    resend after a crash is recognisable as the same message."""
    expiry = datetime.fromtimestamp(expires_at, UTC).strftime("%d-%m-%Y %H:%M")
    message = EmailMessage()
    message["Subject"] = SUBJECT
    message["From"] = sender
    message["To"] = recipient
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(idstring=f"verify.{registration_id}",
                                       domain="gelombang.local")
    message["X-Gelombang-Registration"] = str(registration_id)
    message.set_content(_TEXT.format(link=link, expiry=expiry,
                                     registration_id=registration_id))
    message.add_alternative(_HTML.format(link=html.escape(link), expiry=expiry,
                                         registration_id=registration_id,
                                         subject=html.escape(SUBJECT)), subtype="html")
    return message
