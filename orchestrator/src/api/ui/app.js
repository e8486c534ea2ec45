// The web UI: one page that reads and acts through this peer's JSON API with the
// operator's token (kept in this tab's sessionStorage), and follows /api/events (the
// Watch stream as server-sent events) so an incident shows without a reload. Every
// operation opens a dialog that shows what the API would do first (a dry run where
// the API has one) and shows the API's error when it refuses: nothing is swallowed.
"use strict";

const KEY = "orchestrator-token";
const $ = id => document.getElementById(id);
const esc = s => String(s ?? "").replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#39;" }[c]));
const token = () => sessionStorage.getItem(KEY);
const fmtTime = ms => ms > 0 ? new Date(Number(ms)).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "";
const ago = ms => ms > 0 ? `${Math.max(0, Math.round((Date.now() - Number(ms)) / 1000))} s ago` : "";
const bytes = n => { n = Number(n || 0); const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0; while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; } return `${n.toFixed(i ? 1 : 0)} ${u[i]}`; };
const hostPort = key => { const i = String(key).lastIndexOf(":"); return [key.slice(0, i), key.slice(i + 1)]; };
const seg = s => encodeURIComponent(s);

class Unauthenticated extends Error {}

// What the page knows; the live feed and the reads update it, then the page redraws.
const state = {
  me: null,            // /api/status
  topologies: {},      // alias -> ClusterTopology
  problems: {},        // alias -> [Problem]
  recoveries: [],      // newest last
  aws: {},             // alias -> ClusterAws
  live: false,
};

async function api(path, method = "GET") {
  const headers = token() ? { "Authorization": "Bearer " + token() } : {};
  const resp = await fetch(path, { method, headers });
  const body = await resp.json().catch(() => ({}));
  if (resp.status === 401) throw new Unauthenticated(body.error || "not authenticated");
  if (!resp.ok) {
    const e = new Error(body.error || (body.recovery && body.recovery.summary) || `${resp.status} ${resp.statusText}`);
    e.body = body;
    e.status = resp.status;
    throw e;
  }
  return body;
}

const canOperate = () => state.me && (state.me.caller_scope === "operate" || state.me.caller_scope === "admin");
const isAdmin = () => state.me && state.me.caller_scope === "admin";

function notice(text, isError) {
  const n = $("notice");
  n.hidden = !text;
  n.textContent = text || "";
  n.className = isError ? "error" : "";
}

// ---- Log in and out.

function showLogin(message) {
  $("login").hidden = false;
  $("nav").hidden = true;
  $("login-error").textContent = message || "";
  $("who").textContent = "";
  $("page").innerHTML = "";
  $("incident").hidden = true;
}

$("login").addEventListener("submit", async ev => {
  ev.preventDefault();
  sessionStorage.setItem(KEY, $("token").value.trim());
  $("token").value = "";
  await start();
});

function logout() {
  sessionStorage.removeItem(KEY);
  stopFeed();
  state.me = null;
  showLogin("logged out");
}

// ---- The live feed: fetch with the token (EventSource cannot send it), read as SSE.

let feed = null;

function stopFeed() {
  if (feed) feed.abort();
  feed = null;
  setLive(false);
}

function setLive(on) {
  state.live = on;
  $("live").textContent = on ? "● live" : "○ reconnecting";
  $("live").className = on ? "" : "off";
}

async function runFeed() {
  stopFeed();
  const controller = new AbortController();
  feed = controller;
  let delay = 500;
  while (feed === controller) {
    try {
      const resp = await fetch("/api/events", { headers: { "Authorization": "Bearer " + token() }, signal: controller.signal });
      if (resp.status === 401) { showLogin("the token is no longer valid"); return; }
      if (!resp.ok || !resp.body) throw new Error(`${resp.status}`);
      setLive(true);
      delay = 500;
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let name = "message", data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) name = line.slice(6).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trim();
          }
          if (data) onEvent(name, JSON.parse(data));
        }
      }
    } catch (e) {
      if (controller.signal.aborted) return;
    }
    setLive(false);
    await new Promise(r => setTimeout(r, delay));
    delay = Math.min(delay * 2, 5000);
  }
}

function onEvent(name, e) {
  const ev = e.event || {};
  if (name === "topology" && ev.topology) {
    state.topologies[ev.topology.alias] = ev.topology;
    redrawIf(["cluster", "topology", "clusters", "instance"]);
  } else if (name === "problems" && ev.problems) {
    state.problems[ev.problems.cluster] = ev.problems.problems || [];
    drawIncident();
    redrawIf(["cluster", "topology", "clusters"]);
  } else if (name === "recovery" && ev.recovery) {
    const r = ev.recovery;
    const i = state.recoveries.findIndex(x => x.id === r.id);
    if (i >= 0) state.recoveries[i] = r; else state.recoveries.push(r);
    drawIncident();
    redrawIf(["recoveries", "cluster", "clusters"]);
  } else if (name === "master" && ev.master) {
    notice(`${ev.master.cluster}: master ${ev.master.previous || "(none)"} → ${ev.master.current}`);
    refreshAws();
  }
}

// ---- The incident banner, on every page.

function drawIncident() {
  const open = state.recoveries.filter(r => r.status === "running");
  const problems = Object.values(state.problems).flat();
  const parts = [];
  for (const r of open) parts.push(`<a href="#/recoveries">recovery ${r.id} (${esc(r.kind)}) of ${esc(r.cluster)} running</a>`);
  const urgent = problems.filter(p => p.needs_failover || p.priority <= 2);
  if (problems.length) {
    const codes = {};
    for (const p of problems) codes[p.code] = (codes[p.code] || 0) + 1;
    parts.push(`${problems.length} problem(s): ` + Object.entries(codes).map(([c, n]) => `${esc(c)}×${n}`).join(", "));
  }
  const banner = $("incident");
  banner.hidden = parts.length === 0;
  banner.innerHTML = parts.join(" · ");
  banner.dataset.severity = open.length || urgent.length ? "incident" : "problems";
}

// ---- Reads.

async function refreshAll() {
  const [clusters, problems, recoveries] = await Promise.all([
    api("/api/v1/clusters"),
    api("/api/v1/problems").catch(() => ({ problems: [] })),
    api("/api/v1/recoveries?limit=50"),
  ]);
  const aliases = (clusters.clusters || []).map(c => c.alias);
  const tops = await Promise.all(aliases.map(a => api("/api/v1/topology/" + seg(a)).catch(() => null)));
  state.topologies = {};
  tops.forEach(t => { if (t) state.topologies[t.alias] = t; });
  state.problems = {};
  for (const a of aliases) state.problems[a] = [];
  for (const p of problems.problems || []) (state.problems[p.cluster] = state.problems[p.cluster] || []).push(p);
  state.recoveries = recoveries.recoveries || [];
  await refreshAws();
  drawIncident();
}

async function refreshAws() {
  try {
    const v = await api("/api/v1/aws");
    state.aws = {};
    for (const c of v.clusters || []) state.aws[c.cluster] = c;
  } catch (e) {
    state.aws = {};
  }
}

// ---- Routing.

let route = { page: "clusters", args: [] };

function parseRoute() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  const page = parts[0] || "clusters";
  return { page, args: parts.slice(1) };
}

// A redraw waits while the operator is in a field of the page (a select open, a
// value half typed) and happens when they leave it.
let redrawPending = false;

function redrawIf(pages) {
  if (!pages.includes(route.page)) return;
  const active = document.activeElement;
  if (active && active !== document.body && $("page").contains(active) && /^(SELECT|INPUT|TEXTAREA)$/.test(active.tagName)) {
    redrawPending = true;
    return;
  }
  draw();
}

$("page").addEventListener("focusout", () => {
  if (redrawPending) {
    redrawPending = false;
    setTimeout(draw, 0);
  }
});

async function draw() {
  route = parseRoute();
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === route.page);
  const page = $("page");
  try {
    switch (route.page) {
      case "clusters": page.innerHTML = clustersPage(); break;
      case "cluster": page.innerHTML = clusterPage(route.args[0]); break;
      case "topology": page.innerHTML = Object.keys(state.topologies).sort().map(a => clusterPage(a)).join(""); break;
      case "instance": page.innerHTML = instancePage(route.args[0], route.args[1]); break;
      case "recoveries": page.innerHTML = recoveriesPage(); break;
      case "raft": page.innerHTML = await raftPage(); break;
      case "audit": page.innerHTML = await auditPage(); break;
      case "backups": page.innerHTML = await backupsPage(route.args[0]); break;
      default: page.innerHTML = `<p class="error">no page ${esc(route.page)}</p>`;
    }
    bindDragAndDrop();
  } catch (e) {
    if (e instanceof Unauthenticated) return showLogin(e.message);
    page.innerHTML = `<p class="error">${esc(e.message)}</p>`;
  }
}

window.addEventListener("hashchange", draw);

// ---- Pages.

function clustersPage() {
  const aliases = Object.keys(state.topologies).sort();
  const recoveriesOn = state.globalRecoveries;
  let html = `<div class="toolbar"><h2>Clusters</h2>
    <span class="badge ${recoveriesOn === false ? "bad" : "ok"}" id="global-recoveries">automatic recoveries ${recoveriesOn === false ? "disabled" : "enabled"}</span>`;
  if (isAdmin()) {
    html += recoveriesOn === false
      ? `<button data-op="enable-recoveries">Enable recoveries</button>`
      : `<button data-op="disable-recoveries">Disable recoveries</button>`;
  }
  html += `<a href="#/topology">all topologies</a></div><div class="clusters">`;
  for (const a of aliases) {
    const t = state.topologies[a];
    const problems = state.problems[a] || [];
    const down = t.instances.filter(i => !i.reachable).length;
    const open = t.open_recovery_id ? `<span class="badge bad">recovery ${t.open_recovery_id} running</span>` : "";
    const codes = {};
    for (const p of problems) codes[p.code] = (codes[p.code] || 0) + 1;
    html += `<div class="card ${problems.length || down ? "bad" : ""}" data-cluster="${esc(a)}">
      <h3><a href="#/cluster/${seg(a)}">${esc(a)}</a></h3>
      <div>master <code>${esc(t.master || "none")}</code>${t.recorded_master && t.recorded_master !== t.master ? ` <span class="badge warn">Raft records ${esc(t.recorded_master)}</span>` : ""}</div>
      <div>${t.instances.length} instance(s), ${down ? `<span class="badge bad">${down} unreachable</span>` : `<span class="badge ok">all reachable</span>`} ${open}</div>
      <div>${Object.entries(codes).map(([c, n]) => `<span class="badge bad">${esc(c)} ×${n}</span>`).join("") || `<span class="badge ok">no problems</span>`}</div>
    </div>`;
  }
  html += `</div>`;
  if (!aliases.length) html += `<p class="muted">no clusters discovered yet</p>`;
  return html;
}

function threadBadge(name, value) {
  const v = String(value || "").toLowerCase();
  const ok = v === "running" || v === "yes" || v === "on";
  return `<span class="badge ${ok ? "ok" : "bad"}">${name} ${esc(value || "?")}</span>`;
}

function targetGroups(alias, key) {
  const a = state.aws[alias];
  if (!a) return "";
  const find = (list, tg) => {
    const hit = (list || []).find(t => String(t).split(" ")[0] === key);
    if (!hit) return "";
    const rest = String(hit).slice(key.length).trim().replace(/^\(|\)$/g, "");
    const healthy = /healthy/i.test(rest) && !/unhealthy/i.test(rest);
    return `<span class="badge ${rest === "" || healthy ? "ok" : "warn"}" data-tg="${tg}">${tg} TG${rest ? " " + esc(rest) : ""}</span>`;
  };
  return find(a.write_targets, "write") + find(a.read_targets, "read");
}

function nodeCard(t, i, children) {
  const alias = t.alias;
  const r = i.replication;
  const isMaster = i.key === t.master;
  const problems = (state.problems[alias] || []).filter(p => p.instance === i.key);
  const errant = problems.filter(p => /errant/i.test(p.code));
  const lag = r && r.seconds_behind >= 0 ? `${r.seconds_behind} s lag` : (r ? "lag unknown" : "");
  const classes = ["node", isMaster ? "master" : "", i.reachable ? "" : "down", i.downtimed ? "downtimed" : ""].join(" ");
  const draggable = canOperate() && !isMaster && i.role === "replica" && t.master;
  let html = `<li><div class="${classes}" data-key="${esc(i.key)}" data-cluster="${esc(alias)}" data-role="${esc(i.role)}"${draggable ? ` draggable="true"` : ""}>
    <div class="key"><a href="#/instance/${seg(alias)}/${seg(i.key)}">${esc(i.key)}</a></div>
    <div class="facts">
      <span class="badge ${isMaster ? "ok" : ""}">${esc(i.role)}</span>
      ${i.reachable ? "" : `<span class="badge bad">unreachable</span>`}
      <span class="badge ${isMaster === !i.read_only ? "" : "warn"}">${i.read_only ? "read-only" : "writable"}</span>
      ${r ? threadBadge("IO", r.io_thread) + threadBadge("SQL", r.sql_thread) : ""}
      ${lag ? `<span class="badge ${r && r.seconds_behind > 10 ? "warn" : ""}">${lag}</span>` : ""}
      ${i.semi_sync_master ? `<span class="badge">semi-sync source</span>` : ""}${i.semi_sync_replica ? `<span class="badge">semi-sync replica</span>` : ""}
      ${i.downtimed ? `<span class="badge warn">downtimed</span>` : ""}
      ${i.promotion_rule && i.promotion_rule !== "neutral" ? `<span class="badge">${esc(i.promotion_rule)}</span>` : ""}
      ${targetGroups(alias, i.key)}
      ${errant.map(p => `<span class="badge bad" title="${esc(p.description)}">errant GTIDs</span>`).join("")}
      ${problems.filter(p => !/errant/i.test(p.code)).map(p => `<span class="badge bad" title="${esc(p.description)}">${esc(p.code)}</span>`).join("")}
    </div>
    <div class="gtid" title="${esc(i.gtid_executed)}">${esc(i.gtid_executed || "")}</div>
    ${i.last_error || (r && (r.last_io_error || r.last_sql_error)) ? `<div class="error">${esc(i.last_error || r.last_io_error || r.last_sql_error)}</div>` : ""}
    ${nodeActions(t, i, isMaster)}
  </div>`;
  if (children.length) html += `<ul>${children.join("")}</ul>`;
  return html + `</li>`;
}

function nodeActions(t, i, isMaster) {
  if (!canOperate()) return "";
  const k = esc(i.key), c = esc(t.alias);
  let html = `<div class="actions">`;
  if (!isMaster && i.role === "replica" && t.master) html += `<button data-op="switchover" data-cluster="${c}" data-key="${k}">Switch over to this</button>`;
  if (isAdmin() && !isMaster && i.role === "replica") html += `<button data-op="failover" data-cluster="${c}" data-key="${k}">Forced failover</button>`;
  html += i.downtimed
    ? `<button data-op="end-downtime" data-key="${k}">End downtime</button>`
    : `<button data-op="begin-downtime" data-key="${k}">Downtime</button>`;
  html += `<select data-op="promotion-rule" data-key="${k}" title="promotion rule">` +
    ["prefer", "neutral", "prefer_not", "must_not"].map(r => `<option${(i.promotion_rule || "neutral") === r ? " selected" : ""}>${r}</option>`).join("") + `</select>`;
  return html + `</div>`;
}

function clusterPage(alias) {
  const t = state.topologies[alias];
  if (!t) return `<p class="error">no cluster ${esc(alias)}</p>`;
  const byKey = {};
  for (const i of t.instances) byKey[i.key] = i;
  const children = {};
  for (const i of t.instances) {
    const src = i.replication && i.replication.source;
    if (src && byKey[src] && i.key !== t.master) (children[src] = children[src] || []).push(i);
  }
  const placed = new Set();
  const walk = (i, depth) => {
    placed.add(i.key);
    const kids = (children[i.key] || []).filter(k => !placed.has(k.key)).sort((a, b) => a.key.localeCompare(b.key));
    return nodeCard(t, i, depth > 20 ? [] : kids.map(k => walk(k, depth + 1)));
  };
  const root = byKey[t.master];
  let html = `<section class="cluster" data-cluster="${esc(alias)}"><h2>${esc(alias)} <small>master ${esc(t.master || "none")}, fencing epoch ${t.fencing_epoch}${t.open_recovery_id ? `, <span class="error">recovery ${t.open_recovery_id} running</span>` : ""}</small></h2>`;
  if (canOperate() && t.master) html += `<div class="toolbar"><button data-op="switchover" data-cluster="${esc(alias)}" data-key="">Switch over (best replica)</button>${isAdmin() ? `<button data-op="failover" data-cluster="${esc(alias)}" data-key="">Forced failover (best replica)</button>` : ""}<span class="muted">or drag a replica onto the master</span></div>`;
  html += `<ul class="tree">${root ? walk(root, 0) : ""}</ul>`;
  const outside = t.instances.filter(i => !placed.has(i.key));
  if (outside.length) html += `<div class="outside"><h3>Outside the tree</h3><ul class="tree"><ul>${outside.map(i => nodeCard(t, i, [])).join("")}</ul></ul></div>`;
  return html + `</section>`;
}

function instancePage(alias, key) {
  const t = state.topologies[alias];
  const i = t && t.instances.find(x => x.key === key);
  if (!i) return `<p class="error">no instance ${esc(key)} in ${esc(alias)}</p>`;
  const r = i.replication || {};
  const rows = [
    ["cluster", `<a href="#/cluster/${seg(alias)}">${esc(alias)}</a>`], ["role", esc(i.role)], ["reachable", i.reachable],
    ["version", `${esc(i.version)} (${esc(i.flavor)})`], ["server id", i.server_id], ["read only", i.read_only],
    ["replicates from", esc(r.source || "")], ["IO / SQL thread", esc(`${r.io_thread || ""} / ${r.sql_thread || ""}`)],
    ["seconds behind", r.seconds_behind ?? ""], ["GTID mode", esc(r.gtid_mode || "")],
    ["executed GTIDs", `<code>${esc(i.gtid_executed)}</code>`], ["received GTIDs", `<code>${esc(i.gtid_received)}</code>`],
    ["semi-sync", `source ${i.semi_sync_master}, replica ${i.semi_sync_replica}`], ["downtimed", i.downtimed],
    ["promotion rule", esc(i.promotion_rule)], ["replicas", esc((i.replicas || []).join(", "))],
    ["probe latency", `${Number(i.probe_latency_ms || 0).toFixed(1)} ms`], ["last checked", fmtTime(i.last_checked_unix_ms)],
    ["last error", `<span class="error">${esc(i.last_error || r.last_io_error || r.last_sql_error || "")}</span>`],
    ["target groups", targetGroups(alias, i.key)],
  ];
  return `<h2>${esc(i.key)}</h2><table class="instance">${rows.map(([k, v]) => `<tr><th>${k}</th><td>${v}</td></tr>`).join("")}</table>` +
    `<ul class="tree">${nodeCard(t, i, [])}</ul>`;
}

function recoveriesPage() {
  const list = [...state.recoveries].reverse();
  if (!list.length) return `<h2>Recoveries</h2><p class="muted">none yet</p>`;
  return `<h2>Recoveries</h2>` + list.map(r => `
    <div class="card ${r.status === "failed" ? "bad" : ""}" data-recovery="${r.id}">
      <h3>#${r.id} ${esc(r.kind)} of ${esc(r.cluster)} <span class="badge ${r.status === "succeeded" ? "ok" : r.status === "running" ? "warn" : "bad"}">${esc(r.status)}</span></h3>
      <div>${esc(r.failed_master)} → ${esc(r.new_master || r.candidate || "?")}, epoch ${r.epoch}, started ${fmtTime(r.started_unix_ms)}${r.ended_unix_ms ? `, took ${r.ended_unix_ms - r.started_unix_ms} ms` : ""}${r.writable_after_ms ? `, writable after ${r.writable_after_ms} ms` : ""}</div>
      <div>${esc(r.reason)}${r.requested_by ? ` (asked by ${esc(r.requested_by)})` : ""}</div>
      <div class="muted">${esc(r.summary)}</div>
      <table class="steps">${(r.steps || []).map(s => `<tr><td>+${s.at_ms} ms</td><td>${esc(s.text)}</td></tr>`).join("")}</table>
      ${r.acknowledged_by ? `<div>acknowledged by ${esc(r.acknowledged_by)}: ${esc(r.acknowledge_comment)}</div>` : (canOperate() && r.status !== "running" ? `<button data-op="ack" data-id="${r.id}">Acknowledge</button>` : "")}
    </div>`).join("");
}

async function raftPage() {
  const r = await api("/api/v1/raft");
  const members = (r.members || []).map(m => `<tr data-peer="${m.id}"><td>${m.id}${m.id === r.leader_id ? ` <span class="badge ok">leader</span>` : ""}${m.id === r.node_id ? ` <span class="badge">this peer</span>` : ""}</td>
    <td><code>${esc(m.raft)}</code></td><td><code>${esc(m.http)}</code></td><td>${m.voter ? "voter" : "learner"}</td>
    <td>${m.id === r.node_id ? "this peer" : m.last_contact_ms >= 0 ? `${m.last_contact_ms} ms ago` : `<span class="badge bad">never</span>`}</td>
    <td>${esc(m.instance_id)} ${esc(m.instance_state)}</td>
    <td>${isAdmin() && m.voter && m.id !== r.leader_id ? `<button data-op="transfer" data-id="${m.id}">Make leader</button>` : ""}</td></tr>`).join("");
  return `<h2>Raft group</h2>
    <p>this peer ${r.node_id} is <b>${esc(r.role)}</b>, term ${r.term}, leader ${r.leader_id || "unknown"} ${esc(r.leader_http)};
    ${r.quorum_contact ? `<span class="badge ok">in contact with a majority</span>` : `<span class="badge bad">cut off from the majority</span>`}
    ${r.reachable_peers} peer(s) reachable; last leader contact ${r.last_leader_contact_ms >= 0 ? r.last_leader_contact_ms + " ms ago" : "unknown"};
    log ${r.last_log_index}, committed ${r.committed_index}, applied ${r.applied_index}</p>
    <table><tr><th>peer</th><th>Raft</th><th>HTTP</th><th>kind</th><th>last contact</th><th>EC2 instance</th><th></th></tr>${members}</table>`;
}

async function auditPage() {
  const a = await api("/api/audit?limit=300");
  const rows = [...(a.entries || [])].reverse().map(e => `<tr><td>${fmtTime(e.at_unix_ms)}</td><td>${esc(e.who)} (${esc(e.scope)})</td><td>${esc(e.from)} via peer ${e.peer}</td>
    <td>${esc(e.operation)}</td><td>${(e.arguments || []).map(x => `${esc(x.name)}=${esc(x.value)}`).join(" ")}</td><td>${esc(e.result)}${e.detail ? ": " + esc(e.detail) : ""}</td></tr>`).join("");
  return `<h2>Audit</h2><table><tr><th>when</th><th>who</th><th>from</th><th>operation</th><th>arguments</th><th>outcome</th></tr>${rows}</table>`;
}

async function backupsPage(alias) {
  const aliases = Object.keys(state.topologies).sort();
  alias = alias || aliases[0];
  if (!alias) return `<h2>Backups</h2><p class="muted">no clusters</p>`;
  const tabs = aliases.map(a => `<a href="#/backups/${seg(a)}">${a === alias ? `<b>${esc(a)}</b>` : esc(a)}</a>`).join(" · ");
  let b;
  try { b = await api("/api/backups/" + seg(alias)); } catch (e) {
    if (e instanceof Unauthenticated) throw e;
    return `<h2>Backups</h2><p>${tabs}</p><p class="error">${esc(e.message)}</p>`;
  }
  const rows = (b.backups || []).map(x => `<tr><td><code>${esc(x.id)}</code></td><td>${esc(x.kind)}${x.parent ? ` on ${esc(x.parent)}` : ""}</td><td>${esc(x.method)}${x.staged_locally ? " (staged locally)" : ""}</td>
    <td>${esc(x.source)}</td><td>${bytes(x.stored_bytes)} of ${bytes(x.raw_bytes)}</td><td>${(Number(x.duration_ms) / 1000).toFixed(1)} s</td>
    <td>${x.chain_complete ? `<span class="badge ok">complete</span>` : `<span class="badge bad">${esc(x.chain_problem || "incomplete")}</span>`}</td><td>${fmtTime(x.consistent_unix_ms)}</td></tr>`).join("");
  const ar = b.archive || {};
  return `<h2>Backups</h2><p>${tabs}</p>
    <p>bucket <code>${esc(b.bucket)}</code>; oldest restorable point ${fmtTime(b.oldest_restorable_unix_ms) || "none"}; ${b.running ? `running: ${esc(b.running)}` : "no backup running"}</p>
    <p>binlog archive: ${ar.segments || 0} segment(s), ${bytes(ar.stored_bytes)}, latest commit ${ar.latest_commit_unix_us ? fmtTime(Number(ar.latest_commit_unix_us) / 1000) : "none"}, archiver ${esc(ar.archiver || "none")}
    ${(ar.gaps || []).map(g => `<span class="badge bad">gap after segment ${g.after_segment}: ${esc(g.missing)}</span>`).join("")}</p>
    <table><tr><th>id</th><th>kind</th><th>method</th><th>source</th><th>size</th><th>took</th><th>chain</th><th>consistent at</th></tr>${rows}</table>
    ${(b.incomplete || []).length ? `<p class="muted">incomplete (no manifest): ${esc(b.incomplete.join(", "))}</p>` : ""}`;
}

// ---- Operations: a dialog that shows the plan first and the API's answer after.

function dialog(title, body, confirmText, onConfirm) {
  $("dialog-title").textContent = title;
  $("dialog-body").innerHTML = body;
  $("dialog-error").textContent = "";
  const confirm = $("dialog-confirm");
  confirm.textContent = confirmText || "Confirm";
  confirm.disabled = !onConfirm;
  confirm.onclick = async ev => {
    ev.preventDefault();
    confirm.disabled = true;
    $("dialog-error").textContent = "";
    try {
      const text = await onConfirm();
      $("dialog").close();
      notice(text || "done");
      await refreshAll();
      draw();
    } catch (e) {
      $("dialog-error").textContent = e.message;
      confirm.disabled = false;
      if (e instanceof Unauthenticated) showLogin(e.message);
    }
  };
  if (!$("dialog").open) $("dialog").showModal();
}

function planHtml(p) {
  const list = (xs, f) => (xs || []).length ? `<ul class="plan">${xs.map(f).join("")}</ul>` : "";
  return `<p>${esc(p.kind)} of <b>${esc(p.cluster)}</b>: <code>${esc(p.master)}</code> → <b><code>${esc(p.candidate || "nobody")}</code></b>${p.donor ? ` (catching up from ${esc(p.donor)})` : ""}</p>
    ${p.refused ? `<p class="error" id="plan-refused">refused: ${esc(p.refused)}</p>` : ""}
    ${(p.repoint || []).length ? `<p>then repoint ${p.repoint.map(k => `<code>${esc(k)}</code>`).join(", ")}</p>` : ""}
    ${(p.unreachable || []).length ? `<p class="error">unreachable: ${esc(p.unreachable.join(", "))}</p>` : ""}
    ${(p.passed_over || []).length ? `<p>passed over:</p>` + list(p.passed_over, x => `<li><code>${esc(x.instance)}</code>: ${esc(x.reason)}</li>`) : ""}`;
}

async function recoveryDialog(kind, alias, key) {
  const t = state.topologies[alias];
  const expected = t ? t.master : "";
  const base = kind === "switchover" ? "/api/graceful-master-takeover/" : "/api/force-master-failover/";
  const target = key ? `/${hostPort(key).map(seg).join("/")}` : "";
  const path = `${base}${seg(alias)}${target}?expected_master=${seg(expected)}`;
  const title = `${kind === "switchover" ? "Switch over" : "Forced failover of"} ${alias}${key ? " to " + key : ""}`;
  dialog(title, `<p class="muted">asking for the plan…</p>`, "Confirm", null);
  let reply;
  try {
    reply = await api(path + "&dry_run=1", "POST");
  } catch (e) {
    if (e instanceof Unauthenticated) return showLogin(e.message);
    $("dialog-body").innerHTML = `<p class="error" id="plan-refused">refused: ${esc(e.message)}</p>`;
    return;
  }
  const plan = reply.plan || {};
  const ok = !plan.refused && plan.candidate;
  dialog(title, planHtml(plan), kind === "switchover" ? "Switch over" : "Fail over", ok ? async () => {
    const r = await api(path, "POST");
    const rec = r.recovery || {};
    return `${rec.kind || kind} ${rec.status || ""}: ${rec.summary || ""}`;
  } : null);
}

function simpleDialog(title, body, confirmText, path) {
  dialog(title, body, confirmText, async () => {
    const r = await api(path, "POST");
    return r.message || "done";
  });
}

document.addEventListener("click", ev => {
  const b = ev.target.closest("button[data-op]");
  if (!b) return;
  const { op, cluster, key, id } = b.dataset;
  if (op === "switchover" || op === "failover") return recoveryDialog(op, cluster, key);
  if (op === "begin-downtime") {
    const [h, p] = hostPort(key);
    dialog(`Downtime ${key}`, `<p>A downtimed instance is never promoted and raises no recovery.</p>
      <label>for <input id="dt-duration" value="1h" size="6"></label> <label>reason <input id="dt-reason" value="maintenance" size="30"></label>`, "Begin downtime", async () => {
      const d = $("dt-duration").value.trim(), reason = $("dt-reason").value.trim() || "maintenance";
      const r = await api(`/api/begin-downtime/${seg(h)}/${seg(p)}/${seg(state.me.caller)}/${seg(reason)}/${seg(d)}`, "POST");
      return r.message;
    });
  } else if (op === "end-downtime") {
    const [h, p] = hostPort(key);
    simpleDialog(`End the downtime of ${key}`, `<p>It can be promoted and raise recoveries again.</p>`, "End downtime", `/api/end-downtime/${seg(h)}/${seg(p)}`);
  } else if (op === "ack") {
    dialog(`Acknowledge recovery ${id}`, `<label>comment <input id="ack-comment" size="40"></label>`, "Acknowledge", async () => {
      const r = await api(`/api/ack-recovery/${seg(id)}?comment=${seg($("ack-comment").value)}`, "POST");
      return r.message;
    });
  } else if (op === "disable-recoveries") {
    simpleDialog("Disable automatic recoveries", `<p>No failover will run by itself until they are enabled again.</p>`, "Disable", "/api/disable-global-recoveries");
  } else if (op === "enable-recoveries") {
    simpleDialog("Enable automatic recoveries", `<p>Failures found from now on are recovered.</p>`, "Enable", "/api/enable-global-recoveries");
  } else if (op === "transfer") {
    simpleDialog(`Make peer ${id} the Raft leader`, `<p>Recoveries and AWS changes move to peer ${id}.</p>`, "Transfer leadership", `/api/raft/transfer-leadership/${seg(id)}`);
  }
});

document.addEventListener("change", ev => {
  const s = ev.target.closest("select[data-op=promotion-rule]");
  if (!s) return;
  const [h, p] = hostPort(s.dataset.key);
  const rule = s.value;
  simpleDialog(`Promotion rule of ${s.dataset.key}: ${rule}`, `<p>${rule === "must_not" ? "It will never be promoted." : rule === "prefer" ? "It is promoted before others." : "Candidates are chosen with this rule."}</p>`, "Set rule", `/api/register-candidate/${seg(h)}/${seg(p)}/${seg(rule)}`);
});

function bindDragAndDrop() {
  for (const n of document.querySelectorAll(".node[draggable=true]")) {
    n.addEventListener("dragstart", ev => ev.dataTransfer.setData("text/plain", JSON.stringify({ cluster: n.dataset.cluster, key: n.dataset.key })));
  }
  for (const m of document.querySelectorAll(".node.master")) {
    m.addEventListener("dragover", ev => { ev.preventDefault(); m.classList.add("drop-target"); });
    m.addEventListener("dragleave", () => m.classList.remove("drop-target"));
    m.addEventListener("drop", ev => {
      ev.preventDefault();
      m.classList.remove("drop-target");
      try {
        const d = JSON.parse(ev.dataTransfer.getData("text/plain"));
        if (d.cluster === m.dataset.cluster) recoveryDialog("switchover", d.cluster, d.key);
        else notice(`${d.key} is not in cluster ${m.dataset.cluster}`, true);
      } catch (e) {
        notice("that is not a replica of this cluster", true);
      }
    });
  }
}

// ---- Start.

async function start() {
  try {
    state.me = await api("/api/status");
  } catch (e) {
    if (e instanceof Unauthenticated) return showLogin(token() ? e.message : "");
    $("page").innerHTML = `<p class="error">cannot reach the API: ${esc(e.message)}</p>`;
    return;
  }
  $("login").hidden = true;
  $("nav").hidden = false;
  $("who").innerHTML = `${esc(state.me.caller)} <span class="badge" id="scope">${esc(state.me.caller_scope)}</span> · peer ${state.me.node_id} <button id="logout">log out</button>`;
  $("logout").onclick = logout;
  try {
    state.globalRecoveries = (await api("/api/v1/global-recoveries")).enabled;
    await refreshAll();
  } catch (e) {
    if (e instanceof Unauthenticated) return showLogin(e.message);
    notice(e.message, true);
  }
  await draw();
  runFeed();
}

// A slow consistency pass: what the feed does not carry (AWS, global recoveries).
setInterval(async () => {
  if (!state.me || document.hidden) return;
  try {
    state.globalRecoveries = (await api("/api/v1/global-recoveries")).enabled;
    await refreshAws();
    if (["clusters", "cluster", "topology"].includes(route.page) && !$("dialog").open) draw();
  } catch (e) { /* the feed's indicator shows a lost peer */ }
}, 5000);

// For tests and operators' consoles: draw topologies given as data (the page's own
// drawing code, timed), e.g. to check it stays readable with many instances.
window.orchUI = {
  drawTopologies(list) {
    const t0 = performance.now();
    for (const t of list) state.topologies[t.alias] = t;
    location.hash = "#/topology";
    route = parseRoute();
    $("page").innerHTML = list.map(t => clusterPage(t.alias)).join("");
    void $("page").offsetHeight;
    return performance.now() - t0;
  },
  state,
};

start();
