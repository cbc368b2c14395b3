// Small DOM helpers. Everything from the API goes into text nodes or attributes, never innerHTML,
// so a device-reported string cannot inject markup.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

const SVGNS = 'http://www.w3.org/2000/svg';
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVGNS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'value') el.value = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

// fill replaces el's children, but only when the data behind them changed: polling every few
// seconds must not reset scroll positions, open <details> or text selections for nothing.
export function fill(el, key, build) {
  const k = typeof key === 'string' ? key : JSON.stringify(key);
  if (el.__key === k) return;
  el.__key = k;
  el.replaceChildren(...[build()].flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

export const link = (href, text, attrs = {}) => h('a', { href, ...attrs }, text);
export const enc = encodeURIComponent;

// Formatting.
export function ago(t) {
  if (!t) return '—';
  const d = (Date.now() - new Date(t).getTime()) / 1000;
  if (!isFinite(d)) return '—';
  if (d < 0) return 'just now';
  if (d < 60) return Math.floor(d) + 's ago';
  if (d < 3600) return Math.floor(d / 60) + 'm ago';
  if (d < 86400) return Math.floor(d / 3600) + 'h ago';
  return Math.floor(d / 86400) + 'd ago';
}
// when formats a time as local YYYY-MM-DD HH:MM:SS: sortable, unambiguous, and one line.
export function when(t) {
  if (!t) return '—';
  const d = new Date(t);
  if (isNaN(d) || d.getFullYear() < 2000) return '—';
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}
export function clock(t) {
  const d = new Date(t);
  return isNaN(d) ? '' : d.toLocaleTimeString(undefined, { hour12: false });
}
export function bytes(n) {
  if (n === undefined || n === null) return '—';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + ' ' + u[i];
}
export const pct = (x, digits = 0) => (x === undefined || x === null || !isFinite(x) ? '—' : x.toFixed(digits) + '%');
export const short = (id) => (id ? String(id).slice(0, 12) : '');
export function ms(x) {
  if (x === undefined || x === null || !isFinite(x)) return '—';
  return x < 10 ? x.toFixed(2) + ' ms' : x.toFixed(1) + ' ms';
}

const STATE_CLASS = {
  running: 'info', waiting_approval: 'warn', paused: 'warn', rolling_back: 'bad', rolled_back: 'bad',
  completed: 'ok', aborted: 'bad', committed: 'ok', installed: 'ok', failed: 'bad', reverted: 'warn',
  reverting: 'warn', stalled: 'bad', pending: 'info', downloading: 'info', planned: '', excluded: '',
  baking: 'info', online: 'ok', offline: 'bad', production: 'ok', staging: 'info', archived: '',
};
export function badge(state, text) {
  return h('span', { class: 'badge ' + (STATE_CLASS[state] || '') }, text || String(state || '—').replaceAll('_', ' '));
}
export function online(on) {
  return h('span', {}, h('span', { class: 'dot ' + (on ? 'ok' : 'bad') }), on ? 'online' : 'offline');
}

// table builds a table from column specs {title, num, cell(row)}.
export function table(columns, rows, emptyText = 'Nothing here yet.') {
  if (!rows.length) return h('p', { class: 'empty' }, emptyText);
  return h('div', { class: 'tablewrap' },
    h('table', {},
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { class: c.num ? 'num' : null }, c.title)))),
      h('tbody', {}, rows.map((r) => h('tr', {}, columns.map((c) => h('td', { class: [c.num ? 'num' : '', c.nowrap ? 'nowrap' : ''].join(' ').trim() || null }, c.cell(r))))))));
}

// bars is a horizontal bar list: [{name, value, href, off}].
export function bars(items, emptyText = 'No data.') {
  if (!items.length) return h('p', { class: 'empty' }, emptyText);
  const max = Math.max(1, ...items.map((i) => i.value));
  return h('div', { class: 'bars' }, items.map((i) => {
    const fill = h('span', { class: 'fill' + (i.off ? ' off' : '') });
    fill.style.width = (100 * i.value / max) + '%'; // CSSOM, allowed by the CSP (no inline style attribute)
    return h('div', { class: 'row' },
      h('span', { class: 'name', title: i.name }, i.href ? link(i.href, i.name) : i.name),
      h('span', { class: 'track' }, fill),
      h('span', { class: 'num' }, String(i.value)));
  }));
}

// lineChart draws series [{points: [[x(ms), y]], cls, name}] as an SVG with a y axis from 0
// (to ymax when given, e.g. 100 for percentages) and a legend of the named series.
export function lineChart(series, { yfmt = (v) => String(v), height = 150, emptyText = 'No samples yet.', ymax: fixedMax } = {}) {
  const pts = series.flatMap((s) => s.points);
  if (pts.length < 2) return h('p', { class: 'empty' }, emptyText);
  const W = 600, H = height, L = 56, R = 10, T = 10, B = 22;
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs) || x0 + 1;
  const ymax = fixedMax || Math.max(...ys) * 1.1 || 1;
  const X = (x) => L + (W - L - R) * (x1 === x0 ? 0.5 : (x - x0) / (x1 - x0));
  const Y = (y) => T + (H - T - B) * (1 - y / ymax);
  const svg = s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img' });
  for (const f of [0, 0.5, 1]) {
    const y = Y(ymax * f);
    svg.append(s('line', { class: 'grid', x1: L, x2: W - R, y1: y, y2: y }), s('text', { x: L - 6, y: y + 3, 'text-anchor': 'end' }, yfmt(ymax * f)));
  }
  svg.append(s('line', { class: 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B }));
  svg.append(s('text', { x: L, y: H - 6 }, clock(x0)), s('text', { x: W - R, y: H - 6, 'text-anchor': 'end' }, clock(x1)));
  for (const se of series) {
    if (!se.points.length) continue;
    const d = se.points.map((p, i) => (i ? 'L' : 'M') + X(p[0]).toFixed(1) + ' ' + Y(p[1]).toFixed(1)).join(' ');
    svg.append(s('path', { class: 'line ' + (se.cls || ''), d, 'vector-effect': 'non-scaling-stroke' }));
  }
  const named = series.filter((se) => se.name);
  if (!named.length) return svg;
  return [svg, h('div', { class: 'chartlegend' }, named.map((se) => h('span', {}, h('i', { class: se.cls || '' }), se.name)))];
}

// confirm shows the page's <dialog> and resolves true when the operator confirms.
export function confirm(title, body, okText = 'Confirm') {
  const dlg = document.getElementById('confirm');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-body').replaceChildren(...[body].flat());
  document.getElementById('confirm-ok').textContent = okText;
  return new Promise((resolve) => {
    dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), { once: true });
    dlg.returnValue = '';
    dlg.showModal();
  });
}

// banner shows a message under the top bar (errors by default); '' hides it.
export function banner(msg, kind = 'error') {
  const b = document.getElementById('banner');
  b.textContent = msg || '';
  b.className = 'banner' + (kind === 'info' ? ' info' : '');
  b.hidden = !msg;
}

export function pageHead(title, sub, ...right) {
  return h('div', { class: 'pagehead' }, h('div', {}, h('h1', {}, title), sub ? h('div', { class: 'sub' }, sub) : null), h('div', { class: 'btnrow' }, right));
}

// Latency histograms arrive in the agent's sparse DDSketch form (telemetry/hist): slot 0 holds
// values at or below 1 µs, slot k in 1..N holds (1µs·γ^(k-1), 1µs·γ^k], the last slot the overflow.
// quantileMS mirrors hist.Snapshot.Quantile so the console shows what the gates see.
const GAMMA = 1.05 / 0.95, LOWEST = 1000, HIGHEST = 60e9;
const NUM_BUCKETS = Math.ceil(Math.log(HIGHEST / LOWEST) / Math.log(GAMMA));
export function quantileMS(snap, q) {
  if (!snap || !snap.count || !snap.buckets || !snap.buckets.length) return null;
  const rank = Math.max(1, Math.ceil(q * snap.count));
  const sorted = [...snap.buckets].sort((a, b) => a[0] - b[0]);
  let cum = 0;
  for (const [k, n] of sorted) {
    cum += n;
    if (cum < rank) continue;
    if (k === 0) return snap.min_ns / 1e6;
    if (k === NUM_BUCKETS + 1) return snap.max_ns / 1e6;
    const lo = LOWEST * Math.pow(GAMMA, k - 1), hi = lo * GAMMA;
    const v = Math.round(2 * lo * hi / (lo + hi));
    return Math.min(Math.max(v, snap.min_ns), snap.max_ns) / 1e6;
  }
  return snap.max_ns / 1e6;
}
