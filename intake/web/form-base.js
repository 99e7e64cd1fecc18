// What the form's modules share: the server's rules and texts (the #form-rules block, built
// by intake/form_rules.py), times in Asia/Jakarta, and when to try a request again.

export const RULES = JSON.parse(document.getElementById("form-rules").textContent);
export const ERR = RULES.errors;

const ZONE = "Asia/Jakarta";

// Today's date in Jakarta as YYYY-MM-DD: the age rule counts there, whatever the
// browser's own zone.
export function jakartaToday() {
  return new Intl.DateTimeFormat("en-CA", {
    timeZone: ZONE, year: "numeric", month: "2-digit", day: "2-digit",
  }).format(new Date());
}

// Registrants are in Indonesia but browsers may not be set to its zone, so every time the
// page shows is Jakarta's, and says so.
const CLOCK = new Intl.DateTimeFormat("id-ID", {
  timeZone: ZONE, hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
});
const STAMP = new Intl.DateTimeFormat("id-ID", {
  timeZone: ZONE, dateStyle: "medium", timeStyle: "medium", hourCycle: "h23",
});
export const wibTime = (date) => CLOCK.format(date) + " WIB";
export const wibDateTime = (date) => STAMP.format(date) + " WIB";

// Retry-After in seconds (delta-seconds or an HTTP date), or `fallback` when absent.
export function retryAfterSeconds(response, fallback) {
  const text = (response.headers.get("Retry-After") || "").trim();
  if (/^[0-9]+$/.test(text)) return +text;
  const when = Date.parse(text);
  return Number.isNaN(when) ? fallback : Math.max(0, (when - Date.now()) / 1000);
}

// Seconds before try number `attempt` + 1 (0 for the first retry): never sooner than the
// server's Retry-After, plus a uniformly random share ("full jitter") of a backoff that
// doubles per attempt up to a cap. Every client told the same Retry-After in the same
// second (a whole wave of them after one 429) would otherwise all come back in the same
// second; the doubling thins out clients that keep failing, the cap keeps a waiting
// registrant from being left minutes behind once the door recovers.
export const BACKOFF = { base: 2, cap: 30, floor: 1, retryAfterCap: 600 };
export function retryDelay(attempt, retryAfter, random) {
  // A hostile or broken proxy's Retry-After of hours must not park the page.
  const wait = Math.min(BACKOFF.retryAfterCap, Math.max(BACKOFF.floor, retryAfter));
  const backoff = Math.min(BACKOFF.cap, BACKOFF.base * 2 ** Math.min(attempt, 16));
  return wait + random * backoff;
}
