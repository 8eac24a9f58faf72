// nerve console: live parts of the server-rendered pages. No framework, no CDN.
"use strict";

// ---- forms that ask first (delete topic / group)
document.querySelectorAll("form[data-confirm]").forEach((f) => {
  f.addEventListener("submit", (e) => {
    if (!window.confirm(f.dataset.confirm)) e.preventDefault();
  });
});
// ---- alter forms that ask only when a field names a risky config (cleanup.policy)
document.querySelectorAll("form[data-confirm-if]").forEach((f) => {
  f.addEventListener("submit", (e) => {
    const risky = [...f.querySelectorAll("textarea, input")]
      .some((el) => el.value.includes(f.dataset.confirmIf));
    if (risky && !window.confirm(f.dataset.confirmText)) e.preventDefault();
  });
});

// ---- overview: live throughput chart and table cells, fed by server-sent events
const canvas = document.getElementById("throughput");
if (canvas) {
  const points = [];
  const draw = () => {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    canvas.width = w * dpr; canvas.height = h * dpr;
    const g = canvas.getContext("2d");
    g.scale(dpr, dpr);
    g.clearRect(0, 0, w, h);
    const left = 48, right = 12, top = 12, bottom = 22;
    const max = Math.max(1, ...points.map((p) => p.rate_total));
    const nice = Math.pow(10, Math.floor(Math.log10(max)));
    const ymax = Math.ceil(max / nice) * nice;
    g.font = "11px system-ui, sans-serif"; g.fillStyle = "#6b7482"; g.strokeStyle = "#e6e9ee";
    for (let i = 0; i <= 4; i++) {
      const y = top + (h - top - bottom) * (1 - i / 4);
      g.beginPath(); g.moveTo(left, y); g.lineTo(w - right, y); g.stroke();
      g.fillText(String(Math.round((ymax * i) / 4 * 10) / 10), 6, y + 4);
    }
    g.fillText("last 2 minutes", w - right - 80, h - 6);
    if (points.length < 2) {
      g.fillText(points.length ? "sampling…" : "waiting for samples…", left + 8, top + 16);
      return;
    }
    const span = 120 * 1000, t1 = points[points.length - 1].t, t0 = t1 - span;
    const x = (t) => left + ((t - t0) / span) * (w - left - right);
    const y = (v) => top + (h - top - bottom) * (1 - v / ymax);
    g.beginPath();
    points.forEach((p, i) => (i ? g.lineTo(x(p.t), y(p.rate_total)) : g.moveTo(x(p.t), y(p.rate_total))));
    g.strokeStyle = "#2f6fde"; g.lineWidth = 2; g.stroke();
    g.lineTo(x(t1), y(0)); g.lineTo(x(points[0].t), y(0)); g.closePath();
    g.fillStyle = "rgba(47,111,222,0.12)"; g.fill();
  };
  const setCell = (attr, name, value) => {
    const el = document.querySelector(`[${attr}="${CSS.escape(name)}"]`);
    if (el) el.textContent = value;
  };
  const es = new EventSource(canvas.dataset.events);
  es.addEventListener("history", (e) => { points.push(...JSON.parse(e.data)); draw(); });
  es.addEventListener("sample", (e) => {
    const s = JSON.parse(e.data);
    if (s.error) { document.getElementById("rate-now").textContent = s.error; return; }
    points.push({ t: s.t, rate_total: s.rate_total });
    while (points.length > 120) points.shift();
    document.getElementById("rate-now").textContent = `${s.rate_total} messages/s now`;
    for (const [name, t] of Object.entries(s.topics)) {
      setCell("data-topic-rate", name, t.rate);
      setCell("data-topic-end", name, t.end);
      setCell("data-topic-messages", name, t.messages);
    }
    for (const [name, g] of Object.entries(s.groups)) setCell("data-group-lag", name, g.lag);
    draw();
  });
  window.addEventListener("resize", draw);
  draw();
}

// ---- topic page: live tail, newest on top
const tailBtn = document.getElementById("tail-toggle");
if (tailBtn) {
  let es = null;
  const status = document.getElementById("tail-status");
  const tbody = document.querySelector("#messages tbody");
  const esc = (s) => (s == null ? "-" : String(s).replace(/[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]));
  tailBtn.addEventListener("click", () => {
    if (es) { es.close(); es = null; tailBtn.classList.remove("on"); status.textContent = ""; return; }
    const part = document.querySelector("form.seek select[name=partition]").value;
    es = new EventSource(tailBtn.dataset.tail + (part ? `?partition=${part}` : ""));
    tailBtn.classList.add("on");
    status.textContent = "connecting…";
    es.addEventListener("ready", () => { status.textContent = "tailing: new messages appear on top"; });
    es.addEventListener("record", (e) => {
      const r = JSON.parse(e.data);
      const none = tbody.querySelector("tr.none");
      if (none) none.remove();
      const tr = document.createElement("tr");
      tr.className = "fresh";
      const headers = Object.entries(r.headers).map(([k, v]) => `${esc(k)}=${esc(v)}`).join("<br>");
      tr.innerHTML = `<td class="num">${r.partition}</td><td class="num">${r.offset}</td>` +
        `<td class="ts" title="${r.timestamp}">${esc(r.time)}</td><td><code>${esc(r.key)}</code></td>` +
        `<td class="value">${r.value_html}</td><td class="headers">${headers}</td>`;
      tbody.prepend(tr);
      while (tbody.children.length > 500) tbody.lastElementChild.remove();
    });
    es.onerror = () => { status.textContent = "disconnected, retrying…"; };
  });
}

// ---- backbone map: producers -> topics -> groups, redrawn every 2 s
const svg = document.getElementById("map");
if (svg) {
  const NS = "http://www.w3.org/2000/svg";
  const el = (name, attrs, parent) => {
    const e = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (parent) parent.appendChild(e);
    return e;
  };
  const columns = [["producer"], ["topic"], ["group", "consumer"]];
  const titles = ["producers", "topics", "consumers"];
  const render = (data) => {
    while (svg.firstChild) svg.firstChild.remove();
    const note = document.getElementById("map-note");
    const hasProducers = data.nodes.some((n) => n.kind === "producer");
    note.textContent = data.accounting
      ? (hasProducers ? "" : "No producer traffic seen by this broker yet (producers appear when they produce).")
      : "This cluster reports no per-client traffic (Apache Kafka, or a broker without accounting): showing topics and the groups that read them.";
    const W = svg.clientWidth || 1200, nodeW = 230, nodeH = 46, gap = 16;
    const colX = [24, (W - nodeW) / 2, W - nodeW - 24];
    const pos = {};
    let maxRows = 1;
    columns.forEach((kinds, ci) => {
      const ns = data.nodes.filter((n) => kinds.includes(n.kind));
      maxRows = Math.max(maxRows, ns.length);
      ns.forEach((n, i) => { pos[n.id] = { x: colX[ci], y: 40 + i * (nodeH + gap), n }; });
    });
    const H = Math.max(200, 60 + maxRows * (nodeH + gap));
    svg.setAttribute("height", H);
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    titles.forEach((t, ci) => { el("text", { x: colX[ci], y: 22, class: "col" }, svg).textContent = t; });
    data.edges.forEach((e, i) => {
      const a = pos[e.from], b = pos[e.to];
      if (!a || !b) return;
      const x1 = a.x + nodeW, y1 = a.y + nodeH / 2, x2 = b.x, y2 = b.y + nodeH / 2;
      const mx = (x1 + x2) / 2;
      el("path", { d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`,
        class: "edge" + (e.active ? " active" : "") }, svg);
      if (e.label) {
        // Labels sit at one of three points along the curve, so crossing edges rarely
        // put two labels on the same spot.
        const t = [0.2, 0.5, 0.8][i % 3], u = 1 - t;
        const lx = u * u * u * x1 + 3 * u * t * mx + t * t * t * x2;
        const ly = y1 + (y2 - y1) * (3 * t * t * u + t * t * t);
        el("text", { x: lx, y: ly - 5, class: "elabel", "text-anchor": "middle" }, svg)
          .textContent = e.label;
      }
    });
    for (const { x, y, n } of Object.values(pos)) {
      const g = el(n.href ? "a" : "g", n.href ? { href: n.href } : {}, svg);
      const box = el("g", { class: `node ${n.kind}`, transform: `translate(${x},${y})` }, g);
      el("rect", { width: nodeW, height: nodeH, rx: 8 }, box);
      el("text", { x: 10, y: 19 }, box).textContent = n.label.length > 30 ? n.label.slice(0, 29) + "…" : n.label;
      el("text", { x: 10, y: 36, class: "d" }, box).textContent = n.detail || "";
    }
  };
  const show = (d) => {
    if (d.error) { document.getElementById("map-note").textContent = d.error; return; }
    render(d);
  };
  const load = () => fetch(svg.dataset.src).then((r) => r.json()).then(show).catch(() => {});
  const first = document.getElementById("map-data");
  if (first) show(JSON.parse(first.textContent)); else load();
  setInterval(load, 2000);
}
