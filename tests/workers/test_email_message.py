"""The verification message: a valid MIME message with the link in both parts."""

from __future__ import annotations

import email
import email.policy
import uuid
from typing import Any

import pytest

from workers.verification.email_message import VerificationEmails, verification_link

SENDER = "Kartu Prakerja <no-reply@prakerja.example>"


def test_the_message_parses_cleanly_with_its_link_ids_and_expiry() -> None:
    rid = uuid.uuid4()
    link = verification_link("https://daftar.example/", "tok-EN_123")
    mail = VerificationEmails(SENDER).make("siti.a@example.org", rid, link, 1_800_000_000)
    assert (mail.sender, mail.recipient) == ("no-reply@prakerja.example", "siti.a@example.org")
    assert b"\r\n" in mail.data and b"\n" not in mail.data.replace(b"\r\n", b"")
    parsed: Any = email.message_from_bytes(mail.data, policy=email.policy.default)
    assert not parsed.defects
    assert parsed["To"] == "siti.a@example.org"
    assert parsed["From"] == SENDER
    assert parsed["X-Gelombang-Registration"] == str(rid)
    assert str(rid) in parsed["Message-ID"]
    text = parsed.get_body(preferencelist=("plain",)).get_content()
    page = parsed.get_body(preferencelist=("html",)).get_content()
    assert "https://daftar.example/v1/verify-email?token=tok-EN_123" in text
    assert 'href="https://daftar.example/v1/verify-email?token=tok-EN_123"' in page
    assert "15-01-2027 08:00" in text and "@@" not in text + page


def test_each_message_has_its_own_message_id() -> None:
    emails = VerificationEmails(SENDER)
    rid = uuid.uuid4()
    first, second = (email.message_from_bytes(emails.make("a@b.example", rid, "x", 0).data)
                     for _ in range(2))
    assert first["Message-ID"] != second["Message-ID"]


def test_links_are_escaped_in_html() -> None:
    mail = VerificationEmails(SENDER).make("a@b.example", uuid.uuid4(), 'http://x/?a=1&b="2"', 0)
    assert b'href="http://x/?a=1&amp;b=&quot;2&quot;"' in mail.data


@pytest.mark.parametrize("address", ["a@b.example\r\nBcc: x@y.example", "ä@b.example",
                                     "a@b.example, c@d.example"])
def test_an_address_that_could_inject_headers_is_refused(address: str) -> None:
    with pytest.raises(ValueError):
        VerificationEmails(SENDER).make(address, uuid.uuid4(), "x", 0)
