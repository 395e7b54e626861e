// patchbay devtools: loads the served run directories and renders the five
// panels. Reads only this server's /api (see patchbay/src/serve/api.rs).
'use strict';

const S = { runs: [], id: 0, run: null, tab: null, timeline: null, cursor: null, poll: null, lastSeq: null, logNode: '', logWidth: 2000 };

function qs(o) {
  return Object.entries(o).filter(([, v]) => v !== undefined && v !== null && v !== '' && !Number.isNaN(v))
    .map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('&');
}
async function getJSON(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: ${r.status} ${await r.text()}`);
  return r.json();
}
function fileUrl(path, id) {
  return `api/runs/${id === undefined ? S.id : id}/file/${path.split('/').map(encodeURIComponent).join('/')}`;
}
function hasFile(run, p) { return run.files.some(f => f.path === p); }
async function file(path, text) {
  if (!hasFile(S.run, path)) return null;
  const r = await fetch(fileUrl(path));
  if (r.status === 404) return null;
  if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
  return text ? r.text() : r.json();
}
const panel = id => document.getElementById(id);
const muted = t => el('p', { class: 'muted', text: t });
function fmtVal(v) {
  if (v === null || v === undefined) return '';
  if (typeof v === 'object') return Object.entries(v).map(([k, x]) => `${k}=${typeof x === 'object' ? JSON.stringify(x) : x}`).join(' ');
  return String(v);
}
function kvTable(o) {
  return el('table', {}, Object.entries(o || {}).map(([k, v]) => el('tr', {}, el('th', { text: k }), el('td', { text: fmtVal(v) }))));
}
function table(head, rows) {
  return el('table', {}, el('tr', {}, head.map(h => el('th', { text: h }))),
    rows.map(r => el('tr', {}, r.map(c => c instanceof Node ? el('td', {}, c) : el('td', { text: c === undefined || c === null ? '' : String(c) })))));
}

function showTab(t) {
  S.tab = t;
  document.querySelectorAll('.panel').forEach(p => p.classList.toggle('active', p.id === t));
  document.querySelectorAll('nav button').forEach(b => b.classList.toggle('active', b.dataset.tab === t));
  history.replaceState(null, '', `#run=${S.id}&tab=${t}`);
  if (t === 'timeline' && S.timeline) S.timeline.render();
}

async function main() {
  const h = new URLSearchParams(location.hash.slice(1));
  S.runs = await getJSON('api/runs');
  const sel = panel('run');
  S.runs.forEach(r => sel.append(el('option', { value: r.id, text: `${r.path} — ${r.kind}${r.run && r.run.time_scale ? `, k=${r.run.time_scale}` : ''}` })));
  sel.addEventListener('change', () => openRun(Number(sel.value)));
  document.querySelectorAll('nav button').forEach(b => b.addEventListener('click', () => showTab(b.dataset.tab)));
  const id = Math.min(Number(h.get('run') || 0), S.runs.length - 1);
  sel.value = String(id);
  S.tab = h.get('tab');
  await openRun(id);
}

async function openRun(id) {
  clearInterval(S.poll);
  S.id = id; S.run = S.runs[id]; S.cursor = null; S.lastSeq = null;
  const [topo, bench, comp, compTxt] = await Promise.all([
    file('topology.json'), file('bench.json'), file('compression.json'), file('compression.txt', true)]);
  Object.assign(S, { topo, bench, comp, compTxt });
  renderTopology();
  await renderTimeline();
  await renderSide();
  await renderLogs();
  renderReports();
  status();
  showTab(S.tab || (S.bench ? 'side' : 'timeline'));
  document.body.dataset.ready = '1';
  if (S.run.run && S.run.run.status === 'running') S.poll = setInterval(liveTick, 1000);
}

function status() {
  const r = S.run.run || {};
  const st = panel('status');
  st.className = r.status === 'running' ? 'live' : '';
  st.textContent = [S.run.kind, r.name, r.time_mode, r.time_scale ? `k=${r.time_scale}` : null, r.status].filter(Boolean).join(' · ');
}

// ---- Topology ---------------------------------------------------------
function nodesOf(topo) {
  return [...(topo.routers || []).map(r => ({ ...r, role: 'router' })), ...(topo.devices || []).map(d => ({ ...d, role: 'device' }))];
}
function renderTopology() {
  const p = panel('topology');
  p.replaceChildren(el('h2', { text: 'Topology' }));
  if (S.topo) {
    p.append(topoGraph(S.topo), el('div', { class: 'cards' }, nodesOf(S.topo).map(nodeCard)));
  } else if (S.bench) {
    p.append(muted('Bench directories hold no topology.json: each scenario builds its own small lab. Nodes seen in the traces:'));
    p.append(table(['scenario', 'nodes'], S.bench.scenarios.map(sc => [sc.scenario,
      [...new Set(sc.comparisons.flatMap(c => [...c.baseline.events, ...c.run.events].map(e => e.node)))].sort().join(', ')])));
  } else p.append(muted('No topology.json in this directory.'));
}
function nodeCard(n) {
  return el('div', { class: 'card', 'data-node': n.name },
    el('h4', { text: n.name }),
    el('div', {}, el('span', { class: 'tag', text: n.role }),
      n.nat ? el('span', { class: 'tag', text: `NAT ${fmtVal(n.nat)}` }) : null,
      n.firewall ? el('span', { class: 'tag', text: `firewall ${fmtVal(n.firewall)}` }) : null,
      n.region ? el('span', { class: 'tag', text: `region ${n.region}` }) : null,
      n.upstream ? el('span', { class: 'tag', text: `upstream ${n.upstream}` }) : null),
    table(['iface', 'peer', 'addresses', 'link'], (n.ifaces || []).map(i =>
      [i.name, i.peer || '', [...(i.ipv4 || []), ...(i.ipv6 || [])].join(' '), fmtVal(i.link)])));
}
function topoGraph(topo) {
  const nodes = nodesOf(topo), byName = new Map(nodes.map(n => [n.name, n]));
  const depth = new Map();
  const dOf = (n, seen) => {
    if (depth.has(n.name)) return depth.get(n.name);
    const up = n.upstream && byName.get(n.upstream);
    const d = up && !seen.has(up.name) ? dOf(up, new Set([...seen, n.name])) + 1 : 0;
    depth.set(n.name, d);
    return d;
  };
  (topo.routers || []).forEach(r => dOf({ ...r }, new Set()));
  const maxR = Math.max(-1, ...depth.values());
  (topo.devices || []).forEach(d => depth.set(d.name, maxR + 1));
  const rows = [];
  nodes.forEach(n => { const d = depth.get(n.name) || 0; (rows[d] = rows[d] || []).push(n); });
  const W = 1100, BW = 170, BH = 46, RH = 110;
  const H = rows.length * RH + 10, at = new Map();
  rows.forEach((row, d) => row.forEach((n, i) => at.set(n.name, [(i + 0.5) * W / row.length, 20 + d * RH])));
  const svg = sv('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: 'topo' });
  const edge = (a, b, label) => {
    const [x0, y0] = at.get(a), [x1, y1] = at.get(b);
    svg.append(sv('line', { x1: x0, y1: y0 + BH / 2, x2: x1, y2: y1 + BH / 2, stroke: '#98a2b3' }));
    if (label) svg.append(sv('text', { x: (x0 + x1) / 2 + 4, y: (y0 + y1) / 2 + BH / 2, 'font-size': 11, fill: '#475467', text: label }));
  };
  nodes.forEach(n => {
    const ifs = n.ifaces || [];
    if (n.upstream && at.has(n.upstream) && !ifs.some(i => i.peer === n.upstream)) edge(n.name, n.upstream, '');
    ifs.forEach(i => { if (i.peer && at.has(i.peer)) edge(n.name, i.peer, [i.name, fmtVal(i.link)].filter(Boolean).join(' ')); });
  });
  nodes.forEach(n => {
    const [cx, y] = at.get(n.name);
    const sub = [n.nat && `NAT ${fmtVal(n.nat)}`, n.firewall && `fw ${fmtVal(n.firewall)}`, n.region && `region ${n.region}`].filter(Boolean).join(' · ');
    svg.append(sv('g', { class: 'topo-node', 'data-node': n.name },
      sv('rect', { x: cx - BW / 2, y, width: BW, height: BH, rx: n.role === 'router' ? 4 : 14, fill: n.role === 'router' ? '#e8effb' : '#eefaf1', stroke: n.role === 'router' ? '#1f5fbf' : '#067647' }),
      sv('text', { x: cx, y: y + 18, 'text-anchor': 'middle', 'font-weight': 600, text: n.name }),
      sv('text', { x: cx, y: y + 34, 'text-anchor': 'middle', 'font-size': 11, fill: '#475467', text: sub || n.role })));
  });
  return el('div', { class: 'chart' }, svg);
}

// ---- Timeline ---------------------------------------------------------
function benchEvents(bench) {
  const evs = [];
  bench.scenarios.forEach(sc => sc.comparisons.forEach((c, ci) => {
    const lanes = ci === 0 ? [c.baseline, c.run] : [c.run];
    lanes.forEach(l => l.events.forEach(e => evs.push({
      seq: evs.length, virtual_ms: e.virtual_ms, wall_ms: e.virtual_ms / (l.scale || 1),
      node: `${sc.scenario} · ${l.label} · ${e.node}`, kind: e.kind, label: e.kind, data: { detail: e.detail }, n: 1,
    })));
  }));
  return evs;
}
function localWindow(all) {
  return async (from, to) => {
    const t = all.map(e => e.virtual_ms);
    const t_min = t.length ? Math.min(...t) : 0, t_max = t.length ? Math.max(...t) : 0;
    const lo = from === undefined ? t_min : from, hi = to === undefined ? t_max : to;
    const events = all.filter(e => e.virtual_ms >= lo && e.virtual_ms <= hi);
    const kinds = {};
    events.forEach(e => { kinds[e.label] = (kinds[e.label] || 0) + 1; });
    return { total: all.length, t_min, t_max, nodes: [...new Set(all.map(e => e.node))], kinds, in_window: events.length, binned: false, events };
  };
}
async function renderTimeline() {
  const p = panel('timeline');
  p.replaceChildren(el('h2', { text: 'Timeline (virtual time)' }));
  S.timeline = null;
  const id = S.id;
  let source;
  if (hasFile(S.run, 'events.jsonl')) source = (from, to, bins) => getJSON(`api/runs/${id}/events?${qs({ from, to, bins })}`);
  else if (S.bench) source = localWindow(benchEvents(S.bench));
  else { p.append(muted('No events.jsonl in this directory (yet).')); return; }
  S.timeline = new Timeline(p, source, { cursor: t => { S.cursor = t; renderLogs(); } });
  await S.timeline.load();
  S.lastSeq = S.timeline.data.last_seq;
}

// ---- Side by side -----------------------------------------------------
function figure(cls, label, text, value) {
  return el('div', { class: cls, 'data-value': value }, el('b', { text }), el('span', { class: 'muted', text: label }));
}
function comparisonView(scenario, c) {
  const f = c.fidelity;
  const box = el('div', { class: 'cmp', 'data-scenario': scenario });
  const detail = el('div', { class: 'detail muted', text: 'Click an event for its detail.' });
  addKids(box, [el('h3', { text: `${scenario} — ${c.label}` }),
    el('div', { class: 'figures' },
      figure(`fid-pass ${f.pass ? 'pass' : 'fail'}`, 'fidelity', f.pass ? 'PASS' : 'FAIL', f.pass),
      figure('fid-median', 'median error', pct(f.median), f.median),
      figure('fid-max', 'max error', pct(f.max), f.max),
      figure('fid-seq', 'sequence', f.sequence_match ? 'identical' : 'differs', f.sequence_match),
      figure('fid-anchor', 'anchor max |Δ|', `${(f.anchor_max_abs_s * 1000).toFixed(1)} ms`, f.anchor_max_abs_s),
      figure('fid-k', 'k', String(c.k), c.k),
      c.speedup ? figure('fid-speedup', 'speedup', `${c.speedup.toFixed(1)}×`, c.speedup) : null,
      figure('fid-wall', 'wall: baseline / run', `${c.baseline.wall_s.toFixed(2)} s / ${c.run.wall_s.toFixed(3)} s`, c.run.wall_s)),
    f.first_mismatch ? el('p', { class: 'fail', text: `first mismatch: ${f.first_mismatch}` }) : null,
    twoLanes([c.baseline, c.run], (f.events || []).map((_, i) => [i, i]), (e, l) => {
      detail.className = 'detail';
      detail.replaceChildren(el('b', { text: `${l.label}: ${e.kind} on ${e.node} at ${fmtTime(e.virtual_ms, 1)}` }), el('span', { text: ` ${e.detail || ''}` }));
    }),
    detail,
    el('details', {}, el('summary', { text: `per-event errors (${(f.events || []).length})` }),
      table(['kind', 'node', 'baseline s', 'run s', 'relative error'], (f.events || []).map(e =>
        [e.kind, e.node, e.baseline_s.toFixed(3), e.compressed_s.toFixed(3), e.rel_error === null ? 'anchor' : pct(e.rel_error)]))),
    c.svg ? el('p', {}, el('a', { href: fileUrl(c.svg), target: '_blank', text: `SVG timeline (${c.svg})` })) : null]);
  return box;
}
// The fidelity check of scenario/fidelity.rs, for two lab runs.
function fidelityOf(base, run) {
  const out = { events: [], sequence_match: true, first_mismatch: null };
  const n = Math.min(base.length, run.length);
  for (let i = 0; i < n; i++) {
    const a = base[i], b = run[i];
    if (a.kind !== b.kind || a.node !== b.node) {
      out.sequence_match = false;
      out.first_mismatch = `event ${i}: baseline ${a.kind} on ${a.node}, run ${b.kind} on ${b.node}`;
      break;
    }
    out.events.push({ kind: a.kind, node: a.node, baseline_s: a.virtual_ms / 1000, compressed_s: b.virtual_ms / 1000,
      rel_error: a.virtual_ms >= 500 ? Math.abs(b.virtual_ms - a.virtual_ms) / a.virtual_ms : null });
  }
  if (out.sequence_match && base.length !== run.length) { out.sequence_match = false; out.first_mismatch = `baseline has ${base.length} events, run ${run.length}`; }
  const errs = out.events.map(e => e.rel_error).filter(e => e !== null).sort((a, b) => a - b);
  const m = errs.length;
  out.median = m ? (m % 2 ? errs[(m - 1) / 2] : (errs[m / 2 - 1] + errs[m / 2]) / 2) : 0;
  out.max = m ? errs[m - 1] : 0;
  out.anchor_max_abs_s = Math.max(0, ...out.events.filter(e => e.rel_error === null).map(e => Math.abs(e.compressed_s - e.baseline_s)));
  out.pass = out.sequence_match && m > 0 && out.median <= 0.05 && out.max <= 0.15;
  return out;
}
async function labLane(id, label, scale) {
  const d = await getJSON(`api/runs/${id}/events?${qs({ max: 50000 })}`);
  const events = d.events.filter(e => /^(tcp:|mark|nat\.|fault\.|link\.)/.test(e.label))
    .map(e => ({ virtual_ms: e.virtual_ms, node: e.node || 'lab', kind: e.label, detail: e.data ? JSON.stringify(e.data) : '' }));
  return { label, scale, wall_s: Math.max(0, ...d.events.map(e => e.wall_ms || 0)) / 1000, events };
}
async function renderSide() {
  const p = panel('side');
  p.replaceChildren(el('h2', { text: 'Side by side: each run against its k=1 baseline, on the virtual axis' }));
  if (S.bench) {
    S.bench.scenarios.forEach(sc => sc.comparisons.forEach(c => p.append(comparisonView(sc.scenario, c))));
    return;
  }
  const r = S.run.run;
  const base = r && S.runs.find(o => o !== S.run && o.run && o.run.name === r.name && (o.run.time_scale || 1) === 1 && o.run.time_mode !== 'virtual' && hasFile(o, 'events.jsonl'));
  if (!r || !base || ((r.time_scale || 1) === 1 && r.time_mode !== 'virtual')) {
    p.append(muted('A lab run is compared with a k=1 run of the same lab: serve both directories (patchbay serve BASELINE RUN). Bench directories carry their baselines.'));
    return;
  }
  const [b, c] = await Promise.all([labLane(base.id, `baseline k=1 (${base.path})`, 1), labLane(S.id, `${r.time_mode} k=${r.time_scale} (${S.run.path})`, r.time_scale)]);
  p.append(comparisonView(r.name, { label: `${r.time_mode} k=${r.time_scale}`, k: r.time_scale, baseline: b, run: c, fidelity: fidelityOf(b.events, c.events), speedup: b.wall_s / Math.max(c.wall_s, 1e-9) }));
}

// ---- Logs -------------------------------------------------------------
async function renderLogs() {
  const p = panel('logs');
  const raw = S.run.files.filter(f => /^logs\/.+\/.+\.(stdout|stderr)$/.test(f.path));
  const id = S.id;
  const node = el('select', {}, el('option', { value: '', text: 'all nodes' }));
  const width = el('input', { type: 'number', min: 1, step: 100, value: S.logWidth, style: 'width:7em' });
  const head = el('h2', { text: 'Logs' });
  if (!S.run.files.some(f => /^logs\/[^/]+\.jsonl$/.test(f.path))) {
    p.replaceChildren(head, muted(S.bench ? 'Bench directories hold no per-node logs.' : 'No logs/<node>.jsonl in this directory.'));
    return;
  }
  const from = S.cursor === null ? undefined : S.cursor - S.logWidth / 2;
  const to = S.cursor === null ? undefined : S.cursor + S.logWidth / 2;
  const d = await getJSON(`api/runs/${id}/logs?${qs({ node: S.logNode, from, to, limit: 2000 })}`);
  d.nodes.forEach(n => node.append(el('option', { value: n, text: n })));
  node.value = S.logNode;
  node.addEventListener('change', () => { S.logNode = node.value; renderLogs(); });
  width.addEventListener('change', () => { S.logWidth = Math.max(1, Number(width.value) || 2000); renderLogs(); });
  p.replaceChildren();
  addKids(p, [head,
    el('div', { class: 'toolbar' }, node, el('label', {}, 'window ', width, ' ms around the cursor'),
      el('span', { class: 'muted', text: S.cursor === null ? 'no cursor: the whole run (set one on the Timeline)' : `cursor ${fmtTime(S.cursor, 1)}: ${fmtTime(from, 1)} – ${fmtTime(to, 1)}` }),
      S.cursor === null ? null : el('button', { text: 'clear cursor', onclick: () => { S.cursor = null; if (S.timeline) S.timeline.setCursor(null); } })),
    table(['virtual', 'wall', 'node', 'cmd', 'stream', 'line'], d.lines.map(l => [fmtTime(l.virtual_ms, 1), fmtTime(l.wall_ms, 1), l.node, l.cmd, l.stream, l.line])),
    d.dropped ? muted(`${d.dropped} more lines in the window: narrow it`) : null,
    raw.length ? el('details', {}, el('summary', { text: `raw output files (${raw.length})` }),
      el('ul', {}, raw.map(f => el('li', {}, el('a', { href: fileUrl(f.path), target: '_blank', text: `${f.path} (${f.size} B)` }))))) : null]);
  p.querySelector('table').classList.add('log');
  p.querySelectorAll('table tr').forEach(tr => { if (tr.children[4] && tr.children[4].textContent === 'stderr') tr.classList.add('stderr'); });
}

// ---- Reports ----------------------------------------------------------
function renderReports() {
  const p = panel('reports');
  p.replaceChildren(el('h2', { text: 'Reports' }));
  if (S.run.run) p.append(el('h3', { text: 'run.json' }), kvTable(S.run.run));
  if (S.comp || S.compTxt) {
    p.append(el('h3', { text: 'Compression report' }));
    if (S.compTxt) p.append(el('pre', { text: S.compTxt }));
    if (S.comp) p.append(el('details', {}, el('summary', { text: 'compression.json' }), el('pre', { text: JSON.stringify(S.comp, null, 2) })));
  }
  if (S.bench) benchReport(p, S.bench);
  const matrix = S.run.files.filter(f => /kernel-matrix/.test(f.path));
  matrix.forEach(f => { p.append(el('h3', { text: `Kernel matrix: ${f.path}` })); const pre = el('pre', { class: 'matrix' }); p.append(pre); fetch(fileUrl(f.path)).then(r => r.text()).then(t => { pre.textContent = t; }); });
  const svgs = S.run.files.filter(f => f.path.endsWith('.svg'));
  if (svgs.length) addKids(p, [el('h3', { text: 'SVG timelines' }), svgs.map(f => el('p', {}, el('div', { class: 'muted', text: f.path }), el('img', { class: 'svg', src: fileUrl(f.path), alt: f.path })))]);
  p.append(el('details', {}, el('summary', { text: `all files (${S.run.files.length})` }),
    el('ul', {}, S.run.files.map(f => el('li', {}, el('a', { href: fileUrl(f.path), target: '_blank', text: `${f.path} (${f.size} B)` }))))));
}
function benchReport(p, b) {
  p.append(el('h3', { text: `Bench results (${b.kind}, k=${b.scale}, size ${b.size})` }));
  p.append(table(['scenario', 'comparison', 'k', 'baseline wall s', 'run wall s', 'speedup', 'median', 'max', 'sequence', 'fidelity', 'largest faithful k'],
    b.scenarios.flatMap(sc => sc.comparisons.map(c => [sc.scenario, c.label, c.k, c.baseline.wall_s.toFixed(2), c.run.wall_s.toFixed(3),
      c.speedup ? c.speedup.toFixed(1) + '×' : '', pct(c.fidelity.median), pct(c.fidelity.max), c.fidelity.sequence_match ? 'identical' : 'differs',
      el('span', { class: c.fidelity.pass ? 'pass' : 'fail', text: c.fidelity.pass ? 'pass' : 'FAIL' }), sc.largest_faithful_k === undefined ? '' : (sc.largest_faithful_k === null ? '<5' : sc.largest_faithful_k)]))));
  b.scenarios.filter(sc => sc.ladder && sc.ladder.length).forEach(sc => {
    p.append(el('h3', { text: `Ladder: ${sc.scenario}` }), table(['k', 'runs', 'pass', 'median errors', 'max errors', 'speedups'], sc.ladder.map(r =>
      [r.k, r.runs.length, r.pass ? 'pass' : 'FAIL', r.runs.map(x => pct(x.median)).join(' '), r.runs.map(x => pct(x.max)).join(' '), r.runs.map(x => x.speedup.toFixed(1) + '×').join(' ')])));
  });
  if (b.suite) p.append(el('h3', { text: 'Suite totals' }), kvTable(b.suite));
}

// ---- Live view --------------------------------------------------------
async function liveTick() {
  try {
    const runs = await getJSON('api/runs');
    const now = runs[S.id];
    S.runs = runs; S.run = now;
    const d = await getJSON(`api/runs/${S.id}/events?${qs({ max: 1, after: S.lastSeq === null ? undefined : S.lastSeq })}`);
    if (d.last_seq !== S.lastSeq) {
      S.lastSeq = d.last_seq;
      if (S.timeline) await S.timeline.refresh(); else await renderTimeline();
      const topo = await file('topology.json');
      if (JSON.stringify(topo) !== JSON.stringify(S.topo)) { S.topo = topo; renderTopology(); }
      await renderLogs();
    }
    status();
    if (!now.run || now.run.status !== 'running') { clearInterval(S.poll); renderReports(); }
  } catch (e) {
    panel('status').textContent = `live update failed: ${e.message}`;
  }
}

main().catch(e => {
  document.querySelector('main').prepend(el('pre', { class: 'fail', text: `patchbay devtools failed to load: ${e.message}` }));
  document.body.dataset.ready = 'error';
});
