// Outpost's web console: views over the admin API, called with the session
// cookie (and the session's CSRF token on changes). Plain DOM, no framework.
"use strict";

const S = { csrf: "", keepStatus: false, timer: 0, gen: 0, streams: [], charts: [], prevCalls: null, series: [], range: "15m" };
const $ = (sel, root = document) => root.querySelector(sel);
const view = $("#view");

// h builds an element: h("td", {class: "num"}, "3"). Text is never parsed as HTML.
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat()) if (kid !== null && kid !== undefined) el.append(kid instanceof Node ? kid : String(kid));
  return el;
}

function say(msg, bad) {
  const st = $("#status");
  st.textContent = msg;
  st.className = bad ? "error" : "";
}

class HTTPError extends Error {
  constructor(status, msg) { super(msg); this.status = status; }
}

// api calls the admin API; on 401 it shows the login form.
async function api(method, path, body, headers = {}) {
  const opts = { method, headers: { ...headers }, credentials: "same-origin" };
  if (method !== "GET" && method !== "HEAD") opts.headers["X-Outpost-CSRF"] = S.csrf;
  if (body !== undefined) {
    if (body instanceof FormData) opts.body = body;
    else { opts.body = JSON.stringify(body); opts.headers["Content-Type"] = "application/json"; }
  }
  const resp = await fetch(path, opts);
  const text = await resp.text();
  let data = text;
  if ((resp.headers.get("Content-Type") || "").includes("json")) {
    try { data = JSON.parse(text); } catch (e) { data = text; }
  }
  if (resp.status === 401) { showLogin("Your session has ended: log in again."); throw new HTTPError(401, "unauthorized"); }
  if (!resp.ok && !(resp.status === 503 && path === "/v1/health")) {
    const msg = data && data.error ? (data.error.message || data.error) : text;
    throw new HTTPError(resp.status, `${resp.status}: ${msg}`);
  }
  return data;
}

// parseMetrics reads the Prometheus text format into {name, labels, value}.
function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line[0] === "#") continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[2]) for (const l of m[2].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2].replace(/\\(.)/g, "$1");
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}
const metric = (ms, name, f = () => true) => ms.filter((m) => m.name === name && f(m.labels));
const sum = (ms) => ms.reduce((a, m) => a + m.value, 0);

function bytes(n) {
  if (n === undefined || isNaN(n)) return "–";
  const u = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}
function dur(s) {
  if (s === undefined || s === null || isNaN(s)) return "–";
  if (s < 1e-3) return `${(s * 1e6).toFixed(0)} µs`;
  if (s < 1) return `${(s * 1e3).toFixed(1)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600), mm = Math.floor((s % 3600) / 60);
  return d ? `${d}d ${hh}h ${mm}m` : `${hh}h ${mm}m`;
}
const when = (t) => (t && !t.startsWith("0001") ? new Date(t).toLocaleString() : "–");
const card = (k, v, cls) => h("div", { class: "card" }, h("div", { class: "k" }, k), h("div", { class: "v " + (cls || "") }, v));
function table(cols, rows, label) {
  return h("div", { class: "table" }, h("table", { "aria-label": label },
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: cols.length, class: "muted" }, "none")))));
}
const pretty = (v) => h("pre", {}, JSON.stringify(v === undefined ? null : v, null, 2));

// quantile estimates a quantile from cumulative histogram buckets.
function quantile(q, buckets) {
  buckets.sort((a, b) => a.le - b.le);
  const total = buckets.length ? buckets[buckets.length - 1].count : 0;
  if (!total) return undefined;
  let prevLe = 0, prevCount = 0;
  for (const b of buckets) {
    if (b.count >= q * total) {
      if (!isFinite(b.le)) return prevLe;
      return prevLe + (b.le - prevLe) * ((q * total - prevCount) / Math.max(b.count - prevCount, 1));
    }
    prevLe = b.le; prevCount = b.count;
  }
  return prevLe;
}

// confirm asks in a modal dialog; Escape or Cancel answer false.
function confirmAction(text) {
  const d = $("#confirm");
  $("#confirm-text").textContent = text;
  d.returnValue = "";
  d.showModal();
  $("#confirm-cancel").focus();
  return new Promise((resolve) => d.addEventListener("close", () => resolve(d.returnValue === "ok"), { once: true }));
}

// ---- views ----

async function overview() {
  const [hl, text] = await Promise.all([api("GET", "/v1/health"), api("GET", "/metrics")]);
  const ms = parseMetrics(text);
  const rss = sum(metric(ms, "process_resident_memory_bytes"));
  const heap = sum(metric(ms, "go_memstats_heap_inuse_bytes"));
  const queues = metric(ms, "outpost_calls_queue_depth").map((m) => `${m.labels.queue} ${m.value}`).join(", ");
  const cloud = hl.cloud ? hl.cloud.state : "not configured";
  return h("section", { "data-view": "overview" }, h("h1", {}, "Overview"),
    h("div", { class: "cards" },
      card("Health", hl.status, hl.status === "ok" ? "ok" : "bad"),
      card("Node", hl.node),
      card("Version", hl.version),
      card("Uptime", dur(hl.uptime_seconds)),
      card("Tasks", hl.tasks),
      card("Queued / running", `${hl.scheduler.queued} / ${hl.scheduler.running}`),
      card("Workers", hl.scheduler.workers + (hl.scheduler.draining ? " (draining)" : "")),
      card("Memory (RSS)", bytes(rss)),
      card("Go heap in use", bytes(heap)),
      card("MQTT", `${hl.mqtt.broker}, ${hl.mqtt.connected ? "connected" : "disconnected"}`, hl.mqtt.connected ? "ok" : "bad"),
      card("Devices connected", sum(metric(ms, "outpost_devices_connected"))),
      card("Cloud link", cloud, cloud === "up" ? "ok" : hl.cloud ? "warn" : "muted")),
    h("h2", {}, "Scheduler queues"), h("p", {}, queues || "–"),
    hl.problems && hl.problems.length ? [h("h2", {}, "Problems"), h("ul", {}, hl.problems.map((p) => h("li", { class: "bad" }, p)))] : null);
}

async function devices(id) {
  if (id) return device(id);
  const [list, text, violations] = await Promise.all([api("GET", "/v1/devices"), api("GET", "/metrics"), api("GET", "/v1/device-violations")]);
  const ms = parseMetrics(text);
  const rows = list.map((d) => {
    const denied = sum(metric(ms, "outpost_devices_acl_denied_total", (l) => l.device === d.id));
    const limited = sum(metric(ms, "outpost_devices_limited_total", (l) => l.device === d.id));
    return h("tr", { "data-device": d.id },
      h("td", {}, h("a", { href: `#devices/${encodeURIComponent(d.id)}` }, d.id)),
      h("td", { class: d.connected ? "ok" : "muted" }, d.connected ? "connected" : `offline${d.disconnect_reason ? " (" + d.disconnect_reason + ")" : ""}`),
      h("td", {}, when(d.last_seen)), h("td", {}, d.address || "–"), h("td", {}, (d.groups || []).join(", ") || "–"),
      h("td", {}, d.disabled ? "disabled" : "enabled"),
      h("td", { class: "num " + (denied + limited ? "bad" : "") }, `${denied} / ${limited}`));
  });
  const vrows = violations.map((v) => h("tr", { "data-violation": v.device || "" },
    h("td", {}, when(v.time)), h("td", {}, v.device || `client ${v.client}`), h("td", {}, v.action),
    h("td", {}, h("code", {}, v.topic || "–")), h("td", { class: "bad" }, v.reason)));
  return h("section", { "data-view": "devices" }, h("h1", {}, "Devices"),
    table(["Device", "Presence", "Last seen", "Address", "Groups", "State", "Denied / limited"], rows, "Devices"),
    h("h2", {}, "Recent violations"),
    table(["Time", "Device", "Action", "Topic", "Reason"], vrows, "Recent violations"));
}

// device shows one device and one of its shadows (?shadow=NAME: a named
// one; none: the classic one) with an editor for its desired state.
async function device(id) {
  const path = `/v1/devices/${encodeURIComponent(id)}`;
  const name = new URLSearchParams(location.hash.split("?")[1] || "").get("shadow") || "";
  const shadowPath = path + "/shadow" + (name ? "?" + new URLSearchParams({ name }) : "");
  const [d, shadows, doc] = await Promise.all([api("GET", path), api("GET", path + "/shadows"),
    api("GET", shadowPath).catch((e) => (e.status === 404 ? null : Promise.reject(e)))]);
  const st = (doc && doc.state) || {};
  const editor = h("textarea", { id: "shadow-desired", "aria-label": "Desired state (JSON)", spellcheck: "false" }, JSON.stringify(st.desired || {}, null, 2));
  const save = async (ev) => {
    ev.preventDefault();
    let desired;
    try { desired = JSON.parse(editor.value); } catch (e) { say(`desired is not JSON: ${e.message}`, true); return; }
    await api("POST", shadowPath, { state: { desired } });
    say(`Desired state of ${id}${name ? " shadow " + name : ""} saved`);
    S.keepStatus = true;
    route();
  };
  const devHash = `#devices/${encodeURIComponent(id)}`;
  const link = (n) => h("a", { href: devHash + (n ? "?" + new URLSearchParams({ shadow: n }) : ""), "data-shadow": n, "aria-current": n === name ? "page" : null }, n || "classic");
  const names = [...new Set(["", ...(shadows || []).map((s) => s.name), name])];
  const newName = h("input", { id: "shadow-new", "aria-label": "Named shadow", placeholder: "name", pattern: "[A-Za-z0-9:_-]{1,64}", required: true });
  const open = (ev) => { ev.preventDefault(); location.hash = devHash + "?" + new URLSearchParams({ shadow: newName.value }); };
  const topic = `$aws/things/${d.id}/shadow/${name ? "name/" + name + "/" : ""}update/delta`;
  return h("section", { "data-view": "device" }, h("h1", {}, `Device ${d.id}`),
    h("p", {}, h("a", { href: "#devices" }, "← all devices")),
    h("div", { class: "cards" },
      card("Presence", d.connected ? "connected" : "offline", d.connected ? "ok" : "muted"),
      card("Last seen", when(d.last_seen)), card("Address", d.address || "–"),
      card("Shadow version", doc ? doc.version : "no shadow")),
    h("nav", { id: "shadow-list", class: "row", "aria-label": "Shadows" }, h("span", {}, "Shadows:"), names.map(link),
      h("form", { class: "row", onsubmit: open }, newName, h("button", { id: "shadow-open", type: "submit" }, "Open named shadow"))),
    h("div", { class: "grid3" },
      h("div", {}, h("h2", {}, "Desired"), pretty(st.desired)),
      h("div", {}, h("h2", {}, "Reported"), pretty(st.reported)),
      h("div", { id: "shadow-delta" }, h("h2", {}, "Delta"), pretty(st.delta))),
    h("form", { onsubmit: save }, h("h2", {}, h("label", { for: "shadow-desired" }, `Edit desired (${name ? "shadow " + name : "classic shadow"})`)),
      h("p", { class: "muted" }, "Fields are merged into desired; null removes one. The device gets the difference on " + topic + "."),
      editor, h("div", { class: "row" }, h("button", { id: "shadow-save", class: "primary", type: "submit" }, "Save desired"))));
}

// taskStats reads calls, errors and latency per task from the metrics.
function taskStats(ms) {
  const now = performance.now() / 1000, stats = {};
  const st = (t) => (stats[t] = stats[t] || { total: 0, errors: {}, buckets: [] });
  for (const m of metric(ms, "outpost_calls_total")) {
    const s = st(m.labels.task);
    s.total += m.value;
    if (m.labels.status !== "ok" && m.value) s.errors[m.labels.status] = m.value;
  }
  for (const m of metric(ms, "outpost_call_duration_seconds_bucket")) st(m.labels.task).buckets.push({ le: m.labels.le === "+Inf" ? Infinity : Number(m.labels.le), count: m.value });
  const prev = S.prevCalls;
  for (const [t, s] of Object.entries(stats)) {
    if (prev && prev.stats[t] && now > prev.at) s.rate = (s.total - prev.stats[t].total) / (now - prev.at);
  }
  S.prevCalls = { at: now, stats };
  return stats;
}

async function tasks(name) {
  if (name) return task(name);
  const [list, text] = await Promise.all([api("GET", "/v1/tasks"), api("GET", "/metrics")]);
  const stats = taskStats(parseMetrics(text));
  const rows = list.map((t) => {
    const s = stats[t.name] || { total: 0, errors: {}, buckets: [] };
    return h("tr", { "data-task": t.name },
      h("td", {}, h("a", { href: `#tasks/${encodeURIComponent(t.name)}` }, t.name)), h("td", {}, t.abi),
      h("td", {}, h("code", {}, (t.digest || "").slice(0, 12))), h("td", { class: "num" }, bytes(t.size)),
      h("td", { class: "num" }, s.total), h("td", { class: "num" }, s.rate === undefined ? "–" : s.rate.toFixed(2)),
      h("td", { class: Object.keys(s.errors).length ? "bad" : "" }, Object.entries(s.errors).map(([k, v]) => `${k} ${v}`).join(", ") || "–"),
      h("td", { class: "num" }, dur(quantile(0.5, s.buckets))), h("td", { class: "num" }, dur(quantile(0.99, s.buckets))));
  });
  const nameIn = h("input", { id: "deploy-name", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9_.-]*", "aria-label": "Task name" });
  const fileIn = h("input", { id: "deploy-file", type: "file", accept: ".wasm,application/wasm", required: true, "aria-label": "Module (.wasm)" });
  const deploy = async (ev) => {
    ev.preventDefault();
    const f = fileIn.files[0];
    if (!f || !nameIn.value) return;
    if (!(await confirmAction(`Deploy ${f.name} (${bytes(f.size)}) as task ${nameIn.value}?`))) return;
    const fd = new FormData();
    fd.append("module", f, f.name);
    say(`Deploying ${nameIn.value}…`);
    const d = await api("POST", `/v1/tasks/${encodeURIComponent(nameIn.value)}`, fd);
    say(`Deployed ${d.name}, version ${d.versions ? d.versions[d.versions.length - 1].version : 1}`);
    S.keepStatus = true;
    location.hash = `#tasks/${encodeURIComponent(d.name)}`;
  };
  return h("section", { "data-view": "tasks" }, h("h1", {}, "Tasks"),
    table(["Task", "ABI", "Digest", "Size", "Calls", "Calls/s", "Errors", "p50", "p99"], rows, "Tasks"),
    h("p", { class: "muted" }, "Latency quantiles since the daemon started, from its call duration histogram."),
    h("h2", {}, "Deploy"),
    h("form", { class: "row", onsubmit: deploy },
      h("div", {}, h("label", { for: "deploy-name" }, "Task name"), nameIn),
      h("div", {}, h("label", { for: "deploy-file" }, "Module (.wasm)"), fileIn),
      h("button", { id: "deploy-submit", class: "primary", type: "submit" }, "Deploy…")));
}

async function task(name) {
  const t = await api("GET", `/v1/tasks/${encodeURIComponent(name)}`);
  const versions = t.versions || [];
  const rollback = async () => {
    const prev = versions[versions.length - 2];
    if (!(await confirmAction(`Roll ${name} back to version ${prev.version} (${prev.digest.slice(0, 12)})?`))) return;
    const d = await api("POST", `/v1/tasks/${encodeURIComponent(name)}/rollback`);
    say(`Rolled ${name} back: it runs ${d.digest.slice(0, 12)}`);
    S.keepStatus = true;
    route();
  };
  return h("section", { "data-view": "task" }, h("h1", {}, `Task ${t.name}`),
    h("p", {}, h("a", { href: "#tasks" }, "← all tasks")),
    h("div", { class: "cards" }, card("ABI", t.abi), card("Digest", (t.digest || "").slice(0, 16)), card("Memory limit", bytes(t.memory_limit)),
      card("Timeout", dur(t.timeout_seconds)), card("Concurrency", t.concurrency), card("Instances warm / in use", `${t.pool.warm} / ${t.pool.in_use}`)),
    h("h2", {}, "Versions"),
    table(["Version", "Digest", "Size", "Deployed", "From"], versions.slice().reverse().map((v, i) =>
      h("tr", { "data-version": v.version }, h("td", {}, v.version + (i === 0 ? " (running)" : "")), h("td", {}, h("code", {}, v.digest.slice(0, 12))),
        h("td", { class: "num" }, bytes(v.size)), h("td", {}, when(v.deployed)), h("td", {}, v.from || "admin"))), "Versions"),
    versions.length > 1 ? h("div", { class: "row" }, h("button", { id: "rollback", class: "danger", type: "button", onclick: rollback }, "Roll back…")) : null,
    h("h2", {}, "Artifacts"),
    table(["Environment", "Digest", "Size", "Location"], (t.artifacts || []).map((a) =>
      h("tr", {}, h("td", {}, a.env + (a.os ? ` ${a.os}/${a.arch}` : "")), h("td", {}, h("code", {}, a.digest.slice(0, 12))), h("td", { class: "num" }, bytes(a.size)), h("td", {}, a.location))), "Artifacts"));
}

async function callsView(id) {
  if (id) return call(id);
  const q = new URLSearchParams(location.hash.split("?")[1] || "");
  const state = q.get("state") || "", taskF = q.get("task") || "", source = q.get("source") || "";
  const sel = new URLSearchParams({ limit: "500", order: "newest" });
  for (const [k, v] of [["state", state], ["task", taskF], ["source", source]]) if (v) sel.set(k, v);
  const [resp, tasks] = await Promise.all([api("GET", "/v1/calls?" + sel), api("GET", "/v1/tasks")]);
  const shown = resp.calls || [];
  const pick = (label, key, values, cur) => h("div", {}, h("label", { for: `calls-${key}` }, label),
    h("select", { id: `calls-${key}`, onchange: (ev) => { q.set(key, ev.target.value); if (!ev.target.value) q.delete(key); location.hash = "#calls?" + q; } },
      h("option", { value: "" }, "any"), values.map((v) => h("option", { value: v, selected: v === cur }, v))));
  const names = [...new Set(tasks.map((t) => t.name).concat(taskF ? [taskF] : []))].sort();
  const rows = shown.map((c) => h("tr", { "data-call": c.id },
    h("td", {}, h("a", { href: `#calls/${c.id}` }, c.id)), h("td", {}, c.task), h("td", {}, c.state),
    h("td", {}, `${c.source.kind}${c.source.ref ? ":" + c.source.ref : ""}`),
    h("td", { class: c.result ? (c.result.status === "ok" ? "ok" : "bad") : "muted" }, c.result ? c.result.status : "–"),
    h("td", {}, when(c.received)),
    h("td", { class: "num" }, c.started && c.finished && !c.finished.startsWith("0001") ? dur((new Date(c.finished) - new Date(c.started)) / 1000) : "–")));
  return h("section", { "data-view": "calls" }, h("h1", {}, "Calls"),
    h("div", { class: "row" }, pick("Task", "task", names, taskF),
      pick("State", "state", ["received", "started", "suspended", "finished", "reported"], state),
      pick("Source", "source", ["mqtt", "admin", "cloud", "task", "telemetry", "peer"], source)),
    h("p", { class: "muted" }, `${shown.length} journaled calls${shown.length === 500 ? " (the newest 500)" : ""}`),
    table(["Call", "Task", "State", "Source", "Status", "Received", "Duration"], rows, "Calls"));
}

function decodeOutput(b64) {
  const bin = atob(b64 || "");
  return new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0)));
}

async function call(id) {
  const c = await api("GET", `/v1/calls/${encodeURIComponent(id)}`);
  const text = c.result ? decodeOutput(c.result.output) : "";
  const out = h("pre", { id: "call-output" }, text);
  const pressed = (on) => { $("#output-text").setAttribute("aria-pressed", String(!on)); $("#output-json").setAttribute("aria-pressed", String(on)); };
  const asText = () => { out.textContent = text; pressed(false); };
  const asJSON = () => {
    try { out.textContent = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { out.textContent = `not JSON: ${e.message}`; }
    pressed(true);
  };
  return h("section", { "data-view": "call" }, h("h1", {}, `Call ${c.id}`),
    h("p", {}, h("a", { href: "#calls" }, "← all calls")),
    h("div", { class: "cards" }, card("Task", c.task), card("State", c.state), card("Source", `${c.source.kind}${c.source.ref ? ":" + c.source.ref : ""}`),
      card("Status", c.result ? c.result.status : "–", c.result && c.result.status === "ok" ? "ok" : "bad"), card("Attempt", c.attempt),
      card("Received", when(c.received))),
    c.result && c.result.error ? [h("h2", {}, "Error"), h("pre", { class: "error" }, c.result.error)] : null,
    h("h2", {}, "Output"),
    h("div", { class: "row", role: "group", "aria-label": "Show output as" },
      h("button", { type: "button", id: "output-text", "aria-pressed": "true", onclick: asText }, "Text"),
      h("button", { type: "button", id: "output-json", "aria-pressed": "false", onclick: asJSON }, "JSON")),
    out);
}

// ---- telemetry ----

const numeric = (kind) => kind === "int" || kind === "uint" || kind === "float";
const seriesKey = (s) => `${s.target}\u0000${s.path}`;
const ranges = { "5m": 300, "15m": 900, "1h": 3600, "6h": 21600, "24h": 86400 };

function stopStreams() {
  for (const es of S.streams) es.close();
  S.streams = [];
  for (const c of S.charts) c.destroy();
  S.charts = [];
}

async function telemetry() {
  const [tg, latest] = await Promise.all([api("GET", "/v1/telemetry/targets"), api("GET", "/v1/telemetry/latest?path=/...").catch(() => ({ points: [] }))]);
  const trows = tg.targets.map((t) => h("tr", { "data-target": t.name }, h("td", {}, t.name), h("td", {}, t.source), h("td", {}, t.address),
    h("td", { class: t.connected ? "ok" : "bad" }, t.connected ? "up" : "down"), h("td", {}, when(t.last_update)),
    h("td", { class: "num" }, t.updates), h("td", { class: "num" + (t.errors ? " bad" : "") }, t.errors), h("td", { class: "bad" }, t.last_error || "")));
  const filter = h("input", { id: "path-filter", type: "search", placeholder: "filter paths", "aria-label": "Filter paths" });
  const points = latest.points || [];
  const chosen = new Set(S.series.map(seriesKey));
  const body = h("tbody", {});
  const fill = () => {
    body.replaceChildren(...points.filter((p) => (`${p.target} ${p.path}`).includes(filter.value)).slice(0, 500).map((p) => {
      const box = numeric(p.kind) ? h("input", { type: "checkbox", checked: chosen.has(seriesKey(p)), "aria-label": `Chart ${p.target} ${p.path}`,
        "data-series": `${p.target} ${p.path}`, onchange: (ev) => toggleSeries(p, ev.target.checked) }) : "";
      return h("tr", {}, h("td", {}, box), h("td", {}, p.target), h("td", {}, p.path), h("td", { class: "num" }, typeof p.value === "object" ? JSON.stringify(p.value) : String(p.value)), h("td", {}, when(p.time)));
    }));
  };
  filter.addEventListener("input", fill);
  fill();
  const range = h("select", { id: "range", "aria-label": "Time range", onchange: (ev) => { S.range = ev.target.value; drawCharts(); } },
    Object.keys(ranges).map((r) => h("option", { value: r, selected: r === S.range }, `last ${r}`)));
  const sec = h("section", { "data-view": "telemetry" }, h("h1", {}, "Telemetry"),
    tg.enabled ? null : h("p", { class: "muted" }, "Telemetry is not configured on this daemon."),
    h("h2", {}, "Targets"),
    table(["Target", "Source", "Address", "State", "Last update", "Updates", "Errors", "Last error"], trows, "Targets"),
    h("h2", {}, "Charts"), h("div", { class: "row" }, h("label", { for: "range" }, "Range"), range),
    h("div", { id: "charts" }, h("p", { class: "muted" }, "Tick a numeric path below to chart it.")),
    h("h2", {}, "Paths"), h("div", { class: "row" }, filter),
    h("div", { class: "table" }, h("table", { "aria-label": "Paths" }, h("thead", {}, h("tr", {}, ["Chart", "Target", "Path", "Latest", "Time"].map((c) => h("th", { scope: "col" }, c)))), body)));
  return sec;
}

function toggleSeries(p, on) {
  S.series = S.series.filter((s) => seriesKey(s) !== seriesKey(p));
  if (on) S.series.push({ target: p.target, path: p.path });
  sessionStorage.setItem("series", JSON.stringify(S.series));
  drawCharts();
}

// drawCharts draws a chart per chosen series: the range from the store,
// then the points of the event stream as they come.
async function drawCharts() {
  const box = $("#charts");
  if (!box) return;
  stopStreams();
  if (!S.series.length) return;
  box.replaceChildren();
  const span = ranges[S.range];
  for (const s of S.series) {
    const el = h("div", { class: "chart", "data-series": `${s.target} ${s.path}`, "data-points": "0" },
      h("header", {}, h("strong", {}, `${s.target} ${s.path}`),
        h("button", { type: "button", "aria-label": `Remove chart ${s.target} ${s.path}`, onclick: () => toggleSeries(s, false) }, "×")));
    box.append(el);
    const q = new URLSearchParams({ target: s.target, path: s.path, since: S.range, limit: "10000" });
    if (span > 3600) q.set("bucket", `${Math.ceil(span / 1000)}s`);
    const res = await api("GET", "/v1/telemetry/query?" + q).catch((e) => { say(e.message, true); return { series: [] }; });
    const xs = [], ys = [];
    for (const sr of res.series || []) {
      for (const p of sr.points || []) { xs.push(Date.parse(p.time) / 1000); ys.push(Number(p.value)); }
      for (const b of sr.buckets || []) { xs.push(Date.parse(b.start) / 1000); ys.push(b.avg === undefined ? Number(b.last) : b.avg); }
    }
    const chart = lineChart(el, s, xs, ys);
    const es = new EventSource("/v1/telemetry/stream?" + new URLSearchParams({ target: s.target, path: s.path }));
    es.addEventListener("points", (ev) => {
      for (const p of JSON.parse(ev.data)) chart.add(Date.parse(p.time) / 1000, Number(p.value));
    });
    es.onerror = () => { if (es.readyState === EventSource.CLOSED) say(`stream of ${s.path} closed`, true); };
    S.streams.push(es);
  }
}

// lineChart draws xs/ys in el with uPlot and redraws at most once a frame
// as points are added; points older than the range are dropped.
function lineChart(el, s, xs, ys) {
  const css = getComputedStyle(document.documentElement);
  const fg = css.getPropertyValue("--muted").trim(), line = css.getPropertyValue("--line").trim(), accent = css.getPropertyValue("--accent").trim();
  const axis = { stroke: fg, grid: { stroke: line, width: 1 }, ticks: { stroke: line } };
  const width = () => Math.max(el.clientWidth - 16, 200);
  const u = new uPlot({ width: width(), height: 220, series: [{}, { label: s.path, stroke: accent, width: 1.5, points: { show: false } }],
    axes: [axis, axis], cursor: { drag: { x: true } } }, [xs, ys], el);
  let pending = false;
  const draw = () => {
    pending = false;
    const from = Date.now() / 1000 - ranges[S.range];
    let cut = 0;
    while (cut < xs.length && xs[cut] < from) cut++;
    if (cut) { xs.splice(0, cut); ys.splice(0, cut); }
    u.setData([xs, ys]);
    el.dataset.points = xs.length;
  };
  const onResize = () => u.setSize({ width: width(), height: 220 });
  window.addEventListener("resize", onResize);
  el.dataset.points = xs.length;
  const c = {
    add(x, y) {
      if (xs.length && x <= xs[xs.length - 1]) return;
      xs.push(x); ys.push(y);
      if (!pending) { pending = true; requestAnimationFrame(draw); }
    },
    destroy() { window.removeEventListener("resize", onResize); u.destroy(); },
  };
  S.charts.push(c);
  return c;
}

async function cluster() {
  const st = await api("GET", "/v1/telemetry/cluster");
  return h("section", { "data-view": "cluster" }, h("h1", {}, "Cluster"),
    h("div", { class: "cards" }, card("Instance", st.name), card("Member", st.member ? "yes" : "no", st.member ? "ok" : "bad"), card("Drained", st.drained ? "yes" : "no")),
    h("h2", {}, "Instances"),
    table(["Name", "gNMI", "Capacity", "Drained"], st.members.map((m) => h("tr", {}, h("td", {}, m.name), h("td", {}, m.gnmi), h("td", { class: "num" }, m.capacity), h("td", {}, m.drained ? "yes" : "no"))), "Instances"),
    h("h2", {}, "Targets"),
    table(["Target", "Role here", "Holder", "Epoch", "Replica lag", "Replica"], st.targets.map((t) => h("tr", {}, h("td", {}, t.target), h("td", {}, t.role),
      h("td", {}, t.holder || "–"), h("td", { class: "num" }, t.epoch || "–"), h("td", { class: "num" }, t.replica_lag_seconds ? dur(t.replica_lag_seconds) : "–"),
      h("td", { class: t.replica_error ? "bad" : "" }, t.replica_error || (t.replica_live ? "live" : "–")))), "Targets"),
    st.other_targets && st.other_targets.length ? h("p", { class: "bad" }, `Members with other targets: ${st.other_targets.join(", ")}`) : null);
}

// ---- routing ----

const views = { overview, devices, tasks, calls: callsView, telemetry, cluster };
// Views that show counters refresh; the others wait for the operator.
const refresh = { overview: 2000, devices: 3000, tasks: 3000 };

// edited: a field of the view holds something the operator entered.
const edited = () => [...view.querySelectorAll("input, textarea")].some((el) =>
  el.type === "file" ? el.files.length > 0 : el.type !== "checkbox" && el.value !== el.defaultValue);

async function route() {
  clearTimeout(S.timer);
  const [name, arg] = (location.hash.slice(1).split("?")[0] || "overview").split("/").map(decodeURIComponent);
  const fn = views[name] || overview;
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.hash === "#" + name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (!S.keepStatus) say("");
  S.keepStatus = false;
  const gen = ++S.gen; // a load that ends after the next route is dropped
  const load = async (first) => {
    try {
      const el = await fn(arg);
      if (gen !== S.gen) return;
      if (first) stopStreams();
      // A refresh keeps what the operator is typing or has chosen.
      const busy = edited() || (view.contains(document.activeElement) && document.activeElement.matches("input, textarea, select"));
      if (first || !busy) {
        view.replaceChildren(el);
        view.dataset.loaded = name;
        if (first && name === "telemetry") drawCharts();
      }
    } catch (e) {
      if (e.status === 401 || gen !== S.gen) return; // the login form is up, or another view
      say(e.message, true);
    }
    if (gen === S.gen && refresh[name] && !arg) S.timer = setTimeout(() => load(false), refresh[name]);
  };
  await load(true);
}

function showLogin(msg) {
  S.gen++; // a view still loading does not cover the form
  clearTimeout(S.timer);
  stopStreams();
  $("#nav").hidden = $("#logout").hidden = true;
  const form = $("#login") || S.loginForm;
  form.hidden = false;
  view.replaceChildren(form);
  $("#login-error").textContent = msg || "";
  $("#login-token").focus();
}

async function start() {
  $("#nav").hidden = $("#logout").hidden = false;
  $("#login").hidden = true;
  api("GET", "/v1/telemetry/cluster").then(() => { $("#nav-cluster").hidden = false; }, () => {});
  await route();
  view.focus();
}

S.loginForm = $("#login");
S.series = JSON.parse(sessionStorage.getItem("series") || "[]");
S.loginForm.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const resp = await fetch("/v1/session", { method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: $("#login-token").value.trim() }) });
  if (!resp.ok) { $("#login-error").textContent = resp.status === 401 ? "That is not this daemon's admin token." : `Login failed (${resp.status}).`; return; }
  S.csrf = (await resp.json()).csrf;
  $("#login-token").value = "";
  start();
});
$("#logout").addEventListener("click", async () => {
  await api("DELETE", "/v1/session").catch(() => {});
  S.csrf = "";
  showLogin("Logged out.");
});
window.addEventListener("hashchange", () => { if (S.csrf) route(); });
// Keys 1 to 6 open the views (outside text fields).
document.addEventListener("keydown", (ev) => {
  if (ev.altKey || ev.ctrlKey || ev.metaKey || ev.target.matches("input, textarea, select") || !S.csrf) return;
  const a = document.querySelector(`#nav a[data-key="${ev.key}"]:not([hidden])`);
  if (a) { location.hash = a.hash; ev.preventDefault(); }
});
// At load: a live session (its CSRF token) opens the views, else the login
// form.
fetch("/v1/session", { credentials: "same-origin" }).then(async (resp) => {
  if (!resp.ok) { showLogin(); return; }
  S.csrf = (await resp.json()).csrf;
  start();
}, () => showLogin("The daemon does not answer."));
