"""GET /v1/verify-email?token=…: the link in the verification email.

People click it in a mail client, so the answer is a short Indonesian page;
a client that prefers JSON (the best match of its Accept header is
application/json) gets the contract's JSON. The token is checked before
PostgreSQL is touched, so a flood of forged links costs one HMAC each; with
`[client_limit]` on, each client address also has a bucket for reads.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping
from typing import Final

from aiohttp import web

from intake.errors import ClientLimited
from intake.metrics import EMAIL_VERIFIED
from intake.registrations import spend_client_token
from intake.responses import error_response, json_response
from intake.state import DOOR
from intake.storage import StorageUnavailable
from queueing.tokens import ExpiredToken, InvalidToken

RETRY_AFTER_UNAVAILABLE: Final = "2"

_PAGE: Final = """\
<!doctype html>
<html lang="id"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title></head>
<body style="font-family: sans-serif; max-width: 36em; margin: 3em auto; line-height: 1.5">
<h1>{title}</h1>
<p>{text}</p>
</body></html>
"""
_PAGES: Final = {
    200: ("Email berhasil diverifikasi",
          "Terima kasih. Alamat email pendaftaran Kartu Prakerja Anda sudah terverifikasi. "
          "Anda dapat menutup halaman ini."),
    400: ("Tautan tidak valid",
          "Tautan verifikasi ini tidak valid. Pastikan Anda membuka tautan lengkap dari "
          "email verifikasi."),
    429: ("Terlalu banyak permintaan",
          "Terlalu banyak permintaan dari jaringan Anda. Silakan buka kembali tautan ini "
          "beberapa saat lagi."),
    410: ("Tautan sudah kedaluwarsa",
          "Tautan verifikasi ini sudah kedaluwarsa. Silakan hubungi layanan Kartu Prakerja "
          "untuk meminta tautan baru."),
    503: ("Layanan sedang sibuk",
          "Verifikasi belum dapat diproses saat ini. Silakan buka kembali tautan ini "
          "beberapa saat lagi."),
}
_CODES: Final = {400: "invalid_token", 410: "token_expired", 429: "client_limited",
                  503: "status_unavailable"}


def prefers_json(accept: str | None) -> bool:
    """Whether Accept's best match, between HTML and JSON, is application/json.

    Each media range's q applies to the types it covers; the most specific
    range covering a type decides its q. A tie (`*/*`, no header) means HTML:
    the link is clicked by people.
    """
    if not accept:
        return False
    quality = {"text/html": (-1, 0.0), "application/json": (-1, 0.0)}
    for part in accept.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.lower()
        for candidate, (specificity, _) in list(quality.items()):
            kind = candidate.split("/")[0]
            level = (2 if media == candidate else 1 if media == f"{kind}/*"
                     else 0 if media == "*/*" else -1)
            if level > specificity:
                quality[candidate] = (level, q)
    return quality["application/json"][1] > quality["text/html"][1]


def _answer(request: web.Request, status: int,
            headers: Mapping[str, str] | None = None) -> web.Response:
    if status == 503:
        headers = {"Retry-After": RETRY_AFTER_UNAVAILABLE}
    if prefers_json(request.headers.get("Accept")):
        if status == 200:
            return json_response(200, {"email_verification": "verified"})
        return error_response(status, _CODES[status], headers=headers)
    title, text = _PAGES[status]
    return web.Response(status=status, text=_PAGE.format(title=html.escape(title),
                                                         text=html.escape(text)),
                        content_type="text/html", charset="utf-8", headers=headers)


async def verify_email(request: web.Request) -> web.Response:
    """Check the token; mark the email verified (once); answer for a person or a program."""
    door = request.app[DOOR]
    if door.read_limiter is not None:
        try:
            spend_client_token(door.read_limiter, request)
        except ClientLimited as exc:
            return _answer(request, 429, exc.headers)
    # Read per request: a SIGHUP may have put new token keys in force.
    signer = door.token_signer
    if signer is None:
        return _answer(request, 503)  # keys.token_keys is not configured on this door
    try:
        registration_id = signer.check(request.query.get("token", ""), time.time())
    except ExpiredToken:
        return _answer(request, 410)
    except InvalidToken:
        return _answer(request, 400)
    try:
        outcome = await door.storage.verify_email(registration_id)
    except StorageUnavailable:
        return _answer(request, 503)
    if outcome == "verified":
        EMAIL_VERIFIED.inc()  # the first opening only: the funnel's email_verified
    if outcome in ("verified", "already_verified"):
        return _answer(request, 200)
    # Signed by us, but no email was sent for it (unknown, or never to be sent).
    return _answer(request, 400)
