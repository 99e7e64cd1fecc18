// Sending the filled form: checked as the server checks it, then posted with an
// Idempotency-Key and tried again, with the same key, after every answer that says nothing
// was decided for good (429, 408, any 5xx, a proxy's HTML error page, no answer at all),
// until a 202 or a final 4xx, the registrant's cancel, or MAX_TRIES.
import { ERR, RULES, jakartaToday, retryAfterSeconds, retryDelay, wibTime } from "./form-base.js";
import { validate } from "./form-check.js";
import { showStatus } from "./form-status.js";

const MSG = RULES.messages;
const SEND = RULES.send;
const TEXT_FIELDS = ["nik", "full_name", "email", "phone", "birth_date"];
// About a quarter of an hour of trying at the backoff's cap; then the page stops on its
// own, so a tab left open does not knock on the door all day. Daftar starts again.
const MAX_TRIES = 40;

const form = document.getElementById("registration");
const submit = document.getElementById("submit");
const cancel = document.getElementById("cancel");
// The polite live region: written on a change of state only (sending, why and until when
// the page waits, cancelled, done), never by the countdown, so a screen reader reads each
// state once instead of every second.
const notice = document.getElementById("notice");
const retryBox = document.getElementById("retry");
const retryWait = document.getElementById("retry-wait");

// The filled form last sent and its key, kept until an answer is final: after a cancel, or
// when the page gave up, Daftar on the same form sends the same key, because an earlier
// try may have been queued (a 503 outcome_unknown, an answer lost on the way) and the
// door answers a repeat of a key with its first 202 instead of registering twice.
let pending = null;
let sending = null;  // the sending under way: its body, key and AbortController

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

// Random, from crypto.getRandomValues (randomUUID needs a secure context).
function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// One POST, read into what to do next: {accepted: id}, {fields}, {final: text} or
// {retry: text, after: seconds}.
async function post(body, key, signal) {
  let response;
  try {
    response = await fetch("/v1/registrations", {
      method: "POST", signal, body: JSON.stringify(body),
      headers: { "Content-Type": "application/json", "Idempotency-Key": key },
    });
  } catch (_) {
    return { retry: ERR.network, after: 0 };
  }
  let answer = null;
  try { answer = await response.json(); } catch (_) { answer = null; }
  if (response.status === 202 && answer && answer.registration_id) {
    return { accepted: answer.registration_id };
  }
  const error = (answer && answer.error) || {};
  // 202 without its body (cut off on the way) is asked again too: the key brings the same.
  if ([202, 408, 429].includes(response.status) || response.status >= 500) {
    const known = ERR[error.code];
    return { retry: known || (response.status >= 500 ? ERR.server_error : ERR.other),
      after: retryAfterSeconds(response, 0) };
  }
  if (response.status === 422 && error.fields) return { fields: error.fields };
  return { final: ERR[error.code] || ERR.other };
}

// Waits `seconds`, or less if cancelled, showing the seconds left outside the live region.
function countdown(seconds, signal) {
  return new Promise((resolve) => {
    const end = Date.now() + seconds * 1000;
    const [before, after] = SEND.countdown.split("{seconds}");
    const show = () => {
      const count = document.createElement("strong");
      count.id = "countdown";
      count.textContent = String(Math.max(1, Math.ceil((end - Date.now()) / 1000)));
      retryWait.textContent = "";
      retryWait.append(before, count, after);
    };
    const ticker = setInterval(show, 1000);
    const timer = setTimeout(done, seconds * 1000);
    function done() {
      clearInterval(ticker);
      clearTimeout(timer);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
    show();
  });
}

function stopSending() {
  sending = null;
  retryBox.hidden = true;
  retryWait.textContent = "";
  submit.disabled = false;
}

async function deliver(job) {
  const { signal } = job.abort;
  for (let tries = 1; ; tries += 1) {
    retryWait.textContent = SEND.sending;
    const outcome = await post(job.body, job.key, signal);
    if (signal.aborted) return;  // cancelled: the cancel has said so
    if (outcome.retry !== undefined) {
      if (tries >= MAX_TRIES) {
        stopSending();
        notice.textContent = outcome.retry + " " + SEND.gave_up;
        return;
      }
      const seconds = retryDelay(tries - 1, outcome.after, Math.random());
      const at = wibTime(new Date(Date.now() + seconds * 1000));
      notice.textContent = outcome.retry + " " + SEND.retry_at.replace("{time}", at);
      await countdown(seconds, signal);
      if (signal.aborted) return;
      continue;
    }
    pending = null;  // a final answer: the key has done its work
    stopSending();
    if (outcome.accepted !== undefined) {
      form.reset();
      notice.textContent = SEND.accepted;
      showStatus(outcome.accepted);
    } else if (outcome.fields !== undefined) {
      notice.textContent = "";
      showFieldErrors(outcome.fields);
    } else {
      notice.textContent = outcome.final;
    }
    return;
  }
}

function start(event) {
  event.preventDefault();
  if (sending !== null) return;
  const body = collect();
  const failures = validate(body, jakartaToday());
  showFieldErrors(failures);
  if (Object.keys(failures).length > 0) return;
  const text = JSON.stringify(body);
  if (pending === null || pending.text !== text) pending = { text, key: newKey() };
  sending = { body, key: pending.key, abort: new AbortController() };
  submit.disabled = true;
  retryBox.hidden = false;
  notice.textContent = SEND.sending;
  deliver(sending);
}

function stop() {
  if (sending === null) return;
  // Aborts a POST in flight too; it may still have reached the door, which the kept key
  // makes harmless.
  sending.abort.abort();
  stopSending();
  notice.textContent = SEND.cancelled;
}

// The button is disabled in the page until this runs, so the form is never sent without
// its checks (nor as a GET with the fields in the address).
export function startForm() {
  form.addEventListener("submit", start);
  cancel.addEventListener("click", stop);
  submit.disabled = false;
}
