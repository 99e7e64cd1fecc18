// The status view of one registration (followed by polling `GET /v1/registrations/{id}`,
// its id kept in the address so a reload shows it again), where the verification email
// can be sent again.
import { ERR, RULES, retryAfterSeconds, wibDateTime, wibTime } from "./form-base.js";

export const STATUS_HASH = /^#pendaftaran=([0-9a-f-]{36})$/;
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
    ? wibDateTime(new Date(updated)) : "–";
  showResend(state, email);
}

async function poll(id, round, generation) {
  if (generation !== polling) return;
  const note = document.getElementById("status-note");
  const again = (ms) => {
    // Give or take a fifth: tabs opened by one wave of registrants would otherwise poll in
    // step, every 2 s on the same tick.
    const wait = ms * (0.8 + 0.4 * Math.random());
    if (round < POLLS) setTimeout(() => poll(id, round + 1, generation), wait);
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
  again(Math.max(5000, retryAfterSeconds(response, 0) * 1000));
}

function startPolling(id) {
  polling += 1;
  poll(id, 0, polling);
}

export function showStatus(id) {
  history.replaceState(null, "", "#pendaftaran=" + id);
  document.getElementById("registration").hidden = true;
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
const resendWait = document.getElementById("resend-wait");
let resendTimer = null;

function showResend(state, email) {
  resendBox.hidden = !(state === "accepted" && RESENDABLE.includes(email));
}

// The live note says once "<lead> Anda dapat meminta lagi pukul <time> WIB."; the seconds
// are counted down beside it, outside the live region, so a screen reader is not made to
// read the note again every second. Then the button is back and the note says `done`.
function waitThenEnable(lead, kind, seconds, done) {
  clearTimeout(resendTimer);
  resendButton.disabled = true;
  const at = wibTime(new Date(Date.now() + seconds * 1000));
  resendNote.textContent = lead + " " + RESEND[kind + "_at"].replace("{time}", at);
  const [before, after] = RESEND[kind].split("{seconds}");
  let left = seconds;
  const tick = () => {
    if (left <= 0) {
      resendNote.textContent = done;
      resendWait.textContent = "";
      resendButton.disabled = false;
      resendTimer = null;
      return;
    }
    const count = document.createElement("strong");
    count.id = "resend-countdown";
    count.textContent = String(left);
    resendWait.textContent = "";
    resendWait.append(before, count, after);
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
  const after = Math.max(1, Math.ceil(retryAfterSeconds(response, 5)));
  if (response.status === 202) {
    waitThenEnable(RESEND.accepted, "wait", Math.max(1, body.resend_after_seconds || 60),
      RESEND.accepted);
    startPolling(id);  // pending again: follow it until it is sent
  } else if (response.status === 429) {
    waitThenEnable(ERR[code] || ERR.other, "wait", after, "");
  } else if (response.status === 503) {
    waitThenEnable(ERR[code] || ERR.other, "retry", after, "");
  } else if (response.status === 409) {
    resendNote.textContent = ERR.nothing_to_resend;
    startPolling(id);  // the status has moved on (verified): show it
  } else {
    resendNote.textContent = ERR[code] || ERR.other;
    resendButton.disabled = false;
  }
}

resendButton.addEventListener("click", resend);
