// The Sluice dashboard: one page, routed by the URL's fragment (#/...),
// reading and acting through this broker's JSON API (/api/v1/). No build
// step and no library: the broker embeds this file as it is.
//
// Every text from the broker (queue names, errors, payloads) goes into the
// page as text nodes (el() below), never as HTML.
"use strict";

const REFRESH_MS = 2000;
// How much history the overview's charts keep: samples every REFRESH_MS.
const HISTORY_SAMPLES = 150;
const TOKEN_KEY = "sluice.token";
const STATES = ["READY", "SCHEDULED", "LEASED", "SUCCEEDED", "DEAD", "CANCELLED"];
const PURGEABLE = ["DEAD", "SUCCEEDED", "CANCELLED", "READY", "SCHEDULED"];

const app = {
  // {auth, role, actions} from /api/v1/session, once a token (if needed) works.
  session: null,
  // The last Stats document and the samples of the charts.
  stats: null,
  history: [],
  // The current view: {key, refresh()}; refresh re-reads and redraws it.
  view: null,
  timer: null,
};

// ---- DOM helpers --------------------------------------------------------

// el("a", {href: "#/"}, "text", child...): an element with attributes and
// children; strings become text nodes; null and false children are skipped.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

// Replaces the children of `container`, keeping keyboard focus on the
// element with the same data-key, so that a live refresh does not throw
// the user out of a table they are tabbing through.
function replace(container, ...children) {
  const focused = document.activeElement;
  const key = focused && container.contains(focused) ? focused.dataset.key : undefined;
  container.replaceChildren();
  append(container, children);
  if (key !== undefined) {
    const again = container.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (again) again.focus();
  }
}

function main() {
  return document.getElementById("main");
}

// ---- the API ------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
  toString() {
    return `${this.code}: ${this.message}`;
  }
}

async function api(method, path) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, { method, headers, credentials: "omit", cache: "no-store" });
  } catch (e) {
    throw new ApiError(0, "UNAVAILABLE", `the broker did not answer (${e.message})`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    body = null;
  }
  if (!response.ok) {
    const code = (body && body.code) || `HTTP ${response.status}`;
    const message = (body && body.message) || response.statusText;
    // Asked for a token: say why only when one was given and refused.
    if (response.status === 401) needToken(token ? `${code}: ${message}` : "");
    throw new ApiError(response.status, code, message);
  }
  return body;
}

const get = (path) => api("GET", path);
const post = (path) => api("POST", path);
const enc = encodeURIComponent;

// ---- formatting ---------------------------------------------------------

function badge(state) {
  const label = { active: "Active", paused: "Paused" }[state] || state;
  return el("span", { class: `badge state-${state}` }, label);
}

function ago(seconds) {
  const s = Math.abs(seconds);
  let text;
  if (s < 1) text = "now";
  else if (s < 60) text = `${Math.round(s)} s`;
  else if (s < 3600) text = `${Math.floor(s / 60)} min${Math.floor(s % 60) ? ` ${Math.floor(s % 60)} s` : ""}`;
  else if (s < 86400) text = `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  else text = `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  if (text === "now") return text;
  return seconds >= 0 ? `${text} ago` : `in ${text}`;
}

// A timestamp: relative in the text, absolute (local and UTC) on hover.
function when(iso) {
  if (!iso) return el("span", { class: "muted" }, "—");
  const date = new Date(iso);
  const title = `${date.toLocaleString()} (${iso})`;
  return el("time", { datetime: iso, title }, ago((Date.now() - date.getTime()) / 1000));
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  return ago(seconds).replace(" ago", "");
}

function rate(perSecond) {
  if (!perSecond) return "0";
  return perSecond >= 100 ? perSecond.toFixed(0) : perSecond.toFixed(1);
}

function firstLine(text, max = 120) {
  const line = (text || "").split("\n")[0];
  return line.length > max ? `${line.slice(0, max)}…` : line;
}

function jobLink(id) {
  return el("a", { href: `#/jobs/${enc(id)}`, class: "id", "data-key": `job-${id}` }, id);
}

function queueLink(name) {
  return el("a", { href: `#/queues/${enc(name)}`, "data-key": `queue-${name}` }, name);
}

function table(headers, rows, attrs) {
  const head = el("tr", {}, headers.map((h) => {
    const [label, cls] = Array.isArray(h) ? h : [h, null];
    return el("th", { scope: "col", class: cls }, label);
  }));
  return el("div", { class: "table-wrap" }, el("table", attrs || {}, el("thead", {}, head), el("tbody", {}, rows)));
}

// Paging through ListJobs in `container`: the page tokens that led to the
// current page (for Previous), and the buttons; `refresh` redraws the view.
function pager(container, refresh) {
  const tokens = [""];
  const button = (key, label, move) => el("button", { type: "button", "data-key": key, onclick: () => { move(); refresh(); } }, label);
  return {
    // The current page's token, for the query ("" for the first page).
    token: () => tokens[tokens.length - 1],
    draw(next) {
      replace(container,
        tokens.length > 1 ? button("prev", "Previous page", () => tokens.pop()) : null,
        next ? button("next", "Next page", () => tokens.push(next)) : null);
    },
  };
}

// One term and its value of a <dl class="fields">.
function field(label, value, attrs) {
  return [el("dt", {}, label), el("dd", attrs || {}, value)];
}

function empty(...children) {
  return el("div", { class: "empty" }, ...children);
}

function errorLine(id) {
  return el("p", { class: "error", role: "alert", id });
}

// Runs `action` (a promise-returning function) from `button`, showing its
// failure in `errorNode`; the button is disabled while it runs.
async function act(button, errorNode, action) {
  errorNode.textContent = "";
  button.disabled = true;
  try {
    await action();
    await tick();
  } catch (e) {
    errorNode.textContent = e instanceof ApiError ? e.toString() : String(e);
  } finally {
    button.disabled = false;
  }
}

function confirmDialog(text, okLabel) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = okLabel;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

// ---- the token ----------------------------------------------------------

function needToken(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  app.session = null;
  showTokenForm(message);
}

function showTokenForm(message) {
  stopTimer();
  const input = el("input", { type: "password", id: "token", autocomplete: "off", required: true, spellcheck: "false" });
  const form = el("form", { class: "toolbar", onsubmit: (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    start();
  } },
  el("label", { for: "token" }, "Token"), input, el("button", { type: "submit", class: "primary" }, "Open"));
  replace(main(),
    el("h1", {}, "This broker needs a token"),
    el("p", {}, "Paste an admin token, or a viewer token to look without changing anything. ",
      "It is kept only while this tab is open."),
    form,
    el("p", { class: "error", role: "alert" }, message || ""));
  input.focus();
}

// ---- live refresh -------------------------------------------------------

function stopTimer() {
  if (app.timer) clearInterval(app.timer);
  app.timer = null;
}

async function tick() {
  try {
    app.stats = await get("/api/v1/stats");
    sample(app.stats);
    document.getElementById("live").textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    document.getElementById("live").textContent = `Not updated: ${e}`;
    return;
  }
  if (app.view) await app.view.refresh();
}

function sample(stats) {
  const sum = (field) => stats.queues.reduce((total, q) => total + (q[field] || 0), 0);
  app.history.push({
    at: Date.now(),
    enqueued: sum("enqueued_per_second"),
    acked: sum("acked_per_second"),
    failed: sum("failed_per_second"),
    ready: sum("ready"),
    scheduled: sum("scheduled"),
    leased: sum("leased"),
    dead: sum("dead"),
  });
  if (app.history.length > HISTORY_SAMPLES) app.history.shift();
}

// ---- the chart ----------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  return node;
}

// A line chart of `series` ([{label, field}]) over the history.
function chart(title, series, unit) {
  const width = 600;
  const height = 140;
  const top = 4;
  const bottom = 2;
  const history = app.history;
  const max = Math.max(1, ...history.flatMap((s) => series.map((x) => s[x.field])));
  const span = HISTORY_SAMPLES * REFRESH_MS;
  const now = Date.now();
  const node = svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img" });
  const latest = history[history.length - 1];
  const summary = series.map((x) => `${x.label} ${latest ? rate(latest[x.field]) : 0}${unit}`).join(", ");
  node.setAttribute("aria-label", `${title} over the last ${span / 60000} minutes; now ${summary}`);
  node.append(svg("line", { class: "axis", x1: 0, y1: height - bottom, x2: width, y2: height - bottom }));
  series.forEach((x, i) => {
    const points = history.map((s) => {
      const px = width - ((now - s.at) / span) * width;
      const py = height - bottom - (s[x.field] / max) * (height - bottom - top);
      return `${px.toFixed(1)},${py.toFixed(1)}`;
    });
    node.append(svg("polyline", { class: `series-${i}`, points: points.join(" ") }));
  });
  const legend = el("ul", { class: "legend" }, series.map((x, i) =>
    el("li", {}, el("span", { class: `swatch series-${i}`, "aria-hidden": "true" }), `${x.label}: ${latest ? rate(latest[x.field]) : 0}${unit}`)));
  // Labels are HTML, not SVG text: the drawing stretches to the width.
  return el("figure", {}, el("figcaption", {}, title, el("span", { class: "muted scale" }, `max ${rate(max)}${unit}`)),
    node, el("div", { class: "axis-labels muted" }, el("span", {}, `${span / 60000} min ago`), el("span", {}, "now")), legend);
}

// ---- pages --------------------------------------------------------------

function overview() {
  const charts = el("div", { class: "charts" });
  const queues = el("section", { "aria-labelledby": "queues-title" });
  const failures = el("section", { "aria-labelledby": "failures-title" });
  replace(main(), el("h1", { id: "queues-title" }, "Queues"), charts, queues, failures);
  return {
    key: "overview",
    async refresh() {
      const stats = app.stats;
      replace(charts,
        chart("Throughput", [
          { label: "Enqueued", field: "enqueued" },
          { label: "Acked", field: "acked" },
          { label: "Failed", field: "failed" },
        ], "/s"),
        chart("Depth", [
          { label: "Ready", field: "ready" },
          { label: "Scheduled", field: "scheduled" },
          { label: "Leased", field: "leased" },
          { label: "Dead", field: "dead" },
        ], ""));
      if (!stats.queues.length) {
        replace(queues, empty(
          el("p", { id: "empty-queues" }, "No queues yet: enqueue a job with ",
            el("code", {}, `sluice enqueue --queue default --type hello --json '{}'`),
            " or the Broker service's Enqueue call, and its queue appears here.")));
      } else {
        const rows = stats.queues.map((q) => el("tr", { "data-queue": q.queue },
          el("th", { scope: "row" }, queueLink(q.queue)),
          el("td", {}, badge(q.paused ? "paused" : "active")),
          el("td", { class: "num ready" }, q.ready),
          el("td", { class: "num scheduled" }, q.scheduled),
          el("td", { class: "num leased" }, q.leased),
          el("td", { class: "num dead" }, q.dead),
          el("td", { class: "num" }, duration(q.oldest_ready_age)),
          el("td", { class: "num enqueued-rate" }, rate(q.enqueued_per_second)),
          el("td", { class: "num" }, rate(q.acked_per_second)),
          el("td", { class: "num" }, rate(q.failed_per_second))));
        replace(queues, table(["Queue", "State", ["Ready", "num"], ["Scheduled", "num"], ["Leased", "num"],
          ["Dead", "num"], ["Oldest ready", "num"], ["Enqueued/s", "num"], ["Acked/s", "num"], ["Failed/s", "num"]],
        rows, { id: "queues" }));
      }
      if (stats.recent_failures.length) {
        replace(failures, el("h2", { id: "failures-title" }, "Latest failed attempts"),
          table(["Job", "Queue", "Attempt", "Error", "When"], stats.recent_failures.slice(0, 10).map((f) => el("tr", {},
            el("td", {}, jobLink(f.job_id)),
            el("td", {}, f.queue),
            el("td", {}, `${f.attempt}${f.dead ? " (dead)" : ""}`),
            el("td", { class: "error-cell", title: f.error }, firstLine(f.error)),
            el("td", {}, when(f.failed_at))))));
      } else {
        replace(failures);
      }
    },
  };
}

function queuePage(name, params) {
  const state = params.get("state") || "";
  const status = el("div", { class: "toolbar" });
  const tabs = el("ul", { class: "tabs", "aria-label": "Jobs by state" });
  const list = el("section", { "aria-label": "Jobs" });
  const pagerBar = el("div", { class: "toolbar" });
  const errors = errorLine("queue-error");
  const search = el("input", { type: "search", id: "job-search", placeholder: "job id", autocomplete: "off", spellcheck: "false" });
  const searchError = errorLine("search-error");
  const searchForm = el("form", { role: "search", onsubmit: async (event) => {
    event.preventDefault();
    searchError.textContent = "";
    const id = search.value.trim();
    try {
      await get(`/api/v1/jobs/${enc(id)}`);
      location.hash = `#/jobs/${enc(id)}`;
    } catch (e) {
      searchError.textContent = e.toString();
    }
  } }, el("label", { for: "job-search" }, "Find a job"), search, el("button", { type: "submit" }, "Find"));
  const flow = el("section", { id: "flow", "aria-label": "Flow control" });
  replace(main(), el("h1", {}, `Queue ${name}`), status, errors, flow, el("div", { class: "toolbar" }, searchForm), searchError, tabs, list, pagerBar);
  const pages = pager(pagerBar, () => view.refresh());
  let row = null;
  let purgeState = PURGEABLE[0];
  const pageRows = async () => {
    const query = new URLSearchParams({ queue: name, page_size: "50" });
    if (state) query.set("state", state);
    if (pages.token()) query.set("page_token", pages.token());
    return get(`/api/v1/jobs?${query}`);
  };
  const drawStatus = () => {
    const paused = row && row.paused;
    const actions = [];
    if (app.session.actions && row) {
      actions.push(el("button", { type: "button", id: paused ? "resume-queue" : "pause-queue", "data-key": "pause-resume", onclick: (event) =>
        act(event.currentTarget, errors, () => post(`/api/v1/queues/${enc(name)}/${paused ? "resume" : "pause"}`)) },
      paused ? "Resume" : "Pause"));
      // The state chosen survives the refresh that redraws the select.
      const select = el("select", { id: "purge-state", "aria-label": "State to purge", "data-key": "purge-state",
        onchange: (event) => { purgeState = event.currentTarget.value; } },
      PURGEABLE.map((s) => el("option", { value: s, selected: s === purgeState }, s)));
      actions.push(select, el("button", { type: "button", class: "danger", id: "purge-queue", "data-key": "purge-queue", onclick: async (event) => {
        // Read before the first await: the event lets go of its target.
        const button = event.currentTarget;
        const target = purgeState;
        const count = row ? row[target.toLowerCase()] : 0;
        const ok = await confirmDialog(`Delete the ${count} ${target} job${count === 1 ? "" : "s"} of queue ${name}? They cannot be brought back.`, `Delete ${count} jobs`);
        if (ok) await act(button, errors, () => post(`/api/v1/queues/${enc(name)}/purge?state=${target}`));
      } }, "Purge…"));
    }
    replace(status,
      el("span", { id: "queue-status" }, row ? badge(paused ? "paused" : "active") : el("span", { class: "muted" }, "No jobs in this queue")),
      row && paused ? el("span", { class: "muted" }, "Workers get no jobs from it until it is resumed.") : null,
      ...actions);
    replace(tabs, [["", "All"], ...STATES.map((s) => [s, s])].map(([s, label]) => {
      const count = row && s ? ` (${row[s.toLowerCase()]})` : "";
      const href = `#/queues/${enc(name)}${s ? `?state=${s}` : ""}`;
      return el("li", {}, el("a", { href, "aria-current": s === state ? "true" : false, "data-key": `tab-${s}` }, `${label}${count}`));
    }));
  };
  const drawPage = (page) => {
    if (!page.jobs.length) {
      replace(list, empty(el("p", {}, state ? `No ${state} jobs in this queue.` : "No jobs in this queue.")));
    } else {
      replace(list, table(["Job", "Type", "State", "Attempt", "Progress", "Run at", "Created", "Last error"], page.jobs.map((j) => el("tr", {},
        el("td", {}, jobLink(j.id)),
        el("td", {}, j.job_type),
        el("td", {}, badge(j.state)),
        el("td", { class: "num" }, `${j.attempt} of ${j.max_attempts}`),
        el("td", { class: "num" }, j.progress ? `${j.progress.percent}%` : "—"),
        el("td", {}, when(j.run_at)),
        el("td", {}, when(j.created_at)),
        el("td", { class: "error-cell", title: j.last_error || "" }, firstLine(j.last_error))))));
    }
    pages.draw(page.next_page_token);
  };
  // Its limits, what they hold back, and its busiest keys: shown once it
  // has limits or keyed jobs.
  const drawFlow = (keys) => {
    const limits = row && row.limits;
    const held = (row && row.held) || {};
    if (!limits && !keys.length) {
      replace(flow);
      return;
    }
    const rateText = (r) => (r ? `${r.per_second}/s (burst ${r.burst || 1})` : "none");
    const count = (n) => (n ? String(n) : "none");
    const parts = [el("h2", {}, "Flow control")];
    if (limits) {
      parts.push(el("dl", { id: "limits", class: "fields" },
        el("dt", {}, "Max in flight"), el("dd", { id: "limit-max-in-flight" }, count(limits.max_in_flight)),
        el("dt", {}, "Rate"), el("dd", { id: "limit-rate" }, rateText(limits.rate)),
        el("dt", {}, "Key max in flight"), el("dd", { id: "limit-key-max-in-flight" }, count(limits.key_max_in_flight)),
        el("dt", {}, "Key rate"), el("dd", { id: "limit-key-rate" }, rateText(limits.key_rate)),
        el("dt", {}, "Overrides"), el("dd", { id: "limit-overrides" }, limits.overrides.length
          ? limits.overrides.map((o) => `${o.key}: ${o.max_in_flight === null ? "" : `max ${o.max_in_flight} `}${o.rate ? `rate ${rateText(o.rate)} ` : ""}${o.weight > 1 ? `weight ${o.weight}` : ""}`.trim()).join("; ")
          : "none"),
        el("dt", {}, "Held back"), el("dd", { id: "held" },
          `${held.key_limit || 0} by key limits, ${held.queue_limit || 0} by the queue limit, ${held.rate || 0} by rates, ${held.key_delay || 0} by key back-offs`)));
    } else {
      parts.push(el("p", { class: "muted", id: "limits" }, "No limits: set them with ",
        el("code", {}, `sluice queue limits ${name} --key-max-in-flight 2`), "."));
    }
    parts.push(el("h3", {}, "Busiest keys"));
    parts.push(keys.length
      ? table(["Key", ["In flight", "num"], ["Ready", "num"], "Held by", "Held until"], keys.map((k) => el("tr", { "data-key": `key-${k.key}` },
        el("th", { scope: "row" }, k.key),
        el("td", { class: "num" }, String(k.in_flight)),
        el("td", { class: "num" }, String(k.ready)),
        el("td", {}, k.held_by || "—"),
        el("td", {}, k.held_until ? when(k.held_until) : "—"))), { id: "busiest-keys" })
      : el("p", { class: "muted" }, "No key has jobs in flight or ready."));
    replace(flow, ...parts);
  };
  const view = {
    key: `queue:${name}`,
    async refresh() {
      row = app.stats.queues.find((q) => q.queue === name) || null;
      drawStatus();
      try {
        drawFlow(row ? (await get(`/api/v1/queues/${enc(name)}/keys?limit=10`)).keys : []);
      } catch (e) {
        errors.textContent = e.toString();
      }
      try {
        drawPage(await pageRows());
      } catch (e) {
        errors.textContent = e.toString();
      }
    },
  };
  return view;
}

function jobPage(id) {
  const body = el("div");
  const errors = errorLine("job-error-line");
  replace(main(), el("h1", {}, "Job ", el("span", { class: "id" }, id)), errors, body);
  return {
    key: `job:${id}`,
    async refresh() {
      let job;
      try {
        job = await get(`/api/v1/jobs/${enc(id)}`);
      } catch (e) {
        replace(body, el("p", { class: "error", role: "alert" }, e.toString()),
          el("p", {}, el("a", { href: "#/" }, "Back to the queues")));
        return;
      }
      const actions = [];
      if (app.session.actions) {
        if (job.state === "DEAD" || job.state === "CANCELLED") {
          actions.push(el("button", { type: "button", class: "primary", id: "retry-job", onclick: (event) =>
            act(event.currentTarget, errors, () => post(`/api/v1/jobs/${enc(id)}/retry`)) }, "Retry"));
        }
        if (["READY", "SCHEDULED", "LEASED"].includes(job.state) && !job.cancel_requested) {
          actions.push(el("button", { type: "button", class: "danger", id: "cancel-job", onclick: async (event) => {
            const button = event.currentTarget;
            if (await confirmDialog(`Cancel job ${id}?${job.state === "LEASED" ? " Its worker is told to stop." : ""}`, "Cancel the job")) {
              await act(button, errors, () => post(`/api/v1/jobs/${enc(id)}/cancel`));
            }
          } }, "Cancel"));
        }
      }
      const headers = Object.entries(job.headers);
      replace(body,
        el("div", { class: "toolbar" }, actions),
        el("dl", { class: "fields" },
          field("State", badge(job.state), { id: "job-state" }),
          field("Queue", queueLink(job.queue)),
          field("Type", job.job_type),
          field("Attempt", `${job.attempt} of ${job.max_attempts}`, { id: "job-attempt" }),
          field("Priority", job.priority),
          field("Timeout", duration(job.timeout)),
          field("Run at", when(job.run_at)),
          field("Created", when(job.created_at)),
          field("Finished", when(job.finished_at)),
          field("Lease holder", job.worker_id || "—"),
          field("Lease expires", when(job.lease_expires_at)),
          job.cancel_requested ? field("Cancel", "requested: the worker is told to stop") : null,
          field("Last error", job.last_error ? el("pre", { id: "job-error" }, job.last_error) : "none", { id: job.last_error ? null : "job-error" }),
          field("Progress", progressOf(job.progress), { id: "job-progress" })),
        job.progress && job.progress.message
          ? [el("h2", {}, "Progress message"), el("pre", { id: "job-progress-message", tabindex: "0" }, shown(job.progress.message))]
          : null,
        el("h2", {}, "Headers"),
        headers.length
          ? table(["Name", "Value"], headers.map(([k, v]) => el("tr", {}, el("td", {}, el("code", {}, k)), el("td", {}, v))))
          : el("p", { class: "muted" }, "No headers."),
        el("h2", {}, `Payload (${job.payload_bytes} bytes, ${job.payload.encoding === "json" ? "JSON" : job.payload.encoding})`),
        el("pre", { id: "job-payload", tabindex: "0" }, bytesText(job.payload)),
        job.result
          ? [el("h2", {}, `Result (${job.result_bytes} bytes, ${job.result.encoding === "json" ? "JSON" : job.result.encoding})`),
            el("pre", { id: "job-result", tabindex: "0" }, bytesText(job.result))]
          : null);
    },
  };
}

// A payload or result as the API gives it ({encoding, value}), as text.
function bytesText(bytes) {
  return bytes.encoding === "json" ? JSON.stringify(bytes.value, null, 2) : bytes.value;
}

// A progress message: pretty when it is a JSON document.
function shown(message) {
  try {
    const value = JSON.parse(message);
    return typeof value === "object" && value !== null ? JSON.stringify(value, null, 2) : message;
  } catch {
    return message;
  }
}

// A job's last progress report: a bar, its percent, its attempt and age.
function progressOf(p) {
  if (!p) return "none";
  return el("span", { class: "progress" },
    el("progress", { max: "100", value: String(p.percent), "aria-label": `Progress ${p.percent}%` }),
    ` ${p.percent}% · attempt ${p.attempt} · `, when(p.updated_at));
}

function deadPage() {
  const byQueue = el("section", { "aria-label": "Dead jobs by queue" });
  const list = el("section", { "aria-label": "Dead jobs" });
  const pagerBar = el("div", { class: "toolbar" });
  const errors = errorLine("dead-error");
  const notice = el("p", { class: "notice", role: "status" });
  replace(main(), el("h1", {}, "Dead letters"), errors, notice, byQueue, list, pagerBar);
  const pages = pager(pagerBar, () => view.refresh());
  const view = {
    key: "dead",
    async refresh() {
      const queues = app.stats.queues.filter((q) => q.dead > 0);
      replace(byQueue, queues.length ? el("div", { class: "toolbar" }, queues.map((q) =>
        app.session.actions
          ? el("button", { type: "button", "data-key": `retry-all-${q.queue}`, "data-queue": q.queue, class: "retry-all", onclick: async (event) => {
            const button = event.currentTarget;
            if (!await confirmDialog(`Retry the ${q.dead} dead job${q.dead === 1 ? "" : "s"} of queue ${q.queue}?`, "Retry them")) return;
            await act(button, errors, async () => {
              let retried = 0;
              for (;;) {
                const answer = await post(`/api/v1/queues/${enc(q.queue)}/retry-dead`);
                retried += answer.retried;
                if (!answer.more) break;
              }
              notice.textContent = `Retried ${retried} job${retried === 1 ? "" : "s"} of queue ${q.queue}.`;
            });
          } }, `Retry the ${q.dead} dead in ${q.queue}`)
          : el("span", {}, `${q.queue}: ${q.dead} dead`))) : null);
      let page;
      try {
        const query = new URLSearchParams({ state: "DEAD", page_size: "50" });
        if (pages.token()) query.set("page_token", pages.token());
        page = await get(`/api/v1/jobs?${query}`);
      } catch (e) {
        errors.textContent = e.toString();
        return;
      }
      if (!page.jobs.length) {
        replace(list, empty(el("p", { id: "empty-dead" }, "No dead letters: every job either succeeded, is still running or waits for a retry.")));
      } else {
        replace(list, table(["Job", "Queue", "Type", "Attempts", "Error", "Died", ""], page.jobs.map((j) => el("tr", { "data-job": j.id },
          el("td", {}, jobLink(j.id)),
          el("td", {}, queueLink(j.queue)),
          el("td", {}, j.job_type),
          el("td", { class: "num" }, `${j.attempt} of ${j.max_attempts}`),
          el("td", { class: "error-cell", title: j.last_error || "" }, firstLine(j.last_error) || "—"),
          el("td", {}, when(j.finished_at)),
          el("td", {}, app.session.actions ? el("button", { type: "button", "data-key": `retry-${j.id}`, "aria-label": `Retry job ${j.id}`, onclick: (event) =>
            act(event.currentTarget, errors, () => post(`/api/v1/jobs/${enc(j.id)}/retry`)) }, "Retry") : null))), { id: "dead-jobs" }));
      }
      pages.draw(page.next_page_token);
    },
  };
  return view;
}

function workersPage() {
  const list = el("section", { "aria-label": "Workers" });
  const errors = errorLine("workers-error");
  replace(main(), el("h1", {}, "Workers"), errors, list);
  return {
    key: "workers",
    async refresh() {
      let answer;
      try {
        answer = await get("/api/v1/workers");
      } catch (e) {
        errors.textContent = e.toString();
        return;
      }
      errors.textContent = "";
      if (!answer.workers.length) {
        replace(list, empty(el("p", { id: "empty-workers" }, "No workers connected: start one with ",
          el("code", {}, "sluice-worker --broker http://127.0.0.1:50051 --queues default --exec 'hello=./hello.sh'"),
          " or any program that opens a Lease stream.")));
        return;
      }
      replace(list, table(["Worker", "Queues", "Job types", ["In flight", "num"], "Connected"], answer.workers.map((w) => el("tr", {},
        el("td", { class: "id" }, w.worker_id),
        el("td", {}, w.queues.join(", ")),
        el("td", {}, w.job_types.length ? w.job_types.join(", ") : "any"),
        el("td", { class: "num" }, `${w.in_flight} of ${w.max_in_flight}`),
        el("td", {}, when(w.connected_since)))), { id: "workers" }));
    },
  };
}

// The Pause or Resume and the Trigger buttons of schedule `s` (admins only).
function scheduleActions(s, errors, notice) {
  if (!app.session.actions) return [];
  const path = `/api/v1/schedules/${enc(s.name)}`;
  const pauseLabel = s.paused ? "Resume" : "Pause";
  return [
    el("button", { type: "button", class: s.paused ? "primary pause-resume" : "pause-resume", "data-key": `${s.paused ? "resume" : "pause"}-${s.name}`,
      "aria-label": `${pauseLabel} schedule ${s.name}`, onclick: (event) =>
        act(event.currentTarget, errors, () => post(`${path}/${s.paused ? "resume" : "pause"}`)) }, pauseLabel),
    el("button", { type: "button", class: "trigger", "data-key": `trigger-${s.name}`, "aria-label": `Trigger schedule ${s.name} now`, onclick: (event) =>
      act(event.currentTarget, errors, async () => {
        const answer = await post(`${path}/trigger`);
        replace(notice, `Schedule ${s.name} enqueued job `, jobLink(answer.job_id), ".");
      }) }, "Trigger now"),
  ];
}

function lastJob(s) {
  if (!s.last_job_id) return el("span", { class: "muted" }, "none yet");
  return el("span", {}, jobLink(s.last_job_id), " ", s.last_job_state ? badge(s.last_job_state) : el("span", { class: "muted" }, "(gone)"));
}

function scheduleLink(name) {
  return el("a", { href: `#/schedules/${enc(name)}`, "data-key": `schedule-${name}` }, name);
}

function schedulesPage() {
  const list = el("section", { "aria-label": "Schedules" });
  const errors = errorLine("schedules-error");
  const notice = el("p", { class: "notice", role: "status", id: "schedules-notice" });
  replace(main(), el("h1", {}, "Schedules"), errors, notice, list);
  return {
    key: "schedules",
    async refresh() {
      let answer;
      try {
        answer = await get("/api/v1/schedules");
      } catch (e) {
        errors.textContent = e.toString();
        return;
      }
      if (!answer.schedules.length) {
        replace(list, empty(el("p", { id: "empty-schedules" }, "No schedules: create one with ",
          el("code", {}, "sluice schedules create nightly --cron '0 3 * * *' --tz Europe/Berlin --queue reports --type nightly --json '{}'"),
          " or the Admin service's CreateSchedule call.")));
        return;
      }
      replace(list, table(["Schedule", "When", "Zone", "Job", "State", "Next fire", "Last fire", "Last job", ""],
        answer.schedules.map((s) => el("tr", { "data-schedule": s.name },
          el("th", { scope: "row" }, scheduleLink(s.name)),
          el("td", { class: "description" }, s.description),
          el("td", {}, s.time_zone),
          el("td", {}, queueLink(s.job.queue), ` · ${s.job.job_type}`),
          el("td", { class: "schedule-state" }, badge(s.paused ? "paused" : "active")),
          el("td", { class: "next-fire" }, when(s.next_fire_at)),
          el("td", {}, when(s.last_fired_at)),
          el("td", { class: "last-job" }, lastJob(s)),
          el("td", { class: "actions" }, scheduleActions(s, errors, notice)))), { id: "schedules" }));
    },
  };
}

function schedulePage(name) {
  const body = el("div");
  const errors = errorLine("schedule-error");
  const notice = el("p", { class: "notice", role: "status", id: "schedule-notice" });
  replace(main(), el("h1", {}, `Schedule ${name}`), errors, notice, body);
  return {
    key: `schedule:${name}`,
    async refresh() {
      let s;
      try {
        s = await get(`/api/v1/schedules/${enc(name)}`);
      } catch (e) {
        replace(body, el("p", { class: "error", role: "alert" }, e.toString()),
          el("p", {}, el("a", { href: "#/schedules" }, "Back to the schedules")));
        return;
      }
      const timing = s.cron ? el("code", {}, s.cron) : `every ${duration(s.every)}`;
      replace(body,
        el("div", { class: "toolbar" }, scheduleActions(s, errors, notice)),
        el("dl", { class: "fields" },
          field("State", badge(s.paused ? "paused" : "active"), { id: "schedule-state" }),
          field("When", [s.description, " (", timing, ")"], { id: "schedule-description" }),
          field("Zone", s.time_zone),
          field("Job", [queueLink(s.job.queue), ` · ${s.job.job_type}`]),
          field("Catch-up", s.catch_up),
          field("Overlap", s.overlap),
          s.start_at ? field("Starts", when(s.start_at)) : null,
          s.end_at ? field("Ends", when(s.end_at)) : null,
          field("Next fire", when(s.next_fire_at), { id: "schedule-next" }),
          field("Last fire", when(s.last_fired_at)),
          field("Last job", lastJob(s))),
        el("h2", {}, "Next fire times"),
        s.upcoming.length
          ? el("ol", { id: "schedule-upcoming" }, s.upcoming.map((t) => el("li", {}, el("time", { datetime: t }, new Date(t).toLocaleString()), el("span", { class: "muted" }, ` (${t})`))))
          : el("p", { class: "muted", id: "schedule-upcoming" }, s.paused ? "None while paused." : "None: the schedule has ended."),
        el("h2", {}, "Recent jobs"),
        s.recent_runs.length
          ? table(["Job", "For", "How", "State"], s.recent_runs.map((r) => el("tr", {},
            el("td", {}, jobLink(r.job_id)),
            el("td", {}, when(r.scheduled_for)),
            el("td", {}, r.triggered ? "triggered" : "tick"),
            el("td", {}, r.state ? badge(r.state) : el("span", { class: "muted" }, "gone")))), { id: "schedule-runs" })
          : el("p", { class: "muted", id: "schedule-runs" }, "No jobs yet."));
    },
  };
}

// A source group (the Kafka source's members): which member holds each
// partition, its epoch and position. Groups are not listed by the broker:
// the page asks for a name, kept in the URL (#/sources/NAME).
function sourcesPage(group) {
  const body = el("div");
  const input = el("input", { type: "text", id: "source-group", name: "group", value: group || "", placeholder: "orders-bridge", "aria-label": "Source group" });
  const form = el("form", { class: "toolbar", onsubmit: (event) => {
    event.preventDefault();
    if (input.value.trim()) location.hash = `#/sources/${enc(input.value.trim())}`;
  } }, el("label", { for: "source-group" }, "Source group "), input, el("button", { type: "submit" }, "Show"));
  replace(main(), el("h1", {}, group ? `Source group ${group}` : "Source groups"), form, body);
  return {
    key: `sources:${group || ""}`,
    async refresh() {
      if (!group) {
        replace(body, el("p", { class: "muted", id: "sources-hint" }, "Name a source group (the ", el("code", {}, "group"),
          " of a ", el("code", {}, "sluice-kafka"), " config) to see its partitions."));
        return;
      }
      let g;
      try {
        g = await get(`/api/v1/sources/${enc(group)}`);
      } catch (e) {
        replace(body, el("p", { class: "error", role: "alert" }, e.toString()));
        return;
      }
      replace(body,
        el("p", { id: "source-members" }, g.members.length ? `Members: ${g.members.join(", ")}` : "No live member."),
        g.partitions.length
          ? table(["Stream", ["Partition", "num"], "Holder", ["Epoch", "num"], ["Position", "num"], "Held until"],
            g.partitions.map((p) => el("tr", { "data-partition": `${p.stream}/${p.partition}` },
              el("td", {}, p.stream),
              el("td", { class: "num" }, String(p.partition)),
              el("td", {}, p.holder || el("span", { class: "muted" }, "free")),
              el("td", { class: "num" }, String(p.epoch)),
              el("td", { class: "num position" }, p.position === null ? "-" : String(p.position)),
              el("td", {}, when(p.held_until)))), { id: "source-partitions" })
          : el("p", { class: "muted", id: "source-partitions" }, "No partition: no source has claimed one in this group."));
    },
  };
}

// ---- routing ------------------------------------------------------------

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, search] = hash.split("?");
  const params = new URLSearchParams(search || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  let nav = "overview";
  let view;
  if (parts[0] === "queues" && parts[1]) view = queuePage(parts[1], params);
  else if (parts[0] === "jobs" && parts[1]) view = jobPage(parts[1]);
  else if (parts[0] === "dead") { view = deadPage(); nav = "dead"; }
  else if (parts[0] === "workers") { view = workersPage(); nav = "workers"; }
  else if (parts[0] === "schedules" && parts[1]) { view = schedulePage(parts[1]); nav = "schedules"; }
  else if (parts[0] === "schedules") { view = schedulesPage(); nav = "schedules"; }
  else if (parts[0] === "sources") { view = sourcesPage(parts[1]); nav = "sources"; }
  else view = overview();
  for (const link of document.querySelectorAll("nav a[data-nav]")) {
    if (link.dataset.nav === nav && parts[0] !== "queues" && parts[0] !== "jobs") link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  app.view = view;
  document.title = `${main().querySelector("h1").textContent} · Sluice`;
  return view;
}

async function start() {
  stopTimer();
  try {
    app.session = await get("/api/v1/session");
  } catch (e) {
    if (e.status !== 401) showTokenForm(e.toString());
    return;
  }
  document.getElementById("forget-token").hidden = !sessionStorage.getItem(TOKEN_KEY);
  route();
  await tick();
  app.timer = setInterval(tick, REFRESH_MS);
}

window.addEventListener("hashchange", () => {
  if (!app.session) return;
  const view = route();
  if (app.stats) view.refresh();
  main().focus();
});

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("forget-token").addEventListener("click", () => needToken(""));
  start();
});
