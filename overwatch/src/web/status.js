// The overwatch status page: polls the API every second and renders it. Text only goes
// into the page through textContent, never as HTML.
"use strict";

const REFRESH_MS = 1000;
const state = { token: sessionStorage.getItem("opengslb-token") || "", data: null };

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

function table(id, header, rows) {
  const t = document.getElementById(id);
  const head = el("tr", {}, ...header.map((h) => el("th", {}, h)));
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
    const [cluster, domains, backends, agents, overrides, changes, latency] = await Promise.all([
      get("/api/v1/cluster/status"),
      get("/api/v1/domains"),
      get("/api/v1/overwatch/backends"),
      get("/api/v1/overwatch/agents"),
      get("/api/v1/overrides"),
      get("/api/v1/overwatch/changes"),
      get("/api/v1/overwatch/latency?limit=50"),
    ]);
    state.data = { cluster, domains, backends, agents, overrides, changes, latency };
    render();
    banner("");
  } catch (e) {
    banner("Cannot reach this node's API: " + e.message + " (retrying)");
  }
}

function banner(text) {
  const b = document.getElementById("banner");
  b.textContent = text;
  b.style.display = text ? "block" : "none";
}

function render() {
  const d = state.data;
  if (!d) return;
  const c = d.cluster;
  document.getElementById("summary").textContent =
    `node ${c.node_id} · ${c.state} · leader ${c.leader ?? "none"} · term ${c.term} · ` +
    `${d.backends.backends.filter((b) => b.effective_status === "healthy").length}/${d.backends.total} backends healthy`;
  document.getElementById("cluster-note").textContent = c.quorum ? "quorum" : "NO QUORUM: writes fail, DNS answers from the last state";
  table("members", ["ID", "Address", "Role", "Reachable", "State", "Applied"], c.members.map((m) =>
    el("tr", {}, el("td", {}, m.id), el("td", {}, m.address), el("td", {}, m.voter ? "voter" : "learner"),
      el("td", {}, badge(m.reachable ? "yes" : "no")), el("td", {}, m.state ? badge(m.state) : "-"),
      el("td", {}, m.last_applied_index ?? "-"))));

  table("domain-table", ["Domain", "Algorithm", "Healthy", "In rotation"], d.domains.domains
    .filter((x) => matches(x.name, x.routing_algorithm, ...(x.regions || [])))
    .map((x) => el("tr", { "data-domain": x.name }, el("td", {}, x.name), el("td", {}, x.routing_algorithm),
      el("td", {}, `${x.healthy_backends}/${x.total_backends}`), el("td", {}, (x.healthy_addresses || []).join(", ") || "none"))));

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
    banner("");
    refresh();
  } catch (e) {
    banner("Override not cleared: " + e.message);
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
    banner("");
    refresh();
  } catch (e) {
    banner("Override not set: " + e.message);
  }
});

document.getElementById("use-token").addEventListener("click", () => {
  state.token = document.getElementById("token").value.trim();
  if (state.token) sessionStorage.setItem("opengslb-token", state.token);
  else sessionStorage.removeItem("opengslb-token");
  document.getElementById("token-state").textContent = state.token ? "changes enabled" : "read-only";
  render();
});
document.getElementById("filter").addEventListener("input", render);
document.getElementById("token-state").textContent = state.token ? "changes enabled" : "read-only";

refresh();
setInterval(refresh, REFRESH_MS);
