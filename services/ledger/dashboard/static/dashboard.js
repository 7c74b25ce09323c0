// Switchyard dashboard: plain JS over the ledger's read API, uPlot (vendored) for charts,
// Server-Sent Events for the live feed. The aggregates refresh when the feed says something
// was stored (debounced), never on a polling timer.
"use strict";

const state = { window: "1h", charts: {}, refreshTimer: null, feedRows: 0 };
const MAX_FEED_ROWS = 100;
const PALETTE = ["#58a6ff", "#3fb950", "#d29922", "#f85149", "#bc8cff", "#39c5cf", "#ff7b72", "#e3b341"];

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "style") node.style.cssText = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const usd = (v) => {
  const n = Number(v || 0);
  if (n === 0) return "$0";
  return n < 0.01 ? "$" + n.toPrecision(3) : "$" + n.toFixed(n < 100 ? 4 : 2);
};
const int = (v) => Number(v || 0).toLocaleString("en-US");
const ms = (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(v < 10 ? 2 : 0) + " ms");
const pct = (v) => (Number(v || 0) * 100).toFixed(1) + " %";
const time = (unixMs) => new Date(unixMs).toISOString().slice(11, 19);

async function getJSON(url) {
  const r = await fetch(url, { headers: { accept: "application/json" } });
  const body = await r.json();
  if (!r.ok) throw new Error((body.error && body.error.message) || r.statusText);
  return body;
}

// ---- aggregates ----------------------------------------------------------------------

// The three reads go out at once and each panel is drawn as soon as its own answer arrives:
// one after the other, the first paint waited for the slowest (the budget authority's answer,
// the quota samples) and the page stood empty for seconds.
async function refresh() {
  const overview = getJSON(`/api/overview?window=${state.window}`).then((data) => {
    renderKpis(data.totals);
    renderCharts(data.series);
    renderByProject(data.by_project);
    renderByModel(data.by_model);
    renderProviders(data.providers);
    renderHedging(data.hedging);
  });
  const caps = getJSON("/api/budgets").then((data) => renderBudgets(data.caps));
  const quotas = getJSON(`/api/quotas?window=${state.window}`).then((data) => renderQuotas(data.deployments));
  const alerts = getJSON(`/api/alerts?window=${state.window === "1h" ? "24h" : state.window}`).then((data) =>
    renderAlerts(data.alerts),
  );
  await Promise.all([overview, caps, quotas, alerts]);
  document.body.dataset.loaded = "true";
}

function scheduleRefresh() {
  if (state.refreshTimer) return;
  state.refreshTimer = setTimeout(() => {
    state.refreshTimer = null;
    refresh().catch(console.error);
  }, 1000);
}

function renderKpis(t) {
  const requests = Number(t.requests || 0);
  $("#kpi-spend").textContent = usd(t.cost_usd);
  $("#kpi-requests").textContent = int(requests);
  $("#kpi-errors").textContent = requests ? pct((Number(t.errors) + Number(t.rejected)) / requests) : "–";
  $("#kpi-failovers").textContent = int(t.failovers);
  $("#kpi-latency").textContent = requests ? ms(t.avg_latency_ms) : "–";
  $("#kpi-tokens").textContent = int(Number(t.prompt_tokens || 0) + Number(t.completion_tokens || 0));
  // The token classes priced apart (docs/api.md, "Prompt caching and token classes").
  $("#kpi-tokens").title =
    `${int(t.prompt_tokens)} prompt (${int(t.cached_tokens)} cache reads, ${int(t.cache_write_tokens)} cache writes, ` +
    `${int(t.cache_write_1h_tokens)} of them 1 h) · ${int(t.completion_tokens)} completion ` +
    `(${int(t.reasoning_tokens)} reasoning)`;
}

function chart(key, target, series, data, yFormat) {
  const node = $(target);
  const width = Math.max(node.clientWidth, 300);
  const labels = series.map((s) => s.label).join("|");
  const existing = state.charts[key];
  if (existing && existing.labels === labels) {
    existing.plot.setData(data);
    return;
  }
  if (existing) existing.plot.destroy();
  const opts = {
    width,
    height: 220,
    scales: { x: { time: true } },
    series: [{}, ...series],
    axes: [
      { stroke: "#8a96a3", grid: { stroke: "#27313b" } },
      { stroke: "#8a96a3", grid: { stroke: "#27313b" }, values: (u, vals) => vals.map(yFormat), size: 96 },
    ],
    legend: { live: false },
  };
  state.charts[key] = { labels, plot: new uPlot(opts, data, node) };
}

function renderCharts(s) {
  const projects = s.projects.length ? s.projects : [{ project_id: "(none)", cost_usd: s.t.map(() => 0) }];
  chart(
    "spend",
    "#chart-spend",
    projects.map((p, i) => ({ label: p.project_id, stroke: PALETTE[i % PALETTE.length], width: 2 })),
    [s.t, ...projects.map((p) => p.cost_usd)],
    (v) => "$" + (v < 0.01 && v > 0 ? v.toPrecision(2) : v.toFixed(2)),
  );
  chart(
    "requests",
    "#chart-requests",
    [
      { label: "requests", stroke: "#58a6ff", fill: "#58a6ff22", width: 2 },
      { label: "errors", stroke: "#f85149", width: 2 },
    ],
    [s.t, s.requests, s.errors],
    (v) => String(v),
  );
}

function fillTable(selector, rows, makeRow, emptyText) {
  const body = $(selector + " tbody");
  body.replaceChildren(...rows.map(makeRow));
  if (!rows.length) body.append(el("tr", {}, el("td", { class: "empty", colSpan: 10 }, emptyText)));
}

function renderByProject(rows) {
  const top = Math.max(...rows.map((r) => Number(r.cost_usd)), 0);
  fillTable(
    "#by-project",
    rows,
    (r) =>
      el(
        "tr",
        {},
        el("td", {}, r.project_id || "(none)"),
        el("td", { class: "num" }, int(r.requests)),
        el("td", { class: "num" }, int(r.tokens)),
        el("td", { class: "num" }, usd(r.cost_usd)),
        el("td", {}, el("div", { class: "bar", style: `width:${top ? (100 * Number(r.cost_usd)) / top : 0}px` })),
      ),
    "No spend in this window.",
  );
}

function renderByModel(rows) {
  fillTable(
    "#by-model",
    rows,
    (r) =>
      el(
        "tr",
        {},
        el("td", {}, `${r.provider} / ${r.model}`),
        el("td", { class: "num" }, int(r.requests)),
        el("td", { class: "num" }, int(r.errors)),
        el("td", { class: "num" }, ms(r.avg_latency_ms)),
        el("td", { class: "num" }, usd(r.cost_usd)),
      ),
    "No model served a request in this window.",
  );
}

function renderProviders(rows) {
  fillTable(
    "#providers",
    rows,
    (r) =>
      el(
        "tr",
        { "data-provider": r.provider },
        el("td", {}, r.provider),
        el("td", { class: "num" }, int(r.attempts)),
        el("td", { class: "num" }, ms(r.p50_ms)),
        el("td", { class: "num" }, ms(r.p95_ms)),
        el("td", { class: "num" }, ms(r.p99_ms)),
        el("td", { class: "num" + (r.error_rate > 0 ? " status-error" : "") }, pct(r.error_rate)),
        el("td", { class: "num" }, pct(r.failover_rate)),
      ),
    "No upstream calls in this window.",
  );
}

function renderHedging(h) {
  const box = $("#hedging");
  if (!box || !h) return;
  box.textContent =
    `${int(h.hedges_fired)} hedges on ${int(h.requests)} requests (rate ${pct(h.hedge_rate)}), ` +
    `${int(h.hedges_won)} won; cancelled losers cost ${h.loser_cost_usd.toFixed(6)} USD ` +
    `(${pct(h.cost_share)} of spend)`;
}

function renderBudgets(caps) {
  const box = $("#budgets");
  if (!caps.length) {
    box.replaceChildren(
      el(
        "p",
        { class: "empty", id: "budgets-empty" },
        "No budget caps are configured. Caps set with the admin API or `switchyard budgets set` (per project, agent or key) appear here with their spend.",
      ),
    );
    return;
  }
  const table = el(
    "table",
    { id: "budget-table" },
    el("thead", {}, el("tr", {}, ...["scope", "period", "spent", "cap", "used"].map((h) => el("th", {}, h)))),
  );
  const body = el("tbody");
  for (const c of caps) {
    const used = Number(c.used_pct);
    const cls = used >= 100 ? "meter over" : used >= 80 ? "meter warn" : "meter";
    body.append(
      el(
        "tr",
        {},
        el("td", {}, `${c.scope_kind} ${c.scope_id}`),
        el("td", {}, c.period),
        el("td", { class: "num" }, usd(c.spent_usd)),
        el("td", { class: "num" }, usd(c.cap_usd)),
        el("td", {}, el("span", { class: cls }, el("div", { style: `width:${Math.min(used, 100)}%` })), ` ${used.toFixed(1)} %`),
      ),
    );
  }
  table.append(body);
  box.replaceChildren(table);
}

function meter(usedPct) {
  const cls = usedPct >= 100 ? "meter over" : usedPct >= 80 ? "meter warn" : "meter";
  return el("span", { class: cls }, el("div", { style: `width:${Math.min(usedPct, 100)}%` }));
}

function renderQuotas(deployments) {
  const box = $("#quotas");
  if (!deployments.length) {
    box.replaceChildren(
      el(
        "p",
        { class: "empty", id: "quotas-empty" },
        "No provider quota in use in this window. Deployments with `limits = { rpm = …, tpm = … }` in the catalog appear here once they take traffic (docs/quotas.md).",
      ),
    );
    return;
  }
  const table = el(
    "table",
    { id: "quota-table" },
    el(
      "thead",
      {},
      el("tr", {}, ...["deployment", "limit", "in use", "headroom (lowest)", "granted", "refused"].map((h) => el("th", {}, h))),
    ),
  );
  const body = el("tbody");
  for (const d of deployments) {
    d.limits.forEach((l, i) => {
      const first = i === 0;
      body.append(
        el(
          "tr",
          { "data-deployment": d.deployment },
          el("td", {}, first ? d.deployment : ""),
          el("td", {}, `${int(l.of)} ${l.limit}`),
          el("td", {}, meter(Number(l.used_pct)), ` ${Number(l.used_pct).toFixed(1)} %`),
          el("td", { class: "num" }, first ? `${pct(d.headroom)} (${pct(d.min_headroom)})` : ""),
          el("td", { class: "num" }, first ? int(d.granted) : ""),
          el("td", { class: "num" + (first && d.refused > 0 ? " status-error" : "") }, first ? int(d.refused) : ""),
        ),
      );
    });
  }
  table.append(body);
  box.replaceChildren(table);
}

// Budget alerts as the ledger stored them: thresholds, burn rates (with the projected time the
// cap runs out) and refusing caps (with how many requests they have refused since).
function renderAlerts(alerts) {
  fillTable(
    "#alerts",
    alerts,
    (a) =>
      el(
        "tr",
        { "data-alert-id": a.alert_id, "data-kind": a.kind },
        el("td", {}, new Date(a.ts).toISOString().slice(0, 19).replace("T", " ")),
        el("td", { class: a.kind === "threshold" ? "" : "status-error" }, a.kind === "threshold" ? `${a.threshold_pct} %` : a.kind.replace("_", " ")),
        el("td", {}, a.scope),
        el("td", {}, `${a.period} ${a.period_start}`),
        el("td", { class: "num" }, a.kind === "burn_rate" && a.projected_at ? new Date(a.projected_at).toISOString().slice(0, 19).replace("T", " ") : ""),
        el("td", { class: "num" }, a.kind === "refusing" ? int(a.refused_count) : ""),
        el("td", {}, a.message),
      ),
    "No budget alert in this window.",
  );
}

// One project's usage report (the same as GET /v1/usage with its key).
async function showUsage(project) {
  const box = $("#usage");
  let report;
  try {
    report = await getJSON(`/api/usage?project=${encodeURIComponent(project)}`);
  } catch (err) {
    box.replaceChildren(el("p", { class: "empty" }, String(err.message || err)));
    return;
  }
  const scopeRows = [];
  for (const s of report.scopes) {
    const budgets = Object.fromEntries(s.budgets.map((b) => [b.period, b]));
    for (const [period, spend] of Object.entries(s.periods)) {
      const b = budgets[period];
      if (!b && period !== "total") continue;
      const runsOut = b && b.before_period_end ? b.projected_exhaustion : "–";
      scopeRows.push(
        el(
          "tr",
          { "data-scope": s.scope, "data-period": period },
          el("td", {}, s.scope),
          el("td", {}, period),
          el("td", { class: "num" }, usd(spend.spent_usd)),
          el("td", { class: "num" }, b ? usd(b.cap_usd) : "–"),
          el("td", { class: "num" }, b ? usd(b.headroom_usd) : "–"),
          el("td", { class: "num" }, usd((b || s).burn.short.usd_per_hour) + "/h"),
          el("td", { class: b && b.before_period_end ? "status-error" : "" }, runsOut),
        ),
      );
    }
  }
  const head = (...names) => el("thead", {}, el("tr", {}, ...names.map((h) => el("th", {}, h))));
  const agents = report.agents.map((a) =>
    el("tr", { "data-agent": a.agent }, el("td", {}, a.agent), el("td", { class: "num" }, int(a.requests)),
      el("td", { class: "num" }, int(a.prompt_tokens + a.completion_tokens)), el("td", { class: "num" }, usd(a.cost_usd)),
      el("td", { class: "num" }, int(a.runs))),
  );
  const runs = report.runs.map((r) =>
    el("tr", { "data-run": r.run_id }, el("td", {}, r.run_id), el("td", {}, r.agent || "–"),
      el("td", { class: "num" }, int(r.requests)), el("td", { class: "num" }, usd(r.cost_usd))),
  );
  box.replaceChildren(
    el("table", { id: "usage-scopes" }, head("scope", "period", "spent", "cap", "headroom", "rate (short window)", "cap runs out"), el("tbody", {}, ...scopeRows)),
    el("table", { id: "usage-agents" }, head("agent", "requests", "tokens", "cost", "runs"), el("tbody", {}, ...agents)),
    el("table", { id: "usage-runs" }, head("run", "agent", "requests", "cost"), el("tbody", {}, ...runs)),
  );
}

// ---- live feed -----------------------------------------------------------------------

function feedRow(item, fresh) {
  const served = item.provider ? `${item.provider}/${item.model}` : "–";
  const row = el(
    "tr",
    { "data-request-id": item.request_id, class: fresh ? "new" : "" },
    el("td", {}, time(item.ts || item.finished_at)),
    el("td", {}, el("code", {}, item.request_id)),
    el("td", {}, item.project_id),
    el("td", {}, item.requested_model),
    el("td", {}, served),
    el("td", { class: `status-${item.status}` }, item.error_code ? `${item.status} (${item.error_code})` : item.status),
    el("td", { class: "num" }, int(Number(item.prompt_tokens) + Number(item.completion_tokens))),
    el("td", { class: "num" }, usd(item.cost_usd)),
    el("td", { class: "num" }, ms(item.latency_ms)),
    el("td", { class: "num" }, item.attempts),
  );
  row.addEventListener("click", () => (location.hash = `#/requests/${item.request_id}`));
  return row;
}

function addToFeed(items, fresh) {
  const body = $("#feed tbody");
  for (const item of items) {
    if (body.querySelector(`tr[data-request-id="${CSS.escape(item.request_id)}"]`)) continue;
    body.prepend(feedRow(item, fresh));
  }
  while (body.rows.length > MAX_FEED_ROWS) body.deleteRow(body.rows.length - 1);
  $("#feed-empty").hidden = body.rows.length > 0;
}

function connectFeed() {
  const live = $("#live");
  const source = new EventSource("/api/feed");
  source.addEventListener("hello", () => {
    live.className = "live on";
    live.textContent = "live";
  });
  source.addEventListener("requests", (ev) => {
    addToFeed(JSON.parse(ev.data), true);
    scheduleRefresh();
  });
  source.onerror = () => {
    live.className = "live off";
    live.textContent = "reconnecting…"; // EventSource reconnects by itself
  };
}

// ---- trace view ----------------------------------------------------------------------

function facts(pairs) {
  const dl = el("dl", { class: "facts" });
  for (const [k, v] of pairs) dl.append(el("dt", {}, k), el("dd", {}, v));
  return dl;
}

function timeline(request, attempts) {
  const start = request.ts;
  const end = Math.max(request.finished_at, ...attempts.map((a) => a.ts + a.latency_ms));
  const total = Math.max(end - start, 1);
  const box = el("div", { class: "timeline", id: "trace-timeline" });
  const row = (label, left, width, cls, title) =>
    el(
      "div",
      { class: "row" },
      el("span", {}, label),
      el(
        "div",
        { class: "track" },
        el("div", {
          class: "seg " + cls,
          title,
          style: `left:${(100 * left) / total}%;width:${Math.max((100 * width) / total, 0.5)}%`,
        }),
      ),
    );
  box.append(row("request (end to end)", 0, request.latency_ms, "", ms(request.latency_ms)));
  for (const a of attempts) {
    const label = `#${a.attempt_no} ${a.provider}/${a.model}`;
    const title = `${a.status}${a.error_code ? " " + a.error_code : ""} · ${ms(a.latency_ms)} · ttft ${ms(a.ttft_ms)}`;
    box.append(row(label, a.ts - start, a.latency_ms, a.status === "ok" ? "" : "error", title));
  }
  return box;
}

function attemptsTable(attempts) {
  const t = el(
    "table",
    { id: "trace-attempts" },
    el(
      "thead",
      {},
      el("tr", {}, ...["#", "deployment", "status", "http", "latency", "ttft", "failed over"].map((h) => el("th", {}, h))),
    ),
  );
  const body = el("tbody");
  for (const a of attempts) {
    body.append(
      el(
        "tr",
        {},
        el("td", {}, a.attempt_no),
        el("td", {}, `${a.deployment_id} (${a.provider}/${a.model})`),
        el("td", { class: `status-${a.status}` }, a.error_code ? `${a.status}: ${a.error_code}` : a.status),
        el("td", {}, a.http_status || "–"),
        el("td", { class: "num" }, ms(a.latency_ms)),
        el("td", { class: "num" }, ms(a.ttft_ms)),
        el("td", {}, a.failed_over ? "yes" : ""),
      ),
    );
  }
  t.append(body);
  return t;
}

function rationaleBlock(r) {
  if (!r || !r.candidates) return el("p", { class: "empty" }, "No routing rationale (refused before routing).");
  const weights = `latency ${r.weight_latency ?? 0} · cost ${r.weight_cost ?? 0} · quality ${r.weight_quality ?? 0}`;
  const t = el(
    "table",
    { id: "trace-candidates" },
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        ...["candidate", "latency est.", "est. cost", "quality", "score", "note"].map((h) => el("th", {}, h)),
      ),
    ),
  );
  const body = el("tbody");
  for (const c of r.candidates) {
    body.append(
      el(
        "tr",
        { class: c.deployment_id === r.winner ? "winner" : "" },
        el("td", {}, `${c.deployment_id}${c.deployment_id === r.winner ? " ★" : ""}`),
        el("td", { class: "num" }, ms(c.latency_ms)),
        el("td", { class: "num" }, usd(c.est_cost_usd)),
        el("td", { class: "num" }, c.quality ?? "–"),
        el("td", { class: "num" }, c.total !== undefined ? Number(c.total).toFixed(3) : "–"),
        el("td", {}, c.excluded_reason || (c.eligible === false ? "not eligible" : "")),
      ),
    );
  }
  t.append(body);
  return el(
    "div",
    { id: "trace-rationale" },
    facts([
      ["route", r.route || "–"],
      ["rule", r.rule || "–"],
      ["strategy", `${r.strategy || "–"} (${weights})`],
      ["winner", r.winner || "–"],
      ["reason", r.reason || "–"],
      ["decision", r.decision_us !== undefined ? `${Number(r.decision_us).toFixed(1)} µs` : "–"],
    ]),
    t,
  );
}

async function showTrace(requestId) {
  const panel = $("#trace");
  const bodyNode = $("#trace-body");
  panel.hidden = false;
  panel.dataset.requestId = requestId;
  $("#trace-id").textContent = requestId;
  bodyNode.replaceChildren(el("p", { class: "empty" }, "Loading…"));
  let data;
  try {
    data = await getJSON(`/api/requests/${encodeURIComponent(requestId)}`);
  } catch (err) {
    bodyNode.replaceChildren(el("p", { class: "empty" }, String(err.message)));
    return;
  }
  const r = data.request;
  bodyNode.replaceChildren(
    facts([
      ["status", r.error_code ? `${r.status} — ${r.error_code}: ${r.error_message}` : r.status],
      ["project / agent / key", `${r.project_id} / ${r.agent_id || "–"} / ${r.key_id || "–"}`],
      ["asked for", r.requested_model],
      ["router's first choice", r.planned_deployment_id || "–"],
      ["served by", r.deployment_id ? `${r.deployment_id} (${r.provider}/${r.model})` : "–"],
      ["tokens", `${int(r.prompt_tokens)} prompt · ${int(r.completion_tokens)} completion · ${int(r.cached_tokens)} cache reads · ${int(r.cache_write_tokens)} cache writes (${int(r.cache_write_1h_tokens)} 1 h) · ${int(r.reasoning_tokens)} reasoning`],
      ["cost", usd(r.cost_usd) + ` (${r.cost_usd} USD)`],
      ["latency", `${ms(r.latency_ms)} total · ${ms(r.ttft_ms)} to first token · ${ms(r.overhead_ms)} gateway overhead`],
      ["stream", r.stream ? "yes" : "no"],
      ["trace id", el("code", { id: "trace-trace-id" }, r.trace_id || "–")],
    ]),
    el("h2", {}, "Attempts"),
    timeline(r, data.attempts),
    attemptsTable(data.attempts),
    el("h2", {}, "Routing rationale"),
    rationaleBlock(r.rationale),
  );
  panel.dataset.loaded = "true";
}

function onHash() {
  const m = location.hash.match(/^#\/requests\/(.+)$/);
  if (m) showTrace(decodeURIComponent(m[1]));
  else {
    $("#trace").hidden = true;
    delete $("#trace").dataset.loaded;
  }
}

// ---- start ---------------------------------------------------------------------------

function init() {
  $("#usage-form").addEventListener("submit", (event) => {
    event.preventDefault();
    showUsage($("#usage-project").value.trim()).catch(console.error);
  });
  for (const button of document.querySelectorAll("#windows button")) {
    button.addEventListener("click", () => {
      state.window = button.dataset.window;
      for (const b of document.querySelectorAll("#windows button")) b.classList.toggle("active", b === button);
      refresh().catch(console.error);
    });
  }
  $("#trace-close").addEventListener("click", (ev) => {
    ev.preventDefault();
    location.hash = "";
  });
  window.addEventListener("hashchange", onHash);
  refresh().catch(console.error); // first: every panel's read is in flight before anything else
  getJSON("/api/recent?limit=50")
    .then((data) => addToFeed(data.items.slice().reverse(), false))
    .catch(console.error);
  connectFeed();
  onHash();
}

init();
