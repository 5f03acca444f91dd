// vigil status page: renders the snapshots that /stream pushes. Plain DOM,
// text only (never innerHTML), so names and messages cannot inject markup.
"use strict";

let last = null;          // the latest snapshot
let clockSkew = 0;        // server time minus local time, in ms

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.appendChild(c instanceof Node ? c : el("td", c));
  return tr;
}

function td(child, cls) {
  const e = el("td", undefined, cls);
  if (child instanceof Node) e.appendChild(child); else e.textContent = child;
  return e;
}

function fill(id, rows, cols, emptyText) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren();
  if (rows.length === 0) {
    const tr = el("tr", undefined, "empty");
    const c = el("td", emptyText);
    c.colSpan = cols;
    tr.appendChild(c);
    body.appendChild(tr);
    return;
  }
  for (const r of rows) body.appendChild(r);
}

// age formats a duration as kubectl does: 45s, 3m12s, 5h, 2d.
function age(ts) {
  if (!ts || ts.startsWith("0001-")) return "-";
  let s = Math.max(0, Math.floor((Date.now() + clockSkew - Date.parse(ts)) / 1000));
  if (s < 120) return s + "s";
  const m = Math.floor(s / 60);
  if (m < 10) return m + "m" + (s % 60) + "s";
  if (m < 180) return m + "m";
  const h = Math.floor(m / 60);
  if (h < 48) return h + "h";
  return Math.floor(h / 24) + "d";
}

function podStatus(p) {
  if (p.terminating) return "Terminating";
  for (const c of p.containers) {
    if (c.state === "waiting" && c.reason) return c.reason;
    if (c.state === "terminated" && p.phase !== "Succeeded") return c.reason || "Error";
  }
  return p.phase || "Unknown";
}

function statusClass(s) {
  if (s === "Running" || s === "Succeeded") return "ok";
  if (s === "Pending" || s === "ContainerCreating" || s === "Terminating") return "warn";
  return "bad";
}

function probeBadge(pr) {
  const cls = { success: "ok", failing: "bad", pending: "warn", idle: "idle" }[pr.state] || "idle";
  const b = el("span", pr.type + ": " + pr.state, "badge " + cls);
  b.dataset.probe = pr.type;
  b.dataset.state = pr.state;
  if (pr.message) b.title = pr.message;
  return b;
}

function yesNo(v) { return td(v ? "yes" : "no", v ? "ok" : "warn"); }

function render(s) {
  const pods = [], containers = [];
  let ready = 0, restarts = 0;
  for (const p of s.pods) {
    const status = podStatus(p);
    if (p.allReady) ready++;
    restarts += p.restarts;
    const statusCell = td(status, statusClass(status));
    if (p.unschedulable) statusCell.title = p.unschedulable;
    const tr = row([p.namespace, td(p.name, "mono"), td(p.ready, p.allReady ? "ok" : "warn"),
      statusCell, td(p.restarts, "num"), td(age(p.created), "num"),
      td(p.ip || "-", "mono"), td(p.hostPorts || "-", "mono")]);
    tr.dataset.pod = p.namespace + "/" + p.name;
    pods.push(tr);
    for (const c of p.containers) {
      const probes = el("td");
      for (const pr of c.probes) probes.appendChild(probeBadge(pr));
      if (c.probes.length === 0) probes.appendChild(el("span", "none", "muted"));
      let state = c.state + (c.reason ? " (" + c.reason + ")" : "");
      if (c.since) state += " " + age(c.since);
      const cls = c.state === "running" ? "ok" : c.state === "waiting" ? "warn" : "bad";
      const ctr = row([td(p.name, "mono"), td(c.name, "mono"), td(state, cls), yesNo(c.ready),
        yesNo(c.started), td(c.restartCount, "num"), td(c.lastState || "-", "muted"), probes]);
      ctr.dataset.container = p.namespace + "/" + p.name + "/" + c.name;
      containers.push(ctr);
    }
  }
  fill("pods", pods, 8, "no pods");
  fill("containers", containers, 8, "no containers");

  const eps = [];
  for (const svc of s.endpoints) {
    if (svc.ports.length === 0) {
      eps.push(row([td(svc.namespace + "/" + svc.name, "mono"), "-", td("none", "bad")]));
    }
    for (const port of svc.ports) {
      const list = el("td", undefined, "mono");
      if (port.endpoints.length === 0) list.appendChild(el("span", "none", "bad"));
      for (const e of port.endpoints) list.appendChild(el("div", e));
      eps.push(row([td(svc.namespace + "/" + svc.name, "mono"), td(port.port, "num"), list]));
    }
  }
  fill("endpoints", eps, 3, "no services");

  const evs = [];
  for (const e of s.events) {
    evs.push(row([td(age(e.last), "num"), td(e.type, e.type === "Warning" ? "warn" : ""),
      td(e.reason), td(e.object, "mono"), td(e.count, "num"), td(e.message, "msg")]));
  }
  fill("events", evs, 6, "no events");
  document.getElementById("events-count").textContent =
    s.eventsTotal > s.events.length ? "(newest " + s.events.length + " of " + s.eventsTotal + ")" : "";

  document.getElementById("summary").textContent =
    s.pods.length + " pods, " + ready + " ready, " + restarts + " restarts";
  document.getElementById("updated").textContent = new Date(Date.now() + clockSkew).toLocaleTimeString();
}

function setConn(state, text) {
  const c = document.getElementById("conn");
  c.className = "conn conn-" + state;
  c.textContent = text;
}

function connect() {
  const es = new EventSource("/stream");
  es.onopen = () => setConn("live", "live");
  es.onmessage = (m) => {
    last = JSON.parse(m.data);
    clockSkew = Date.parse(last.now) - Date.now();
    render(last);
  };
  // EventSource reconnects by itself; say so meanwhile.
  // When it gives up (the stream refused, e.g. too many open), retry later.
  es.onerror = () => {
    if (es.readyState !== EventSource.CLOSED) {
      setConn("wait", "reconnecting");
      return;
    }
    setConn("down", "disconnected");
    setTimeout(connect, 5000);
  };
}

connect();
// Ages move on between pushes.
setInterval(() => { if (last) render(last); }, 1000);
