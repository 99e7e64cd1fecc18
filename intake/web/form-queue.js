// The waiting room's side of the form (docs/waiting-room.md). When the door answers a
// registration with a ticket (429 `queued`, or a 503 carrying `queue`), the page shows the
// person's place in the line and polls the ticket until it is their turn; then it hands
// back to form-send.js, which sends the same registration with `Authorization: Queue`.
// Only the newest ticket token and its status URL are kept (sessionStorage, so a reload
// keeps the place); the form's data never leaves the form. The token carries no personal
// data: a wave, a keyed hash's ticket id, a position and a time.
import { ERR, RULES, retryAfterSeconds, retryDelay, wibDateTime, wibTime } from "./form-base.js";

const QUEUE = RULES.queue;
const STORE = "gelombang.antrean";
const TICKETS = "/v1/queue/tickets/";
// The contract's ±20 % on poll_after_seconds, so the tabs of one wave do not poll in step;
// whatever the door says, never more than one poll a second.
const JITTER = 0.2;
const MIN_POLL_S = 1;
const DEFAULT_POLL_S = 10;  // a ticket object without poll_after_seconds

const form = document.getElementById("registration");
const notice = document.getElementById("notice");
const view = document.getElementById("queue");
const $ = (id) => document.getElementById(id);
const count = new Intl.NumberFormat("id-ID");

// Seconds until the next poll: poll_after_seconds give or take a fifth, at least 1 s.
export function pollDelay(pollAfter, random) {
  const base = Number.isFinite(pollAfter) && pollAfter > 0 ? pollAfter : DEFAULT_POLL_S;
  return Math.max(MIN_POLL_S, base * (1 - JITTER + 2 * JITTER * random));
}

// ---- the place held: the newest token, kept in memory and in the tab's sessionStorage ----
function stored() {
  try {
    const place = JSON.parse(sessionStorage.getItem(STORE) || "null");
    return place && typeof place.ticket === "string" && typeof place.url === "string"
      ? place : null;
  } catch (_) {
    return null;  // storage turned off, or not ours: no place to resume
  }
}
let place = stored();

function statusUrl(q) {
  // Only a path of this door's tickets; anything else is rebuilt from the token.
  const url = q.status_url;
  return typeof url === "string" && url.startsWith(TICKETS) ? url : TICKETS
    + encodeURIComponent(q.ticket);
}

export const heldTicket = () => (place === null ? null : place.ticket);
export const holdsPlace = () => place !== null;

// Any answer may hand a new token (after the draw, say): the newest always wins.
export function keepPlace(q) {
  if (!q || typeof q.ticket !== "string" || q.ticket === "") return;
  place = { ticket: q.ticket, url: statusUrl(q) };
  try { sessionStorage.setItem(STORE, JSON.stringify(place)); } catch (_) { /* memory only */ }
}

export function dropPlace() {
  place = null;
  try { sessionStorage.removeItem(STORE); } catch (_) { /* nothing was kept */ }
}

// ---- the wait: one at a time; it ends in {turn}, {registered}, {left}, {rejoin},
// {invalid} or {stopped} ----
let line = null;

// The live region takes a text when the line's state changes, never on a tick or a poll
// that changes only the figures.
function announce(l, kind, text) {
  if (l.kind === kind) return;
  l.kind = kind;
  notice.textContent = text;
}

function clearTimers(l) {
  clearTimeout(l.timer);
  clearInterval(l.ticker);
}

function finish(result) {
  const l = line;
  if (l === null) return;
  clearTimers(l);
  line = null;
  view.hidden = true;
  form.hidden = false;
  l.resolve(result);
}

// Ends a wait under way (Daftar on a reloaded page: its send carries the ticket instead).
export function stopLine() {
  finish({ stopped: true });
}

// Shows the line and waits in it. `q` is the ticket object of the door's answer, or null
// after a reload (the state is asked at once). `withBody`: the filled form is in hand and
// is sent by itself at the turn; else the form stays open to be filled again.
export function waitInLine(q, withBody) {
  stopLine();
  return new Promise((resolve) => {
    line = { resolve, withBody, kind: null, state: null, timer: 0, ticker: 0, failures: 0,
      lastPoll: 0, opensAt: null };
    form.hidden = withBody;
    view.hidden = false;
    $("queue-rejoin").hidden = true;
    for (const id of ["queue-next", "queue-opens", "queue-opens-in"]) $(id).textContent = "";
    for (const cell of view.querySelectorAll(".queue-waiting, .queue-eta")) cell.hidden = true;
    $("queue-prequeue").hidden = true;
    $("queue-note").textContent = withBody ? "" : QUEUE.refill_note;
    if (q === null) {
      showState("checking");
      check(line);
    } else {
      take(line, q);
    }
  });
}

function showState(state) {
  const cell = $("queue-state");
  cell.textContent = QUEUE.states[state] || state;
  cell.dataset.state = state;
  line.state = state;
}

// A ticket object from the door: shown, and the next poll set, or the wait ends.
function take(l, q) {
  keepPlace(q);
  if (q.state === "your_turn") {
    finish({ turn: q });
  } else if (q.state === "registered" && q.registration_id) {
    finish({ registered: q.registration_id });
  } else if (q.state === "expired") {
    expire(l, q);
  } else {
    render(l, q);
    schedule(l, pollDelay(q.poll_after_seconds, Math.random()));
  }
}

function render(l, q) {
  const before = l.state;
  const prequeue = q.state === "prequeue";
  showState(prequeue ? "prequeue" : "waiting");
  const placed = Number.isInteger(q.position) && !prequeue;
  for (const cell of view.querySelectorAll(".queue-waiting")) cell.hidden = !placed;
  if (placed) {
    $("queue-position").textContent = count.format(q.position);
    $("queue-ahead").textContent = QUEUE.ahead.replace("{count}",
      count.format(Math.max(0, q.ahead || 0)));
  }
  const eta = q.eta_seconds;
  const timed = eta !== null && typeof eta === "object" && Number.isFinite(eta.p50);
  for (const cell of view.querySelectorAll(".queue-eta")) cell.hidden = !timed;
  if (timed) $("queue-eta").textContent = etaText(eta.p50, eta.p90);
  l.opensAt = prequeue && q.opens_at ? new Date(q.opens_at) : null;
  $("queue-prequeue").hidden = !prequeue;
  $("queue-opens").textContent = l.opensAt === null ? ""
    : QUEUE.opens_at.replace("{time}", wibDateTime(l.opensAt));
  if (!l.withBody) announce(l, "resumed", QUEUE.resumed);
  else if (prequeue) announce(l, "prequeue", QUEUE.prequeue);
  else announce(l, "waiting", before === "prequeue" ? QUEUE.opened : QUEUE.joined);
}

// Minutes, p50 to p90, rounded outwards a little (a range that is too narrow is a promise).
function etaText(p50, p90) {
  const low = Math.max(1, Math.round(p50 / 60));
  const high = Math.max(low, Math.ceil((Number.isFinite(p90) ? p90 : p50) / 60));
  const text = low === high ? QUEUE.eta : QUEUE.eta_range;
  return text.replace("{low}", count.format(low)).replace("{high}", count.format(high));
}

function duration(seconds) {
  const units = QUEUE.units;
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  const parts = [];
  if (h > 0) parts.push(h + " " + units.hours);
  if (h > 0 || m > 0) parts.push(m + " " + units.minutes);
  parts.push(s + " " + units.seconds);
  return parts.join(" ");
}

// The next poll in `seconds`, counted down (with the time to the opening) outside the live
// region.
function schedule(l, seconds) {
  clearTimers(l);
  const sinceLast = (Date.now() - l.lastPoll) / 1000;
  const wait = Math.max(seconds, MIN_POLL_S - sinceLast, 0);
  const end = Date.now() + wait * 1000;
  const tick = () => {
    const left = Math.max(1, Math.ceil((end - Date.now()) / 1000));
    $("queue-next").textContent = QUEUE.next_check.replace("{seconds}", String(left));
    if (l.opensAt !== null) {
      const opensIn = Math.ceil((l.opensAt.getTime() - Date.now()) / 1000);
      $("queue-opens-in").textContent = opensIn > 0
        ? QUEUE.opens_in.replace("{duration}", duration(opensIn)) : QUEUE.drawing;
    } else {
      $("queue-opens-in").textContent = "";
    }
  };
  l.ticker = setInterval(tick, 1000);
  l.timer = setTimeout(() => check(l), wait * 1000);
  tick();
}

// One poll of the ticket's status URL.
async function check(l) {
  if (line !== l) return;
  if (place === null) {
    finish({ invalid: true });  // nothing left to ask about: as a ticket no longer valid
    return;
  }
  clearTimers(l);
  l.lastPoll = Date.now();
  $("queue-next").textContent = QUEUE.checking;
  let response;
  try {
    response = await fetch(place.url, { headers: { Accept: "application/json" } });
  } catch (_) {
    if (line === l) failed(l, ERR.network, 0);
    return;
  }
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (line !== l) return;
  // 200 is the ticket object; an error's body may carry it as `queue` (410's does).
  const q = body !== null && typeof body === "object"
    ? (body.queue && typeof body.queue === "object" ? body.queue : body) : null;
  if (response.status === 200 && q !== null && typeof q.ticket === "string") {
    l.failures = 0;
    $("queue-note").textContent = l.withBody ? "" : QUEUE.refill_note;
    take(l, q);
  } else if (response.status === 410) {
    expire(l, q);
  } else if (response.status === 403) {
    finish({ invalid: true });
  } else {
    // 429/503 of the poll itself: no sooner than its Retry-After; anything else (a proxy's
    // page, no answer): the form's backoff.
    const code = body && body.error ? body.error.code : null;
    const after = [429, 503].includes(response.status) ? retryAfterSeconds(response, 0) : 0;
    failed(l, ERR[code] || (response.status >= 500 ? ERR.server_error : ERR.other), after);
  }
}

function failed(l, text, after) {
  $("queue-note").textContent = text;
  const wait = retryDelay(l.failures, after, Math.random());
  l.failures += 1;
  schedule(l, wait);
}

// The turn passed (or the place was skipped): no more polls; the person may join again.
function expire(l, q) {
  clearTimers(l);
  if (q !== null && typeof q === "object") keepPlace(q);
  showState("expired");
  for (const cell of view.querySelectorAll(".queue-waiting, .queue-eta")) cell.hidden = true;
  $("queue-prequeue").hidden = true;
  $("queue-next").textContent = "";
  $("queue-rejoin").hidden = false;
  announce(l, "expired", QUEUE.expired);
}

function leave() {
  if (line === null) return;
  // The place is freed at once for everyone behind; an expired one has nothing to free.
  // keepalive: the DELETE goes out even if the tab is closed right after.
  if (place !== null && line.state !== "expired") {
    fetch(place.url, { method: "DELETE", keepalive: true }).catch(() => {});
  }
  dropPlace();
  finish({ left: true });
}

function rejoin() {
  dropPlace();  // joining again is a registration without the spent ticket
  finish({ rejoin: true });
}

$("queue-leave").addEventListener("click", leave);
$("queue-rejoin").addEventListener("click", rejoin);

// A turn's deadline in WIB, or null.
export function turnDeadline(q) {
  const until = q && q.turn_valid_until ? new Date(q.turn_valid_until) : null;
  return until === null || Number.isNaN(until.getTime()) ? null : wibTime(until);
}
