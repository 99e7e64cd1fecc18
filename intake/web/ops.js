// The operators' page: live figures from /metrics and the admin API, small SVG charts,
// and the admission controls. The admin token is typed in once, kept in this tab's
// sessionStorage (not a cookie: nothing sends it without this script asking) and sent as
// the Authorization header; a 401 forgets it.
"use strict";
(() => {
  const TOKEN_KEY = "gelombang.adminToken";
  const METRICS_EVERY_MS = 2000;
  // Every authenticated read is audited (an identical one once per admin.read_audit_seconds,
  // so this poll adds an entry every few minutes); the funnel is read less often than /metrics.
  const FUNNEL_EVERY_MS = 5000;
  const POINTS = 120;
  const SHED = ["backlog_full", "closed", "unavailable", "overloaded"];
  // The rates shown per role, each a sum of some of the process's counters
  // (gelombang/status_fleet.py has the same table).
  const RATES = {
    door: { admitted: ["admitted"], limited: ["limited"], shed: SHED,
            email_verified: ["email_verified"] },
    drain: { stored: ["stored"] },
    email: { sent: ["sent"] },
    nik: { checked: ["verified", "mismatch", "not_found"] },
  };
  const $ = (id) => document.getElementById(id);

  const series = { admitted: [], limited: [], shed: [], backlog: [], drain: [], waiting: [] };
  let lastMetrics = null;
  let lastFunnel = null;
  // Per process: its last distinct report and the rates between its last two.
  const lastReports = new Map();
  const lastRates = new Map();
  // The door processes' summed rates once any door reported twice: the deployment's
  // admission rates (a door's /metrics counts its own pod only).
  let fleetDoors = null;
  let timers = [];
  let policy = null;

  const token = () => sessionStorage.getItem(TOKEN_KEY);

  async function api(method, path, body) {
    const init = { method, headers: { Authorization: "Bearer " + token() } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    if (response.status === 401) {
      signOut("The token was refused.");
      throw new Error("unauthorized");
    }
    return response;
  }

  // Prometheus text: {name: [{labels, value}]} for the gelombang_ families.
  function parseMetrics(text) {
    const families = {};
    for (const line of text.split("\n")) {
      const m = /^(gelombang_[A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
      if (!m) continue;
      const labels = {};
      for (const l of (m[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
      (families[m[1]] = families[m[1]] || []).push({ labels, value: Number(m[3]) });
    }
    return families;
  }

  const one = (families, name) => ((families[name] || [])[0] || { value: NaN }).value;
  function decisions(families) {
    const counts = {};
    for (const s of families.gelombang_admission_decisions_total || []) {
      counts[s.labels.outcome] = s.value;
    }
    return counts;
  }

  function push(series, value) {
    series.push(value);
    if (series.length > POINTS) series.shift();
  }

  function draw(id, series) {
    const max = Math.max(1, ...series);
    // Stretched over the width while fewer than POINTS readings have come in.
    const step = 120 / Math.max(1, Math.min(POINTS, series.length) - 1);
    const points = series.map((v, i) => `${(i * step).toFixed(1)},${(40 - (v / max) * 38).toFixed(1)}`)
      .join(" ");
    $(id).querySelector("polyline").setAttribute("points", points);
  }

  const fmt = (n) => (Number.isFinite(n) ? n.toLocaleString("en", { maximumFractionDigits: 1 }) : "–");

  async function pollMetrics() {
    const response = await fetch("/metrics");
    const families = parseMetrics(await response.text());
    const now = performance.now();
    const counts = decisions(families);
    if (lastMetrics && !fleetDoors) {
      const seconds = (now - lastMetrics.at) / 1000;
      const rate = (names) => names.reduce(
        (sum, n) => sum + Math.max(0, (counts[n] || 0) - (lastMetrics.counts[n] || 0)), 0) / seconds;
      push(series.admitted, rate(["admitted"]));
      push(series.limited, rate(["limited"]));
      push(series.shed, rate(SHED));
      $("admitted").textContent = fmt(series.admitted.at(-1));
      $("limited").textContent = fmt(series.limited.at(-1));
      $("shed").textContent = fmt(series.shed.at(-1));
      for (const name of ["admitted", "limited", "shed"]) draw("chart-" + name, series[name]);
    }
    lastMetrics = { at: now, counts };
    const parts = families.gelombang_backlog_entries || [];
    const total = parts.reduce((sum, s) => sum + s.value, 0);
    push(series.backlog, total);
    draw("chart-backlog", series.backlog);
    $("backlog").textContent = fmt(total);
    $("partitions").replaceChildren(...parts.map((s) => {
      const row = document.createElement("tr");
      for (const text of [s.labels.partition, fmt(s.value)]) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.append(cell);
      }
      return row;
    }));
    const rate = one(families, "gelombang_admission_rate_per_second");
    const open = one(families, "gelombang_admission_open") === 1;
    const enabled = one(families, "gelombang_admission_enabled") === 1;
    $("policy-rate").textContent = `${fmt(rate)} / s`;
    $("policy-rate").dataset.rate = String(rate);
    $("policy-detail").textContent = `burst ${fmt(one(families, "gelombang_admission_burst"))}`
      + (enabled ? "" : ", limiting off") + (open ? ", open" : ", CLOSED");
    $("policy-detail").className = open ? "state-open" : "state-closed";
    const breakers = families.gelombang_breaker_open || [];
    const opened = breakers.filter((s) => s.value === 1).length;
    $("breaker").textContent = breakers.length === 0 ? "no reports"
      : opened ? `open (${opened} of ${breakers.length} workers)` : "closed";
    $("breaker").className = opened ? "value state-bad" : "value";
    $("updated").textContent = "Updated " + new Date().toLocaleTimeString();
  }

  function ratesOf(role, now, before, seconds) {
    const rates = {};
    for (const [name, counters] of Object.entries(RATES[role] || {})) {
      // A counter that went down is a restarted process: count from zero.
      rates[name] = counters.reduce(
        (sum, c) => sum + Math.max(0, (now[c] || 0) - (before[c] || 0)), 0) / seconds;
    }
    return rates;
  }

  const ratesText = (role, rates) => (rates ? Object.keys(RATES[role] || {})
    .map((name) => `${name} ${fmt(rates[name])}`).join(" · ") : "–");

  function processRow(role, cells, className) {
    const row = document.createElement("tr");
    row.dataset.role = role;
    if (className) row.className = className;
    for (const text of cells) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    return row;
  }

  async function pollProcesses() {
    const response = await api("GET", "/admin/v1/processes");
    if (response.status !== 200) return;
    const body = await response.json();
    const seen = new Set();
    const totals = {};
    const fresh = {};
    const rows = body.processes.map((p) => {
      seen.add(p.name);
      const last = lastReports.get(p.name);
      if (!last || p.reported_at > last.at) {
        if (last) lastRates.set(p.name, ratesOf(p.role, p.counters, last.counters, p.reported_at - last.at));
        lastReports.set(p.name, { at: p.reported_at, counters: p.counters });
      }
      const rates = lastRates.get(p.name);
      if (!p.stale) {
        fresh[p.role] = (fresh[p.role] || 0) + 1;
        if (rates) {
          const sum = (totals[p.role] = totals[p.role] || {});
          for (const [name, value] of Object.entries(rates)) sum[name] = (sum[name] || 0) + value;
        }
      }
      const age = `${Math.round(p.age_seconds)} s ago` + (p.stale ? " (stale)" : "");
      return processRow(p.role, [p.role, `${p.name} (pid ${p.pid})`, age,
        p.stale ? "–" : ratesText(p.role, rates)], p.stale ? "stale" : "");
    });
    for (const name of [...lastReports.keys()]) {
      if (!seen.has(name)) { lastReports.delete(name); lastRates.delete(name); }
    }
    const totalRows = Object.keys(RATES).filter((role) => fresh[role]).map((role) => processRow(
      role, [role, `total of ${fresh[role]}`, "", ratesText(role, totals[role])], "total"));
    $("processes").replaceChildren(...rows, ...totalRows);
    fleetDoors = totals.door || null;
    if (fleetDoors) {
      for (const name of ["admitted", "limited", "shed"]) {
        push(series[name], fleetDoors[name]);
        $(name).textContent = fmt(fleetDoors[name]);
        draw("chart-" + name, series[name]);
      }
    }
  }

  async function pollFunnel() {
    const response = await api("GET", "/admin/v1/funnel");
    if (response.status !== 200) return;
    const funnel = await response.json();
    const now = performance.now();
    if (lastFunnel) {
      const stored = Math.max(0, funnel.stored - lastFunnel.stored) / ((now - lastFunnel.at) / 1000);
      push(series.drain, stored);
      draw("chart-drain", series.drain);
      $("drain").textContent = fmt(stored);
    }
    lastFunnel = { at: now, stored: funnel.stored };
    $("dead").textContent = fmt(funnel.dead_letter);
    $("funnel").replaceChildren(...Object.entries(funnel).filter(([, v]) => typeof v === "number")
      .map(([name, value]) => {
        const row = document.createElement("tr");
        const label = document.createElement("td");
        const cell = document.createElement("td");
        label.textContent = name;
        cell.textContent = fmt(value);
        row.append(label, cell);
        return row;
      }));
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "not moving";
    if (seconds < 60) return `${Math.round(seconds)} s`;
    if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
    return `${(seconds / 3600).toFixed(1)} h`;
  }

  function row(cells) {
    const tr = document.createElement("tr");
    for (const text of cells) {
      const cell = document.createElement("td");
      cell.textContent = text;
      tr.append(cell);
    }
    return tr;
  }

  // The waiting room (GET /admin/v1/waves): the line in force and the scheduled waves.
  async function pollWaves() {
    const response = await api("GET", "/admin/v1/waves");
    if (response.status !== 200) return;
    const body = await response.json();
    const line = body.in_force;
    $("wr-wave").textContent = line.wave + (body.enabled ? "" : " (tickets off)");
    $("wr-phase").textContent = line.phase;
    $("wr-waiting").textContent = fmt(line.waiting);
    push(series.waiting, line.waiting);
    draw("chart-waiting", series.waiting);
    $("wr-eta").textContent = duration(line.eta_last_seconds);
    $("wr-rate").textContent = `at ${fmt(line.release_rate)} / s`;
    const figures = [["served", line.served], ["tail (last position handed out)", line.tail],
      ["drawn (pre-queue at the draw)", line.drawn], ["tickets expired", line.expired],
      ["tickets used", line.used]];
    if (line.phase === "prequeue") figures.unshift(["in the pre-queue", line.prequeue]);
    $("wr-figures").replaceChildren(...figures.map(([name, value]) => row([name, fmt(value)])));
    $("waves").replaceChildren(...body.waves.map((w) => row(
      [w.wave, w.prequeue_from, w.opens_at, w.closes_at, w.phase])));
  }

  function every(ms, task) {
    const run = () => task().catch(() => { /* the next round tries again */ });
    run();
    timers.push(setInterval(run, ms));
  }

  async function loadPolicy() {
    const response = await api("GET", "/admin/v1/admission");
    if (response.status !== 200) throw new Error("admission settings unavailable");
    policy = await response.json();
    $("set-rate").value = policy.rate_per_second;
    $("set-burst").value = policy.burst;
    $("set-open").checked = policy.open;
  }

  async function start() {
    $("login").hidden = true;
    $("board").hidden = false;
    $("logout").hidden = false;
    await loadPolicy();
    every(METRICS_EVERY_MS, pollMetrics);
    every(METRICS_EVERY_MS, pollProcesses);
    every(METRICS_EVERY_MS, pollWaves);
    every(FUNNEL_EVERY_MS, pollFunnel);
  }

  function signOut(reason) {
    sessionStorage.removeItem(TOKEN_KEY);
    timers.forEach(clearInterval);
    timers = [];
    $("board").hidden = true;
    $("logout").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = reason || "";
    $("token").value = "";
  }

  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token").value = "";
    start().catch(() => { /* signOut already said why */ });
  });
  $("logout").addEventListener("click", () => signOut(""));

  // ---- admission controls, confirmed before they are sent ----
  let pending = null;
  $("controls").addEventListener("submit", (event) => {
    event.preventDefault();
    $("controls-error").textContent = "";
    const rate = Number($("set-rate").value);
    const burst = Number($("set-burst").value);
    if (!(rate > 0) || !Number.isInteger(burst) || burst < 1) {
      $("controls-error").textContent = "Rate must be above 0 and burst a whole number of at least 1.";
      return;
    }
    const changes = {};
    if (rate !== policy.rate_per_second) changes.rate_per_second = rate;
    if (burst !== policy.burst) changes.burst = burst;
    if ($("set-open").checked !== policy.open) changes.open = $("set-open").checked;
    if (Object.keys(changes).length === 0) {
      $("controls-error").textContent = "Nothing to change.";
      return;
    }
    pending = changes;
    $("confirm-text").textContent = "Change for every door process: " + Object.entries(changes)
      .map(([k, v]) => `${k} ${policy[k]} → ${v}`).join(", ") + "?";
    $("confirm").hidden = false;
  });
  $("confirm-no").addEventListener("click", () => { pending = null; $("confirm").hidden = true; });
  $("confirm-yes").addEventListener("click", async () => {
    const changes = pending;
    pending = null;
    $("confirm").hidden = true;
    if (!changes) return;
    const response = await api("PUT", "/admin/v1/admission", changes);
    const body = await response.json();
    if (response.status !== 200) {
      $("controls-error").textContent = `Refused (${response.status}): ${body.error.code}`;
      return;
    }
    policy = body;
    $("controls-result").textContent = "Applied at " + new Date().toLocaleTimeString()
      + "; every door follows within 2 s.";
  });

  if (token()) start().catch(() => { /* signOut already said why */ }); else signOut("");
})();
