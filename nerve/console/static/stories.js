// nerve console: the story pages (/stories/shop, /stories/rides). No framework, no CDN.
// The server sends one JSON snapshot of the story's projection per tick (server-sent events).
"use strict";

(() => {
  const NS = "http://www.w3.org/2000/svg";
  const el = (name, attrs, parent) => {
    const e = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (parent) parent.appendChild(e);
    return e;
  };
  const esc = (s) => (s == null ? "-" : String(s).replace(/[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]));
  const time = (ms) => new Date(ms).toISOString().slice(11, 19);
  const money = (cents) => (cents / 100).toLocaleString("en-US", { style: "currency", currency: "USD" });
  const set = (id, v) => { const e = document.getElementById(id); if (e) e.textContent = v; };
  const rows = (id, items, cells) => {
    const tb = document.querySelector(`#${id} tbody`);
    tb.innerHTML = items.length
      ? items.map((it) => `<tr>${cells(it).map((c) => `<td>${c}</td>`).join("")}</tr>`).join("")
      : '<tr><td colspan="6" class="empty">none yet</td></tr>';
  };
  const feed = (src, render) => {
    const first = document.getElementById("story-data");
    if (first) render(JSON.parse(first.textContent));
    const es = new EventSource(src);
    es.addEventListener("snapshot", (e) => render(JSON.parse(e.data)));
    es.onerror = () => set("story-note", "disconnected from the console, retrying…");
  };
  const note = (s) => { if (s.error) set("story-note", s.error); };
  const ms = (v) => `${Math.round(v)} ms`;
  const latency = (s) => {
    if (s.service_latency && document.getElementById("latency")) {
      rows("latency", s.service_latency, (f) => [esc(f.action), ms(f.p50), ms(f.p99), ms(f.max), esc(f.n)]);
    }
  };

  // ------------------------------------------------------------------ shop
  const COLORS = { "product-viewed": "#2f6fde", "product-sold": "#1f9d6b", "bug-reported": "#c93636",
    "promotions": "#7b4fd6", "stock-low": "#c77d12", "support-tickets": "#e05297" };
  const rates = document.getElementById("story-rates");
  if (rates) {
    let last = null;
    const chart = () => {
      if (!last || !last.series) return;
      const dpr = window.devicePixelRatio || 1;
      const w = rates.clientWidth, ht = rates.clientHeight;
      rates.width = w * dpr; rates.height = ht * dpr;
      const g = rates.getContext("2d");
      g.scale(dpr, dpr);
      const left = 44, right = 12, top = 12, bottom = 22;
      const all = Object.values(last.series).flat();
      const max = Math.max(1, ...all);
      const nice = Math.pow(10, Math.floor(Math.log10(max)));
      const ymax = Math.ceil(max / nice) * nice;
      g.font = "11px system-ui, sans-serif"; g.fillStyle = "#6b7482"; g.strokeStyle = "#e6e9ee";
      for (let i = 0; i <= 4; i++) {
        const y = top + (ht - top - bottom) * (1 - i / 4);
        g.beginPath(); g.moveTo(left, y); g.lineTo(w - right, y); g.stroke();
        g.fillText(String(Math.round((ymax * i) / 4)), 6, y + 4);
      }
      const n = Object.values(last.series)[0].length;
      g.fillText(`-${n} s`, left, ht - 6); g.fillText("now", w - right - 22, ht - 6);
      const x = (i) => left + (i / (n - 1)) * (w - left - right);
      const y = (v) => top + (ht - top - bottom) * (1 - v / ymax);
      for (const [topic, vals] of Object.entries(last.series)) {
        g.beginPath();
        vals.forEach((v, i) => (i ? g.lineTo(x(i), y(v)) : g.moveTo(x(i), y(v))));
        g.strokeStyle = COLORS[topic] || "#888"; g.lineWidth = 2; g.stroke();
      }
    };
    const stockSvg = document.getElementById("stock");
    const stock = (s) => {
      while (stockSvg.firstChild) stockSvg.firstChild.remove();
      const W = stockSvg.clientWidth || 600, rowH = 14, labelW = 46, numW = 30;
      const H = Math.max(60, 10 + s.stock.length * rowH);
      stockSvg.setAttribute("height", H);
      stockSvg.setAttribute("viewBox", `0 0 ${W} ${H}`);
      const full = W - labelW - numW, scale = full / s.initial_stock;
      s.stock.forEach((p, i) => {
        const y0 = 5 + i * rowH;
        el("text", { x: 0, y: y0 + 11, class: "lbl" }, stockSvg).textContent = p.product;
        const cls = p.stock < s.low_stock ? (p.stock <= 0 ? "out" : "low") : "ok";
        el("rect", { x: labelW, y: y0 + 2, width: Math.max(1, Math.max(0, p.stock) * scale),
          height: rowH - 4, rx: 2, class: `sbar ${cls}` }, stockSvg);
        el("text", { x: W - numW + 4, y: y0 + 11, class: "num" }, stockSvg).textContent = p.stock;
      });
      const tx = labelW + s.low_stock * scale;
      el("line", { x1: tx, x2: tx, y1: 0, y2: H, class: "threshold" }, stockSvg);
      if (!s.stock.length) el("text", { x: 8, y: 30, class: "lbl" }, stockSvg).textContent = "no sales yet";
    };
    const render = (s) => {
      note(s);
      latency(s);
      if (!s.series) return;
      last = s;
      chart();
      stock(s);
      set("c-views", s.totals["product-viewed"] || 0); set("c-orders", s.totals["product-sold"] || 0);
      set("c-bugs", s.totals["bug-reported"] || 0); set("c-promos", s.promos.count);
      set("c-tickets", s.tickets.count); set("c-low", s.totals["stock-low"] || 0);
      document.getElementById("rates-legend").innerHTML = Object.keys(s.series).map((t) =>
        `<span class="lg" style="background:${COLORS[t] || "#888"}"></span>${esc(t)} ` +
        `<b>${s.rates[t]}</b>/s`).join(" ");
      set("promo-count", `${s.promos.count} in total, newest first`);
      set("ticket-count", `${s.tickets.count} in total, newest first`);
      rows("promos", s.promos.recent.slice(0, 10), (p) => [esc(p.product), esc(p.customer),
        `${esc(p.discount_pct)}%`, time(p.ts)]);
      rows("tickets", s.tickets.recent.slice(0, 10), (t) => [`#${esc(t.ticket)}`, esc(t.customer),
        `<code>${esc(t.page)}</code>`, time(t.ts)]);
    };
    feed(rates.dataset.events, render);
    window.addEventListener("resize", chart);
  }

  // ------------------------------------------------------------------ rides
  const city = document.getElementById("city");
  if (city) {
    const seen = new Set();
    const PAD = 10;
    let scale = 1;
    const P = (x) => PAD + x * scale;
    const base = el("g", {}, city), lines = el("g", {}, city), dots = el("g", {}, city);
    let drawn = 0;  // zones per side of the grid drawn: the city grows with the rate
    const grid = (s) => {
      while (base.firstChild) base.firstChild.remove();
      drawn = s.zones_per_side;
      scale = 400 / (s.zones_per_side * s.zone_size);
      const side = s.zones_per_side, z = s.zone_size;
      for (let zx = 0; zx < side; zx++) {
        for (let zy = 0; zy < side; zy++) {
          el("rect", { x: P(zx * z), y: P(zy * z), width: z * scale, height: z * scale,
            class: "zone" }, base);
          el("text", { x: P(zx * z) + 4, y: P(zy * z) + 13, class: "zlabel" }, base)
            .textContent = `z${zx}${zy}`;
        }
      }
    };
    const render = (s) => {
      note(s);
      latency(s);
      if (!s.drivers) return;
      if (drawn !== s.zones_per_side) grid(s);
      while (dots.firstChild) dots.firstChild.remove();
      for (const w of s.waiting) {
        el("rect", { x: P(w.x) - 3.5, y: P(w.y) - 3.5, width: 7, height: 7, class: "rider" }, dots)
          .appendChild(document.createElementNS(NS, "title")).textContent = `${w.rider} waiting (${w.ride})`;
      }
      for (const [id, d] of Object.entries(s.drivers)) {
        const cls = d.rider ? "riding" : d.ride ? "pickup" : "free";
        el("circle", { cx: P(d.x), cy: P(d.y), r: 4.5, class: `driver ${cls}` }, dots)
          .appendChild(document.createElementNS(NS, "title")).textContent = `${id} ${d.ride || "free"}`;
      }
      // Matches of the last few seconds: a line from where the driver was to the pickup,
      // fading with age. Redrawn from each snapshot (no CSS animation: screenshots and
      // background tabs see the same picture).
      while (lines.firstChild) lines.firstChild.remove();
      for (const m of s.matches) {
        if (!m.from || !m.to) continue;
        const age = Math.max(0, s.t - m.ts), opacity = Math.max(0.15, 1 - age / 6000).toFixed(2);
        const fresh = !seen.has(m.ride) ? " fresh" : "";
        seen.add(m.ride);
        el("line", { x1: P(m.from[0]), y1: P(m.from[1]), x2: P(m.to[0]), y2: P(m.to[1]),
          class: "match" + fresh, opacity }, lines);
        el("circle", { cx: P(m.to[0]), cy: P(m.to[1]), r: 7, class: "match-ring", opacity }, lines);
      }
      const c = s.counts;
      set("c-drivers", Object.keys(s.drivers).length);
      set("c-waiting", s.waiting.length);
      set("c-riding", s.riding);
      set("c-matched", `${c.matched} / ${c.requests}`);
      set("c-latency", `${Math.round(s.latency_ms.p50)} / ${Math.round(s.latency_ms.p99)} ms`);
      set("c-revenue", money(s.payments.total_cents));
      set("pay-count", `${s.payments.count} charges, ${money(s.payments.total_cents)} in total, newest first`);
      rows("payments", s.payments.recent, (p) => [esc(p.ride), esc(p.rider), money(p.amount_cents), time(p.ts)]);
      rows("matches", s.matches.slice(-8).reverse(), (m) => [esc(m.ride), esc(m.driver), esc(m.zone),
        `${m.latency_ms} ms`]);
    };
    feed(city.dataset.events, render);
  }
})();
