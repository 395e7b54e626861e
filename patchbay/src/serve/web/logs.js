// patchbay devtools: the Logs panel (per-node command output, tracing
// levels, search) and the qlog panel (QUIC traces per connection on the
// run's virtual axis).
'use strict';

const LEVELS = ['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR'];

// A tracing JSON line as level, target and message (with the other
// fields); `null` for any other line.
function tracingLine(l) {
  if (!l.level || !l.line.trimStart().startsWith('{')) return null;
  try {
    const v = JSON.parse(l.line);
    const f = v.fields || {};
    const rest = Object.entries(f).filter(([k]) => k !== 'message').map(([k, x]) => `${k}=${typeof x === 'object' ? JSON.stringify(x) : x}`);
    return { target: v.target || '', message: [f.message || v.message || '', ...rest].filter(Boolean).join(' ') };
  } catch (_) { return null; }
}

function logRow(l) {
  const t = tracingLine(l);
  const text = t ? el('span', {}, el('span', { class: 'target', text: t.target ? t.target + ': ' : '' }), t.message) : l.line;
  // stderr is red unless the line has a level (tracing logs go to stderr).
  return el('tr', { class: l.level ? `lvl-${l.level.toLowerCase()}` : l.stream, 'data-level': l.level || null, title: t ? l.line : null },
    el('td', { class: 'num', text: fmtTime(l.virtual_ms, 1) }), el('td', { class: 'num opt', text: fmtTime(l.wall_ms, 1) }),
    el('td', { text: l.node }), el('td', { class: 'opt', text: l.cmd === null || l.cmd === undefined ? '' : String(l.cmd) }),
    el('td', { class: 'opt', text: l.stream }),
    el('td', {}, l.level ? el('span', { class: `level level-${l.level.toLowerCase()}`, text: l.level }) : ''),
    el('td', { class: 'line' }, text));
}

// Search over the shown lines: every match marked, next/previous move the
// current one into view.
function searchLines(tbody, q, counter) {
  const rows = [...tbody.querySelectorAll('tr')];
  const needle = q.toLowerCase();
  const hits = needle ? rows.filter(r => r.querySelector('.line').textContent.toLowerCase().includes(needle) || (r.title || '').toLowerCase().includes(needle)) : [];
  rows.forEach(r => r.classList.toggle('hit', hits.includes(r)));
  let cur = -1;
  const go = d => {
    if (!hits.length) return;
    if (cur >= 0) hits[cur].classList.remove('current');
    cur = (cur + d + hits.length) % hits.length;
    hits[cur].classList.add('current');
    hits[cur].scrollIntoView({ block: 'nearest' });
    counter.textContent = `${cur + 1} / ${hits.length}`;
  };
  counter.textContent = needle ? (hits.length ? `${hits.length} matches` : 'no match') : '';
  tbody.closest('.panel').dataset.hits = hits.length;
  if (hits.length) go(1);
  return go;
}

async function renderLogs() {
  const p = panel('logs');
  const raw = S.run.files.filter(f => /^logs\/.+\/.+\.(stdout|stderr)$/.test(f.path));
  const id = S.id;
  const head = el('h2', { text: 'Logs' });
  if (!S.run.files.some(f => /^logs\/[^/]+\.jsonl$/.test(f.path))) {
    p.replaceChildren(head, muted(S.bench ? 'Bench directories hold no per-node logs.' : 'No logs/<node>.jsonl in this directory.'));
    return;
  }
  const from = S.cursor === null ? undefined : S.cursor - S.logWidth / 2;
  const to = S.cursor === null ? undefined : S.cursor + S.logWidth / 2;
  const d = await getJSON(`api/runs/${id}/logs?${qs({ node: S.logNode, from, to, limit: 2000, level: S.logLevel })}`);
  const node = el('select', { 'aria-label': 'node' }, el('option', { value: '', text: 'all nodes' }), d.nodes.map(n => el('option', { value: n, text: n })));
  node.value = S.logNode;
  node.addEventListener('change', () => { S.logNode = node.value; renderLogs(); });
  const level = el('select', { 'aria-label': 'level', class: 'level-filter' }, el('option', { value: '', text: 'every line' }),
    LEVELS.map(l => el('option', { value: l.toLowerCase(), text: `tracing ${l} and above` })));
  level.value = S.logLevel;
  level.addEventListener('change', () => { S.logLevel = level.value; hashSet('level', level.value); renderLogs(); });
  const width = el('input', { type: 'number', min: 1, step: 100, value: S.logWidth, style: 'width:6em', 'aria-label': 'window' });
  width.addEventListener('change', () => { S.logWidth = Math.max(1, Number(width.value) || 2000); renderLogs(); });
  const search = el('input', { type: 'search', placeholder: 'search', value: S.logQuery, 'aria-label': 'search', class: 'search' });
  const counter = el('span', { class: 'muted hits' });
  const tbody = el('tbody', {}, d.lines.map(logRow));
  const tableEl = el('div', { class: 'scroll-x' }, el('table', { class: 'log' },
    el('thead', {}, el('tr', {}, ['virtual', 'wall', 'node', 'cmd', 'stream', 'level', 'line'].map(h => el('th', { text: h, class: ['wall', 'cmd', 'stream'].includes(h) ? 'opt' : null })))), tbody));
  p.replaceChildren();
  addKids(p, [head,
    el('div', { class: 'toolbar' }, node, level, el('label', {}, 'window ', width, ' ms around the cursor'),
      el('span', { class: 'muted', text: S.cursor === null ? 'no cursor: the whole run (set one on the Timeline)' : `cursor ${fmtTime(S.cursor, 1)}: ${fmtTime(from, 1)} – ${fmtTime(to, 1)}` }),
      S.cursor === null ? null : el('button', { text: 'clear cursor', onclick: () => { S.cursor = null; if (S.timeline) S.timeline.setCursor(null); } })),
    el('div', { class: 'toolbar' }, search,
      el('button', { text: '◀ previous', class: 'prev' }), el('button', { text: 'next ▶', class: 'next' }), counter),
    tableEl,
    d.dropped ? muted(`${d.dropped} more lines in the window: narrow it`) : null,
    raw.length ? el('details', {}, el('summary', { text: `raw output files (${raw.length})` }),
      el('ul', { class: 'files' }, raw.map(f => el('li', {}, el('a', { href: fileUrl(f.path), target: '_blank', text: `${f.path} (${f.size} B)` }))))) : null]);
  let go = searchLines(tbody, S.logQuery, counter);
  search.addEventListener('input', () => { S.logQuery = search.value; hashSet('q', search.value); go = searchLines(tbody, S.logQuery, counter); });
  search.addEventListener('keydown', e => { if (e.key === 'Enter') go(e.shiftKey ? -1 : 1); });
  p.querySelector('.prev').addEventListener('click', () => go(-1));
  p.querySelector('.next').addEventListener('click', () => go(1));
}

// ---- qlog -------------------------------------------------------------
async function renderQlog() {
  const p = panel('qlog');
  p.replaceChildren(el('h2', { text: 'qlog: QUIC connections on the virtual axis' }));
  S.qlog = null;
  const files = S.run.files.filter(f => /\.s?qlog$/.test(f.path));
  if (!files.length) {
    p.append(muted('No qlog files (*.qlog, *.sqlog) in this directory. quinn and iroh write them with their `qlog` feature: put them under <outdir>/qlog/ with the lab clock\'s start as their start time (docs/artifacts.md).'));
    return;
  }
  const d = await getJSON(`api/runs/${S.id}/qlog`);
  const evs = [];
  d.files.forEach(f => {
    // Lane: the file's name and the connection's first hex digits.
    const name = f.path.replace(/^qlog\//, '').replace(/\.s?qlog$/, '');
    f.events.forEach(e => evs.push({ seq: evs.length, virtual_ms: e.virtual_ms, wall_ms: e.time, node: `${name} ${e.conn.slice(0, 4) || 'conn'}`,
      kind: e.name, label: e.name, n: 1, summary: e.summary, data: { file: f.path, connection: e.conn, time: e.time, data: e.data } }));
    p.append(el('div', { class: 'qlog-file', 'data-file': f.path, 'data-events': f.total },
      el('b', { text: f.path }), ` — ${[f.vantage === 'unknown' ? null : f.vantage, f.title].filter(Boolean).join(', ')}; ${f.total} events in ${f.connections.length} connection(s)`,
      f.events.length < f.total ? ` (${f.events.length} shown)` : '', f.error ? el('span', { class: 'fail', text: ` unreadable: ${f.error}` }) : '',
      el('span', { class: 'muted', text: ` (${f.aligned})` })));
  });
  // The run's own span, so the lanes line up with the Timeline.
  const bounds = S.timeline && S.timeline.data ? [0, S.timeline.data.t_max] : [0];
  S.qlog = new Timeline(p, localWindow(evs, bounds), {}, { markClass: 'ql-ev' });
  await S.qlog.load();
}
