"""The field rules and Indonesian texts the public form checks in the browser.

Built from the validator's own constants and patterns (intake/validation.py,
intake/nik.py), so the browser and the server cannot drift apart silently:
the form's script holds only the order of the checks, every figure, pattern
and code it uses comes from here (tests/web/test_form_rules.py runs both on
one table of cases).
"""

from __future__ import annotations

import sys
from typing import Any, Final

import orjson

from intake import nik, validation

# One Indonesian text per field and field code; every code of FIELD_CODES has one.
_ANY: Final = {
    validation.REQUIRED: "Wajib diisi.",
    validation.WRONG_TYPE: "Isian tidak valid.",
}
FIELD_MESSAGES: Final[dict[str, dict[str, str]]] = {
    "body": {validation.WRONG_TYPE: "Formulir tidak valid."},
    validation.UNKNOWN: {validation.UNKNOWN_FIELD: "Isian tidak dikenal."},
    "nik": {
        **_ANY,
        nik.INVALID_FORMAT: "NIK harus terdiri dari tepat 16 angka.",
        nik.INVALID_REGION: "Kode wilayah pada NIK (6 angka pertama) tidak dikenal.",
        nik.INVALID_DATE: "Tanggal lahir pada NIK (angka ke-7 sampai ke-12) tidak valid.",
        nik.INVALID_SERIAL: "Nomor urut pada NIK (4 angka terakhir) tidak boleh 0000.",
    },
    "full_name": {
        **_ANY,
        validation.TOO_SHORT: "Nama lengkap wajib diisi.",
        validation.TOO_LONG: "Nama lengkap paling banyak 100 karakter.",
        validation.INVALID_CHARACTERS: "Nama hanya boleh berisi huruf, spasi, titik, apostrof"
                                       " dan tanda hubung, dengan sedikitnya satu huruf.",
    },
    "email": {
        **_ANY,
        validation.INVALID_FORMAT: "Alamat email tidak valid (contoh: nama@contoh.co.id).",
        validation.TOO_LONG: "Alamat email paling banyak 254 karakter.",
    },
    "phone": {
        **_ANY,
        validation.INVALID_FORMAT: "Nomor HP harus diawali 08, 628 atau +628, dengan 9 sampai"
                                   " 12 angka mulai dari angka 8.",
    },
    "birth_date": {
        **_ANY,
        validation.INVALID_DATE: "Tanggal lahir tidak valid.",
        validation.BIRTH_DATE_MISMATCH: "Tanggal lahir tidak sesuai dengan NIK.",
        validation.UNDERAGE: "Pendaftar harus berusia sedikitnya 18 tahun.",
    },
    "consent": {
        **_ANY,
        validation.MUST_BE_TRUE: "Anda harus menyetujui pernyataan ini.",
    },
}

# The texts of the contract's error codes the form can meet on POST and GET.
ERROR_MESSAGES: Final[dict[str, str]] = {
    "admission_limited": "Terlalu banyak pendaftar saat ini.",
    "client_limited": "Terlalu banyak permintaan dari jaringan Anda.",
    "backlog_full": "Antrean pendaftaran sedang penuh.",
    "queue_unavailable": "Layanan pendaftaran sedang terganggu.",
    "outcome_unknown": "Pendaftaran Anda mungkin sudah masuk antrean; kami memeriksanya lagi.",
    "intake_closed": "Pendaftaran sedang ditutup.",
    "status_unavailable": "Status pendaftaran belum dapat dibaca.",
    "not_found": "Nomor pendaftaran ini tidak ditemukan. Periksa kembali tautan di bilah"
                 " alamat.",
    "resend_too_soon": "Email verifikasi baru saja diminta.",
    "nothing_to_resend": "Email verifikasi tidak perlu dikirim ulang.",
    # The waiting room's (docs/waiting-room.md): the form handles each itself; these are
    # the words for an answer it cannot read further (a ticket object missing).
    "queued": "Anda masuk antrean pendaftaran.",
    "invalid_ticket": "Tiket antrean Anda tidak berlaku.",
    "ticket_expired": "Giliran Anda di antrean sudah lewat.",
    "ticket_used": "Tiket antrean ini sudah dipakai untuk mendaftar.",
    "network": "Tidak dapat terhubung ke server.",
    # A 5xx with no code of the contract: a proxy's error page, or the door failing.
    "server_error": "Server sedang tidak dapat melayani.",
    "other": "Terjadi kesalahan. Silakan coba lagi.",
}

# The status page's words for the states and verification outcomes of docs/api.md.
STATE_MESSAGES: Final[dict[str, str]] = {
    "queued": "Dalam antrean",
    "accepted": "Diterima",
    "duplicate": "Ganda (NIK atau email sudah terdaftar)",
    "ineligible": "Tidak memenuhi syarat",
    "pending": "Menunggu",
    "sent": "Email terkirim, silakan buka tautannya",
    "verified": "Terverifikasi",
    "failed": "Gagal",
    "skipped": "Tidak diperiksa",
    "mismatch": "Data tidak cocok",
    "not_found": "Tidak ditemukan",
}


# The status page's note under a state that is still moving.
STATUS_NOTES: Final[dict[str, str]] = {
    "queued": "Pendaftaran Anda sudah kami terima dan sedang menunggu giliran untuk diproses."
              " Halaman ini diperbarui dengan sendirinya.",
}

# The status page's resend of the verification email; `{seconds}` is filled in by the page.
RESEND_MESSAGES: Final[dict[str, str]] = {
    "accepted": "Email verifikasi akan segera dikirim ulang. Periksa kotak masuk dan folder"
                " spam Anda.",
    "wait": "Anda dapat meminta lagi dalam {seconds} detik.",
    "retry": "Silakan coba lagi dalam {seconds} detik.",
    # The live note's words, read once; the seconds above are counted down beside it.
    "wait_at": "Anda dapat meminta lagi pukul {time}.",
    "retry_at": "Silakan coba lagi pukul {time}.",
}

# The form's sending and retrying; `{time}` is a time in WIB, `{seconds}` counts down.
SEND_MESSAGES: Final[dict[str, str]] = {
    "sending": "Mengirim pendaftaran…",
    "retry_at": "Mencoba lagi otomatis pukul {time}.",
    "countdown": "Percobaan berikutnya dalam {seconds} detik.",
    "cancelled": "Pengiriman dihentikan. Tekan Daftar untuk mengirim lagi; pendaftaran Anda"
                 " tidak akan tercatat dua kali.",
    "gave_up": "Pengiriman dihentikan setelah beberapa kali mencoba. Tekan Daftar untuk"
               " mengirim lagi; pendaftaran Anda tidak akan tercatat dua kali.",
    "accepted": "Pendaftaran Anda diterima.",
}

# The waiting room's view (intake/web/form-queue.js). The live region takes only the texts
# of a change of state ("joined" ... "left"), each once; the rest are the view's lines, the
# countdown among them, outside it. `{time}` is a time in WIB, `{count}` a number of people,
# `{low}`/`{high}` minutes, `{seconds}` and `{duration}` count down.
QUEUE_MESSAGES: Final[dict[str, Any]] = {
    "joined": "Anda masuk antrean. Pendaftaran dikirim otomatis saat giliran Anda tiba;"
              " biarkan halaman ini tetap terbuka.",
    "prequeue": "Anda masuk antrean sebelum pembukaan. Urutan antrean diundi saat pendaftaran"
                " dibuka; biarkan halaman ini tetap terbuka.",
    "opened": "Pendaftaran telah dibuka dan nomor antrean Anda sudah ditentukan.",
    # After a reload: the place is kept, the form's data is not (it is never stored).
    "resumed": "Anda masih dalam antrean. Isi kembali formulir lalu tekan Daftar;"
               " pendaftaran dikirim otomatis saat giliran Anda tiba.",
    "turn": "Giliran Anda tiba. Mengirim pendaftaran…",
    "turn_refill": "Giliran Anda tiba. Isi kembali formulir lalu tekan Daftar sebelum pukul"
                   " {time}.",
    "turn_refill_now": "Giliran Anda tiba. Isi kembali formulir lalu tekan Daftar sekarang.",
    "expired": "Giliran Anda sudah lewat. Tekan “Antre lagi” untuk masuk antrean kembali"
               " dari belakang.",
    "left": "Anda keluar dari antrean. Tekan Daftar untuk mengirim lagi; pendaftaran masuk"
            " antrean dari belakang.",
    "refill": "Isi kembali formulir lalu tekan Daftar untuk masuk antrean lagi.",
    "invalid": "Tiket antrean Anda tidak berlaku lagi. Tekan Daftar untuk masuk antrean lagi.",
    "states": {
        "checking": "Memeriksa antrean…",
        "prequeue": "Menunggu pembukaan",
        "waiting": "Menunggu giliran",
        "your_turn": "Giliran Anda",
        "expired": "Giliran sudah lewat",
    },
    "opens_at": "Pendaftaran dibuka {time}.",
    "opens_in": "Dibuka dalam {duration}.",
    "drawing": "Pendaftaran sudah dibuka; nomor antrean sedang diundi.",
    "ahead": "{count} orang di depan Anda",
    "eta_range": "perkiraan {low} \u2013 {high} menit",
    "eta": "perkiraan {low} menit",
    "next_check": "Pemeriksaan berikutnya dalam {seconds} detik.",
    "checking": "Memeriksa antrean…",
    "refill_note": "Data formulir tidak disimpan di peramban. Isi kembali formulir di bawah"
                   " dan tekan Daftar; pendaftaran dikirim otomatis saat giliran Anda tiba.",
    "units": {"hours": "jam", "minutes": "menit", "seconds": "detik"},
}


def _python_whitespace() -> str:
    # What str.strip() removes; JavaScript's trim() differs (U+001C-U+001F, U+0085, U+FEFF).
    return "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())


def form_rules() -> dict[str, Any]:
    """Everything the form's script needs to check a registration as the server does."""
    return {
        "nik": {
            "length": nik.NIK_LENGTH,
            "provinces": sorted(nik.PROVINCE_CODES),
            "woman_day_offset": nik.WOMAN_DAY_OFFSET,
        },
        "full_name": {
            "max_code_points": validation.NAME_MAX_CODE_POINTS,
            "strip": _python_whitespace(),
            "punctuation": " .'-",
        },
        "email": {
            "max_length": validation.EMAIL_MAX_LENGTH,
            "local": validation._DOT_ATOM.pattern,
            "domain": validation._DOMAIN.pattern,
        },
        "phone": {"separators": " -", "pattern": validation._PHONE.pattern},
        "birth_date": {"pattern": validation._ISO_DATE.pattern, "adult_age": validation.ADULT_AGE},
        "fields": list(validation.KNOWN_FIELDS),
        "unknown": validation.UNKNOWN,
        "messages": FIELD_MESSAGES,
        "errors": ERROR_MESSAGES,
        "states": STATE_MESSAGES,
        "notes": STATUS_NOTES,
        "resend": RESEND_MESSAGES,
        "send": SEND_MESSAGES,
        "queue": QUEUE_MESSAGES,
    }


def form_rules_json() -> bytes:
    """The rules as JSON, safe to inline in a <script type="application/json"> block."""
    # Escaping "<" keeps a pattern's text from ever closing the script element.
    return orjson.dumps(form_rules()).replace(b"<", b"\\u003c")
