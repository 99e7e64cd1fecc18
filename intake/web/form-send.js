// Sending the filled form: checked as the server checks it, then posted with an
// Idempotency-Key and tried again, with the same key, after every answer that says nothing
// was decided for good (429, 408, any 5xx, a proxy's HTML error page, no answer at all),
// until a 202 or a final 4xx, the registrant's cancel, or MAX_TRIES. An answer that carries
// a waiting-room ticket hands the page to form-queue.js, which waits for the turn; then the
// same body goes again with the same key and `Authorization: Queue <ticket>`.
import { ERR, RULES, jakartaToday, retryAfterSeconds, retryDelay, wibTime } from "./form-base.js";
import { validate } from "./form-check.js";
import {
  dropPlace, heldTicket, holdsPlace, keepPlace, stopLine, turnDeadline, waitInLine,
} from "./form-queue.js";
import { showStatus } from "./form-status.js";

const MSG = RULES.messages;
const SEND = RULES.send;
const QUEUE = RULES.queue;
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

// The ticket object an answer carries, if any.
function ticketOf(answer) {
  const queue = answer && answer.queue;
  return queue && typeof queue === "object" && typeof queue.ticket === "string" ? queue : null;
}

// One POST, with the place's ticket when one is held, read into what to do next:
// {accepted: id}, {fields}, {final: text}, {retry: text, after: seconds}, {queued: ticket
// object}, {expired} or {invalidTicket}.
async function post(body, key, signal, ticket) {
  const headers = { "Content-Type": "application/json", "Idempotency-Key": key };
  if (ticket !== null) headers.Authorization = "Queue " + ticket;
  let response;
  try {
    response = await fetch("/v1/registrations", {
      method: "POST", signal, body: JSON.stringify(body), headers,
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
  const queue = ticketOf(answer);
  keepPlace(queue);  // any answer may hand a newer token: the newest is the one kept
  if (ticket !== null) {
    // The ticket admits one registration: used already (an earlier try got through and
    // its answer was lost), that one is this registration.
    if (response.status === 409 && error.code === "ticket_used" && queue
        && queue.registration_id) {
      return { accepted: queue.registration_id };
    }
    if (response.status === 410) return { expired: queue };
    if (response.status === 403 && error.code === "invalid_ticket") return { invalidTicket: true };
  }
  if (queue && (response.status === 429 || response.status === 503)) {
    // Its turn, and refused all the same (the backlog is full): tried again as any 503 is,
    // with the ticket; waiting for a turn that has come would only lose it.
    if (queue.state !== "your_turn") return { queued: queue };
  }
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

function accepted(id) {
  pending = null;  // a final answer: the key has done its work
  dropPlace();  // and so has the ticket
  stopSending();
  form.reset();
  notice.textContent = SEND.accepted;
  showStatus(id);
}

// An answer that put the registration in the line: wait there, then say what comes next
// ({again: true}, to send again now, or {done: true}).
async function inLine(job, outcome) {
  const q = outcome.queued !== undefined ? outcome.queued
    : { ...outcome.expired, state: "expired" };
  const next = outcome.invalidTicket !== undefined ? { invalid: true } : await waitInLine(q, true);
  if (job.abort.signal.aborted || next.stopped) return { done: true };
  if (next.registered !== undefined) {
    accepted(next.registered);
    return { done: true };
  }
  if (next.left !== undefined) {
    stopSending();
    notice.textContent = QUEUE.left;
    return { done: true };
  }
  if (next.invalid !== undefined) {
    // Not signed by a key the door knows (rotated out), or another NIK's: dropped, and the
    // registration sent once without it (it joins the line again if the door is busy).
    dropPlace();
    if (job.resentWithout) {
      stopSending();
      notice.textContent = QUEUE.invalid;
      return { done: true };
    }
    job.resentWithout = true;
    notice.textContent = SEND.sending;
    return { again: true };
  }
  // {turn}: the ticket kept is sent; {rejoin}: it was dropped, and the registration joins
  // the line again at the back.
  notice.textContent = next.turn !== undefined ? QUEUE.turn : SEND.sending;
  return { again: true };
}

async function deliver(job) {
  const { signal } = job.abort;
  for (let tries = 1; ; tries += 1) {
    retryWait.textContent = SEND.sending;
    const outcome = await post(job.body, job.key, signal, heldTicket());
    if (signal.aborted) return;  // cancelled: the cancel has said so
    if (outcome.queued !== undefined || outcome.expired !== undefined
        || outcome.invalidTicket !== undefined) {
      const next = await inLine(job, outcome);
      if (next.done) return;
      tries = 0;  // time in the line is no failed try
      continue;
    }
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
    if (outcome.accepted !== undefined) {
      accepted(outcome.accepted);
      return;
    }
    pending = null;  // a final answer: the key has done its work
    stopSending();
    if (outcome.fields !== undefined) {
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
  stopLine();  // a reloaded page waiting in the line: this send carries its ticket instead
  const text = JSON.stringify(body);
  if (pending === null || pending.text !== text) pending = { text, key: newKey() };
  sending = { body, key: pending.key, abort: new AbortController(), resentWithout: false };
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

// After a reload the place in the line is still held (sessionStorage) but the form's data
// is not (it is never stored): the line is shown with the form open to be filled again,
// and Daftar sends it with the ticket.
export async function resumeQueue() {
  if (!holdsPlace()) return;
  const next = await waitInLine(null, false);
  if (next.stopped !== undefined) return;
  if (next.registered !== undefined) {
    accepted(next.registered);
  } else if (next.turn !== undefined) {
    const until = turnDeadline(next.turn);
    notice.textContent = until === null ? QUEUE.turn_refill_now
      : QUEUE.turn_refill.replace("{time}", until);
    document.getElementById("nik").focus();
  } else if (next.left !== undefined) {
    notice.textContent = QUEUE.left;
  } else {
    dropPlace();  // expired and joining again, or no longer valid: the next Daftar joins
    notice.textContent = next.invalid !== undefined ? QUEUE.invalid : QUEUE.refill;
    document.getElementById("nik").focus();
  }
}

// The button is disabled in the page until this runs, so the form is never sent without
// its checks (nor as a GET with the fields in the address).
export function startForm() {
  form.addEventListener("submit", start);
  cancel.addEventListener("click", stop);
  submit.disabled = false;
}
