"""The public form at / in headless Chromium, against a real door and drain."""

from __future__ import annotations

import re
import uuid

import asyncpg
from playwright.async_api import Request
from redis.asyncio import Redis

from config.settings import Settings
from intake.pages import FORM_SCRIPTS
from loadtest.registrants import RegistrantFactory
from queueing.keys import JOB_FIELD, Partition, partition_for_registration, partitions
from tests.intake.door_helpers import DoorUnderTest, running_door, with_admission
from tests.support import seal_people, stream_range
from tests.web.browser import chromium_page, fill_form
from tests.workers.drain_helpers import drain_settings, running_drain
from workers.drain.store import store_batch

KEY_SHAPE = re.compile(r"[0-9a-f]{32}")
WIB_TIME = re.compile(r"\b\d{2}\.\d{2}\.\d{2} WIB\b")


async def queued(redis: Redis, settings: Settings) -> int:
    return sum([await redis.xlen(p.stream) for p in partitions(settings.queue.partitions)])


async def test_the_page_is_indonesian_and_locked_down(door_under_test: DoorUnderTest) -> None:
    async with door_under_test.public.get("/") as reply:
        text = await reply.text()
        headers = reply.headers
    assert reply.status == 200
    assert '<html lang="id">' in text and "Daftar" in text
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    # Only same-origin scripts: markup injected into the page could not run.
    assert "script-src 'self';" in headers["Content-Security-Policy"]
    assert '<script type="module" src="/assets/form.js">' in text
    for script in FORM_SCRIPTS:  # form.js and the modules it imports
        async with door_under_test.public.get(f"/assets/{script}") as reply:
            assert reply.status == 200, script
            assert reply.headers["Content-Type"] == "text/javascript; charset=utf-8"
    async with door_under_test.public.get("/assets/..%2Fpages.py") as reply:
        assert reply.status == 404


async def test_invalid_fields_show_indonesian_messages_and_nothing_is_sent(
    door_under_test: DoorUnderTest, redis_client: Redis, test_settings: Settings,
    registrants: RegistrantFactory,
) -> None:
    person = registrants.make().body()
    posts: list[Request] = []
    async with chromium_page() as page:
        page.on("request", lambda r: posts.append(r) if r.method == "POST" else None)
        await page.goto(str(door_under_test.public.make_url("/")))
        await fill_form(page, {**person, "nik": "3201010006990001", "phone": "0712345678"})
        await page.fill("#full_name", "")
        await page.uncheck("#consent")
        await page.click("#submit")
        errors = {name: await page.text_content(f"#{name}-error")
                  for name in ("nik", "full_name", "email", "phone", "birth_date", "consent")}
    assert errors == {
        "nik": "Tanggal lahir pada NIK (angka ke-7 sampai ke-12) tidak valid.",
        "full_name": "Wajib diisi.",
        "email": "",
        "phone": "Nomor HP harus diawali 08, 628 atau +628, dengan 9 sampai 12 angka mulai"
                 " dari angka 8.",
        "birth_date": "",
        "consent": "Anda harus menyetujui pernyataan ini.",
    }
    assert posts == []
    assert await queued(redis_client, test_settings) == 0


async def test_a_limited_submission_counts_down_retries_and_shows_the_stored_status(
    test_settings: Settings, redis_client: Redis, pg: asyncpg.Connection,
    registrants: RegistrantFactory,
) -> None:
    # One partition holding one token, refilled every 5 s: emptied just before the
    # click, the form's first try is 429 (5 s leaves room for a loaded machine).
    one_partition = test_settings.model_copy(update={
        "queue": test_settings.queue.model_copy(update={"partitions": 1})})
    settings = with_admission(drain_settings(one_partition), rate_per_second=0.2, burst=1)
    posts: list[tuple[int, str]] = []
    async with running_door(settings) as door, running_drain(settings):
        async with chromium_page() as page:
            async def answered(response: object) -> None:
                request = response.request  # type: ignore[attr-defined]
                if request.method == "POST":
                    posts.append((response.status,  # type: ignore[attr-defined]
                                  await request.header_value("Idempotency-Key") or ""))

            page.on("response", answered)
            await page.goto(str(door.public.make_url("/")))
            await fill_form(page, registrants.make().body())
            async with door.public.post("/v1/registrations",
                                        json=registrants.make().body()) as first:
                assert first.status == 202  # the bucket is empty now
            await page.click("#submit")
            countdown = await page.wait_for_selector("#countdown")
            assert countdown is not None
            assert int(await countdown.text_content() or "0") >= 1
            assert "Terlalu banyak pendaftar saat ini." in (
                await page.text_content("#notice") or "")
            await page.wait_for_selector('#status-state[data-state="accepted"]')
            registration_id = await page.text_content("#status-id")
            shown_hash = await page.evaluate("location.hash")
    statuses = [status for status, _ in posts]
    assert statuses[0] == 429 and statuses[-1] == 202 and set(statuses) == {429, 202}
    keys = {key for _, key in posts}
    assert len(keys) == 1 and KEY_SHAPE.fullmatch(keys.pop())  # every retry, the same key
    assert shown_hash == f"#pendaftaran={registration_id}"
    stored = await pg.fetch("SELECT registration_id::text AS id, state FROM registrations")
    assert len(stored) == 2
    assert (registration_id, "accepted") in [(row["id"], row["state"]) for row in stored]


async def stored_registration(pg: asyncpg.Connection, settings: Settings,
                              registrants: RegistrantFactory, email: str) -> uuid.UUID:
    [envelope] = seal_people(settings, [registrants.make()])
    await store_batch(pg, 0, 0, [envelope])
    rid = uuid.UUID(bytes=envelope.registration_id)
    await pg.execute("UPDATE registrations SET email_verification = $2"
                     " WHERE registration_id = $1", rid, email)
    return rid


async def email_jobs(redis: Redis, settings: Settings) -> list[bytes]:
    return [fields[JOB_FIELD] for p in partitions(settings.queue.partitions)
            for _, fields in await stream_range(redis, p.verification_priority("email"))]


async def test_the_status_page_sends_the_verification_email_again_and_counts_down(
    door_under_test: DoorUnderTest, redis_client: Redis, pg: asyncpg.Connection,
    test_settings: Settings, registrants: RegistrantFactory,
) -> None:
    rid = await stored_registration(pg, test_settings, registrants, "sent")
    async with chromium_page() as page:
        await page.goto(str(door_under_test.public.make_url(f"/#pendaftaran={rid}")))
        button = await page.wait_for_selector("#resend-button", state="visible")
        assert button is not None
        label = await button.text_content()
        await button.click()
        countdown = await page.wait_for_selector("#resend-countdown")
        assert countdown is not None
        seconds = int(await countdown.text_content() or "0")
        note = await page.text_content("#resend-note") or ""
        wait = await page.text_content("#resend-wait") or ""
        disabled = await button.is_disabled()
        # Pending again, and the page follows it (its polls had gone on: `sent` is open).
        await page.wait_for_function(
            "() => document.getElementById('status-email').textContent === 'Menunggu'")

    assert label == "Kirim ulang email verifikasi"
    # The live note says once until when; the seconds count down outside it.
    assert note.startswith("Email verifikasi akan segera dikirim ulang.")
    assert WIB_TIME.search(note) and "Anda dapat meminta lagi pukul" in note
    assert wait.startswith("Anda dapat meminta lagi dalam") and 55 <= seconds <= 60
    assert disabled
    assert await pg.fetchval("SELECT email_verification::text FROM registrations"
                             " WHERE registration_id = $1", rid) == "pending"
    assert await email_jobs(redis_client, test_settings) == [rid.bytes]


async def test_the_status_page_shows_the_wait_of_a_resend_too_soon(
    door_under_test: DoorUnderTest, redis_client: Redis, pg: asyncpg.Connection,
    test_settings: Settings, registrants: RegistrantFactory,
) -> None:
    verified = await stored_registration(pg, test_settings, registrants, "verified")
    rid = await stored_registration(pg, test_settings, registrants, "sent")
    # Another tab asked for it 18 s ago.
    lane = Partition(partition_for_registration(rid.bytes, test_settings.queue.partitions))
    await redis_client.set(lane.priority_hold("email", rid.bytes), "resend", ex=42)
    async with chromium_page() as page:
        await page.goto(str(door_under_test.public.make_url(f"/#pendaftaran={verified}")))
        await page.wait_for_function(
            "() => document.getElementById('status-email').textContent === 'Terverifikasi'")
        hidden_when_verified = await page.is_hidden("#resend")
        await page.goto(str(door_under_test.public.make_url(f"/#pendaftaran={rid}")))
        await page.reload()
        await page.click("#resend-button")
        countdown = await page.wait_for_selector("#resend-countdown")
        assert countdown is not None
        seconds = int(await countdown.text_content() or "0")
        note = await page.text_content("#resend-note") or ""
        wait = await page.text_content("#resend-wait") or ""
        disabled = await page.is_disabled("#resend-button")

    assert hidden_when_verified
    assert note.startswith("Email verifikasi baru saja diminta. Anda dapat meminta lagi pukul")
    assert wait.startswith("Anda dapat meminta lagi dalam")
    assert 35 <= seconds <= 42  # Retry-After, counted down
    assert disabled
    assert await pg.fetchval("SELECT email_verification::text FROM registrations"
                             " WHERE registration_id = $1", rid) == "sent"
    assert await email_jobs(redis_client, test_settings) == []


async def test_the_status_page_shows_a_queued_registration_until_it_is_stored(
    door_under_test: DoorUnderTest, pg: asyncpg.Connection, test_settings: Settings,
    registrants: RegistrantFactory,
) -> None:
    [envelope] = seal_people(test_settings, [registrants.make()])
    rid = uuid.UUID(bytes=envelope.registration_id)
    never_issued = uuid.UUID(bytes=envelope.registration_id[:12] + b"\0\0\0\0")
    async with chromium_page() as page:
        await page.goto(str(door_under_test.public.make_url(f"/#pendaftaran={never_issued}")))
        await page.wait_for_selector('#status-state[data-state="not_found"]')
        unknown = [await page.text_content(f"#{name}") for name in ("status-state", "status-note")]
        await page.goto(str(door_under_test.public.make_url(f"/#pendaftaran={rid}")))
        await page.reload()
        await page.wait_for_selector('#status-state[data-state="queued"]')
        queued = [await page.text_content(f"#status-{name}")
                  for name in ("state", "email", "nik", "note")]
        resend_hidden = await page.is_hidden("#resend")
        await store_batch(pg, 0, 0, [envelope])
        await page.wait_for_selector('#status-state[data-state="accepted"]')
        note = await page.text_content("#status-note")

    assert unknown == ["Tidak ditemukan", "Nomor pendaftaran ini tidak ditemukan. Periksa"
                                          " kembali tautan di bilah alamat."]
    assert queued[:3] == ["Dalam antrean", "Menunggu", "Menunggu"]
    assert (queued[3] or "").startswith("Pendaftaran Anda sudah kami terima")
    assert resend_hidden
    assert note == ""
