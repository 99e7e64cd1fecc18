// The public registration form: checks every field as the server does, posts with an
// Idempotency-Key, waits out 429/503 by their Retry-After, then follows the status, where
// the verification email can be sent again.
// Every figure, pattern and text comes from the server (the #form-rules block, built by
// intake/form_rules.py); this script holds only the order of the checks.
"use strict";
(() => {
  const RULES = JSON.parse(document.getElementById("form-rules").textContent);
  const MSG = RULES.messages;
  const ERR = RULES.errors;

  const whole = (pattern, flags) => new RegExp("^(?:" + pattern + ")$", flags || "");
  const EMAIL_LOCAL = whole(RULES.email.local);
  const EMAIL_DOMAIN = whole(RULES.email.domain);
  const PHONE = whole(RULES.phone.pattern);
  const ISO_DATE = whole(RULES.birth_date.pattern);
  const PROVINCES = new Set(RULES.nik.provinces);
  const STRIP = new Set(Array.from(RULES.full_name.strip));
  const PUNCT = RULES.full_name.punctuation.replace(/[-\\\]^]/g, "\\$&");
  const NAME_CHARS = new RegExp("^[\\p{L}\\p{M}" + PUNCT + "]+$", "u");
  const LETTER = /\p{L}/u;
  const ASCII = /^[\x00-\x7f]*$/;
  const DIGITS = /^[0-9]+$/;
  const KNOWN = new Set(RULES.fields);

  // Dates as {y, m, d}; null when no such day exists (as Python's date() raising).
  const leap = (y) => (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;
  function realDate(y, m, d) {
    if (y < 1 || y > 9999 || m < 1 || m > 12 || d < 1) return null;
    const days = [31, leap(y) ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m - 1];
    return d <= days ? { y, m, d } : null;
  }
  const pad = (n, w) => String(n).padStart(w, "0");
  const iso = (t) => pad(t.y, 4) + "-" + pad(t.m, 2) + "-" + pad(t.d, 2);
  const parseIso = (s) => ({ y: +s.slice(0, 4), m: +s.slice(5, 7), d: +s.slice(8, 10) });

  // The age rule counts in Asia/Jakarta, whatever the browser's own zone.
  function jakartaToday() {
    const text = new Intl.DateTimeFormat("en-CA", {
      timeZone: "Asia/Jakarta", year: "numeric", month: "2-digit", day: "2-digit",
    }).format(new Date());
    return text;
  }

  function nikDate(nik, today) {
    if (nik.length !== RULES.nik.length || !DIGITS.test(nik)) return "invalid_format";
    if (!PROVINCES.has(nik.slice(0, 2)) || nik.slice(2, 4) === "00" || nik.slice(4, 6) === "00") {
      return "invalid_region";
    }
    let day = +nik.slice(6, 8);
    if (day > RULES.nik.woman_day_offset) day -= RULES.nik.woman_day_offset;
    // The NIK carries no century: the latest year not after this one.
    const yy = +nik.slice(10, 12);
    const century = today.y - (today.y % 100);
    const year = yy <= today.y % 100 ? century + yy : century - 100 + yy;
    const born = realDate(year, +nik.slice(8, 10), day);
    if (born === null) return "invalid_date";
    if (nik.slice(12) === "0000") return "invalid_serial";
    return born;
  }

  function pythonStrip(text) {
    const chars = Array.from(text);
    let start = 0;
    let end = chars.length;
    while (start < end && STRIP.has(chars[start])) start++;
    while (end > start && STRIP.has(chars[end - 1])) end--;
    return chars.slice(start, end).join("");
  }

  function nameCode(raw) {
    const name = pythonStrip(raw.normalize("NFC")).replace(/ {2,}/g, " ");
    if (name === "") return "too_short";
    if (Array.from(name).length > RULES.full_name.max_code_points) return "too_long";
    return NAME_CHARS.test(name) && LETTER.test(name) ? null : "invalid_characters";
  }

  function emailCode(raw) {
    if (Array.from(raw).length > RULES.email.max_length) return "too_long";
    const at = raw.lastIndexOf("@");
    const ok = at >= 0 && ASCII.test(raw) && EMAIL_LOCAL.test(raw.slice(0, at))
      && EMAIL_DOMAIN.test(raw.slice(at + 1));
    return ok ? null : "invalid_format";
  }

  function phoneCode(raw) {
    let digits = raw;
    for (const sep of RULES.phone.separators) digits = digits.split(sep).join("");
    return ASCII.test(digits) && PHONE.test(digits) ? null : "invalid_format";
  }

  function adulthood(born) {
    const year = born.y + RULES.birth_date.adult_age;
    return realDate(year, born.m, born.d) || { y: year, m: 3, d: 1 };
  }

  function birthCode(raw, nikBorn, today) {
    if (!ISO_DATE.test(raw)) return "invalid_date";
    const parts = parseIso(raw);
    const born = realDate(parts.y, parts.m, parts.d);
    if (born === null) return "invalid_date";
    if (nikBorn !== null && (born.d !== nikBorn.d || born.m !== nikBorn.m
        || born.y % 100 !== nikBorn.y % 100)) {
      return "birth_date_mismatch";
    }
    return iso(today) < iso(adulthood(born)) ? "underage" : null;
  }

  // One field code per failing field, as intake/validation.py's validate_registration.
  function validate(body, todayText) {
    if (body === null || typeof body !== "object" || Array.isArray(body)) {
      return { body: "wrong_type" };
    }
    const today = parseIso(todayText);
    const failures = {};
    // One key for every unknown name: the server never quotes a client's key back.
    if (Object.keys(body).some((name) => !KNOWN.has(name))) {
      failures[RULES.unknown] = "unknown_field";
    }
    const text = (name) => {
      if (!(name in body)) { failures[name] = "required"; return null; }
      if (typeof body[name] !== "string") { failures[name] = "wrong_type"; return null; }
      return body[name];
    };
    let nikBorn = null;
    const nik = text("nik");
    if (nik !== null) {
      const parsed = nikDate(nik, today);
      if (typeof parsed === "string") failures.nik = parsed; else nikBorn = parsed;
    }
    for (const [name, check] of [["full_name", nameCode], ["email", emailCode],
      ["phone", phoneCode]]) {
      const value = text(name);
      const code = value === null ? null : check(value);
      if (code) failures[name] = code;
    }
    const birth = text("birth_date");
    if (birth !== null) {
      const code = birthCode(birth, nikBorn, today);
      if (code) failures.birth_date = code;
    }
    if (!("consent" in body)) failures.consent = "required";
    else if (typeof body.consent !== "boolean") failures.consent = "wrong_type";
    else if (!body.consent) failures.consent = "must_be_true";
    return failures;
  }

  // For the browser tests, which check this validator against the server's.
  window.gelombangForm = { validate, jakartaToday };

  // ---- the page ----
  const form = document.getElementById("registration");
  const submit = document.getElementById("submit");
  const notice = document.getElementById("notice");
  const TEXT_FIELDS = ["nik", "full_name", "email", "phone", "birth_date"];

  function collect() {
    const body = {};
    // An empty field is left out, so it reads "required" as the server would say it.
    for (const name of TEXT_FIELDS) {
      const value = document.getElementById(name).value;
      if (value !== "") body[name] = value;
    }
    body.consent = document.getElementById("consent").checked;
    return body;
  }

  function showFieldErrors(failures) {
    for (const name of [...TEXT_FIELDS, "consent"]) {
      const code = failures[name];
      const input = document.getElementById(name);
      const text = code ? (MSG[name][code] || MSG[name].wrong_type) : "";
      document.getElementById(name + "-error").textContent = text;
      input.setAttribute("aria-invalid", code ? "true" : "false");
    }
    const first = [...TEXT_FIELDS, "consent"].find((name) => failures[name]);
    if (first) document.getElementById(first).focus();
  }

  function say(text) {
    notice.hidden = !text;
    notice.textContent = text || "";
  }

  // Random, from crypto.getRandomValues (randomUUID needs a secure context).
  function newKey() {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function countdown(seconds, reason, again) {
    let left = seconds;
    const tick = () => {
      if (left <= 0) { say("Mencoba lagi…"); again(); return; }
      notice.textContent = "";
      notice.append(reason + " Mencoba lagi otomatis dalam ");
      const count = document.createElement("strong");
      count.id = "countdown";
      count.textContent = String(left);
      notice.append(count, " detik…");
      notice.hidden = false;
      left -= 1;
      setTimeout(tick, 1000);
    };
    tick();
  }

  async function send(body, key) {
    let response;
    try {
      response = await fetch("/v1/registrations", {
        method: "POST",
        headers: { "Content-Type": "application/json", "Idempotency-Key": key },
        body: JSON.stringify(body),
      });
    } catch (_) {
      countdown(5, ERR.network, () => send(body, key));
      return;
    }
    let error = {};
    if (response.status === 202) {
      const accepted = await response.json();
      form.reset();
      form.hidden = true;
      say("");
      showStatus(accepted.registration_id);
      return;
    }
    try { error = (await response.json()).error || {}; } catch (_) { error = {}; }
    if (response.status === 429 || response.status === 503) {
      // The same key on every retry: if an earlier try did get through, it answers the same.
      const after = Math.max(1, parseInt(response.headers.get("Retry-After"), 10) || 5);
      countdown(after, ERR[error.code] || ERR.other, () => send(body, key));
      return;
    }
    submit.disabled = false;
    if (response.status === 422 && error.fields) {
      say("");
      showFieldErrors(error.fields);
      return;
    }
    say(ERR.other);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const body = collect();
    const failures = validate(body, jakartaToday());
    showFieldErrors(failures);
    if (Object.keys(failures).length > 0) return;
    submit.disabled = true;
    send(body, newKey());
  });

  // ---- the status page ----
  const STATUS_HASH = /^#pendaftaran=([0-9a-f-]{36})$/;
  const words = (code) => RULES.states[code] || code;
  const POLLS = 200;
  let polling = 0;  // the current round of polls; an older one stops at its next turn
  let currentId = null;  // the registration the page shows

  function renderStatus(state, email, nik, updated) {
    const cell = document.getElementById("status-state");
    cell.textContent = words(state);
    cell.dataset.state = state;
    document.getElementById("status-email").textContent = email ? words(email) : "–";
    document.getElementById("status-nik").textContent = nik ? words(nik) : "–";
    document.getElementById("status-updated").textContent = updated
      ? new Date(updated).toLocaleString("id-ID", { timeZone: "Asia/Jakarta" }) + " WIB" : "–";
    showResend(state, email);
  }

  async function poll(id, round, generation) {
    if (generation !== polling) return;
    const note = document.getElementById("status-note");
    const again = (ms) => {
      if (round < POLLS) setTimeout(() => poll(id, round + 1, generation), ms);
      else note.textContent = "Muat ulang halaman untuk memperbarui status.";
    };
    let response;
    try {
      response = await fetch("/v1/registrations/" + encodeURIComponent(id),
        { headers: { Accept: "application/json" } });
    } catch (_) {
      note.textContent = ERR.network;
      again(5000);
      return;
    }
    if (generation !== polling) return;
    if (response.status === 200) {
      const s = await response.json();
      renderStatus(s.state, s.email_verification, s.nik_verification, s.updated_at);
      // Queued (admitted, not stored yet) is stored within seconds: asked again sooner.
      const queued = s.state === "queued", open = ["pending", "sent"];
      note.textContent = queued ? RULES.notes.queued : "";
      if (queued) again(2000);
      else if (open.includes(s.email_verification) || open.includes(s.nik_verification)) again(5000);
      return;
    }
    if (response.status === 404) {
      // An id the door never issued (a mistyped address); asked again in case it was
      // issued before the door's ids carried their check and is not stored yet.
      renderStatus("not_found", null, null, null);
      note.textContent = ERR.not_found;
      again(5000);
      return;
    }
    // 503 status_unavailable, or 429 client_limited (the reads' per-client bucket):
    // say which, and ask again no sooner than Retry-After.
    note.textContent = response.status === 429 ? ERR.client_limited : ERR.status_unavailable;
    again(Math.max(5000, (parseInt(response.headers.get("Retry-After"), 10) || 0) * 1000));
  }

  function startPolling(id) {
    polling += 1;
    poll(id, 0, polling);
  }

  function showStatus(id) {
    history.replaceState(null, "", "#pendaftaran=" + id);
    form.hidden = true;
    document.getElementById("status").hidden = false;
    document.getElementById("status-id").textContent = id;
    currentId = id;
    startPolling(id);
  }

  // ---- sending the verification email again ----
  const RESEND = RULES.resend;
  const RESENDABLE = ["pending", "sent", "failed"];
  const resendBox = document.getElementById("resend");
  const resendButton = document.getElementById("resend-button");
  const resendNote = document.getElementById("resend-note");
  let resendTimer = null;

  function showResend(state, email) {
    resendBox.hidden = !(state === "accepted" && RESENDABLE.includes(email));
  }

  // "<lead> Anda dapat meminta lagi dalam <N> detik.", counted down; then the button is back
  // and the note says `done`.
  function waitThenEnable(lead, template, seconds, done) {
    clearTimeout(resendTimer);
    resendButton.disabled = true;
    const [before, after] = template.split("{seconds}");
    let left = seconds;
    const tick = () => {
      if (left <= 0) {
        resendNote.textContent = done;
        resendButton.disabled = false;
        resendTimer = null;
        return;
      }
      const count = document.createElement("strong");
      count.id = "resend-countdown";
      count.textContent = String(left);
      resendNote.textContent = "";
      resendNote.append(lead + " " + before, count, after);
      left -= 1;
      resendTimer = setTimeout(tick, 1000);
    };
    tick();
  }

  async function resend() {
    const id = currentId;
    resendButton.disabled = true;
    resendNote.textContent = "";
    let response;
    try {
      response = await fetch("/v1/registrations/" + encodeURIComponent(id) + "/verification-email",
        { method: "POST", headers: { Accept: "application/json" } });
    } catch (_) {
      resendNote.textContent = ERR.network;
      resendButton.disabled = false;
      return;
    }
    let body = {};
    try { body = await response.json(); } catch (_) { body = {}; }
    const code = (body.error || {}).code;
    const after = Math.max(1, parseInt(response.headers.get("Retry-After"), 10) || 5);
    if (response.status === 202) {
      waitThenEnable(RESEND.accepted, RESEND.wait, Math.max(1, body.resend_after_seconds || 60),
        RESEND.accepted);
      startPolling(id);  // pending again: follow it until it is sent
    } else if (response.status === 429) {
      waitThenEnable(ERR[code] || ERR.other, RESEND.wait, after, "");
    } else if (response.status === 503) {
      waitThenEnable(ERR[code] || ERR.other, RESEND.retry, after, "");
    } else if (response.status === 409) {
      resendNote.textContent = ERR.nothing_to_resend;
      startPolling(id);  // the status has moved on (verified): show it
    } else {
      resendNote.textContent = ERR[code] || ERR.other;
      resendButton.disabled = false;
    }
  }

  resendButton.addEventListener("click", resend);

  const found = STATUS_HASH.exec(location.hash);
  if (found) showStatus(found[1]);
})();
