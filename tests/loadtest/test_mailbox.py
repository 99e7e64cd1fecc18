"""The surge's view of the mail sink's folder (loadtest/mailbox.py)."""

from __future__ import annotations

import time
from pathlib import Path

from loadtest.mailbox import Mailbox


def _mail(folder: Path, written_ns: int, registration_id: str) -> None:
    (folder / f"{written_ns}-{registration_id[:8]}.eml").write_bytes(
        b"X-Gelombang-Registration: " + registration_id.encode() + b"\r\n\r\n"
        b"http://door/v1/verify-email?token=T-" + registration_id.encode() + b"\r\n")


def test_a_link_is_found_and_mail_from_before_the_surge_is_not_read(tmp_path: Path) -> None:
    now = time.time_ns()
    _mail(tmp_path, now - 3_600 * 10**9, "old-registration")  # an earlier run's
    _mail(tmp_path, now, "new-registration")
    mailbox = Mailbox(tmp_path, refresh_seconds=0.0)
    assert mailbox.link_for("new-registration") == "/v1/verify-email?token=T-new-registration"
    assert mailbox.link_for("old-registration") is None
