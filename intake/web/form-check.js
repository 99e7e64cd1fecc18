// The form's checks, in the server's order: one field code per failing field, as
// intake/validation.py's validate_registration. Every figure and pattern comes from the
// server's rules (intake/form_rules.py); this module holds only the order of the checks.
import { RULES } from "./form-base.js";

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
export function validate(body, todayText) {
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
