// patchbay devtools: loads the served run directories and renders the
// panels. Reads only this server's /api (see patchbay/src/serve/api.rs).
'use strict';

const S = { runs: [], id: 0, run: null, tab: null, timeline: null, cursor: null, poll: null, lastSeq: null,
  logNode: '', logWidth: 2000, logLevel: '', logQuery: '', node: null, counts: {} };

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
  return el('div', { class: 'scroll-x' }, el('table', {}, Object.entries(o || {}).filter(([, v]) => v !== undefined && v !== null && v !== '')
    .map(([k, v]) => el('tr', {}, el('th', { text: k }), el('td', { text: fmtVal(v) })))));
}
function table(head, rows) {
  return el('div', { class: 'scroll-x' }, el('table', {}, el('tr', {}, head.map(h => el('th', { text: h }))),
    rows.map(r => el('tr', {}, r.map(c => c instanceof Node ? el('td', {}, c) : el('td', { text: c === undefined || c === null ? '' : String(c) }))))));
}
// The URL fragment: run, tab and the view's own keys (node, q, level).
function hashSet(k, v) {
  const h = new URLSearchParams(location.hash.slice(1));
  if (v === null || v === undefined || v === '') h.delete(k); else h.set(k, v);
  history.replaceState(null, '', '#' + h.toString());
}

function showTab(t) {
  S.tab = t;
  document.querySelectorAll('.panel').forEach(p => p.classList.toggle('active', p.id === t));
  document.querySelectorAll('nav button').forEach(b => b.classList.toggle('active', b.dataset.tab === t));
  hashSet('run', S.id); hashSet('tab', t);
  if (t === 'timeline' && S.timeline) S.timeline.render();
  if (t === 'qlog' && S.qlog) S.qlog.render();
  setTimeout(measureOverflow, 0);
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
  S.node = h.get('node');
  S.logQuery = h.get('q') || '';
  S.logLevel = h.get('level') || '';
  window.addEventListener('resize', () => { if (S.timeline) S.timeline.render(); measureOverflow(); });
  await openRun(id);
}

async function openRun(id) {
  clearInterval(S.poll);
  S.id = id; S.run = S.runs[id]; S.cursor = null; S.lastSeq = null; S.counts = {};
  const [topo, bench, comp, compTxt] = await Promise.all([
    file('topology.json'), file('bench.json'), file('compression.json'), file('compression.txt', true)]);
  Object.assign(S, { topo, bench, comp, compTxt });
  await renderTimeline();
  renderTopology();
  await renderSide();
  await renderLogs();
  await renderQlog();
  renderReports();
  status();
  showTab(S.tab || (S.bench ? 'side' : 'timeline'));
  document.body.dataset.ready = '1';
  if (live()) S.poll = setInterval(liveTick, 1000);
}

function live() { return !!(S.run.run && S.run.run.status === 'running'); }
// A live run's virtual time now: wall time since its start × k.
function liveNow() {
  const r = S.run.run;
  if (!live() || !r.started_unix_ms) return null;
  return (Date.now() - r.started_unix_ms) * (r.time_mode === 'virtual' ? 1 : (r.time_scale || 1));
}

function status() {
  const r = S.run.run || {};
  const st = panel('status');
  st.className = r.status === 'running' ? 'live' : '';
  st.textContent = [S.run.kind, r.name, r.time_mode, r.time_scale ? `k=${r.time_scale}` : null, r.status].filter(Boolean).join(' · ');
}

// ---- Topology ---------------------------------------------------------
function renderTopology() {
  const p = panel('topology');
  p.replaceChildren(el('h2', { text: 'Topology' }));
  if (S.topo) {
    const detail = el('div', { class: 'detail topo-detail muted', text: 'Click a node for its addresses, NAT, firewall, links and counters.' });
    const all = topoNodes(S.topo);
    const select = n => {
      S.node = n.name; hashSet('node', n.name);
      p.querySelectorAll('.topo-node').forEach(g => g.classList.toggle('selected', g.dataset.node === n.name));
      detail.className = 'detail topo-detail';
      detail.replaceChildren(nodeDetail(all.find(x => x.name === n.name) || n, S.counts[n.name]));
      setTimeout(measureOverflow, 0);
    };
    p.append(el('div', { class: 'topo-wrap' }, topoGraph(S.topo, select), detail),
      el('p', { class: 'muted small', text: 'Routers are square, devices round; the grey bar on top is the exchange the top-level routers join; region links are the arcs above it (dashed red: broken); ↑ is what a node sends, ↓ what it receives; removed nodes are greyed, with the time.' }));
    const n = all.find(x => x.name === S.node);
    if (n) select(n);
  } else if (S.bench) {
    p.append(muted('Bench directories hold no topology.json: each scenario builds its own small lab. Nodes seen in the traces:'));
    p.append(table(['scenario', 'nodes'], S.bench.scenarios.map(sc => [sc.scenario,
      [...new Set(sc.comparisons.flatMap(c => [...c.baseline.events, ...c.run.events].map(e => e.node)))].sort().join(', ')])));
  } else p.append(muted('No topology.json in this directory (yet).'));
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
function localWindow(all, bounds) {
  return async (from, to) => {
    const t = all.map(e => e.virtual_ms).concat(bounds || []);
    const t_min = t.length ? Math.min(...t) : 0, t_max = t.length ? Math.max(...t) : 0;
    const lo = from === undefined ? t_min : from, hi = to === undefined ? t_max : to;
    const events = all.filter(e => e.virtual_ms >= lo && e.virtual_ms <= hi);
    const kinds = {}, node_kinds = {};
    events.forEach(e => { kinds[e.label] = (kinds[e.label] || 0) + 1; });
    all.forEach(e => { (node_kinds[e.node] = node_kinds[e.node] || new Set()).add(e.label); });
    Object.keys(node_kinds).forEach(n => { node_kinds[n] = [...node_kinds[n]]; });
    return { total: all.length, t_min, t_max, nodes: Object.keys(node_kinds), node_kinds, kinds, in_window: events.length, binned: false, events };
  };
}
// What the timeline's axis measures, by the run's time mode: the guest's clock, or the lab
// clock (wall time since the lab started, × k when compressed).
function axisName() {
  const r = S.run.run || {};
  if (r.time_mode === 'virtual') return 'virtual time: the guest clock';
  if ((r.time_scale || 1) !== 1) return `lab time: wall time × k=${r.time_scale}`;
  return r.time_mode === 'real' ? 'wall time since the lab started' : 'lab time';
}
async function renderTimeline() {
  const p = panel('timeline');
  p.replaceChildren(el('h2', { text: `Timeline (${axisName()})` }));
  S.timeline = null;
  const id = S.id;
  let source;
  if (hasFile(S.run, 'events.jsonl')) {
    source = async (from, to, bins) => {
      const d = await getJSON(`api/runs/${id}/events?${qs({ from, to, bins })}`);
      if (d.node_counts) S.counts = d.node_counts;
      return d;
    };
  } else if (S.bench) source = localWindow(benchEvents(S.bench));
  else { p.append(muted(live() ? 'Waiting for events.jsonl …' : 'No events.jsonl in this directory (yet).')); return; }
  S.timeline = new Timeline(p, source, { cursor: t => { S.cursor = t; renderLogs(); } }, { now: liveNow });
  await S.timeline.load();
  S.lastSeq = S.timeline.data.last_seq;
}

// ---- Side by side -----------------------------------------------------
function figure(cls, label, text, value) {
  return el('div', { class: cls, 'data-value': value }, el('b', { text }), el('span', { class: 'muted', text: label }));
}
// A bench comparison's verdict with the reasons read off its own figures.
function benchVerdict(f) {
  const reasons = [];
  if (f.first_mismatch) reasons.push(`the sequences differ: ${f.first_mismatch}`);
  const timed = (f.events || []).filter(e => e.rel_error !== null).length;
  if (!timed) reasons.push('no timed event (the check never passes on nothing)');
  if (f.median > 0.05) reasons.push(`median error ${pct(f.median)} > 5%`);
  if (f.max > 0.15) reasons.push(`max error ${pct(f.max)} > 15%`);
  return { text: f.pass ? 'PASS' : 'FAIL', pass: f.pass, reasons, timed };
}
function comparisonView(scenario, c, verdict, what) {
  const f = c.fidelity;
  const box = el('div', { class: 'cmp', 'data-scenario': scenario });
  const detail = el('div', { class: 'detail muted', text: 'Click an event for its detail.' });
  const vcls = verdict.pass === null ? 'none' : verdict.pass ? 'pass' : 'fail';
  addKids(box, [el('h3', { text: `${scenario} — ${c.label}` }), what,
    el('div', { class: 'figures' },
      figure(`fid-pass ${vcls}`, 'fidelity', verdict.text, verdict.pass === null ? '' : verdict.pass),
      figure('fid-median', 'median error', pct(f.median), f.median),
      figure('fid-max', 'max error', pct(f.max), f.max),
      figure('fid-seq', 'sequence', f.sequence_match ? 'identical' : 'differs', f.sequence_match),
      figure('fid-timed', `timed events (of ${(f.events || []).length} compared)`, String(verdict.timed), verdict.timed),
      figure('fid-anchor', 'anchor max |Δ|', `${(f.anchor_max_abs_s * 1000).toFixed(1)} ms`, f.anchor_max_abs_s),
      figure('fid-k', 'k', String(c.k), c.k),
      c.speedup ? figure('fid-speedup', 'speedup', `${c.speedup.toFixed(1)}×`, c.speedup) : null,
      figure('fid-wall', 'wall: baseline / run', `${c.baseline.wall_s.toFixed(2)} s / ${c.run.wall_s.toFixed(3)} s`, c.run.wall_s)),
    verdict.reasons.length ? el('ul', { class: `reasons ${vcls}` }, verdict.reasons.map(r => el('li', { text: r }))) : null,
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
function kindList(o) { return Object.entries(o).map(([k, n]) => `${k} (${n})`).join(', '); }
async function renderSide() {
  const p = panel('side');
  p.replaceChildren(el('h2', { text: 'Side by side: a run against its k=1 baseline, on the virtual axis' }));
  if (S.bench) {
    S.bench.scenarios.forEach(sc => sc.comparisons.forEach(c => p.append(comparisonView(sc.scenario, c, benchVerdict(c.fidelity),
      muted(`The scenario's trace events (${kindList(Object.fromEntries([...new Set(c.baseline.events.map(e => e.kind))].map(k => [k, c.baseline.events.filter(e => e.kind === k).length])))}), from its start mark.`)))));
    return;
  }
  const r = S.run.run;
  const base = r && S.runs.find(o => o !== S.run && o.run && o.run.name === r.name && (o.run.time_scale || 1) === 1 && o.run.time_mode !== 'virtual' && hasFile(o, 'events.jsonl'));
  if (!r || !base || ((r.time_scale || 1) === 1 && r.time_mode !== 'virtual')) {
    p.append(muted('A lab run is compared with a k=1 run of the same lab (same name in run.json): serve both directories (patchbay serve BASELINE RUN) and open the compressed or virtual one. Bench directories carry their baselines.'));
    return;
  }
  const c = await getJSON(`api/compare?${qs({ base: base.id, run: S.id })}`);
  const lane = (l, label, scale) => ({ label, scale, wall_s: l.wall_s, events: l.events });
  const what = el('div', { class: 'compared' },
    el('p', { text: `Compared: ${c.fidelity.events.length} events of the kinds both runs have — ${kindList(c.compared) || 'none'} — ` +
      `each run's time counted from ${c.base.origin} (baseline ${fmtTime(c.base.origin_ms, 1)}, run ${fmtTime(c.run.origin_ms, 1)} on their own axes). ` +
      `Events before it (building the lab): ${c.base.set_up} / ${c.run.set_up}, not compared. Events under ${c.criteria.anchor_ms} ms are anchors: in the sequence, not timed.` }),
    Object.keys(c.only_base).length || Object.keys(c.only_run).length ? el('p', { class: 'muted', text:
      `Not compared, only in one run: ${[Object.keys(c.only_base).length ? `baseline: ${kindList(c.only_base)}` : '', Object.keys(c.only_run).length ? `run: ${kindList(c.only_run)}` : ''].filter(Boolean).join('; ')}` +
      `${Object.keys(c.only_run).some(k => k.startsWith('tcp')) ? ' (TCP telemetry is on by default at k > 1 only)' : ''}.` }) : null);
  const k = r.time_mode === 'virtual' ? 1 : r.time_scale;
  p.append(comparisonView(r.name, { label: `${r.time_mode} k=${r.time_scale}`, k,
    baseline: lane(c.base, `baseline k=1 (${base.path})`, 1), run: lane(c.run, `${r.time_mode} k=${r.time_scale} (${S.run.path})`, r.time_scale),
    fidelity: c.fidelity, speedup: c.base.wall_s / Math.max(c.run.wall_s, 1e-9) }, { ...c.verdict, timed: c.timed }, what));
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
    el('ul', { class: 'files' }, S.run.files.map(f => el('li', {}, el('a', { href: fileUrl(f.path), target: '_blank', text: `${f.path} (${f.size} B)` }))))));
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
    if (!S.timeline && hasFile(S.run, 'events.jsonl')) await renderTimeline();
    const d = hasFile(S.run, 'events.jsonl') ? await getJSON(`api/runs/${S.id}/events?${qs({ max: 1, after: S.lastSeq === null ? undefined : S.lastSeq })}`) : null;
    if (d && d.last_seq !== S.lastSeq) {
      S.lastSeq = d.last_seq;
      if (S.timeline) await S.timeline.refresh(true);
      const topo = await file('topology.json');
      if (JSON.stringify(topo) !== JSON.stringify(S.topo)) { S.topo = topo; renderTopology(); }
      await renderLogs();
    } else if (S.timeline) {
      // Nothing new: the axis still moves on with the run's clock.
      await S.timeline.refresh(false);
    }
    status();
    if (!now.run || now.run.status !== 'running') {
      clearInterval(S.poll);
      if (S.timeline) await S.timeline.refresh(true);
      await renderQlog();
      renderReports();
    }
  } catch (e) {
    panel('status').textContent = `live update failed: ${e.message}`;
  }
}

main().catch(e => {
  document.querySelector('main').prepend(el('pre', { class: 'fail', text: `patchbay devtools failed to load: ${e.message}` }));
  document.body.dataset.ready = 'error';
});
