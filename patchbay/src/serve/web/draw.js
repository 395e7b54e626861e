// patchbay devtools: DOM/SVG helpers, kind colours, and the two charts
// (the zoomable per-lane timeline, and the two-lane side-by-side view).
// Plain SVG drawn here: no library, nothing fetched from the network.
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

// ---- Colours: one per kind, never shared --------------------------------
// Known kinds keep a colour that reads (RTO red, retransmission orange, ...);
// any other kind takes the next colour nobody has. 30 colours; past them a
// kind gets a hue of its own from the golden angle.
const PREFERRED = {
  'tcp:rto': '#d62728', 'rto': '#d62728', 'tcp:rto:expired': '#7a0b0b', 'rto:expired': '#7a0b0b',
  'tcp:retransmit': '#ff7f0e', 'tcp:retrans': '#ff7f0e', 'retrans': '#ff7f0e',
  'tcp:state': '#1f77b4', 'nat.changed': '#9467bd', 'nat.flushed': '#c5b0d5', 'nat.classified': '#7b4173',
  'link.condition': '#2ca02c', 'link.down': '#843c39', 'link.up': '#98df8a', 'region.link': '#637939',
  'fault.start': '#111111', 'fault.end': '#636363', 'step.start': '#17becf', 'step.end': '#3182bd',
  'cmd.start': '#8c564b', 'cmd.exit': '#c49c94', 'mark': '#e377c2', 'lab.start': '#7f7f7f', 'lab.end': '#393b79',
  'node.added': '#bcbd22', 'node.removed': '#8c6d31', 'iface.added': '#dbdb8d', 'iface.removed': '#e6550d',
  'iface.moved': '#31a354', 'addr.changed': '#aec7e8', 'route.changed': '#ffbb78', 'firewall.changed': '#756bb1',
  'capture.start': '#9edae5', 'mtu.changed': '#f7b6d2',
};
// Most distinct first: a chart's first kinds get the colours that differ most.
const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf',
  '#393b79', '#e6550d', '#637939', '#843c39', '#7b4173', '#3182bd', '#31a354', '#756bb1', '#636363', '#8c6d31',
  '#aec7e8', '#ffbb78', '#98df8a', '#ff9896', '#c5b0d5', '#c49c94', '#f7b6d2', '#dbdb8d', '#9edae5', '#111111'];
const KIND_COLOR = new Map();
function colorOf(kind) {
  const k = String(kind);
  if (KIND_COLOR.has(k)) return KIND_COLOR.get(k);
  const used = new Set(KIND_COLOR.values());
  let c = PREFERRED[k] && !used.has(PREFERRED[k]) ? PREFERRED[k] : PALETTE.find(p => !used.has(p));
  if (!c) c = `hsl(${(KIND_COLOR.size * 137.508) % 360}, 65%, 42%)`;
  KIND_COLOR.set(k, c);
  return c;
}
// Registers a chart's kinds before drawing: the known kinds first (their
// own colours), then the others in name order, so no two share a colour.
function registerKinds(kinds) {
  const all = [...new Set(kinds)].sort();
  all.filter(k => PREFERRED[k]).forEach(colorOf);
  all.forEach(colorOf);
}
function legendOf(entries) {
  return el('div', { class: 'legend' }, entries.map(([k, n]) =>
    el('span', { style: `--c:${colorOf(k)}`, 'data-kind': k, text: n === undefined ? k : `${k} (${n})` })));
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

// Pairs `*.start` with `*.end` events: steps by their step number, faults by
// their description (first in, first out). Unclosed starts come last, with
// `end` null.
function pairBands(events) {
  const open = new Map(), out = [];
  for (const e of events) {
    const m = /^(fault|step)\.(start|end)$/.exec(e.label || e.kind);
    if (!m) continue;
    const d = e.data || {};
    const key = m[1] + '|' + (m[1] === 'step' ? d.step : d.fault);
    if (m[2] === 'start') { if (!open.has(key)) open.set(key, []); open.get(key).push(e); continue; }
    const q = open.get(key);
    if (q && q.length) { const s = q.shift(); out.push({ what: m[1], start: s, end: e }); }
  }
  open.forEach(q => q.forEach(s => out.push({ what: s.label.split('.')[0], start: s, end: null })));
  return out;
}
function bandLabel(b) {
  const d = b.start.data || {}, e = (b.end && b.end.data) || {};
  if (b.what === 'fault') return d.fault || 'fault';
  return `step ${d.step}${e.kind ? ' ' + e.kind : ''}${e.ok === false ? ' FAILED' : ''}`;
}

// The zoomable timeline: one lane per node, a row per kind, every event a
// tick, steps and faults as bands. `source(from, to, bins)` answers a window
// (see the server's /events); while a new window loads the old one is
// redrawn at the new scale, so zoom and pan stay immediate on large runs.
// `opts.markClass` names the marks (tests count them); `opts.now()` gives a
// live run's current virtual time, so the axis keeps moving while idle.
class Timeline {
  constructor(root, source, hooks, opts) {
    this.root = root; this.source = source; this.hooks = hooks || {}; this.opts = opts || {};
    this.data = null; this.full = null; this.view = null; this.cursor = null; this.seq = 0;
    this.chart = el('div', { class: 'chart scroll-x' });
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

  width() { return Math.max(340, this.root.clientWidth || this.root.parentElement.clientWidth || 1200); }
  // The lane labels' column: narrower on a phone.
  left() { return this.width() < 600 ? 88 : 170; }
  liveEnd(t) { const now = this.opts.now ? this.opts.now() : null; return now === null ? t : Math.max(t, now); }

  async load(from, to) {
    const my = ++this.seq;
    const plot = this.width() - this.left() - 20;
    const d = await this.source(from, to, Math.max(100, Math.round(plot)));
    if (my !== this.seq) return;
    this.data = d;
    registerKinds(Object.values(d.node_kinds || {}).flat().concat(Object.keys(d.kinds || {})));
    if (!this.full || from === undefined) this.full = { from: Math.min(0, d.t_min), to: Math.max(this.liveEnd(d.t_max), d.t_min + 1) };
    if (!this.view || from === undefined) this.view = { ...this.full };
    this.render();
  }
  reset() { this.view = null; return this.load(); }
  // Live: keep the view, or follow the end when it showed it; the end is
  // "now" while the run goes on, so the axis moves through idle stretches.
  async refresh(fetch) {
    if (!this.view) return this.load();
    const following = this.full && this.view.to >= this.full.to - 1e-6;
    let tMax = this.data ? this.data.t_max : 0;
    if (fetch) tMax = (await this.source(undefined, undefined, 10)).t_max;
    this.full = { from: this.full.from, to: Math.max(this.liveEnd(tMax), this.full.from + 1) };
    if (following) this.view = { from: this.view.from, to: this.full.to };
    if (fetch) return this.load(this.view.from, this.view.to);
    this.render();
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
      const dt = dx * (drag.view.to - drag.view.from) / (this.width() - this.left() - 20);
      this.view = { from: drag.view.from - dt, to: drag.view.to - dt };
      this.render();
    });
    window.addEventListener('mouseup', e => {
      if (!drag) return;
      const d = drag; drag = null;
      if (d.moved) { this.scheduleLoad(); return; }
      const ev = e.target.closest && e.target.closest('[data-i]');
      if (ev && this.data) this.select(this.data.events[Number(ev.getAttribute('data-i'))]);
      else if (this.chart.contains(e.target)) this.setCursor(this.timeAt(e.clientX - this.chart.getBoundingClientRect().left + this.chart.scrollLeft));
    });
  }
  timeAt(px) { const v = this.view; return v.from + (px - this.left()) * (v.to - v.from) / (this.width() - this.left() - 20); }

  select(ev) {
    this.detail.className = 'detail';
    this.detail.replaceChildren();
    addKids(this.detail, [
      el('b', { text: `${ev.label} on ${ev.node || 'lab'} at ${fmtTime(ev.virtual_ms, 1)} (virtual; wall ${fmtTime(ev.wall_ms || 0, 1)})` }),
      ev.n > 1 ? el('span', { class: 'muted', text: ` — stands for ${ev.n} events in this pixel; zoom in to see them` }) : null,
      el('pre', { text: JSON.stringify(ev, null, 2) })]);
    this.setCursor(ev.virtual_ms);
  }

  lanes(d, top) {
    const ROW = 9, nodes = d.nodes.length ? d.nodes : ['lab'];
    const lanes = new Map();
    let y = top;
    nodes.forEach(n => {
      const kinds = [...((d.node_kinds && d.node_kinds[n]) || new Set(d.events.filter(e => (e.node || 'lab') === n).map(e => e.label)))];
      const bands = n === 'lab' ? 14 : 0;
      const h = Math.max(24, kinds.length * ROW + 8 + bands);
      lanes.set(n, { y, h, kinds, bands, row: ROW });
      y += h;
    });
    return { lanes, nodes, bottom: y };
  }

  drawBands(svg, d, x, laneOf, LEFT, RIGHT, W) {
    const g = sv('g', { class: 'bands' });
    pairBands(d.events).forEach(b => {
      const l = laneOf(b.start);
      const t1 = b.end ? b.end.virtual_ms : Math.max(this.data.t_max, this.view.to);
      const x0 = Math.max(LEFT, x(b.start.virtual_ms)), x1 = Math.min(W - RIGHT, x(t1));
      if (x1 < x0) return;
      const label = bandLabel(b);
      const y = b.what === 'step' ? l.y + 1 : l.y + l.h - 13;
      g.append(sv('rect', {
        class: `band band-${b.what}${b.end ? '' : ' open'}${b.what === 'step' && (b.start.data || {}).step % 2 ? ' odd' : ''}`, x: x0, y: l.y + 1, width: Math.max(1, x1 - x0), height: l.h - 2,
        fill: colorOf(b.start.label), 'data-step': b.what === 'step' ? (b.start.data || {}).step : null,
        'data-from': b.start.virtual_ms, 'data-to': b.end ? b.end.virtual_ms : null,
      }, sv('title', { text: `${label}: ${fmtTime(b.start.virtual_ms, 1)} – ${b.end ? fmtTime(t1, 1) : 'not ended'}` })));
      g.append(sv('line', { class: 'band-edge', x1: x0, x2: x0, y1: l.y + 1, y2: l.y + l.h - 1, stroke: colorOf(b.start.label) }));
      if (x1 - x0 > 40) {
        g.append(sv('text', { class: 'band-label', x: x0 + 3, y: y + 10, text: label.slice(0, Math.floor((x1 - x0 - 6) / 6)) }));
      }
    });
    svg.append(g);
  }

  render() {
    const d = this.data, v = this.view;
    if (!d || !v) return;
    const LEFT = this.left(), RIGHT = 20, TOP = 26;
    const W = this.width();
    const cut = LEFT < 170 ? 12 : 26;
    const x = t => LEFT + (W - LEFT - RIGHT) * (t - v.from) / ((v.to - v.from) || 1);
    const { lanes, nodes, bottom } = this.lanes(d, TOP);
    const H = bottom + 8;
    const svg = sv('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}` });
    nodes.forEach((n, i) => {
      const l = lanes.get(n);
      svg.append(sv('rect', { x: 0, y: l.y, width: W, height: l.h, fill: i % 2 ? '#f5f7fa' : '#fff' }));
      svg.append(sv('text', { class: 'lane-label', x: 8, y: l.y + Math.min(l.h / 2, 14) + 4, 'data-node': n, text: n.length > cut ? n.slice(0, cut - 1) + '…' : n },
        sv('title', { text: n })));
    });
    const grid = sv('g');
    axis(grid, x, v.from, v.to, TOP, H - 8, LEFT, W - RIGHT);
    svg.append(grid);
    const laneOf = e => lanes.get(e.node || 'lab') || lanes.get(nodes[0]);
    this.drawBands(svg, d, x, laneOf, LEFT, RIGHT, W);
    const marks = sv('g');
    const cls = this.opts.markClass || 'tl-ev';
    d.events.forEach((e, i) => {
      const px = x(e.virtual_ms);
      if (px < LEFT - 1 || px > W - RIGHT + 1) return;
      const l = laneOf(e);
      const row = Math.max(0, l.kinds.indexOf(e.label));
      const y0 = l.y + 4 + l.bands + row * l.row, y1 = l.kinds.length > 1 ? y0 + l.row - 1 : l.y + l.h - 4;
      const title = sv('title', { text: `${e.label} on ${e.node || 'lab'} @ ${fmtTime(e.virtual_ms, 1)}${e.n > 1 ? ` (${e.n} events)` : ''}${e.summary ? ' ' + e.summary : ''}` });
      const common = { class: cls, 'data-kind': e.label, 'data-node': e.node || 'lab', 'data-i': i, fill: colorOf(e.label), stroke: colorOf(e.label) };
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
    this.legend.replaceWith(this.legend = legendOf(Object.entries(d.kinds)));
  }
}

// Two runs on one virtual axis, a lane each, one band per kind inside the
// lane (as in the SVG timelines), matched events joined by a thin line.
function twoLanes(lanes, pairs, onSelect) {
  const W = Math.max(340, (document.querySelector('main').clientWidth || 1130) - 2), RIGHT = 20, TOP = 26;
  const LEFT = W < 600 ? 88 : 170, cut = W < 600 ? 12 : 26;
  const kinds = [...new Set(lanes.flatMap(l => l.events.map(e => e.kind)))];
  registerKinds(kinds);
  const LANE = Math.max(64, kinds.length * 9 + 16);
  const span = Math.max(1000, ...lanes.flatMap(l => l.events.map(e => e.virtual_ms))) * 1.04;
  const x = t => LEFT + (W - LEFT - RIGHT) * t / span;
  const H = TOP + LANE * lanes.length + 10;
  const svg = sv('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}` });
  axis(svg, x, 0, span, TOP, H - 8, LEFT, W - RIGHT);
  const band = (LANE - 16) / Math.max(1, kinds.length);
  const pos = (li, e) => [x(e.virtual_ms), TOP + li * LANE + 8 + kinds.indexOf(e.kind) * band];
  lanes.forEach((l, li) => {
    const y = TOP + li * LANE;
    svg.append(sv('line', { x1: LEFT, x2: W - RIGHT, y1: y + LANE, y2: y + LANE, stroke: '#ccd' }));
    svg.append(sv('text', { class: 'lane-label', x: 8, y: y + LANE / 2 + 4, text: l.label.length > cut ? l.label.slice(0, cut - 1) + '…' : l.label }, sv('title', { text: l.label })));
  });
  for (const [i, j] of pairs || []) {
    const a = lanes[0].events[i], b = lanes[1].events[j];
    if (!a || !b) continue;
    const [x0, y0] = pos(0, a), [x1, y1] = pos(1, b);
    svg.append(sv('line', { class: 'pair', x1: x0, y1: y0 + band, x2: x1, y2: y1, stroke: '#98a2b3', 'stroke-dasharray': '2 3' }));
  }
  lanes.forEach((l, li) => l.events.forEach(e => {
    const [px, y] = pos(li, e);
    svg.append(sv('line', {
      class: 'sbs-ev', 'data-kind': e.kind, 'data-lane': li ? 'run' : 'baseline',
      x1: px, x2: px, y1: y, y2: y + Math.max(4, band), stroke: colorOf(e.kind), 'stroke-width': 2,
      onclick: () => onSelect && onSelect(e, l),
    }, sv('title', { text: `${l.label}: ${e.kind} on ${e.node} @ ${fmtTime(e.virtual_ms, 1)} ${e.detail || ''}` })));
  }));
  const count = k => lanes.map(l => l.events.filter(e => e.kind === k).length).join(' / ');
  return el('div', {}, el('div', { class: 'chart scroll-x' }, svg), legendOf(kinds.map(k => [k, count(k)])));
}

// Whether anything is wider than the viewport: recorded on <body> for the
// browser tests (document scrollWidth against clientWidth, and the first
// elements that stick out, outside horizontally scrolling containers).
function measureOverflow() {
  const doc = document.documentElement, cw = doc.clientWidth;
  const out = [];
  for (const e of document.querySelectorAll('body *')) {
    if (out.length >= 5) break;
    if (e.closest('.scroll-x') && !e.classList.contains('scroll-x')) continue;
    const r = e.getBoundingClientRect();
    if (r.width && r.right > cw + 0.5) out.push(`${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''}${e.className && e.className.baseVal === undefined ? '.' + String(e.className).split(' ').join('.') : ''}(${Math.round(r.right)})`);
  }
  document.body.dataset.scrollWidth = doc.scrollWidth;
  document.body.dataset.clientWidth = cw;
  document.body.dataset.overflow = out.join(' ');
}
