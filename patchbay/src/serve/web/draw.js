// patchbay devtools: DOM/SVG helpers and the two charts (the zoomable
// per-node timeline, and the two-lane side-by-side view). Plain SVG drawn
// here: no library, nothing fetched from the network.
'use strict';

const SVGNS = 'http://www.w3.org/2000/svg';

function setAttrs(e, a) {
  for (const [k, v] of Object.entries(a || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
}
function addKids(e, kids) {
  for (const k of kids.flat(Infinity)) {
    if (k === null || k === undefined || k === false) continue;
    e.append(k instanceof Node ? k : String(k));
  }
}
function el(tag, attrs, ...kids) { const e = document.createElement(tag); setAttrs(e, attrs); addKids(e, kids); return e; }
function sv(tag, attrs, ...kids) { const e = document.createElementNS(SVGNS, tag); setAttrs(e, attrs); addKids(e, kids); return e; }

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#bcbd22', '#7f7f7f'];
function colorOf(kind) {
  const k = String(kind);
  if (/^(tcp:)?rto:expired/.test(k)) return '#7a0b0b';
  if (/^(tcp:)?rto/.test(k)) return '#d62728';
  if (/^(tcp:)?retrans/.test(k)) return '#ff7f0e';
  if (/^(tcp:)?state/.test(k)) return '#1f77b4';
  if (/^nat[.:]/.test(k)) return '#9467bd';
  if (/^(link|region)[.:]/.test(k)) return '#2ca02c';
  if (/^fault[.:]/.test(k)) return '#111111';
  if (/^step[.:]/.test(k)) return '#17becf';
  if (/^cmd[.:]/.test(k)) return '#8c564b';
  if (k === 'mark') return '#e377c2';
  let h = 0;
  for (const c of k) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return PALETTE[h % PALETTE.length];
}

function niceStep(span, n) {
  const raw = Math.max(span / (n || 8), 1e-6);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 5, 10]) if (m * mag >= raw) return m * mag;
  return 10 * mag;
}
function fmtTime(ms, step) {
  const d = Math.min(4, Math.max(0, -Math.floor(Math.log10(Math.max(step, 1e-6) / 1000))));
  return (ms / 1000).toFixed(d) + ' s';
}
function pct(x) { return (x * 100).toFixed(1) + '%'; }

function axis(g, x, from, to, top, bottom, left, right) {
  const step = niceStep(to - from, Math.max(2, (right - left) / 110));
  for (let t = Math.ceil(from / step) * step; t <= to + 1e-9; t += step) {
    const px = x(t);
    g.append(sv('g', { class: 'tick' },
      sv('line', { x1: px, y1: top, x2: px, y2: bottom }),
      sv('text', { x: px, y: top - 6, 'text-anchor': 'middle', text: fmtTime(t, step) })));
  }
}

// The zoomable timeline: one lane per node, every event a tick, faults and
// steps as bands. `source(from, to, bins)` answers a window (see the
// server's /events); while a new window loads the old one is redrawn at the
// new scale, so zoom and pan stay immediate on large runs.
class Timeline {
  constructor(root, source, hooks) {
    this.root = root; this.source = source; this.hooks = hooks || {};
    this.data = null; this.full = null; this.view = null; this.cursor = null; this.seq = 0;
    this.chart = el('div', { class: 'chart' });
    this.info = el('span', { class: 'muted' });
    this.legend = el('div', { class: 'legend' });
    this.detail = el('div', { class: 'detail muted', text: 'Click an event for its detail; click the background to set the time cursor; wheel zooms, drag pans.' });
    const zoom = f => () => this.zoomAt(f, this.view ? (this.view.from + this.view.to) / 2 : 0);
    root.append(el('div', { class: 'toolbar' },
      el('button', { onclick: zoom(1 / 1.6), text: 'zoom in' }),
      el('button', { onclick: zoom(1.6), text: 'zoom out' }),
      el('button', { onclick: () => this.reset(), text: 'fit' }),
      this.info), this.chart, this.legend, this.detail);
    this.bindMouse();
  }

  width() { return Math.max(600, this.root.clientWidth || this.root.parentElement.clientWidth || 1200); }

  async load(from, to) {
    const my = ++this.seq;
    const plot = this.width() - 190;
    const d = await this.source(from, to, Math.max(100, Math.round(plot)));
    if (my !== this.seq) return;
    this.data = d;
    if (!this.full || from === undefined) this.full = { from: d.t_min, to: Math.max(d.t_max, d.t_min + 1) };
    if (!this.view || from === undefined) this.view = { ...this.full };
    this.render();
  }
  reset() { this.view = null; return this.load(); }
  // Live: the file grew; keep the view, or follow the end when it showed it.
  async refresh() {
    if (!this.view) return this.load();
    const following = this.full && this.view.to >= this.full.to - 1e-6;
    const d = await this.source(undefined, undefined, 10);
    this.full = { from: d.t_min, to: Math.max(d.t_max, d.t_min + 1) };
    if (following) this.view.to = this.full.to;
    return this.load(this.view.from, this.view.to);
  }
  zoomAt(f, t) {
    if (!this.view) return;
    const span = Math.max((this.view.to - this.view.from) * f, 0.001);
    const r = (t - this.view.from) / (this.view.to - this.view.from || 1);
    this.view = { from: t - r * span, to: t - r * span + span };
    this.render();
    this.scheduleLoad();
  }
  scheduleLoad() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.load(this.view.from, this.view.to), 120);
  }
  setCursor(t) { this.cursor = t; this.render(); if (this.hooks.cursor) this.hooks.cursor(t); }

  bindMouse() {
    let drag = null;
    this.chart.addEventListener('wheel', e => {
      if (!this.view) return;
      e.preventDefault();
      this.zoomAt(e.deltaY > 0 ? 1.25 : 0.8, this.timeAt(e.offsetX));
    }, { passive: false });
    this.chart.addEventListener('mousedown', e => { if (this.view) drag = { x: e.clientX, view: { ...this.view }, moved: false }; });
    window.addEventListener('mousemove', e => {
      if (!drag) return;
      const dx = e.clientX - drag.x;
      if (Math.abs(dx) > 3) drag.moved = true;
      if (!drag.moved) return;
      const dt = dx * (drag.view.to - drag.view.from) / (this.width() - 190);
      this.view = { from: drag.view.from - dt, to: drag.view.to - dt };
      this.render();
    });
    window.addEventListener('mouseup', e => {
      if (!drag) return;
      const d = drag; drag = null;
      if (d.moved) { this.scheduleLoad(); return; }
      const ev = e.target.closest && e.target.closest('[data-i]');
      if (ev && this.data) this.select(this.data.events[Number(ev.getAttribute('data-i'))]);
      else if (this.chart.contains(e.target)) this.setCursor(this.timeAt(e.clientX - this.chart.getBoundingClientRect().left));
    });
  }
  timeAt(px) { const v = this.view; return v.from + (px - 170) * (v.to - v.from) / (this.width() - 190); }

  select(ev) {
    this.detail.className = 'detail';
    this.detail.replaceChildren();
    addKids(this.detail, [
      el('b', { text: `${ev.label} on ${ev.node || 'lab'} at ${fmtTime(ev.virtual_ms, 1)} (virtual; wall ${fmtTime(ev.wall_ms || 0, 1)})` }),
      ev.n > 1 ? el('span', { class: 'muted', text: ` — stands for ${ev.n} events in this pixel; zoom in to see them` }) : null,
      el('pre', { text: JSON.stringify(ev, null, 2) })]);
    this.setCursor(ev.virtual_ms);
  }

  render() {
    const d = this.data, v = this.view;
    if (!d || !v) return;
    const LEFT = 170, RIGHT = 20, TOP = 26, ROW = 9;
    const W = this.width(), nodes = d.nodes.length ? d.nodes : ['lab'];
    const x = t => LEFT + (W - LEFT - RIGHT) * (t - v.from) / ((v.to - v.from) || 1);
    // A lane per node, a row per kind it has (so an RTO and its
    // retransmission at the same instant both show).
    const lanes = new Map();
    let y = TOP;
    nodes.forEach(n => {
      const kinds = [...((d.node_kinds && d.node_kinds[n]) || new Set(d.events.filter(e => (e.node || 'lab') === n).map(e => e.label)))];
      const h = Math.max(24, kinds.length * ROW + 8);
      lanes.set(n, { y, h, kinds });
      y += h;
    });
    const H = y + 8;
    const svg = sv('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}` });
    nodes.forEach((n, i) => {
      const l = lanes.get(n);
      svg.append(sv('rect', { x: 0, y: l.y, width: W, height: l.h, fill: i % 2 ? '#f5f7fa' : '#fff' }));
      svg.append(sv('text', { class: 'lane-label', x: 8, y: l.y + Math.min(l.h / 2, 14) + 4, 'data-node': n, text: n }));
    });
    const grid = sv('g');
    axis(grid, x, v.from, v.to, TOP, H - 8, LEFT, W - RIGHT);
    svg.append(grid);
    const laneOf = e => lanes.get(e.node || 'lab') || lanes.get(nodes[0]);
    // Bands: fault.start..fault.end and step.start..step.end per node.
    const open = new Map();
    const bandOf = (s, end) => {
      const l = laneOf(s);
      const x0 = Math.max(LEFT, x(s.virtual_ms)), x1 = Math.min(W - RIGHT, x(end));
      if (x1 <= x0) return;
      svg.append(sv('rect', { class: 'band', x: x0, y: l.y + 1, width: x1 - x0, height: l.h - 2, fill: colorOf(s.label) }));
    };
    d.events.forEach(e => {
      const m = /^(fault|step)\.(start|end)$/.exec(e.label);
      if (!m) return;
      const key = m[1] + '|' + (e.node || 'lab');
      if (m[2] === 'start') open.set(key, e);
      else if (open.has(key)) { bandOf(open.get(key), e.virtual_ms); open.delete(key); }
    });
    open.forEach(s => bandOf(s, Math.max(d.t_max, v.to)));
    const marks = sv('g');
    d.events.forEach((e, i) => {
      const px = x(e.virtual_ms);
      if (px < LEFT - 1 || px > W - RIGHT + 1) return;
      const l = laneOf(e);
      const row = Math.max(0, l.kinds.indexOf(e.label));
      const y0 = l.y + 4 + row * ROW, y1 = l.kinds.length > 1 ? y0 + ROW - 1 : l.y + l.h - 4;
      const title = sv('title', { text: `${e.label} on ${e.node || 'lab'} @ ${fmtTime(e.virtual_ms, 1)}${e.n > 1 ? ` (${e.n} events)` : ''}` });
      const common = { class: 'tl-ev', 'data-kind': e.label, 'data-node': e.node || 'lab', 'data-i': i, fill: colorOf(e.label), stroke: colorOf(e.label) };
      const wide = e.bin ? x(e.bin[1]) - x(e.bin[0]) : 0;
      if (wide > 3) marks.append(sv('rect', { ...common, x: x(e.bin[0]), y: y0, width: wide, height: y1 - y0, 'stroke-width': 0 }, title));
      else marks.append(sv('line', { ...common, x1: px, x2: px, y1: y0, y2: y1, 'stroke-width': e.n > 1 ? 3 : 2 }, title));
    });
    svg.append(marks);
    if (this.cursor !== null && this.cursor >= v.from && this.cursor <= v.to) {
      svg.append(sv('line', { class: 'cursor', x1: x(this.cursor), x2: x(this.cursor), y1: TOP - 4, y2: H }));
    }
    this.chart.replaceChildren(svg);
    this.info.textContent = `${d.total} events; ${d.in_window} in the loaded window${d.binned ? `, drawn as ${d.events.length} marks (one per node, kind and time bin)` : ''}; view ${fmtTime(v.from, 1)} – ${fmtTime(v.to, 1)}${this.cursor !== null ? `; cursor ${fmtTime(this.cursor, 1)}` : ''}`;
    this.legend.replaceChildren(...Object.entries(d.kinds).map(([k, n]) =>
      el('span', { style: `--c:${colorOf(k)}`, 'data-kind': k, text: `${k} (${n})` })));
  }
}

// Two runs on one virtual axis, a lane each, one band per kind inside the
// lane (as in the SVG timelines), matched events joined by a thin line.
function twoLanes(lanes, pairs, onSelect) {
  const W = Math.max(700, (document.querySelector('main').clientWidth || 1130) - 30), LEFT = 170, RIGHT = 20, TOP = 26, LANE = 64;
  const kinds = [...new Set(lanes.flatMap(l => l.events.map(e => e.kind)))];
  const span = Math.max(1000, ...lanes.flatMap(l => l.events.map(e => e.virtual_ms))) * 1.04;
  const x = t => LEFT + (W - LEFT - RIGHT) * t / span;
  const H = TOP + LANE * lanes.length + 10;
  const svg = sv('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}` });
  axis(svg, x, 0, span, TOP, H - 8, LEFT, W - RIGHT);
  const band = (LANE - 16) / Math.max(1, kinds.length);
  const pos = (li, e) => [x(e.virtual_ms), TOP + li * LANE + 8 + kinds.indexOf(e.kind) * band];
  lanes.forEach((l, li) => {
    const y = TOP + li * LANE;
    svg.append(sv('line', { x1: LEFT, x2: W - RIGHT, y1: y + LANE / 2, y2: y + LANE / 2, stroke: '#ccd' }));
    svg.append(sv('text', { class: 'lane-label', x: 8, y: y + LANE / 2 + 4, text: l.label }));
  });
  for (const [i, j] of pairs || []) {
    const a = lanes[0].events[i], b = lanes[1].events[j];
    if (!a || !b) continue;
    const [x0, y0] = pos(0, a), [x1, y1] = pos(1, b);
    svg.append(sv('line', { x1: x0, y1: y0 + band, x2: x1, y2: y1, stroke: '#98a2b3', 'stroke-dasharray': '2 3' }));
  }
  lanes.forEach((l, li) => l.events.forEach(e => {
    const [px, y] = pos(li, e);
    svg.append(sv('line', {
      class: 'sbs-ev', 'data-kind': e.kind, 'data-lane': li ? 'run' : 'baseline',
      x1: px, x2: px, y1: y, y2: y + Math.max(4, band), stroke: colorOf(e.kind), 'stroke-width': 2,
      onclick: () => onSelect && onSelect(e, l),
    }, sv('title', { text: `${l.label}: ${e.kind} on ${e.node} @ ${fmtTime(e.virtual_ms, 1)} ${e.detail || ''}` })));
  }));
  const legend = el('div', { class: 'legend' }, kinds.map(k => el('span', { style: `--c:${colorOf(k)}`, text: k })));
  return el('div', {}, el('div', { class: 'chart' }, svg), legend);
}
