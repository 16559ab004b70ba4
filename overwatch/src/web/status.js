// The overwatch status page: polls the API every second and renders it. Text only goes
// into the page through textContent, never as HTML.
"use strict";

const REFRESH_MS = 1000;
const HISTORY_S = 300;
// `token` is set only once the node has accepted it (GET /api/v1/auth/check).
const state = { token: "", tokenName: "", data: null, history: [], unreachable: false };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

function badge(text, kind) {
  return el("span", { class: "badge " + String(kind || text).replace(/[^a-z]/g, "") }, text);
}

// Replaces a table's rows only when they changed, and never under a text selection the
// operator is making in it (an agent id being copied): that table waits until it ends.
function table(id, header, rows) {
  const t = document.getElementById(id);
  const head = el("tr", {}, ...header.map((h) => el("th", {}, h)));
  const signature = header.join("|") + "\n" + rows.map((r) => r.outerHTML).join("\n");
  if (t.dataset.signature === signature) return;
  const selection = window.getSelection();
  if (selection && !selection.isCollapsed && selection.rangeCount > 0 &&
      t.contains(selection.getRangeAt(0).commonAncestorContainer)) return;
  t.dataset.signature = signature;
  t.replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
}

function matches(...fields) {
  const f = document.getElementById("filter").value.trim().toLowerCase();
  return !f || fields.some((x) => String(x ?? "").toLowerCase().includes(f));
}

async function get(path) {
  const response = await fetch(path, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(path + ": " + (body.error || response.status));
  return body;
}

async function refresh() {
  try {
    const [cluster, domains, backends, agents, overrides, changes, latency, alerts, traffic] = await Promise.all([
      get("/api/v1/cluster/status"),
      get("/api/v1/domains"),
      get("/api/v1/overwatch/backends"),
      get("/api/v1/overwatch/agents"),
      get("/api/v1/overrides"),
      get("/api/v1/overwatch/changes"),
      get("/api/v1/overwatch/latency?limit=50"),
      get("/api/v1/overwatch/alerts"),
      get("/api/v1/overwatch/traffic"),
    ]);
    state.data = { cluster, domains, backends, agents, overrides, changes, latency, alerts };
    state.unreachable = false;
    remember(traffic);
    render();
  } catch (e) {
    // Said once per outage and kept until dismissed; the alert shows while it lasts.
    if (!state.unreachable) reportError("Cannot reach this node's API: " + e.message + " (retrying every second)");
    state.unreachable = true;
    renderAlerts();
  }
}

// Errors stay until the operator dismisses them.
function reportError(text) {
  const at = new Date().toLocaleTimeString();
  const item = el("div", { class: "error", role: "alert" }, el("span", {}, `${at}: ${text}`));
  item.append(el("button", { type: "button", class: "dismiss", title: "dismiss", onclick: () => item.remove() }, "Dismiss"));
  document.getElementById("errors").append(item);
}

// What must not be missed (no quorum, no leader, stale agents, a filling disk, an API
// that does not answer), big and red, and its name in the header.
function renderAlerts() {
  const d = state.data;
  const alerts = (d ? d.alerts.alerts : []).slice();
  if (state.unreachable) {
    alerts.unshift({ kind: "unreachable", severity: "critical", message: "This node's API does not answer: what is shown is stale" });
  }
  const box = document.getElementById("alerts");
  const rows = alerts.map((a) => el("div", { class: "alert " + a.severity, "data-alert": a.kind }, a.message));
  const signature = rows.map((r) => r.outerHTML).join("");
  if (box.dataset.signature !== signature) {
    box.dataset.signature = signature;
    box.replaceChildren(...rows);
  }
  const alarm = document.getElementById("header-alarm");
  const worst = alerts.find((a) => a.severity === "critical");
  alarm.hidden = !worst;
  alarm.textContent = worst ? worst.kind.replace(/_/g, " ").toUpperCase() : "";
}

function render() {
  const d = state.data;
  if (!d) return;
  const c = d.cluster;
  renderAlerts();
  const leader = c.leader === null || c.leader === undefined ? "NO LEADER" :
    c.quorum ? `leader ${c.leader}` : `leader ${c.leader} without quorum`;
  document.getElementById("summary").textContent =
    `node ${c.node_id} · ${c.state} · ${leader} · term ${c.term} · ` +
    `${d.backends.backends.filter((b) => b.effective_status === "healthy").length}/${d.backends.total} backends healthy`;
  document.getElementById("cluster-note").textContent = c.quorum ? "quorum" : "NO QUORUM: writes fail, DNS answers from the last state";
  table("members", ["ID", "Address", "Role", "Reachable", "State", "Applied"], c.members.map((m) =>
    el("tr", {}, el("td", {}, m.id), el("td", {}, m.address), el("td", {}, m.voter ? "voter" : "learner"),
      el("td", {}, badge(m.reachable ? "yes" : "no")), el("td", {}, m.state ? badge(m.state) : "-"),
      el("td", {}, m.last_applied_index ?? "-"))));

  const answer = (x) => x.depends_on_client
    ? Object.entries(x.answer_by_region || {}).map(([r, ips]) => `${r}: ${ips.join(", ") || "none"}`).join(" · ")
    : (x.answer || []).join(", ") || "none";
  table("domain-table", ["Domain", "Algorithm", "Healthy", "DNS answers", "How"], d.domains.domains
    .filter((x) => matches(x.name, x.routing_algorithm, ...(x.regions || [])))
    .map((x) => el("tr", { "data-domain": x.name }, el("td", {}, x.name), el("td", {}, x.routing_algorithm),
      el("td", {}, `${x.healthy_backends}/${x.total_backends}`), el("td", { class: "answer" }, answer(x)),
      el("td", { class: "reason" }, x.answer_how || ""))));

  const list = d.backends.backends.filter((b) =>
    matches(b.service, b.address, b.port, b.region, b.agent_id, b.effective_status, b.effective_reason));
  document.getElementById("backend-note").textContent = `${list.length} of ${d.backends.total}`;
  table("backend-table", ["Service", "Address", "Region", "Effective", "Agent", "Validation", "Override", "Why", "Since"],
    list.map((b) => {
      const agent = b.agent_id ? `${b.agent_admin}${b.agent_healthy === false ? ", down" : ""}${b.agent_stale ? ", stale" : ""}` : "-";
      const override = b.override_status === null || b.override_status === undefined ? "-" :
        `${b.override_status ? "in" : "out"} (${b.override_author})`;
      return el("tr", { "data-backend": `${b.service}/${b.address}:${b.port}` },
        el("td", {}, b.service), el("td", {}, `${b.address}:${b.port}`), el("td", {}, b.region),
        el("td", { class: "status" }, badge(b.effective_status)), el("td", {}, agent),
        el("td", {}, b.validation_state), el("td", {}, override),
        el("td", { class: "reason" }, b.effective_reason), el("td", {}, b.last_change));
    }));

  table("agent-table", ["Agent", "Region", "State", "Backends", "Last seen", "Pin"], d.agents.agents
    .filter((a) => matches(a.agent_id, a.region))
    .map((a) => el("tr", {}, el("td", {}, a.agent_id), el("td", {}, a.region),
      el("td", {}, a.left ? badge("left", "draining") : a.stale ? badge("stale") : badge("active", "healthy")),
      el("td", {}, a.backends),
      el("td", {}, a.last_seen ?? "-"), el("td", {}, (a.fingerprint || "").slice(0, 16)))));

  const editable = Boolean(state.token);
  table("override-table", ["Service", "Address", "DNS", "Reason", "Author", "Set", "Expires", ""], d.overrides.overrides
    .filter((o) => matches(o.service, o.address, o.reason, o.author))
    .map((o) => el("tr", { "data-override": `${o.service}/${o.address}` }, el("td", {}, o.service), el("td", {}, o.address),
      el("td", {}, o.healthy ? badge("in", "healthy") : badge("out", "unhealthy")), el("td", { class: "reason" }, o.reason),
      el("td", {}, o.author), el("td", {}, o.set_at), el("td", {}, o.expires_at ?? "never"),
      el("td", {}, editable ? el("button", { type: "button", onclick: () => clearOverride(o) }, "Clear") : ""))));
  document.getElementById("override-form").hidden = !editable;

  table("change-table", ["At", "Backend", "Region", "From", "To", "Why"], d.changes.changes
    .filter((x) => matches(x.backend, x.region, x.reason))
    .slice(0, 30)
    .map((x) => el("tr", {}, el("td", {}, x.at), el("td", {}, x.backend), el("td", {}, x.region),
      el("td", {}, x.from), el("td", {}, badge(x.to)), el("td", { class: "reason" }, x.reason))));

  drawCharts();

  document.getElementById("latency-note").textContent = `${d.latency.total} subnet/region cells` +
    (d.latency.total > d.latency.entries.length ? `, first ${d.latency.entries.length} shown` : "");
  table("latency-table", ["Subnet", "Region", "RTT ms", "Samples", "Agents", "Updated"], d.latency.entries
    .filter((x) => matches(x.subnet, x.region))
    .map((x) => el("tr", {}, el("td", {}, x.subnet), el("td", {}, x.region), el("td", {}, x.rtt_ms),
      el("td", {}, x.samples), el("td", {}, x.agents), el("td", {}, x.last_updated))));
}

async function change(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { "Authorization": "Bearer " + state.token, "Content-Type": "application/json" },
    body: body ? JSON.stringify(body) : undefined,
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.error || String(response.status));
  return answer;
}

function overridePath(service, address) {
  return `/api/v1/overrides/${encodeURIComponent(service)}/${encodeURIComponent(address)}`;
}

async function clearOverride(o) {
  try {
    await change("DELETE", overridePath(o.service, o.address));
    refresh();
  } catch (e) {
    reportError("Override not cleared: " + e.message);
  }
}

document.getElementById("override-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const f = new FormData(event.target);
  const body = { healthy: f.get("healthy") === "true", reason: f.get("reason") };
  if (f.get("ttl")) body.ttl = f.get("ttl");
  try {
    await change("PUT", overridePath(f.get("service"), f.get("address")), body);
    event.target.reset();
    refresh();
  } catch (e) {
    reportError("Override not set: " + e.message);
  }
});

// A token enables changes only once this node has accepted it.
async function useToken(token, remembered) {
  const note = document.getElementById("token-state");
  state.token = "";
  state.tokenName = "";
  if (!token) {
    sessionStorage.removeItem("opengslb-token");
    note.textContent = "read-only";
    render();
    return;
  }
  note.textContent = "checking the token…";
  try {
    const response = await fetch("/api/v1/auth/check", { cache: "no-store", headers: { "Authorization": "Bearer " + token } });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || String(response.status));
    state.token = token;
    state.tokenName = body.token_name;
    sessionStorage.setItem("opengslb-token", token);
    note.textContent = `changes enabled as ${body.token_name}`;
  } catch (e) {
    sessionStorage.removeItem("opengslb-token");
    note.textContent = "read-only";
    reportError((remembered ? "The saved token" : "The token") + " was refused by this node: " + e.message);
  }
  render();
}

// Readings of the node's counters, the last HISTORY_S seconds of them.
function remember(traffic) {
  const h = state.history;
  h.push(traffic);
  while (h.length > 1 && (traffic.at_ms - h[0].at_ms) / 1000 > HISTORY_S) h.shift();
}

const COLORS = ["#0969da", "#1a7f37", "#bf3989", "#9a6700", "#8250df", "#cf222e"];

// Queries per second, and answers per second of the busiest backends, between readings.
function series() {
  const h = state.history;
  const qps = [];
  const answers = new Map();
  for (let i = 1; i < h.length; i++) {
    const dt = (h[i].at_ms - h[i - 1].at_ms) / 1000;
    if (dt <= 0) continue;
    const t = h[i].at_ms;
    qps.push([t, Math.max(0, h[i].queries_total - h[i - 1].queries_total) / dt]);
    const before = new Map(h[i - 1].answers.map((a) => [`${a.domain} ${a.address}`, a.total]));
    for (const a of h[i].answers) {
      const key = `${a.domain} ${a.address}`;
      if (!answers.has(key)) answers.set(key, []);
      answers.get(key).push([t, Math.max(0, a.total - (before.get(key) ?? a.total)) / dt]);
    }
  }
  const top = [...answers.entries()]
    .map(([key, points]) => [key, points, points.reduce((sum, p) => sum + p[1], 0)])
    .sort((a, b) => b[2] - a[2])
    .slice(0, COLORS.length);
  return { qps, top };
}

function plot(canvas, lines) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, height = canvas.height, pad = 28;
  ctx.clearRect(0, 0, w, height);
  const now = Date.now();
  const max = Math.max(1, ...lines.flatMap((l) => l.points.map((p) => p[1])));
  ctx.strokeStyle = "#d0d7de";
  ctx.fillStyle = "#57606a";
  ctx.font = "11px system-ui, sans-serif";
  ctx.lineWidth = 1;
  for (const f of [0, 0.5, 1]) {
    const y = height - pad / 2 - f * (height - pad);
    ctx.beginPath(); ctx.moveTo(pad, y); ctx.lineTo(w, y); ctx.stroke();
    const value = max * f;
    ctx.fillText(max < 10 ? value.toFixed(1) : String(Math.round(value)), 2, y + 4);
  }
  for (const line of lines) {
    ctx.strokeStyle = line.color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    line.points.forEach(([t, v], i) => {
      const x = pad + (1 - (now - t) / 1000 / HISTORY_S) * (w - pad);
      const y = height - pad / 2 - (v / max) * (height - pad);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

function drawCharts() {
  const { qps, top } = series();
  const qpsCanvas = document.getElementById("qps-chart");
  plot(qpsCanvas, [{ color: COLORS[0], points: qps }]);
  const last = qps.length ? qps[qps.length - 1][1] : 0;
  document.getElementById("qps-note").textContent = `queries per second: ${last.toFixed(1)} now`;
  qpsCanvas.dataset.points = String(qps.length);
  plot(document.getElementById("answers-chart"), top.map(([, points], i) => ({ color: COLORS[i], points })));
  const legend = top.map(([key, points], i) => {
    const swatch = el("i", {});
    swatch.style.background = COLORS[i];
    const now = points.length ? points[points.length - 1][1] : 0;
    return el("span", { "data-series": key }, swatch, `${key} ${now.toFixed(1)}/s`);
  });
  document.getElementById("answers-legend").replaceChildren(...legend);
}

document.getElementById("use-token").addEventListener("click", () => {
  useToken(document.getElementById("token").value.trim(), false);
});
document.getElementById("filter").addEventListener("input", render);

const saved = sessionStorage.getItem("opengslb-token");
if (saved) useToken(saved, true);
refresh();
setInterval(refresh, REFRESH_MS);
