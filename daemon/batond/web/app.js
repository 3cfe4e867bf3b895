"use strict";
// The operator's page: views of the JSON API (docs/api.md), refreshed every few
// seconds, and the operator's levers (approve, silence, pause, ...). Each panel
// fetches on its own, so one failing endpoint leaves the others (and the panel's
// last good data) in place. What the page may do is read from the daemon's own
// description (api/v1/openapi.json): a route this daemon lacks is a disabled
// button that says so, and the token is asked for only when the API wants one.
const API = {
  spec: "api/v1/openapi.json",
  status: "api/v1/status",
  incidents: "api/v1/incidents?limit=50",
  runs: "api/v1/runs?limit=30",
  rules: "api/v1/rules",
  series: "api/v1/series",
  silences: "api/v1/silences",
  fleet: "api/v1/fleet",
};
const REFRESH_MS = 5000;
const MAX_CHARTS = 24;
const TOKEN_KEY = "batond.token";  // sessionStorage: kept for this tab only
const SVG = "http://www.w3.org/2000/svg";
const $ = (sel, root = document) => root.querySelector(sel);

// Routes every daemon of this version serves (used when openapi.json is missing).
const CORE_ROUTES = [
  "post /api/v1/incidents/{id}/feedback", "post /api/v1/runs/{id}/approve",
  "post /api/v1/runs/{id}/deny", "post /api/v1/runs/{id}/cancel", "post /api/v1/silences",
  "delete /api/v1/silences/{id}", "post /api/v1/pause", "post /api/v1/resume",
  "post /api/v1/circuits/{target}/reset",
];
const SUPPRESSION_WHY = {
  paused: "batond was paused (kill switch or pause)",
  shadow: "mode: shadow: decided and recorded, not acted on",
  silenced: "a silence matched",
  cooldown: "within the rule's cooldown since the last run",
  already_running: "a run for this key was already running",
  circuit_open: "the target's circuit is open (too many recent runs failed to resolve)",
  blast_radius: "too many hosts affected at once (blast radius)",
  rate_limited: "the global run budget was spent (max_runs)",
  not_owner: "this central instance no longer owned the host's partition (fencing)",
};

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  routes: null,          // Set of "method /path" the daemon serves, or null before known
  tokenNeeded: null,     // true / false from the spec's security, null when unknown
  status: {}, incidents: [], runs: [], rules: [],
  playbookParams: new Map(),  // playbook -> its declared params with defaults (GET rules)
  runCache: new Map(),   // id -> run (from the list or fetched for the view)
  openDetails: new Set(),
};

// -- small DOM helpers -------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) node.append(c instanceof Node ? c : String(c ?? ""));
  return node;
}
function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) {
    // colours go through style: CSS variables are not resolved in presentation attributes
    if (k === "fill" || k === "stroke") node.style.setProperty(k, v); else node.setAttribute(k, v);
  }
  if (text != null) node.textContent = text;
  return node;
}
function badge(text) {
  const t = String(text ?? "–");
  return el("span", { class: "badge b-" + t.replace(/[^a-z_]/gi, "") }, t);
}
function link(hash, text) { return el("a", { href: hash }, text); }
function kv(pairs) {
  const dl = el("dl", { class: "kv" });
  for (const [k, v] of pairs) dl.append(el("dt", {}, k), el("dd", {}, v ?? "–"));
  return dl;
}
function labelText(obj) {
  return Object.entries(obj || {}).map(([k, v]) => `${k}=${v}`).join(", ");
}
function when(ts) {
  if (ts == null) return "–";
  const d = new Date(ts * 1000);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString() : d.toLocaleString();
}
function ago(ts) {
  if (ts == null) return "never";
  return span(Date.now() / 1000 - ts) + " ago";
}
function span(s) {
  if (s == null || !isFinite(s)) return "–";
  if (s < 1) return Math.round(s * 1000) + "ms";
  if (s < 90) return s.toFixed(s < 10 ? 1 : 0) + "s";
  if (s < 5400) return Math.round(s / 60) + "m";
  if (s < 172800) return (s / 3600).toFixed(1) + "h";
  return (s / 86400).toFixed(1) + "d";
}
function fmt(v) {
  if (v == null || !isFinite(v)) return "–";
  const a = Math.abs(v);
  return a >= 1e5 || (a > 0 && a < 1e-2) ? v.toExponential(2) : (+v.toFixed(2)).toString();
}
let toastTimer = null;
function toast(text, bad = false) {
  const t = $("#toast");
  t.textContent = text;
  t.className = "shown" + (bad ? " bad" : "");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.className = ""; }, bad ? 9000 : 4000);
}

// -- talking to the daemon ---------------------------------------------------------
async function getJSON(url) {
  const resp = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
  if (!resp.ok) throw new Error(url + ": HTTP " + resp.status);
  return resp.json();
}
// A mutating call with the tab's token; the daemon's {"error": ...} becomes the message.
async function send(method, url, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (state.token) headers.Authorization = "Bearer " + state.token;
  const resp = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  if (resp.status === 401) setToken("", "the daemon refused the token: enter it again");
  if (!resp.ok) throw new Error((data && (data.error || (data.errors || []).join("; "))) || "HTTP " + resp.status);
  return data;
}
async function loadSpec() {
  try {
    const spec = await getJSON(API.spec);
    const routes = new Set();
    for (const [path, ops] of Object.entries(spec.paths || {})) {
      for (const method of Object.keys(ops)) routes.add(method + " " + path);
    }
    state.routes = routes;
    state.tokenNeeded = Array.isArray(spec.security) && spec.security.length > 0;
  } catch (e) {
    state.routes = new Set(CORE_ROUTES);  // an older daemon: assume the core, and a token
    state.tokenNeeded = true;
  }
  renderToken();
}
function has(route) { return state.routes != null && state.routes.has(route); }

// -- the token: asked once, kept for the tab ---------------------------------------
function setToken(token, note) {
  state.token = token;
  if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
  renderToken(note);
  refresh();
}
function renderToken(note) {
  const box = $("#token-box");
  const needed = state.tokenNeeded !== false;
  box.hidden = !needed;
  $("#token-state").textContent = state.token ? "token set for this tab" : "";
  box.querySelector("input").hidden = !!state.token;
  box.querySelector("button:not([type])").hidden = !!state.token;
  $("#token-forget").hidden = !state.token;
  const ro = $("#readonly-note");
  const readOnly = needed && !state.token;
  ro.textContent = note || (readOnly
    ? "Read-only: this daemon wants an API token for every change. Enter it (top right) to act; it is kept for this tab only."
    : "");
  ro.className = ro.textContent ? "shown" : "";
}
// Why a lever is unavailable right now, or "" when it can be used.
function whyNot(route) {
  if (state.routes == null) return "loading…";
  if (!has(route)) {
    const [method, path] = route.split(" ");
    return `this daemon has no ${method.toUpperCase()} ${path}`;
  }
  if (state.tokenNeeded !== false && !state.token) return "enter the API token (top right) to act";
  return "";
}
// A button for one lever: disabled with its reason (title and aria) when it cannot act.
function lever(label, route, run, opts = {}) {
  const reason = opts.unless || whyNot(route);
  const b = el("button", {
    class: opts.cls || null, disabled: !!reason, title: reason || opts.title || null,
    "data-act": opts.name || label, "aria-label": opts.aria || null,
  }, label);
  if (reason) b.dataset.why = reason;
  b.addEventListener("click", async (ev) => {
    ev.stopPropagation();
    b.disabled = true;
    try {
      const msg = await run();
      if (msg) toast(msg);
    } catch (e) {
      toast(label + ": " + e.message, true);
    } finally {
      refresh();
    }
  });
  return b;
}

// -- header: status, pause, circuits -----------------------------------------------
function renderStatus(s) {
  state.status = s;
  $("#h-node").textContent = s.node ?? "–";
  const mode = $("#h-mode");
  mode.replaceChildren(badge(s.mode));
  if (s.paused) mode.append(" ", badge("paused"));
  if (s.ready === false) mode.append(" ", badge("starting"));
  const sources = Object.entries(s.sources || {});
  $("#h-sources").replaceChildren(...(sources.length ? sources.flatMap(([name, st]) => {
    const b = badge(name);
    b.className = "badge " + (st === "running" || st === "connected" ? "b-ok" : "b-warning");
    b.title = name + ": " + st;
    return [b, " "];
  }) : ["none"]));
  $("#h-rules").textContent = s.rules_loaded ?? "–";
  $("#h-incidents").textContent = s.open_incidents ?? "–";
  $("#h-active").textContent = s.runs_active ?? "–";
  const circuits = s.open_circuits || [];
  const c = $("#h-circuits");
  c.textContent = circuits.length;
  c.style.color = circuits.length ? "var(--bad)" : "";
  const pauseBtn = s.paused
    ? lever("resume", "post /api/v1/resume", async () => { await send("POST", "api/v1/resume"); return "resumed: batond acts again"; }, { cls: "primary" })
    : lever("pause", "post /api/v1/pause", async () => { await send("POST", "api/v1/pause"); return "paused: decisions are recorded, nothing runs"; }, { cls: "danger" });
  $("#h-acts").replaceChildren(pauseBtn);
  renderCircuits(circuits);
}
function renderCircuits(circuits) {
  $("#circuits").hidden = !circuits.length;
  $("#circuit-list").replaceChildren(...circuits.map((x) => el("span", { class: "circuit" },
    el("span", { class: "mono" }, x.target), el("span", { class: "muted" }, "until " + when(x.closes_at)),
    lever("reset", "post /api/v1/circuits/{target}/reset", async () => {
      await send("POST", "api/v1/circuits/" + encodeURIComponent(x.target) + "/reset");
      return "circuit of " + x.target + " reset";
    }, { name: "reset-circuit" }))));
}

// -- incidents ---------------------------------------------------------------------
function incidentLevers(i) {
  const open = i.state === "open";
  const acts = el("span", { class: "acts" },
    el("button", { "data-act": "silence", title: "silence what this incident is about",
      disabled: !!whyNot("post /api/v1/silences"),
      onclick: (ev) => { ev.stopPropagation(); openSilence(i); } }, "silence…"),
    lever("false positive", "post /api/v1/incidents/{id}/feedback", async () => {
      const r = await send("POST", `api/v1/incidents/${i.id}/feedback`, { feedback: "false_positive" });
      return `incident #${i.id} marked a false positive` + (r && r.model_adjusted ? " (model made less sensitive)" : "");
    }, { name: "feedback", unless: i.feedback ? "already marked " + i.feedback : "" }),
    lever("close", "post /api/v1/incidents/{id}/resolve", async () => {
      await send("POST", `api/v1/incidents/${i.id}/resolve`, {});
      return `incident #${i.id} closed`;
    }, { name: "resolve", unless: open ? "" : "already resolved" }));
  const why = whyNot("post /api/v1/silences");
  if (why) acts.firstChild.title = acts.firstChild.dataset.why = why;
  return acts;
}
// An incident whose latest decision started no run says why (circuit_open, ...): an
// event incident is resolved by such a decision at once, so resolved ones say it too.
function noRunWhy(i) {
  if (!i.last_result || i.last_result === "run") return [];
  return [" ", el("small", { class: "muted", title: i.last_reason || "" }, "no run: " + i.last_result)];
}
function renderIncidents(data) {
  const list = data.incidents || [];
  state.incidents = list;
  const rows = list.map((i) => el("tr", { "data-incident": i.id },
    el("td", { class: "mono" }, link("#incident/" + i.id, "#" + i.id)),
    el("td", {}, i.rule),
    el("td", { class: "mono", title: "the key: which thing this incident is about" }, i.key || "–"),
    el("td", {}, i.severity ? badge(i.severity) : "–"),
    el("td", {}, badge(i.state), ...noRunWhy(i)),
    el("td", { title: ago(i.opened_at) }, when(i.opened_at)),
    el("td", { class: "num" }, span((i.resolved_at ?? Date.now() / 1000) - i.opened_at)),
    el("td", {}, incidentLevers(i)),
  ));
  $("#incidents tbody").replaceChildren(...rows);
  const open = list.filter((i) => i.state === "open").length;
  $("#incidents-note").textContent = list.length ? `${open} open of the latest ${list.length}` : "none yet";
}

// The silence dialog, prefilled from the incident: its key's labels (what it groups by)
// and its rule; the operator edits, sets the duration and must give a reason.
function matchersOf(incident) {
  const m = {};
  for (const part of (incident.key || "").split(",")) {
    const at = part.indexOf("=");
    if (at > 0) m[part.slice(0, at)] = part.slice(at + 1);
  }
  if (!Object.keys(m).length) Object.assign(m, incident.labels || {});
  // the rule first (as Alertmanager's alertname): silence this rule for this key
  return incident.rule ? { rule: incident.rule, ...m } : m;
}
function openSilence(incident) {
  const d = $("#silence-dialog");
  $("#silence-for").textContent = incident ? `from incident #${incident.id} (${incident.rule})` : "";
  $("#silence-matchers").value = incident ? labelText(matchersOf(incident)) : "";
  $("#silence-reason").value = "";
  $("#silence-error").textContent = "";
  d.returnValue = "";
  d.showModal();
}
// Matchers as Alertmanager writes them: name=value, name!=value, name=~regex, name!~regex
// (names: rule, severity, playbook, or a label); the daemon checks them against its rules.
function parseMatchers(text) {
  const m = [];
  for (const part of text.split(",").map((x) => x.trim()).filter(Boolean)) {
    if (!/^[^=!~\s]+\s*(=~|!~|!=|=)/.test(part)) throw new Error(`"${part}" is not name=value (or !=, =~, !~)`);
    m.push(part);
  }
  if (!m.length) throw new Error("at least one matcher is needed");
  return m;
}
function matcherText(matchers) {
  if (!Array.isArray(matchers)) return labelText(matchers);
  return matchers.map((x) => (typeof x === "string" ? x : `${x.name}${x.op || "="}${x.value}`)).join(", ");
}
$("#silence-form").addEventListener("submit", async (ev) => {
  const d = $("#silence-dialog");
  if (ev.submitter && ev.submitter.value !== "ok") return;
  ev.preventDefault();
  try {
    const body = {
      matchers: parseMatchers($("#silence-matchers").value),
      duration: $("#silence-duration").value.trim(),
      reason: $("#silence-reason").value.trim(),
    };
    const r = await send("POST", "api/v1/silences", body);
    d.close("ok");
    toast(`silence #${r.id} created until ${when(r.ends_at)}`);
    refresh();
  } catch (e) {
    $("#silence-error").textContent = e.message;
  }
});

// -- rules ------------------------------------------------------------------------
function renderRules(data) {
  const list = data.rules || [];
  state.rules = list;
  state.playbookParams = new Map((data.playbooks || []).map((pb) => [pb.name, pb.params || {}]));
  const rows = list.map((r) => {
    const rates = Object.entries(r.resolve_rates || {}).map(([pb, x]) =>
      `${pb}: ${x.resolved}/${x.runs}` + (x.runs ? ` (${Math.round(100 * x.rate)}%)` : ""));
    const name = el("td", { title: r.description || "" }, r.name);
    if ((r.open_incidents || []).length) name.append(" ", badge("open"));
    if (r.eval_errors) name.append(" ", el("span", { class: "err", title: r.last_error || "" }, `${r.eval_errors} errors`));
    const kind = r.kind === "schedule" ? `schedule ${r.cron || ""}` : [r.kind, r.when ? "when " + r.when : ""].join(" ");
    const runs = el("td", { class: "mono" }, ...(r.run || []).flatMap((pb, n) => [
      n ? " → " : "", pb, " ",
      lever("▶", "post /api/v1/playbooks/{name}/run", async () => { openPlaybook(pb); }, {
        name: "run-playbook", title: `run ${pb} by hand now`, aria: `run ${pb} now`,
      }),
    ]));
    if (r.kind === "schedule") {
      runs.append(" ", lever("trigger", "post /api/v1/schedules/{name}/trigger", async () => {
        await send("POST", `api/v1/schedules/${encodeURIComponent(r.name)}/trigger`, {});
        return `schedule ${r.name} triggered`;
      }));
    }
    return el("tr", { "data-rule": r.name },
      name,
      el("td", { class: "muted" }, kind),
      runs,
      el("td", { class: "num" }, r.kind === "schedule" ? "" : (r.fires ?? 0)),
      el("td", { title: when(r.last_fire ?? r.next) },
        r.kind === "schedule" ? "next " + when(r.next) : ago(r.last_fire)),
      el("td", { class: "mono" }, rates.join("; ") || "–"),
    );
  });
  $("#rules tbody").replaceChildren(...rows);
  $("#rules-note").textContent = `${list.length} loaded`;
}
// The params field starts as the playbook's declared params with their defaults: what a
// run by hand may be given (the daemon refuses others when the playbook declares any).
function openPlaybook(name) {
  $("#playbook-name").textContent = name;
  $("#playbook-params").value = JSON.stringify(state.playbookParams.get(name) || {}, null, 2);
  $("#playbook-error").textContent = "";
  $("#playbook-dialog").showModal();
}
$("#playbook-form").addEventListener("submit", async (ev) => {
  if (ev.submitter && ev.submitter.value !== "ok") return;
  ev.preventDefault();
  const name = $("#playbook-name").textContent;
  try {
    const params = JSON.parse($("#playbook-params").value || "{}");
    if (params === null || typeof params !== "object" || Array.isArray(params)) throw new Error("params must be a JSON object");
    const r = await send("POST", `api/v1/playbooks/${encodeURIComponent(name)}/run`, { params });
    $("#playbook-dialog").close("ok");
    await startedBy(r, `playbook ${name}`);
    refresh();
  } catch (e) {
    $("#playbook-error").textContent = e.message;
  }
});

// After a run by hand: say what the governor decided, and open the run it started once
// the runner has recorded it (the run carries the decision's id).
async function startedBy(answer, what) {
  if (!answer || !answer.started) {
    toast(`${what}: not started: ${(answer && answer.suppressed) || "refused"}`, true);
    return;
  }
  toast(`${what} started`);
  if (answer.decision == null) return;
  for (let tries = 0; tries < 40; tries++) {
    let runs = [];
    try { runs = (await getJSON(API.runs)).runs || []; } catch (e) { runs = []; }  // try again
    const found = runs.find((x) => x.decision_id === answer.decision);
    if (found) {
      toast(`${what} started as run #${found.id}`);
      location.hash = "#run/" + found.id;
      return;
    }
    await new Promise((done) => setTimeout(done, 250));
  }
}

// -- runs -------------------------------------------------------------------------
const STEP_COLOURS = {
  ok: "var(--ok)", failed: "var(--bad)", denied: "var(--bad)",
  timed_out: "var(--warn)", interrupted: "var(--warn)", cancelled: "var(--warn)",
  running: "var(--info)", waiting: "var(--wait)", skipped: "var(--idle)",
};
function stepColour(run, step) {
  // a step still running in a run that waits for approval is the approval gate: draw it waiting
  if (step.status === "running" && run.state === "waiting_approval") return "var(--wait)";
  return STEP_COLOURS[step.status] || "var(--idle)";
}
function runLevers(r) {
  const waiting = r.state === "waiting_approval";
  const done = r.state === "done";
  const notWaiting = waiting ? "" : "only a run waiting for approval can be " ;
  return el("span", { class: "acts" },
    lever("approve", "post /api/v1/runs/{id}/approve", async () => {
      await send("POST", `api/v1/runs/${r.id}/approve`); return `run #${r.id} approved`;
    }, { cls: "primary", unless: waiting ? "" : notWaiting + "approved" }),
    lever("deny", "post /api/v1/runs/{id}/deny", async () => {
      await send("POST", `api/v1/runs/${r.id}/deny`); return `run #${r.id} denied`;
    }, { cls: "danger", unless: waiting ? "" : notWaiting + "denied" }),
    lever("cancel", "post /api/v1/runs/{id}/cancel", async () => {
      await send("POST", `api/v1/runs/${r.id}/cancel`); return `run #${r.id} cancelled`;
    }, { unless: done ? "the run is done" : "" }),
    lever("re-run", "post /api/v1/playbooks/{name}/run", async () => {
      const res = await send("POST", `api/v1/playbooks/${encodeURIComponent(r.playbook)}/run`,
        { params: r.params || {} });
      await startedBy(res, `re-run of #${r.id}`);
    }, { name: "rerun", unless: done ? "" : "the run has not finished", title: "run the same playbook again with the same params" }));
}
function runBar(r, t0, longest, now) {
  const bar = svg("svg", { viewBox: "0 0 1000 22", preserveAspectRatio: "none", role: "img" });
  const end = r.ended_at ?? Math.max(now, t0);
  bar.append(svg("rect", { x: 0, y: 10, width: 1000 * (end - t0) / longest, height: 2, fill: "var(--line)" }));
  for (const s of r.steps || []) {
    const a = s.started_at ?? t0;
    const b = s.ended_at ?? (r.ended_at ?? now);
    const rect = svg("rect", {
      x: 1000 * (a - t0) / longest, y: 3, rx: 2, height: 16,
      width: Math.max(3, 1000 * (b - a) / longest - 2),  // a gap between steps
      fill: stepColour(r, s),
    });
    const waiting = s.status === "running" && r.state === "waiting_approval";
    rect.append(svg("title", {}, `${s.path || s.name} (${s.action}) attempt ${s.attempt}: `
      + (waiting ? "waiting for approval" : s.status) + `, ${span(b - a)}`
      + (s.exit_code != null ? `, exit ${s.exit_code}` : "")));
    bar.append(rect);
  }
  return bar;
}
// which central instance of a fleet ran it (runs.instance; null on a single host)
function instanceTag(r) {
  if (!r.instance) return [];
  return [el("span", { class: "inst mono", "data-instance": r.instance, title: "run by central instance " + r.instance }, r.instance), " "];
}
function renderRuns(data) {
  const list = data.runs || [];
  state.runs = list;
  for (const r of list) state.runCache.set(r.id, r);
  const now = Date.now() / 1000;
  const startOf = (r) => r.started_at ?? r.created_at ?? now;
  const endOf = (r) => r.ended_at ?? Math.max(now, startOf(r));
  // one time axis for all rows: seconds since each run's own start, up to the longest run
  const longest = Math.max(1, ...list.map((r) => endOf(r) - startOf(r)));
  $("#runs-axis").replaceChildren(
    el("div", {}, "run · playbook · key"),
    el("div", { class: "ticks" }, ...[0, 0.25, 0.5, 0.75, 1].map((f) => el("span", {}, "+" + span(f * longest)))),
    el("div", {}, "outcome"));
  const rows = list.map((r) => {
    const who = el("div", { class: "who", title: `rule ${r.rule} · playbook ${r.playbook} · key ${r.key || "(none)"}` },
      link("#run/" + r.id, "#" + r.id), " ", ...instanceTag(r), el("b", {}, r.playbook), " ",
      el("span", { class: "mono muted" }, r.key || ""));
    const outcome = el("div", {}, r.outcome ? badge(r.outcome) : badge(r.state));
    const details = el("details", { class: "steps", "data-run": r.id },
      el("summary", {}, `${(r.steps || []).length} steps, rule ${r.rule}, started ${when(r.started_at)}`
        + (r.resumes ? `, resumes run #${r.resumes}` : "") + " · ", runLevers(r)),
      stepTable(r, false));
    if (state.openDetails.has(r.id)) details.open = true;
    details.addEventListener("toggle", () => {
      if (details.open) state.openDetails.add(r.id); else state.openDetails.delete(r.id);
    });
    return el("div", { class: "run", "data-run-row": r.id }, who, el("div", {}, runBar(r, startOf(r), longest, now)), outcome, details);
  });
  $("#runs-list").replaceChildren(...(rows.length ? rows : [el("p", { class: "muted" }, "no runs yet")]));
  const waiting = list.filter((r) => r.state === "waiting_approval").length;
  $("#runs-note").textContent = (list.length ? `latest ${list.length}` : "") + (waiting ? ` · ${waiting} waiting for approval` : "");
}
function stepOutput(s) {
  const parts = [];
  const detail = s.detail || {};
  if (s.args) parts.push(el("div", { class: "step-args" }, el("b", {}, "args "), el("pre", { class: "out" }, JSON.stringify(s.args, null, 2))));
  if (detail.detail) parts.push(el("div", {}, el("b", {}, "detail "), detail.detail));
  if (detail.status != null) parts.push(el("div", {}, el("b", {}, "HTTP status "), detail.status));
  if (s.stdout) parts.push(el("div", {}, el("b", {}, "stdout"), el("pre", { class: "out" }, s.stdout)));
  if (s.stderr) parts.push(el("div", {}, el("b", {}, "stderr"), el("pre", { class: "out" }, s.stderr)));
  return parts;
}
// full: the run view (every attempt's full stored output); otherwise the runs list's tails
function stepTable(run, full) {
  const steps = run.steps || [];
  const head = ["step", "action", "try", "status", "started", "took", "exit", full ? "" : "output"];
  const rows = steps.map((s) => {
    const waiting = s.status === "running" && run.state === "waiting_approval";
    const tail = ((s.stderr || s.stdout || (s.detail && s.detail.detail) || "") + "").slice(-200);
    return el("tr", { "data-step": s.path || s.name },
      el("td", { class: "mono" }, s.path || s.name),
      el("td", {}, s.action),
      el("td", { class: "num" }, s.attempt),
      el("td", {}, badge(waiting ? "waiting_approval" : s.status)),
      el("td", {}, when(s.started_at)),
      el("td", { class: "num" }, span(s.duration_s ?? (s.started_at ? Date.now() / 1000 - s.started_at : null))),
      el("td", { class: "num" }, s.exit_code ?? ""),
      full ? el("td", {}, ...stepOutput(s)) : el("td", { class: "mono" }, tail));
  });
  for (const name of run.not_reached || []) {
    rows.push(el("tr", { class: "not-reached", "data-step": name }, el("td", { class: "mono" }, name),
      el("td", { colspan: 7 }, "not reached")));
  }
  return el("table", {}, el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {}, h)))), el("tbody", {}, ...rows));
}

// -- the detail views (#run/ID, #incident/ID) ----------------------------------------
function isEscalation(run) {
  const rule = state.rules.find((x) => x.name === run.rule);
  return !!rule && !(rule.run || []).includes(run.playbook);
}
function runLink(id) {
  const x = state.runs.find((y) => y.id === id) || state.runCache.get(id);
  return el("span", { "data-related": id }, link("#run/" + id, `run #${id}`),
    x ? el("span", {}, ` ${x.playbook} `, badge(x.outcome || x.state)) : "");
}
// escalations come from the journal (escalates / escalated_to); other runs of the same
// decision are the next candidates or the ones tried before
function relatedRuns(run) {
  const out = [];
  if (run.resumes) out.push(["resumes", link("#run/" + run.resumes, "run #" + run.resumes)]);
  for (const x of state.runs.filter((y) => y.resumes === run.id)) out.push(["resumed by", link("#run/" + x.id, "run #" + x.id)]);
  if (run.escalates) out.push(["escalates", runLink(run.escalates)]);
  if (run.escalated_to) out.push(["escalated to", runLink(run.escalated_to)]);
  const linked = new Set([run.escalates, run.escalated_to]);
  const same = state.runs.filter((x) => x.id !== run.id && !linked.has(x.id) && x.decision_id != null && x.decision_id === run.decision_id);
  for (const x of same.sort((a, b) => a.id - b.id)) {
    out.push([x.id > run.id ? "next candidate" : "tried before", runLink(x.id)]);
  }
  return out;
}
async function renderRunView(id) {
  let run = null;
  try { run = await getJSON("api/v1/runs/" + id); } catch (e) { run = state.runCache.get(id); }
  if (!run) return [el("p", { class: "err" }, `run #${id} not found`)];
  state.runCache.set(id, run);
  const meta = [
    ["state", el("span", {}, badge(run.state), " ", run.outcome ? badge(run.outcome) : "")],
    ...(run.instance ? [["instance", el("span", { class: "mono", "data-instance": run.instance }, run.instance)]] : []),
    ["rule", run.rule], ["playbook", run.playbook + (run.escalates || isEscalation(run) ? " (escalation)" : "")],
    ["key", el("span", { class: "mono" }, run.key || "(none)")],
    ["incident", run.incident_id ? link("#incident/" + run.incident_id, "incident #" + run.incident_id) : "–"],
    ["created", when(run.created_at)], ["started", when(run.started_at)], ["ended", when(run.ended_at)],
    ["took", run.ended_at && run.started_at ? span(run.ended_at - run.started_at) : "–"],
    ["params", el("span", { class: "mono" }, JSON.stringify(run.params || {}))],
    ["labels", el("span", { class: "mono" }, labelText(run.labels))],
    ...relatedRuns(run),
    ...(run.approvals || []).map((a) => ["approval", `${a.verdict} by ${a.by || "operator"} at ${when(a.at)}`]),
  ];
  return [
    el("h2", {}, `Run #${run.id} `, el("small", {}, run.playbook), link("#", "close view")),
    el("div", { class: "acts" }, runLevers(run)),
    kv(meta),
    stepTable(run, true),
  ];
}
function decisionRows(decisions) {
  return decisions.map((d) => el("tr", { "data-decision": d.id },
    el("td", { class: "mono" }, d.id), el("td", {}, when(d.ts)), el("td", {}, d.playbook || "–"),
    el("td", {}, d.suppressed ? badge(d.suppressed) : badge("run")),
    el("td", {}, d.suppressed ? (d.reason || SUPPRESSION_WHY[d.suppressed] || d.suppressed)
      : "a run was started", d.cause ? el("small", { class: "muted" }, ` (${d.cause})`) : "")));
}
async function renderIncidentView(id) {
  let inc = null;
  if (has("get /api/v1/incidents/{id}")) {
    try { inc = await getJSON("api/v1/incidents/" + id); } catch (e) { inc = null; }
  }
  inc = inc || state.incidents.find((x) => x.id === id);
  if (!inc) return [el("p", { class: "err" }, `incident #${id} not found`)];
  const runIds = inc.runs || state.runs.filter((r) => r.incident_id === id).map((r) => r.id);
  const meta = [
    ["state", badge(inc.state)], ["rule", inc.rule], ["key", el("span", { class: "mono" }, inc.key || "(none)")],
    ["severity", inc.severity ? badge(inc.severity) : "–"], ["opened", when(inc.opened_at)],
    ["resolved", when(inc.resolved_at)], ["labels", el("span", { class: "mono" }, labelText(inc.labels))],
    ["feedback", inc.feedback || "–"],
    ["runs", el("span", {}, ...runIds.flatMap((r) => [link("#run/" + (r.id ?? r), "#" + (r.id ?? r)), " "]))],
  ];
  const decisions = inc.decisions
    ? el("table", {}, el("thead", {}, el("tr", {}, ...["#", "at", "playbook", "result", "why"].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...decisionRows(inc.decisions)))
    : el("p", { class: "muted" }, "this daemon does not serve one incident's decisions (GET /api/v1/incidents/{id})");
  return [
    el("h2", {}, `Incident #${inc.id} `, el("small", {}, inc.rule), link("#", "close view")),
    incidentLevers(inc), kv(meta), el("h2", {}, "Decisions"), decisions,
  ];
}
async function renderView() {
  const view = $("#view");
  const m = /^#(run|incident)\/(\d+)$/.exec(location.hash);
  if (!m) { view.className = ""; view.replaceChildren(); return; }
  const id = Number(m[2]);
  const parts = m[1] === "run" ? await renderRunView(id) : await renderIncidentView(id);
  view.replaceChildren(...parts);
  view.className = "shown";
  view.dataset.view = m[1] + "/" + id;
}

// -- charts: value, anomaly score, thresholds ---------------------------------------
// Units from the metric's name (Prometheus habits): bytes scale in 1024s, percent shows %.
function unitOf(metric) {
  if (/(_percent|_pct|_ratio_percent)$/.test(metric)) return "percent";
  if (/bytes_per_s(econd)?$/.test(metric)) return "bytes/s";  // the host's disk and net rates
  if (/bytes/.test(metric)) return "bytes";
  if (/_seconds$/.test(metric)) return "seconds";
  return "";
}
function withUnit(v, unit) {
  if (v == null || !isFinite(v)) return "–";
  if (unit === "percent") return (+v.toFixed(Math.abs(v) < 10 ? 1 : 0)) + "%";
  if (unit === "seconds") return span(v);
  if (unit === "bytes" || unit === "bytes/s") {
    const n = bytePower(v), x = Math.abs(v) / 1024 ** n;
    return (v < 0 ? "-" : "") + (+x.toFixed(x < 10 ? 2 : x < 100 ? 1 : 0)) + " " + BYTE_NAMES[n]
      + (unit === "bytes/s" ? "/s" : "");
  }
  return fmt(v);
}
const BYTE_NAMES = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
function bytePower(v) {
  let x = Math.abs(v), n = 0;
  while (x >= 1024 && n < BYTE_NAMES.length - 1) { x /= 1024; n++; }
  return n;
}
// The value axis: ticks at round numbers of the unit's own scale (GiB for a series of
// gigabytes), each labelled with the decimals its step needs: 3.005 GiB, 3.010 GiB, ...
// rather than four ticks that all read "3 GiB".
function axisTicks(lo, hi, unit) {
  if (unit === "seconds") return niceTicks(lo, hi, 4).map((v) => [v, span(v)]);
  const bytes = unit === "bytes" || unit === "bytes/s";
  const scale = bytes ? 1024 ** bytePower(Math.max(Math.abs(lo), Math.abs(hi))) : 1;
  const suffix = bytes ? " " + BYTE_NAMES[Math.round(Math.log2(scale) / 10)] + (unit === "bytes/s" ? "/s" : "")
    : unit === "percent" ? "%" : "";
  const ticks = niceTicks(lo / scale, hi / scale, 4);
  const step = ticks.length > 1 ? ticks[1] - ticks[0] : 1;
  let decimals = 0;
  while (decimals < 6 && Math.abs(Math.round(step * 10 ** decimals) - step * 10 ** decimals) > 1e-6) decimals++;
  return ticks.map((t) => [t * scale,
    !unit && Math.abs(t) >= 1e5 ? fmt(t) : t.toFixed(decimals) + suffix]);
}
function niceTicks(lo, hi, count) {
  const raw = (hi - lo) / Math.max(1, count);
  const mag = Math.pow(10, Math.floor(Math.log10(raw || 1)));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
}
// Rule thresholds for a metric: "value > 90" in the when: of rules matching it.
function thresholdsFor(metric) {
  const out = [];
  for (const r of state.rules) {
    if (r.metric !== metric || !r.when) continue;
    const re = /\bvalue\s*(>=|<=|>|<)\s*(-?\d+(?:\.\d+)?(?:e-?\d+)?)/g;
    let m;
    while ((m = re.exec(r.when)) !== null) out.push({ rule: r.name, op: m[1], value: Number(m[2]) });
  }
  return out;
}
function chartFrame(series, unit) {
  const labels = labelText(series.labels);
  return el("div", { class: "chart", "data-metric": series.metric },
    el("div", { class: "title" }, el("b", {}, series.metric + (unit ? ` (${unit === "percent" ? "%" : unit})` : "")),
      el("span", { class: "muted" }, labels)));
}
function chart(series) {
  const unit = unitOf(series.metric);
  const wrap = chartFrame(series, unit);
  const pts = (series.points || []).filter((p) => isFinite(p[1]));
  if (pts.length < 2) {
    wrap.append(el("div", { class: "muted" }, "not enough points yet"));
    return wrap;
  }
  const W = 600, H = 150, L = 58, R = 34, T = 8, B = 20;
  const box = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" });
  const rules = thresholdsFor(series.metric);
  const t0 = pts[0][0], t1 = pts[pts.length - 1][0] || t0 + 1;
  let lo = Math.min(...pts.map((p) => p[1]), ...rules.map((x) => x.value));
  let hi = Math.max(...pts.map((p) => p[1]), ...rules.map((x) => x.value));
  if (unit === "percent") { lo = Math.min(lo, 0); hi = Math.max(hi, Math.min(100, hi * 1.1)); }
  if (hi === lo) { hi += 1; lo -= 1; }
  const X = (t) => L + (W - L - R) * (t - t0) / Math.max(1e-9, t1 - t0);
  const Y = (v) => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
  const S = (s) => T + (H - T - B) * (1 - Math.min(1, Math.max(0, s)));  // score axis 0..1
  for (const [v, label] of axisTicks(lo, hi, unit)) {
    box.append(svg("line", { x1: L, x2: W - R, y1: Y(v), y2: Y(v), stroke: "var(--line)" }));
    box.append(svg("text", { x: L - 4, y: Y(v) + 4, "text-anchor": "end", "font-size": 10, fill: "var(--muted)", "data-axis": "value" }, label));
  }
  for (const s of [0, 0.5, 1]) {
    box.append(svg("text", { x: W - R + 4, y: S(s) + 4, "font-size": 10, fill: "var(--bad)", "data-axis": "score" }, s.toFixed(1)));
  }
  const ticks = 4;
  for (let k = 0; k <= ticks; k++) {
    const ts = t0 + (t1 - t0) * k / ticks;
    box.append(svg("text", { x: X(ts), y: H - 5, "text-anchor": k === 0 ? "start" : k === ticks ? "end" : "middle",
      "font-size": 10, fill: "var(--muted)" }, new Date(ts * 1000).toLocaleTimeString()));
  }
  for (const th of rules) {
    box.append(svg("line", { x1: L, x2: W - R, y1: Y(th.value), y2: Y(th.value), stroke: "var(--warn)", "stroke-dasharray": "6 3", "vector-effect": "non-scaling-stroke" }));
    box.append(svg("text", { x: W - R - 4, y: Y(th.value) - 3, "text-anchor": "end", "font-size": 10, fill: "var(--warn)", "data-threshold": th.rule },
      `${th.rule}: ${th.op} ${withUnit(th.value, unit)}`));
  }
  const threshold = series.threshold ?? 1;
  box.append(svg("line", { x1: L, x2: W - R, y1: S(threshold), y2: S(threshold), stroke: "var(--bad)", "stroke-dasharray": "2 3", "stroke-opacity": 0.6, "vector-effect": "non-scaling-stroke" }));
  box.append(svg("polyline", {
    points: pts.map((p) => `${X(p[0]).toFixed(1)},${S(p[2] ?? 0).toFixed(1)}`).join(" "),
    fill: "none", stroke: "var(--bad)", "stroke-width": 1, "stroke-opacity": 0.7, "vector-effect": "non-scaling-stroke", "data-line": "score",
  }));
  box.append(svg("polyline", {
    points: pts.map((p) => `${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" "),
    fill: "none", stroke: "var(--info)", "stroke-width": 1.5, "vector-effect": "non-scaling-stroke", "data-line": "value",
  }));
  for (const p of pts) {
    if ((p[2] ?? 0) < threshold) continue;
    const c = svg("circle", { cx: X(p[0]), cy: Y(p[1]), r: 3, fill: "var(--bad)" });
    c.append(svg("title", {}, `${when(p[0])}: ${withUnit(p[1], unit)}, score ${p[2].toFixed(3)}`));
    box.append(c);
  }
  wrap.append(box);
  const last = pts[pts.length - 1];
  // sensitivity below the model's own: lowered by false_positive feedback
  const lowered = series.model_sensitivity != null && series.sensitivity < series.model_sensitivity;
  wrap.querySelector(".title").append(el("span", {},
    `now ${withUnit(last[1], unit)}, score `, el("b", {}, (last[2] ?? 0).toFixed(2)),
    el("span", { class: "muted" }, ` / ${fmt(threshold)}`),
    el("span", { class: lowered ? "" : "muted" },
      `, sensitivity ${fmt(series.sensitivity)}` + (lowered
        ? ` (lowered from ${fmt(series.model_sensitivity)} by false-positive feedback)` : ""))));
  return wrap;
}
function renderSeries(data) {
  const list = data.series || [];
  const shown = list.slice(0, MAX_CHARTS);
  $("#charts").replaceChildren(...(shown.length ? shown.map(chart)
    : [el("p", { class: "muted" }, "no series scored yet")]));
  $("#series-note").textContent = list.length > shown.length
    ? `${shown.length} of ${list.length} series (filter to see others)` : `${list.length} series`;
}
function seriesURL() {
  const q = new URLSearchParams();
  for (const name of ["metric", "host"]) {
    const v = $(`#series-filter [name=${name}]`).value.trim();
    if (v) q.set(name, v);
  }
  const s = q.toString();
  return API.series + (s ? "?" + s : "");
}

// -- the fleet (a central instance only) ----------------------------------------------
// GET /api/v1/fleet answers only on a central instance (404 elsewhere: the section stays
// hidden). Members and owners are as the database said at this instance's last heartbeat.
const OWNER_COLOURS = ["#3578e5", "#2e9d5b", "#b28be0", "#e0902c", "#1b9aaa", "#c2417a", "#7a8b2e", "#8d6e63"];
// An agent's last_seen is written at most once per batch_interval (at a heartbeat), so a
// live agent's can be about two intervals old: it is drawn stale after four, or when the
// API says so (live: false / stale: true). The interval is the view's batch_interval when
// it has one, else the default 10 s.
const AGENT_STALE_INTERVALS = 4;
const DEFAULT_BATCH_INTERVAL_S = 10;
function ownerColours(view) {
  const names = [...new Set([...(view.members || []).map((m) => m.instance), ...Object.values(view.owners || {})])].sort();
  return new Map(names.map((n, i) => [n, OWNER_COLOURS[i % OWNER_COLOURS.length]]));
}
function renderFleetSelf(view) {
  const held = (view.held || []).map((h) => h.partition);
  $("#fleet-self").replaceChildren(kv([
    ["this instance", el("span", { class: "mono", "data-fleet-self": view.instance }, view.instance)],
    ["database session", el("span", { "data-fleet-state": view.state }, badge(view.state))],
    ["holds", `${held.length} of ${view.partitions} partitions` + (held.length ? ": " + held.join(", ") : "")],
    ["as of", el("span", { title: when(view.as_of) }, ago(view.as_of))],
  ]));
}
function renderFleetMembers(view, colours) {
  const rows = (view.members || []).map((m) => el("tr", { "data-member": m.instance, "data-live": String(!!m.live) },
    el("td", { class: "mono" }, el("i", { class: "swatch", style: `background:${colours.get(m.instance)}` }), " ", m.instance,
      m.instance === view.instance ? el("small", { class: "muted" }, " (this one)") : ""),
    el("td", { class: "mono" }, m.host || "–"),
    el("td", { title: m.live ? "seen within the lease, its database session connected" : "not seen within the lease or its database session is gone: its partitions are not counted as its" },
      badge(m.live ? "live" : "stale")),
    el("td", { title: when(m.last_seen) }, ago(m.last_seen)),
    ...memberHolds(m)));
  $("#fleet-members tbody").replaceChildren(...rows);
}
// a member not live holds nothing (its locks went with its session): what it last said is muted
function memberHolds(m) {
  const held = m.held || [];
  if (m.live) return [el("td", { class: "num" }, held.length), el("td", { class: "mono" }, held.join(", ") || "–")];
  return [el("td", { class: "num" }, 0),
    el("td", { class: "mono muted" }, held.length ? "none (last said: " + held.join(", ") + ")" : "none")];
}
function renderFleetMap(view, colours) {
  const owners = view.owners || {};
  const mine = new Set((view.held || []).map((h) => h.partition));
  const cells = [];
  for (let p = 0; p < view.partitions; p++) {
    const owner = owners[String(p)];
    const cell = el("span", {
      class: "pcell" + (owner ? "" : " unowned") + (mine.has(p) ? " mine" : ""),
      "data-partition": p, "data-owner": owner || "",
      title: `partition ${p}: ` + (owner ? "owned by " + owner : "unowned (no live member holds it)"),
      style: owner ? `background:${colours.get(owner)}` : null,
    }, p);
    cells.push(cell);
  }
  $("#fleet-map").replaceChildren(...cells);
  const unowned = (view.unowned || []).length;
  $("#fleet-map-note").textContent = unowned ? `${unowned} unowned: ${view.unowned.join(", ")}` : "every partition owned";
  $("#fleet-map-note").className = unowned ? "err" : "";
  $("#fleet-legend").replaceChildren(...[...colours].map(([name, c]) => el("span", {}, el("i", { style: `background:${c}` }), name)),
    el("span", {}, el("i", { class: "unowned-key" }), "unowned"), el("span", {}, el("i", { class: "mine-key" }), "held by this instance"));
}
function agentStale(a, view) {
  if (a.live === false || a.stale === true) return true;
  if (a.live === true || a.stale === false) return false;
  const interval = view.batch_interval || DEFAULT_BATCH_INTERVAL_S;
  return a.last_seen == null || Date.now() / 1000 - a.last_seen > AGENT_STALE_INTERVALS * interval;
}
function renderFleetAgents(view) {
  const box = $("#fleet-agents-box");
  box.hidden = !Array.isArray(view.agents);
  if (box.hidden) return;
  const owners = view.owners || {};
  const rows = view.agents.map((a) => {
    const stale = agentStale(a, view);
    return el("tr", { "data-agent": a.host, "data-stale": String(stale) },
      el("td", { class: "mono" }, a.host, " ", stale ? badge("stale") : ""),
      el("td", { class: "num" }, a.partition ?? "–"),
      el("td", { class: "mono" }, owners[String(a.partition)] || "unowned"),
      el("td", { title: when(a.last_seen) }, ago(a.last_seen)),
      el("td", { class: "num" }, a.seq ?? "–"),
      el("td", { class: "mono" }, labelText(a.labels)));
  });
  $("#fleet-agents tbody").replaceChildren(...(rows.length ? rows
    : [el("tr", {}, el("td", { colspan: 6, class: "muted" }, "no agent seen yet"))]));
  const stale = view.agents.filter((a) => agentStale(a, view)).length;
  const total = view.agent_count ?? view.agents.length;
  $("#fleet-agents-note").textContent = (total > view.agents.length
    ? `the ${view.agents.length} most recently seen of ${total}` : `${total} seen`)
    + (stale ? `, ${stale} of these stale` : "");
}
function renderFleet(view) {
  $("#fleet").hidden = false;
  const colours = ownerColours(view);
  renderFleetSelf(view);
  renderFleetMembers(view, colours);
  renderFleetMap(view, colours);
  renderFleetAgents(view);
  const live = (view.members || []).filter((m) => m.live).length;
  $("#fleet-note").textContent = `central instance ${view.instance} · ${live} live of ${(view.members || []).length} members · ${view.partitions} partitions`;
}
// Not a central instance (404): no section, and not a failed request either.
async function fleetPanel() {
  const section = $("#fleet");
  try {
    const resp = await fetch(API.fleet, { headers: { Accept: "application/json" }, cache: "no-store" });
    if (resp.status === 404) { section.hidden = true; section.dataset.fleet = "none"; return true; }
    if (!resp.ok) throw new Error(API.fleet + ": HTTP " + resp.status);
    renderFleet(await resp.json());
    section.dataset.fleet = "central";
    $("#fleet [data-error]").textContent = "";
    return true;
  } catch (e) {
    $("#fleet [data-error]").textContent = "unavailable: " + e.message;
    return false;
  }
}

// -- silences ---------------------------------------------------------------------
function renderSilences(data) {
  const list = data.silences || [];
  $("#silences tbody").replaceChildren(...list.map((s) => el("tr", { "data-silence": s.id },
    el("td", { class: "mono" }, s.id),
    el("td", { class: "mono" }, matcherText(s.matchers)),
    el("td", {}, s.reason ?? ""),
    el("td", { title: when(s.ends_at) }, s.ends_at ? "in " + span(s.ends_at - Date.now() / 1000) : "–"),
    el("td", {}, lever("expire", "delete /api/v1/silences/{id}", async () => {
      await send("DELETE", "api/v1/silences/" + s.id); return `silence #${s.id} expired`;
    }, { name: "expire-silence" })),
  )));
  $("#silences-note").textContent = list.length ? `${list.length} active` : "none";
}

// -- refreshing ---------------------------------------------------------------------
// Runs one panel's refresh; a failure is shown in the panel, its old content stays.
async function panel(id, url, render) {
  const box = $("#" + id + " [data-error]") || null;
  try {
    render(await getJSON(url));
    if (box) box.textContent = "";
    return true;
  } catch (e) {
    if (box) box.textContent = "unavailable: " + e.message;
    return false;
  }
}
let busy = false, again = false;
async function refresh() {
  if (busy) { again = true; return; }  // a slow daemon must not pile up requests
  busy = true;
  try {
    if (state.routes == null) await loadSpec();
    const results = await Promise.all([
      panel("status", API.status, renderStatus),
      panel("rules", API.rules, renderRules),
      panel("incidents", API.incidents, renderIncidents),
      panel("runs", API.runs, renderRuns),
      panel("silences", API.silences, renderSilences),
      fleetPanel(),
    ]);
    results.push(await panel("series", seriesURL(), renderSeries));  // after rules: thresholds
    await renderView();
    const failed = results.filter((ok) => !ok).length;
    const r = $("#refreshed");
    r.textContent = (failed ? `${failed} of ${results.length} requests failed · ` : "")
      + "updated " + new Date().toLocaleTimeString();
    r.style.color = failed ? "var(--bad)" : "";
    document.body.dataset.refreshed = String(Date.now());
  } finally {
    busy = false;
    if (again) { again = false; refresh(); }
  }
}
$("#series-filter").addEventListener("submit", (e) => { e.preventDefault(); refresh(); });
$("#token-box").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = $("#token-box input");
  const t = input.value.trim();
  input.value = "";
  if (t) setToken(t, "");
});
$("#token-forget").addEventListener("click", () => setToken("", ""));
window.addEventListener("hashchange", () => { renderView(); window.scrollTo(0, 0); });
refresh();
setInterval(refresh, REFRESH_MS);
