// patchbay devtools: the topology graph (topology.json, docs/artifacts.md).
// A layered layout: routers by their upstream chain, devices one row below
// the lowest router they attach to, edges that span rows routed through
// reserved slots, so an edge runs only between rows or through its own slot
// and never crosses a box. Region links are arcs above the top row.
'use strict';

const TOPO = { BOX: 200, GAP: 26, DUMMY: 10, ROWGAP: 58, LINE: 13, MARGIN: 16 };

// A link condition as applied (docs/artifacts.md): durations as "150ms",
// percentages as numbers, the rate as "<n>bit"; zero parts left out.
function fmtDur(v) {
  const m = /^([\d.]+)\s*(ns|us|µs|ms|s)$/.exec(String(v));
  if (!m) return String(v);
  const us = parseFloat(m[1]) * { ns: 1e-3, us: 1, 'µs': 1, ms: 1e3, s: 1e6 }[m[2]];
  if (!us) return '';
  return us >= 1e6 ? `${+(us / 1e6).toFixed(3)}s` : us >= 1e3 ? `${+(us / 1e3).toFixed(3)}ms` : `${+us.toFixed(1)}µs`;
}
function fmtRate(v) {
  const m = /^([\d.]+)\s*([kmg]?)bit/i.exec(String(v));
  if (!m) return String(v);
  const bps = parseFloat(m[1]) * { '': 1, k: 1e3, m: 1e6, g: 1e9 }[m[2].toLowerCase()];
  return bps >= 1e9 ? `${+(bps / 1e9).toFixed(2)} Gbit/s` : bps >= 1e6 ? `${+(bps / 1e6).toFixed(2)} Mbit/s` : `${+(bps / 1e3).toFixed(1)} kbit/s`;
}
function fmtCond(c) {
  if (c === null || c === undefined) return '';
  if (typeof c === 'string') return c;
  const parts = [];
  const d = c.delay !== undefined ? fmtDur(c.delay) : c.latency_ms ? `${c.latency_ms}ms` : '';
  if (d) parts.push(d);
  const j = c.jitter !== undefined ? fmtDur(c.jitter) : '';
  if (j) parts.push(`±${j}`);
  for (const k of ['loss', 'duplicate', 'reorder', 'corrupt']) {
    const v = c[k];
    if (v && parseFloat(v)) parts.push(`${k} ${typeof v === 'number' ? +v.toFixed(3) + '%' : v}`);
  }
  if (c.rate) parts.push(fmtRate(c.rate));
  return parts.join(' ') || 'clean';
}
function linkOf(i) {
  const l = i.link;
  if (!l) return '';
  if (l.out === undefined && l.in === undefined) return fmtCond(l);
  const [o, n] = [fmtCond(l.out), fmtCond(l.in)];
  if (!o && !n) return '';
  return o === n ? `⇅ ${o}` : [o && `↑ ${o}`, n && `↓ ${n}`].filter(Boolean).join(' ');
}
function fmtMs(ms) { return ms === null || ms === undefined ? '?' : fmtTime(ms, 100); }
function natLine(n) {
  if (!n.nat || n.nat === 'none') return null;
  const t = n.nat_config && n.nat_config.conntrack;
  const tt = t ? ` · udp ${t.udp}${t['udp-stream'] && t['udp-stream'] !== t.udp ? '/' + t['udp-stream'] : ''}` : '';
  return `NAT ${n.nat}${tt}`;
}
function fwLine(f) {
  if (!f) return null;
  if (typeof f === 'string') return `firewall ${f}`;
  return `firewall ${f.preset || 'rules'}${f.action ? ' ' + f.action : ''}`;
}

// Every node to draw: routers, devices, and removed ones (greyed).
function topoNodes(topo) {
  const out = [];
  (topo.routers || []).forEach(r => out.push({ ...r, role: 'router' }));
  (topo.devices || []).forEach(d => out.push({ ...d, role: 'device' }));
  (topo.removed || []).forEach(r => out.push({ ...r, role: r.role || (r.upstream !== undefined ? 'router' : 'device'), removed: true }));
  return out;
}

function boxLines(n) {
  const lines = [];
  if (n.role === 'router') {
    lines.push(n.region ? `router · region ${n.region}` : 'router');
    const nat = natLine(n);
    if (nat) lines.push(nat);
    if (n.nat_v6 && n.nat_v6 !== 'none') lines.push(`IPv6 NAT ${n.nat_v6}`);
    const fw = fwLine(n.firewall);
    if (fw) lines.push(fw);
    if (n.pmtu_blackhole) lines.push('drops ICMP frag-needed (PMTU black hole)');
    if (n.lan && n.lan.ipv4) lines.push(`LAN ${n.lan.ip_support === 'v6-only' ? n.lan.ipv6 : n.lan.ipv4}`);
    (n.ifaces || []).filter(i => i.name === 'wan' && (i.mtu || linkOf(i))).forEach(i =>
      lines.push(['wan', i.mtu ? `MTU ${i.mtu}` : '', linkOf(i)].filter(Boolean).join(' · ')));
    const lan = (n.ifaces || []).find(i => i.name === 'lan' && i.mtu);
    if (lan) lines.push(`LAN MTU ${lan.mtu}`);
  } else {
    const fw = fwLine(n.firewall);
    if (fw) lines.push(fw);
    (n.ifaces || []).forEach(i => {
      const ip = (i.ipv4 || [])[0] || (i.ipv6 || [])[0] || '';
      lines.push(`${i.name}${n.default_via === i.name && (n.ifaces || []).length > 1 ? '*' : ''} → ${i.peer} ${ip.split('/')[0]}`);
      const extra = [i.mtu ? `MTU ${i.mtu}` : '', linkOf(i)].filter(Boolean).join(' · ');
      if (extra) lines.push(`  ${extra}`);
    });
  }
  if (n.removed) lines.push(`removed at ${fmtMs(n.removed_ms)}`);
  return lines;
}

// Rows (layers): a router one below its upstream, a device one below the
// lowest router it attaches to.
function layers(nodes) {
  const by = new Map(nodes.map(n => [n.name, n]));
  const depth = new Map();
  const dOf = (n, seen) => {
    if (depth.has(n.name)) return depth.get(n.name);
    const up = n.upstream && by.get(n.upstream);
    const d = up && !seen.has(up.name) ? dOf(up, new Set([...seen, n.name])) + 1 : 0;
    depth.set(n.name, d);
    return d;
  };
  nodes.filter(n => n.role === 'router').forEach(n => dOf(n, new Set()));
  nodes.filter(n => n.role === 'device').forEach(n => {
    const ds = (n.ifaces || []).map(i => depth.has(i.peer) ? depth.get(i.peer) + 1 : 0);
    depth.set(n.name, Math.max(0, ...ds));
  });
  return depth;
}

// Edges parent (upper) → child (lower), with dummy slots for rows between.
function edgesOf(nodes, depth) {
  const names = new Set(nodes.map(n => n.name));
  const edges = [];
  nodes.forEach(n => {
    if (n.role === 'router' && n.upstream && names.has(n.upstream)) edges.push({ from: n.upstream, to: n.name, iface: 'wan' });
    if (n.role === 'device') (n.ifaces || []).forEach(i => { if (names.has(i.peer)) edges.push({ from: i.peer, to: n.name, iface: i.name }); });
  });
  edges.forEach((e, k) => {
    e.id = k;
    e.dummies = [];
    for (let d = depth.get(e.from) + 1; d < depth.get(e.to); d++) e.dummies.push({ name: `~${k}.${d}`, dummy: true, depth: d });
  });
  return edges;
}

function layout(topo) {
  const nodes = topoNodes(topo);
  const depth = layers(nodes);
  const edges = edgesOf(nodes, depth);
  const rows = [];
  const put = (n, d) => { (rows[d] = rows[d] || []).push(n); };
  // Initial order: routers by name, then a depth-first walk.
  const kids = new Map();
  edges.forEach(e => { if (!kids.has(e.from)) kids.set(e.from, []); kids.get(e.from).push(e); });
  const placed = new Set();
  const walk = n => {
    if (placed.has(n.name)) return;
    placed.add(n.name);
    put(n, depth.get(n.name));
    (kids.get(n.name) || []).forEach(e => {
      e.dummies.forEach(dm => put(dm, dm.depth));
      const c = nodes.find(x => x.name === e.to);
      if (c) walk(c);
    });
  };
  nodes.filter(n => depth.get(n.name) === 0 && n.role === 'router').sort((a, b) => a.name.localeCompare(b.name)).forEach(walk);
  nodes.forEach(walk);
  const all = rows.flat();
  all.forEach(n => { n.depth = n.dummy ? n.depth : depth.get(n.name); n.w = n.dummy ? TOPO.DUMMY : TOPO.BOX; });
  // Chains of each edge: from, dummies..., to (for positions and drawing).
  const byName = new Map(all.map(n => [n.name, n]));
  const up = new Map(), down = new Map();
  const link = (a, b) => { (down.get(a) || down.set(a, []).get(a)).push(b); (up.get(b) || up.set(b, []).get(b)).push(a); };
  edges.forEach(e => {
    const chain = [e.from, ...e.dummies.map(d => d.name), e.to].map(n => byName.get(n));
    e.chain = chain;
    for (let i = 0; i + 1 < chain.length; i++) link(chain[i], chain[i + 1]);
  });
  const idx = n => rows[n.depth].indexOf(n);
  const bary = (n, nb) => { const v = (nb.get(n) || []).map(idx); return v.length ? v.reduce((a, b) => a + b, 0) / v.length : idx(n); };
  for (let pass = 0; pass < 4; pass++) {
    for (let d = 1; d < rows.length; d++) rows[d] = (rows[d] || []).map(n => [bary(n, up), n]).sort((a, b) => a[0] - b[0]).map(x => x[1]);
    for (let d = rows.length - 2; d >= 0; d--) rows[d] = (rows[d] || []).map(n => [bary(n, down), n]).sort((a, b) => a[0] - b[0]).map(x => x[1]);
  }
  // x: packed, then pulled toward the neighbours' mean without overlap.
  const pack = (row, want) => {
    let right = -Infinity;
    row.forEach(n => { n.x = Math.max(want(n), right + TOPO.GAP + n.w / 2); right = n.x + n.w / 2; });
    let left = Infinity;
    for (let i = row.length - 1; i >= 0; i--) {
      const n = row[i];
      const lim = left - TOPO.GAP - n.w / 2;
      if (n.x > lim) n.x = lim;
      left = n.x - n.w / 2;
    }
    row.forEach((n, i) => { if (i && n.x - n.w / 2 < row[i - 1].x + row[i - 1].w / 2 + TOPO.GAP) n.x = row[i - 1].x + row[i - 1].w / 2 + TOPO.GAP + n.w / 2; });
  };
  rows.forEach(row => pack(row || [], () => 0));
  const mean = (n, nb) => { const v = (nb.get(n) || []).map(m => m.x); return v.length ? v.reduce((a, b) => a + b, 0) / v.length : n.x; };
  for (let pass = 0; pass < 6; pass++) {
    for (let d = 1; d < rows.length; d++) pack(rows[d] || [], n => mean(n, up));
    for (let d = rows.length - 2; d >= 0; d--) pack(rows[d] || [], n => mean(n, down));
  }
  const minX = Math.min(...all.map(n => n.x - n.w / 2));
  all.forEach(n => { n.x += TOPO.MARGIN - minX; });
  return { nodes: all.filter(n => !n.dummy), all, rows, edges };
}

// Region links as arcs above the top row, one height level each (the
// shortest lowest). Each end gets its own leg on the router's top edge, and
// each arc's short label sits where no higher arc's leg passes.
function regionArcs(topo, pos) {
  const routerOf = name => ((topo.regions || []).find(r => r.name === name) || {}).router || `region-${name}`;
  const links = (topo.region_links || []).filter(l => pos.has(routerOf(l.a)) && pos.has(routerOf(l.b)))
    .map(l => ({ ...l, ra: pos.get(routerOf(l.a)), rb: pos.get(routerOf(l.b)) }))
    .sort((p, q) => Math.abs(p.ra.x - p.rb.x) - Math.abs(q.ra.x - q.rb.x));
  const ends = new Map();
  links.forEach(l => [l.ra, l.rb].forEach(r => { ends.set(r.name, (ends.get(r.name) || 0) + 1); }));
  const used = new Map();
  const leg = r => { const k = used.get(r.name) || 0; used.set(r.name, k + 1); const n = ends.get(r.name); return r.x - r.w / 2 + (r.w * (k + 1)) / (n + 1); };
  links.forEach(l => { const [a, b] = l.ra.x <= l.rb.x ? [l.ra, l.rb] : [l.rb, l.ra]; l.x0 = leg(a); l.x1 = leg(b); });
  const LEVEL = 24;
  const height = links.length ? links.length * LEVEL + 24 : 0;
  // The lowest arc clears the exchange bar and its label.
  const draw = (svg, top) => links.forEach((l, i) => {
    const y = top - 36 - i * LEVEL;
    const broken = l.state === 'broken';
    const col = broken ? '#d62728' : l.state === 'restored' ? '#067647' : '#2ca02c';
    const label = `${l.a}–${l.b}${broken ? ' ✕' : ''}`;
    const w = label.length * 6.6 + 8;
    // Legs of the arcs above this one cross its level: keep the label off them.
    const legs = links.slice(i + 1).flatMap(o => [o.x0, o.x1]);
    let lx = (l.x0 + l.x1) / 2;
    for (let d = 0; d < l.x1 - l.x0; d += 4) {
      const free = c => c - w / 2 > l.x0 + 4 && c + w / 2 < l.x1 - 4 && legs.every(x => Math.abs(x - c) > w / 2 + 3);
      if (free(lx + d)) { lx += d; break; }
      if (free(lx - d)) { lx -= d; break; }
    }
    const hist = (l.history || []).map(h => `${h.state}${h.via ? ' via ' + h.via : h.state === 'broken' ? ' (dropped)' : ''} at ${fmtMs(h.virtual_ms)}`).join(', ');
    svg.append(sv('g', { class: 'region-link', 'data-link': [l.a, l.b].sort().join('|'), 'data-state': l.state },
      sv('path', { d: `M ${l.x0} ${top} L ${l.x0} ${y + 6} Q ${l.x0} ${y} ${l.x0 + 6} ${y} L ${l.x1 - 6} ${y} Q ${l.x1} ${y} ${l.x1} ${y + 6} L ${l.x1} ${top}`,
        fill: 'none', stroke: col, 'stroke-width': 2, 'stroke-dasharray': broken ? '6 4' : null }),
      sv('rect', { x: lx - w / 2, y: y - 8, width: w, height: 15, rx: 3, fill: '#fff', stroke: col }),
      sv('text', { class: 'region-label', x: lx, y: y + 3, 'text-anchor': 'middle', fill: col, text: label }),
      sv('title', { text: `region link ${l.a}–${l.b} (${fmtCond(l.condition)}): ${l.state}${l.via ? ' via ' + l.via : ''}; ${hist}` })));
  });
  return { height, draw, links };
}
function regionTable(links) {
  if (!links.length) return null;
  return table(['region link', 'condition', 'state', 'history'], links.map(l => [`${l.a}–${l.b}`, fmtCond(l.condition),
    el('span', { class: l.state === 'broken' ? 'fail' : 'pass', text: `${l.state}${l.state === 'broken' ? (l.via ? ' (rerouted via ' + l.via + ')' : ' (dropped)') : ''}` }),
    (l.history || []).map(h => `${h.state}${h.via ? ' via ' + h.via : ''} at ${fmtMs(h.virtual_ms)}`).join(' → ')]));
}

function clip(s, w) { const n = Math.floor((w - 12) / 6.3); return s.length > n ? s.slice(0, n - 1) + '…' : s; }

function topoGraph(topo, onSelect) {
  const L = layout(topo);
  const pos = new Map(L.all.map(n => [n.name, n]));
  L.nodes.forEach(n => { n.lines = boxLines(n); n.h = 26 + n.lines.length * TOPO.LINE; });
  const rowH = L.rows.map(r => Math.max(TOPO.DUMMY, ...(r || []).map(n => n.h || 0)));
  const arcs = regionArcs(topo, pos);
  const top0 = 30 + arcs.height;
  const rowTop = [];
  rowH.forEach((h, d) => { rowTop[d] = d ? rowTop[d - 1] + rowH[d - 1] + TOPO.ROWGAP : top0; });
  L.all.forEach(n => { n.y = rowTop[n.depth]; });
  const W = Math.max(...L.all.map(n => n.x + n.w / 2)) + TOPO.MARGIN;
  const H = rowTop[rowTop.length - 1] + rowH[rowH.length - 1] + 16;
  // Scaled to the panel, but never below 520 px (readable on a phone,
  // which scrolls the rest).
  const svg = sv('svg', { viewBox: `0 0 ${W} ${H}`, class: 'topo', width: W, height: H,
    style: `width:100%;min-width:${Math.round(Math.min(W, 520))}px;max-width:${W}px;height:auto` });
  // The exchange: a bar the top-level routers hang off.
  const tops = L.nodes.filter(n => n.depth === 0 && n.role === 'router' && !n.upstream);
  if (tops.length) {
    const y = top0 - 12, xs = tops.map(n => n.x);
    svg.append(sv('g', { class: 'exchange' },
      sv('line', { x1: Math.min(...xs) - 30, x2: Math.max(...xs) + 30, y1: y, y2: y, stroke: '#98a2b3', 'stroke-width': 3 }),
      sv('title', { text: 'the exchange: the lab-wide network the top-level routers join' }),
      tops.map(n => sv('line', { x1: n.x, x2: n.x, y1: y, y2: n.y, stroke: '#98a2b3' }))));
  }
  arcs.draw(svg, top0);
  L.edges.forEach(e => {
    const pts = [];
    e.chain.forEach((n, i) => {
      if (!n) return;
      const h = n.dummy ? rowH[n.depth] : n.h;
      if (i) pts.push([n.x, n.y]);
      if (i < e.chain.length - 1) pts.push([n.x, n.y + h]);
    });
    const child = pos.get(e.to);
    const removed = child && child.removed;
    svg.append(sv('polyline', { class: 'topo-edge', 'data-edge': `${e.from}>${e.to}`, points: pts.map(p => p.join(',')).join(' '), fill: 'none',
      stroke: removed ? '#c0c5cf' : '#98a2b3', 'stroke-dasharray': removed ? '4 3' : null }));
  });
  L.nodes.forEach(n => {
    const x = n.x - n.w / 2;
    const router = n.role === 'router';
    const g = sv('g', { class: `topo-node${n.removed ? ' removed' : ''}`, 'data-node': n.name, 'data-role': n.role, tabindex: 0, onclick: () => onSelect(n) },
      sv('rect', { x, y: n.y, width: n.w, height: n.h, rx: router ? 4 : 12, fill: n.removed ? '#f2f4f7' : router ? '#e8effb' : '#eefaf1',
        stroke: n.removed ? '#98a2b3' : router ? '#1f5fbf' : '#067647', 'stroke-dasharray': n.removed ? '5 3' : null }),
      sv('text', { x: x + 8, y: n.y + 17, 'font-weight': 600, text: clip(n.name, n.w) }),
      n.lines.map((t, i) => sv('text', { class: 'topo-line', x: x + 8, y: n.y + 32 + i * TOPO.LINE, 'font-size': 11, fill: '#475467', text: clip(t, n.w) })),
      sv('title', { text: [n.name, ...n.lines].join('\n') }));
    svg.append(g);
  });
  return el('div', { class: 'topo-chart' }, el('div', { class: 'chart scroll-x' }, svg), regionTable(arcs.links));
}

// The detail of a node: addresses, NAT, firewall, link conditions, counters
// (interfaces at the end of the run; events of the node on the timeline).
function ifaceTable(i) {
  const c = i.counters || {};
  const l = i.link || {};
  const dir = l.out !== undefined || l.in !== undefined;
  return el('div', { class: 'iface' }, el('h4', { text: `${i.name} → ${i.peer}` }), kvTable({
    IPv4: (i.ipv4 || []).join(' '), IPv6: (i.ipv6 || []).join(' '), MAC: i.mac, MTU: i.mtu,
    'link ↑ out': fmtCond(dir ? l.out : i.link), 'link ↓ in': fmtCond(dir ? l.in : i.link),
    'packets rx / tx': c.rx_packets === undefined ? undefined : `${c.rx_packets} / ${c.tx_packets}`,
    'bytes rx / tx': c.rx_bytes === undefined ? undefined : `${c.rx_bytes} / ${c.tx_bytes}`,
    'dropped rx / tx': c.rx_dropped === undefined ? undefined : `${c.rx_dropped} / ${c.tx_dropped}`,
    'errors rx / tx': c.rx_errors === undefined ? undefined : `${c.rx_errors} / ${c.tx_errors}`,
  }));
}
function nodeDetail(n, eventCounts) {
  const t = n.nat_config && n.nat_config.conntrack;
  return el('div', { class: 'node-detail', 'data-node': n.name },
    el('h3', { text: `${n.name} (${n.role}${n.removed ? `, removed at ${fmtMs(n.removed_ms)}` : ''})` }),
    kvTable({
      region: n.region, upstream: n.role === 'router' ? (n.upstream || 'exchange') : undefined,
      'default route': n.default_via, NAT: n.nat, hairpin: n.nat_config ? n.nat_config.hairpin : undefined,
      'IPv6 NAT': n.nat_v6, 'PMTU black hole': n.pmtu_blackhole ? 'yes: ICMP frag-needed / packet-too-big dropped' : undefined, LAN: n.lan ? `${n.lan.ipv4} ${n.lan.ipv6} (${n.lan.kind}, ${n.lan.ip_support})` : undefined,
      firewall: n.firewall ? JSON.stringify(n.firewall) : undefined,
    }),
    t ? el('details', {}, el('summary', { text: 'conntrack timeouts (lab time)' }), kvTable(t)) : null,
    el('div', { class: 'ifaces' }, (n.ifaces || []).map(ifaceTable)),
    n.removed ? muted('Counters are read when the run ends: a removed node has none.') : null,
    eventCounts && Object.keys(eventCounts).length
      ? el('div', {}, el('b', { text: 'events of this node: ' }), legendOf(Object.entries(eventCounts))) : muted('No events of this node on the timeline.'));
}
