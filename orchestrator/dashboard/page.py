"""The dashboard's one page: HTML, CSS and JavaScript inline, charts drawn as SVG by the page's own code.

Nothing is loaded from anywhere else (no CDN, no fonts, no libraries; the server's Content-Security-Policy
forbids it), so the page works on a machine without internet. It lives in a Python module rather than an
.html file so that it ships with the package whatever the packaging's data-file rules are.

The page polls the JSON API (twins every second, the other panels every two) with one request in flight
per panel; every value from the API is put into the page as text (``textContent``), never as HTML.

Each page is rendered for one browser session: it carries that session's CSRF token (a ``<meta>`` the
script sends back in ``X-CSRF-Token`` on every POST) and names the identity the server acts as.
"""

from __future__ import annotations

import html

_CSS = r"""
:root { --bg:#f5f6f8; --card:#fff; --ink:#1d2430; --muted:#667085; --line:#e3e6eb; --ok:#16794c; --bad:#b42318;
        --warn:#b54708; --accent:#2556c4; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background:var(--bg); color:var(--ink); }
header { display:flex; align-items:baseline; gap:16px; padding:12px 20px; background:#142033; color:#fff; }
header h1 { font-size:18px; margin:0; }
header .sub { color:#b8c2d3; font-size:13px; }
#live { margin-left:auto; font-size:12px; color:#b8c2d3; }
main { display:grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap:16px; padding:16px 20px; }
section.panel { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 14px; min-width:0; overflow-x:auto; }
section.panel h2 { font-size:15px; margin:0 0 8px; display:flex; gap:8px; align-items:baseline; }
section.panel h2 .src { font-weight:normal; font-size:12px; color:var(--muted); }
.unavailable { color:var(--bad); background:#fef3f2; border:1px solid #fecdca; border-radius:6px; padding:8px; }
.stale { color:var(--warn); }
table { border-collapse:collapse; width:100%; font-size:13px; }
th, td { text-align:left; padding:3px 6px; border-bottom:1px solid var(--line); vertical-align:top; }
th { color:var(--muted); font-weight:600; }
.ok { color:var(--ok); } .bad { color:var(--bad); } .warn { color:var(--warn); } .muted { color:var(--muted); }
.mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size:12px; }
.pill { display:inline-block; padding:0 6px; border-radius:9px; font-size:12px; border:1px solid var(--line); }
.pill.active, .pill.ok { color:var(--ok); border-color:#abefc6; background:#ecfdf3; }
.pill.revoked, .pill.expired, .pill.bad { color:var(--bad); border-color:#fecdca; background:#fef3f2; }
.row { display:flex; flex-wrap:wrap; gap:8px; align-items:center; margin:6px 0; }
.kv { display:flex; flex-wrap:wrap; gap:14px; margin:4px 0 8px; }
.kv div b { display:block; font-size:16px; }
.kv div span { color:var(--muted); font-size:12px; }
.assets { display:grid; grid-template-columns: repeat(auto-fit, minmax(250px, 1fr)); gap:10px; }
.asset { border:1px solid var(--line); border-radius:6px; padding:6px 8px; }
.asset h3 { font-size:13px; margin:0 0 4px; display:flex; justify-content:space-between; }
.chart { display:block; max-width:100%; height:auto; }
.chart text { font-size:10px; fill:var(--muted); }
input, select, button { font:inherit; padding:3px 6px; border:1px solid #c9ced6; border-radius:5px; background:#fff; }
button { background:var(--accent); color:#fff; border-color:var(--accent); cursor:pointer; }
button.secondary { background:#fff; color:var(--bad); border-color:#fecdca; }
button:disabled { opacity:.5; cursor:default; }
tr.selected td { background:#eef4ff; }
tr.clickable { cursor:pointer; }
.alerts li { margin:2px 0; }
h4 { margin:10px 0 4px; font-size:13px; }
"""

_HTML = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>TwinLedger dashboard</title>
<meta name="csrf-token" content="__CSRF__">
<link rel="icon" href="data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E%3Crect width='16' height='16' rx='3' fill='%23142033'/%3E%3Cpath d='M4 11V5h3v6M9 5v6h3' stroke='%23fff' fill='none' stroke-width='1.6'/%3E%3C/svg%3E">
<style>__CSS__</style>
</head>
<body>
<header><h1>TwinLedger</h1><span class="sub">consortium ledger · federated learning · digital twins</span>
<span class="sub" id="acting">__ACTING__</span>
<span id="live">connecting…</span></header>
<main>
<section class="panel" id="panel-network"><h2>Network <span class="src" id="network-src"></span></h2><div id="network-body">loading…</div></section>
<section class="panel" id="panel-governance"><h2>Governance <span class="src" id="gov-src"></span></h2>
  <div id="gov-body">loading…</div>
  <h4>Grant use of a data set</h4>
  <div id="gov-actions">
    <div class="row">
      <span>as <b class="mono" id="grant-as"></b></span>
      <label>data set <select id="grant-dataset"></select></label>
      <label>to <select id="grant-grantee"></select></label>
    </div>
    <div class="row">
      <label>purpose <input id="grant-purpose" placeholder="fl:cardiac" size="14"></label>
      <label>expires <input id="grant-expires" placeholder="2027-01-01T00:00:00Z (optional)" size="24"></label>
      <button id="grant-submit">Grant</button>
    </div>
    <div id="grant-result" class="muted"></div>
  </div>
</section>
<section class="panel" id="panel-federated"><h2>Federated learning <span class="src" id="fl-src"></span></h2><div id="fl-body">loading…</div></section>
<section class="panel" id="panel-twins"><h2>Digital twins <span class="src" id="twins-src"></span></h2>
  <div id="twins-body">loading…</div>
  <h4>Verify a reading</h4>
  <div class="row">
    <label>asset <input id="verify-asset" list="verify-assets" placeholder="plant1.m1" size="16"></label>
    <datalist id="verify-assets"></datalist>
    <label>seq <input id="verify-seq" type="number" min="1" size="6"></label>
    <label>property <input id="verify-prop" placeholder="(all)" size="12"></label>
    <button id="verify-submit">Verify</button>
  </div>
  <div id="verify-result" class="muted"></div>
</section>
</main>
<script>__JS__</script>
</body>
</html>
"""

_JS = r"""
"use strict";
const $ = (id) => document.getElementById(id);
const SVGNS = "http://www.w3.org/2000/svg";
// This session's CSRF token, sent back on every POST: a page of another site cannot read it.
const CSRF = document.querySelector('meta[name="csrf-token"]').content;
// A 401 means the session ended (the dashboard restarted with a new token): say so where the panel was.
async function apiJson(r) {
  const d = await r.json();
  return r.status === 401 ? {available: false, reason: `logged out: ${d.error}`, error: d.error} : d;
}

// Build DOM from data: every value goes in as text, so nothing from the ledger or a sensor can inject markup.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children) el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}
function replace(el, ...children) { el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined)); }
function fmt(v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (typeof v !== "number") return String(v);
  const d = digits === undefined ? (Math.abs(v) >= 100 ? 1 : Math.abs(v) >= 1 ? 2 : 3) : digits;
  return v.toFixed(d);
}
function short(hash, n) { return hash ? String(hash).slice(0, n || 12) : "–"; }
function unavailable(body, data) {
  replace(body, h("div", {class: "unavailable", "data-available": "false"}, data.reason || data.error || "unavailable"));
}
const COLORS = ["#2556c4", "#c4252f", "#16794c", "#b54708", "#6941c6", "#0e7090", "#667085"];

// A small line chart in SVG: one or more series over a shared x axis, y scaled to the data's range.
function lineChart(xs, series, opts) {
  const W = opts.width || 240, H = opts.height || 56, padL = 4, padR = 4, padT = 12, padB = 4;
  const root = svg("svg", {class: "chart", width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": opts.title || "chart"});
  const vals = series.flatMap((s) => s.values.filter((v) => typeof v === "number"));
  if (opts.title) root.appendChild(svg("text", {x: padL, y: 9}, opts.title));
  if (!vals.length || xs.length < 1) { root.appendChild(svg("text", {x: W / 2, y: H / 2 + 4, "text-anchor": "middle"}, "no data yet")); return root; }
  let lo = Math.min(...vals), hi = Math.max(...vals);
  if (opts.min !== undefined) lo = Math.min(lo, opts.min);
  if (hi - lo < 1e-9) { hi += 0.5; lo -= 0.5; }
  const x0 = xs[0], x1 = xs[xs.length - 1], span = x1 - x0 || 1;
  const X = (x) => padL + ((x - x0) / span) * (W - padL - padR);
  const Y = (y) => padT + (1 - (y - lo) / (hi - lo)) * (H - padT - padB);
  root.appendChild(svg("line", {x1: padL, x2: W - padR, y1: H - padB, y2: H - padB, stroke: "#e3e6eb"}));
  series.forEach((s, i) => {
    let d = "", pen = false;
    s.values.forEach((v, j) => {
      if (typeof v !== "number") { pen = false; return; }
      d += `${pen ? "L" : "M"}${X(xs[j]).toFixed(1)},${Y(v).toFixed(1)}`;
      pen = true;
    });
    if (d) root.appendChild(svg("path", {d, fill: "none", stroke: s.color || COLORS[i % COLORS.length], "stroke-width": 1.5}));
    if (xs.length === 1 && typeof s.values[0] === "number")
      root.appendChild(svg("circle", {cx: X(xs[0]), cy: Y(s.values[0]), r: 2, fill: s.color || COLORS[i % COLORS.length]}));
  });
  const last = series.length === 1 ? series[0].values.filter((v) => typeof v === "number").slice(-1)[0] : undefined;
  root.appendChild(svg("text", {x: W - padR, y: 9, "text-anchor": "end"},
    (last !== undefined ? fmt(last) + " · " : "") + `${fmt(lo)}–${fmt(hi)}` + (opts.unit ? " " + opts.unit : "")));
  return root;
}
function legend(names) {
  return h("div", {class: "row"}, names.map((n, i) => h("span", {class: "muted"}, h("span", {style: `color:${COLORS[i % COLORS.length]}`}, "■ "), n)));
}

// Poll one endpoint: the next request starts only after this one answered, so a slow source never piles up.
const lastOk = {};
function poll(name, url, render, everyMs) {
  const tick = async () => {
    try {
      const r = await fetch(typeof url === "function" ? url() : url, {cache: "no-store"});
      const data = await apiJson(r);
      render(data);
      lastOk[name] = Date.now();
    } catch (e) {
      render({available: false, reason: `dashboard server unreachable: ${e}`});
    }
    setTimeout(tick, everyMs);
  };
  tick();
}
setInterval(() => {
  const ages = Object.values(lastOk).map((t) => (Date.now() - t) / 1000);
  $("live").textContent = ages.length ? `live · updated ${fmt(Math.max(...ages), 1)} s ago` : "connecting…";
}, 500);

// --- network ------------------------------------------------------------------------------------
function renderNetwork(d) {
  const body = $("network-body");
  if (!d.available) { $("network-src").textContent = ""; return unavailable(body, d); }
  $("network-src").textContent = `${d.network} · channel ${d.channel} · supervisor ${d.supervisor ? "running" : "not running"}`;
  const orgs = h("table", {id: "network-orgs"}, h("tr", {}, ["org", "kind", "MSP", "enrolled", "nodes healthy"].map((t) => h("th", {}, t))),
    d.orgs.map((o) => h("tr", {"data-org": o.name}, h("td", {}, o.name), h("td", {}, o.kind), h("td", {class: "mono"}, o.msp_id),
      h("td", {}, o.enrolled.join(", ") || "–"), h("td", {class: o.nodes && o.healthy === o.nodes ? "ok" : "bad"}, `${o.healthy}/${o.nodes}`))));
  const nodes = h("table", {id: "network-nodes"}, h("tr", {}, ["node", "org", "type", "health", "height", "pid", "restarts"].map((t) => h("th", {}, t))),
    d.nodes.map((n) => h("tr", {"data-node": n.name}, h("td", {class: "mono"}, n.name), h("td", {}, n.org), h("td", {}, n.type),
      h("td", {class: n.healthy ? "ok" : "bad"}, n.healthy ? "healthy" : (n.pid ? "starting" : "down")),
      h("td", {}, n.height === null ? "–" : n.height), h("td", {}, n.pid || "–"), h("td", {}, n.restarts))));
  replace(body,
    h("div", {class: "kv", "data-available": "true"},
      h("div", {}, h("b", {id: "network-healthy"}, `${d.healthy}/${d.total}`), h("span", {}, "nodes healthy")),
      h("div", {}, h("b", {}, d.height === null ? "–" : d.height), h("span", {}, "block height"))),
    orgs, h("h4", {}, "Nodes"), nodes);
}

// --- governance ---------------------------------------------------------------------------------
let selectedDataset = null, govData = null;
function setOptions(select, values, labels) {
  const keep = select.value;
  const same = select.options.length === values.length && values.every((v, i) => select.options[i].value === v);
  if (!same) replace(select, values.map((v, i) => h("option", {value: v}, labels ? labels[i] : v)));
  if (values.includes(keep)) select.value = keep;
  return select;
}
let govShown = null;
function renderGovernance(d) {
  // Re-render only what changed: a table rebuilt every poll would eat clicks and text selections.
  const key = JSON.stringify([d, selectedDataset]);
  if (key === govShown) return;
  govShown = key;
  const body = $("gov-body");
  govData = d.available ? d : null;
  const canAct = Boolean(d.available && d.acting);
  $("grant-submit").disabled = !canAct;
  if (!d.available) { $("gov-src").textContent = ""; return unavailable(body, d); }
  $("gov-src").textContent = d.source;
  if (!selectedDataset && d.audit_dataset) selectedDataset = d.audit_dataset;
  $("grant-as").textContent = d.acting ? d.acting.identity : "nobody (read-only: start the dashboard with --as ORG:steward to act)";
  setOptions($("grant-dataset"), d.dataset_ids || d.datasets.map((x) => x.id));
  setOptions($("grant-grantee"), d.orgs);
  const rows = d.datasets.map((ds) => {
    const grants = ds.grants.length ? ds.grants.map((g) => h("div", {class: "grant", "data-grantee": g.grantee, "data-purpose": g.purpose},
      h("span", {class: "pill " + g.state}, g.state), " ", g.grantee, " · ", g.purpose,
      g.expires_at ? h("span", {class: "muted"}, " until " + g.expires_at) : null,
      g.state === "active" && canAct ? [" ", h("button", {class: "secondary revoke", onclick: () => act("revoke", {dataset: ds.id, grantee: g.grantee, purpose: g.purpose})}, "revoke")] : null))
      : h("span", {class: "muted"}, "no grants");
    return h("tr", {class: "clickable" + (ds.id === selectedDataset ? " selected" : ""), "data-dataset": ds.id,
                    onclick: (ev) => { if (ev.target.tagName !== "BUTTON") { selectedDataset = ds.id; refreshGovernance(); } }},
      h("td", {class: "mono"}, ds.id), h("td", {}, ds.kind), h("td", {}, ds.owner), h("td", {}, ds.sensitivity), h("td", {}, grants));
  });
  const table = d.datasets.length
    ? h("table", {id: "gov-datasets"}, h("tr", {}, ["data set", "kind", "owner", "sensitivity", "grants"].map((t) => h("th", {}, t))), rows)
    : h("div", {class: "muted"}, "no data sets registered yet");
  const more = d.truncated ? h("div", {class: "muted"}, `the ${d.datasets.length} newest of ${d.dataset_ids.length} data sets; pick another in the grant form's list`) : null;
  let audit = null;
  if (d.audit) {
    audit = [h("h4", {}, `Audit trail of ${d.audit.dataset} (owner ${d.audit.owner})`),
      h("table", {id: "audit-table", "data-dataset": d.audit.dataset}, h("tr", {}, ["time (UTC)", "action", "detail", "tx"].map((t) => h("th", {}, t))),
        d.audit.entries.map((e) => h("tr", {class: "audit-entry", "data-action": e.action},
          h("td", {class: "mono"}, e.at), h("td", {}, e.action),
          h("td", {}, auditDetail(e)), h("td", {class: "mono", title: e.tx_id}, short(e.tx_id, 10)))))];
  }
  replace(body, h("div", {"data-available": "true"}, table, more), audit);
}
// Fabric client ids read "x509::<subject DN>::<issuer DN>"; "steward (ca.hospital1)" is what a person needs.
function who(id) {
  const m = /^x509::(.*)::(.*)$/.exec(id || "");
  if (!m) return id || "?";
  const cn = (dn) => ((/(?:^|,)CN=([^,]+)/.exec(dn) || [])[1] || dn);
  return `${cn(m[1])} (${cn(m[2])})`;
}
function auditDetail(e) {
  const by = (id) => id ? [" by ", h("span", {title: id}, who(id))] : [];
  if (e.action === "registered") return h("span", {}, `${e.kind}, ${e.sensitivity}`, by(e.registered_by));
  if (e.action === "granted") return h("span", {}, `to ${e.grantee} for ${e.purpose}` + (e.expires_at ? ` until ${e.expires_at}` : ""), by(e.granted_by));
  if (e.action === "revoked") return h("span", {}, `from ${e.grantee} for ${e.purpose}`, by(e.revoked_by));
  if (e.action === "access") return h("span", {}, `${e.org} (${e.role}) for ${e.purpose}: ${e.allowed ? "allowed" : "denied"} – ${e.reason}`, by(e.caller));
  return JSON.stringify(e);
}
let govTimer = null;
async function refreshGovernance() {
  try {
    const q = selectedDataset ? `?dataset=${encodeURIComponent(selectedDataset)}` : "";
    const r = await fetch(`/api/governance${q}`, {cache: "no-store"});
    renderGovernance(await apiJson(r));
    lastOk.governance = Date.now();
  } catch (e) { renderGovernance({available: false, reason: `dashboard server unreachable: ${e}`}); }
}
function pollGovernance() { refreshGovernance().finally(() => { govTimer = setTimeout(pollGovernance, 2000); }); }
async function act(action, fields) {
  const out = $("grant-result");
  out.className = "muted"; out.textContent = `${action} as ${govData && govData.acting ? govData.acting.identity : "?"}…`;
  try {
    const r = await fetch(`/api/governance/${action}`, {method: "POST", body: JSON.stringify(fields),
      headers: {"Content-Type": "application/json", "X-CSRF-Token": CSRF}});
    const d = await r.json();
    if (r.ok) { out.className = "ok"; out.textContent = `${action === "grant" ? "granted" : "revoked"}: ${fields.dataset} → ${fields.grantee} for ${fields.purpose} (tx ${short(d.record && d.record.tx_id, 16)}, as ${d.as})`; selectedDataset = fields.dataset; }
    else { out.className = "bad"; out.textContent = d.error || `HTTP ${r.status}`; }
  } catch (e) { out.className = "bad"; out.textContent = `dashboard server unreachable: ${e}`; }
  refreshGovernance();
}
$("grant-submit").addEventListener("click", () => act("grant", {
  dataset: $("grant-dataset").value, grantee: $("grant-grantee").value,
  purpose: $("grant-purpose").value.trim(), expires_at: $("grant-expires").value.trim()}));

// --- federated learning -------------------------------------------------------------------------
function verifiedMark(status) {
  const s = status || "missing";
  return h("span", {class: "pill " + (s === "ok" ? "ok" : "bad"), title: s === "ok" ? "stored model re-hashed: matches the ledger" : s}, s === "ok" ? "✓ verified" : "✗ " + s);
}
let flShown = null;
function renderFederated(d) {
  const key = JSON.stringify(d);
  if (key === flShown) return;
  flShown = key;
  const body = $("fl-body");
  if (!d.available) { $("fl-src").textContent = ""; return unavailable(body, d); }
  $("fl-src").textContent = d.source.label;
  const keys = d.node_keys || [];
  const nodeKeys = h("div", {class: "muted", id: "fl-node-keys"}, keys.length
    ? `SuperNode keys on the ledger: ${keys.map((k) => `${k.org} ${short(k.public_key_sha256, 8)}`).join(", ")}`
    : "no SuperNode key registered on the ledger yet");
  if (!d.tasks.length) return replace(body, h("div", {class: "muted", "data-available": "true"}, "no federated task of this home has committed a round yet"), nodeKeys);
  replace(body, nodeKeys, h("div", {"data-available": "true"}, d.tasks.map((t) => {
    const rounds = t.rounds;
    const keys = [...new Set(rounds.flatMap((r) => Object.keys(r.metrics || {})))].sort();
    const xs = rounds.map((r) => r.round);
    const charts = keys.map((k) => lineChart(xs, [{name: k, values: rounds.map((r) => (r.metrics || {})[k] ?? null)}], {title: k, width: 260, height: 70}));
    const last = rounds[rounds.length - 1];
    const evalRows = last && last.evaluation ? Object.entries(last.evaluation).map(([org, m]) =>
      h("tr", {}, h("td", {}, org), h("td", {}, fmt(m.auroc)), h("td", {}, fmt(m.f1)), h("td", {}, fmt(m["recall-at-p"])))) : [];
    return h("div", {class: "fl-task", "data-task": t.task},
      h("h4", {}, `${t.task} — ${rounds.length}` + (t.record ? `/${t.record.rounds} rounds, ${t.record.aggregation}, ${t.record.architecture}` : " round(s)") +
        `; models: ${t.counts.ok} verified, ${t.counts.missing} missing, ${t.counts.mismatched} mismatched`),
      h("div", {class: "row"}, charts),
      h("table", {}, h("tr", {}, ["round", "global model", "result model", "participants (update hash, n)"].map((x) => h("th", {}, x))),
        rounds.map((r) => h("tr", {"data-round": r.round},
          h("td", {}, r.round),
          h("td", {}, h("span", {class: "mono", title: r.global_sha256}, short(r.global_sha256)), " ", verifiedMark(t.verified[r.global_sha256])),
          h("td", {}, r.result_sha256 ? [h("span", {class: "mono", title: r.result_sha256}, short(r.result_sha256)), " ", verifiedMark(t.verified[r.result_sha256])] : "in progress"),
          h("td", {}, (r.updates || []).map((u) => h("div", {}, `${u.org} `, h("span", {class: "mono", title: u.sha256}, short(u.sha256, 8)), ` n=${u.num_examples} `, verifiedMark(t.verified[u.sha256]))))))),
      evalRows.length ? [h("h4", {}, "Evaluation of the final model per org (own test split)"),
        h("table", {}, h("tr", {}, ["org", "AUROC", "F1", "recall@P≥0.6"].map((x) => h("th", {}, x))), evalRows)] : null);
  })));
}

// --- twins --------------------------------------------------------------------------------------
function renderTwins(d) {
  const body = $("twins-body");
  if (!d.available) { $("twins-src").textContent = ""; return unavailable(body, d); }
  $("twins-src").textContent = `${d.home} · anchors: ${d.anchorer}`;
  const c = d.counters || {}, b = d.bridge || {}, lat = d.latency_ms || {};
  const kv = h("div", {class: "kv", "data-available": "true"},
    h("div", {}, h("b", {id: "twins-readings"}, c.readings ?? "–"), h("span", {}, "readings")),
    h("div", {}, h("b", {id: "twins-anchored"}, c.anchored ?? "–"), h("span", {}, "batches anchored")),
    h("div", {}, h("b", {class: b.lost ? "bad" : ""}, b.lost ?? "–"), h("span", {}, "lost")),
    h("div", {}, h("b", {class: b.connected ? "ok" : "bad"}, b.connected ? "connected" : "disconnected"), h("span", {}, "OPC-UA bridge")),
    h("div", {}, h("b", {}, fmt(lat.sensor_to_twin_p50, 0) + " ms"), h("span", {}, "sensor→twin p50")),
    h("div", {}, h("b", {class: d.stale ? "stale" : ""}, fmt(d.age_s, 1) + " s"), h("span", {}, d.stale ? "STALE: bridge not updating" : "status age")));
  const alerts = d.alerts && d.alerts.length
    ? h("ul", {class: "alerts", id: "twins-alerts"}, d.alerts.map((a) => h("li", {class: a.level === "high" ? "bad" : "warn"}, `${a.asset}: ${a.detail}`, h("span", {class: "muted"}, ` (${a.label || a.kind})`))))
    : h("div", {class: "muted", id: "twins-alerts"}, "no alerts");
  const assets = h("div", {class: "assets"}, d.assets.map((a) => {
    const hist = (d.history || {})["asset:" + a.asset] || {t: [], series: {}};
    const charts = Object.keys(a.signals).map((k) => lineChart(hist.t, [{name: k, values: hist.series[k] || []}], {title: k, height: 46}));
    if (a.risk) charts.push(lineChart(hist.t, [{name: "risk", values: hist.series.risk || [], color: "#c4252f"}], {title: `risk (${a.risk.unit})`, height: 46, min: 0}));
    const maxSeq = Math.max(0, ...Object.values(a.last_seq || {}));
    return h("div", {class: "asset", "data-asset": a.asset},
      h("h3", {}, h("span", {}, `${a.asset} `, h("span", {class: "muted"}, a.kind)), h("span", {class: "seq mono", title: "highest sequence number delivered"}, `seq ${maxSeq}`)),
      h("div", {class: "muted"}, a.risk ? `risk ${fmt(a.risk.value)} ${a.risk.band ? "(" + a.risk.band + ")" : ""} · ${a.risk.label}` : "no risk model"),
      charts);
  }));
  const plants = Object.keys(d.plants || {});
  const plantCharts = plants.length ? ["energy_kwh", "co2_kg"].map((k) => {
    const hs = plants.map((o) => (d.history || {})["plant:" + o] || {t: [], series: {}});
    const xs = hs.reduce((a, x) => (x.t.length > a.length ? x.t : a), []);
    return lineChart(xs, plants.map((o, i) => ({name: o, values: (hs[i].series[k] || []).slice(-xs.length)})),
                     {title: k === "energy_kwh" ? "energy (kWh, cumulative)" : "CO₂ (kg, cumulative)", width: 280, height: 80});
  }) : [];
  const totals = plants.length ? h("table", {id: "twins-plants"}, h("tr", {}, ["plant", "products", "energy kWh", "CO₂ kg", "water l", "waste kg"].map((x) => h("th", {}, x))),
    plants.map((o) => { const p = d.plants[o]; return h("tr", {"data-plant": o}, h("td", {}, o), h("td", {}, fmt(p.products, 0)), h("td", {}, fmt(p.energy_kwh)), h("td", {}, fmt(p.co2_kg)), h("td", {}, fmt(p.water_l)), h("td", {}, fmt(p.waste_kg))); })) : null;
  const anchors = d.anchors && d.anchors.length ? h("table", {id: "twins-anchor-table"}, h("tr", {}, ["batch", "readings", "Merkle root", "tx"].map((x) => h("th", {}, x))),
    d.anchors.map((a) => h("tr", {}, h("td", {class: "mono"}, a.batch_id), h("td", {}, a.count), h("td", {class: "mono", title: a.merkle_root}, short(a.merkle_root)), h("td", {class: "mono", title: a.tx_id}, short(a.tx_id, 16))))) : null;
  const raised = d.ledger_alerts && d.ledger_alerts.length ? h("table", {id: "twins-ledger-alerts"}, h("tr", {}, ["asset", "alert", "score", "model", "state", "tx"].map((x) => h("th", {}, x))),
    d.ledger_alerts.map((a) => h("tr", {"data-alert": a.key}, h("td", {}, a.asset), h("td", {}, a.kind), h("td", {}, fmt(a.score)),
      h("td", {class: "mono", title: a.model_sha256 || ""}, a.model || "–"), h("td", {}, a.open ? "open" : "closed"),
      h("td", {class: "mono", title: a.tx_id || ""}, a.tx_id ? short(a.tx_id, 16) : "waiting")))) : null;
  const models = Object.entries(d.models || {}).map(([kind, m]) => h("div", {class: m.refused ? "warn" : "muted", "data-model-kind": kind},
    `${kind} twins predict with `, h("b", {class: "mono", title: (m.in_use && m.in_use.sha256) || ""}, m.model || "fallback:ai4i-rules-v1"),
    m.state === "federated" ? ` (task ${m.in_use.task} round ${m.in_use.round}, sha256 verified against the ledger)`
      : m.state === "fallback" ? ` (${m.task ? "no verified round of " + m.task + " yet" : m.note || "no ledger task"})` : ` (${m.note || ""})`,
    m.refused ? h("div", {class: "bad"}, `not used: ${m.refused.task} round ${m.refused.round} (${m.refused.reason}): ${m.refused.detail}`) : null));
  replace(body, kv, models.length ? [h("h4", {}, "Models"), h("div", {id: "twins-models"}, models)] : null, h("h4", {}, `Alerts (${d.alerts_source})`), alerts,
    raised ? [h("h4", {}, "Alerts raised on the ledger (twins:RaiseAlert)"), raised] : null, h("h4", {}, "Twins"), assets,
    plants.length ? [h("h4", {}, "Energy and CO₂ per plant"), h("div", {class: "row"}, plantCharts), legend(plants), totals] : null,
    anchors ? [h("h4", {}, "Latest anchored batches"), anchors] : null);
  setOptions($("verify-assets"), d.assets.map((a) => a.asset));
}
$("verify-submit").addEventListener("click", async () => {
  const out = $("verify-result");
  const q = new URLSearchParams({asset: $("verify-asset").value.trim(), seq: $("verify-seq").value.trim()});
  if ($("verify-prop").value.trim()) q.set("prop", $("verify-prop").value.trim());
  out.className = "muted"; out.textContent = "verifying…";
  try {
    const r = await fetch(`/api/verify?${q}`, {cache: "no-store"});
    const d = await r.json();
    if (!r.ok) { out.className = "bad"; out.textContent = d.error; return; }
    if (d.available === false) { out.className = "bad"; out.textContent = d.reason; return; }
    if (!d.verified) { out.className = "bad"; out.dataset.verified = "false"; out.textContent = `NOT verified: ${d.reason}`; return; }
    out.className = "ok"; out.dataset.verified = "true";
    replace(out, h("div", {}, `verified ${d.readings.length} reading(s) of ${d.asset} seq ${d.seq} against ${d.anchorer}`),
      h("table", {}, h("tr", {}, ["property", "value", "source time", "batch", "leaf", "proof", "root", "tx"].map((x) => h("th", {}, x))),
        d.readings.map((v) => h("tr", {}, h("td", {}, v.reading.prop), h("td", {}, fmt(v.reading.value)), h("td", {class: "mono"}, v.reading.source_ts),
          h("td", {class: "mono"}, v.batch_id), h("td", {}, v.leaf_index), h("td", {}, `${v.proof_length} hashes`),
          h("td", {class: "mono", title: v.merkle_root}, short(v.merkle_root)), h("td", {class: "mono", title: v.tx_id}, short(v.tx_id, 16))))));
  } catch (e) { out.className = "bad"; out.textContent = `dashboard server unreachable: ${e}`; }
});

poll("network", "/api/network", renderNetwork, 2000);
pollGovernance();
poll("federated", "/api/federated", renderFederated, 2000);
poll("twins", "/api/twins", renderTwins, 1000);
"""


def render_page(csrf: str, acting: str | None) -> str:
    """The page for one session: its CSRF token, and whom the server acts as (None: read-only)."""
    who = f"acting as {acting}" if acting else "read-only (no --as)"
    # The placeholders sit in the HTML, which is filled before the CSS and script go in (they hold no values).
    page = _HTML.replace("__CSRF__", html.escape(csrf, quote=True)).replace("__ACTING__", html.escape(who))
    return page.replace("__CSS__", _CSS).replace("__JS__", _JS)
