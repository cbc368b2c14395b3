// Model registry: bundles with version, variant and stage, and a bundle's lineage (parent,
// children, datasets it was trained on, devices running it).
import { get, put, bundles as loadBundles, refOf } from '../api.js';
import { h, s, fill, table, badge, link, enc, when, bytes, short, pageHead } from '../ui.js';
import { refreshNow } from '../app.js';

export function registry(root) {
  const list = h('div', { id: 'bundle-list' });
  root.append(pageHead('Model registry', 'Signed bundles pushed to this control plane (controlplane bundles push FILE).'), h('section', { class: 'panel' }, list));
  return {
    async refresh() {
      const { list: all } = await loadBundles(0);
      const rows = [...all].sort((a, b) => (a.name === b.name ? new Date(b.uploaded_at) - new Date(a.uploaded_at) : a.name.localeCompare(b.name)));
      fill(list, rows.map((b) => [b.id, b.stage]), () => table([
        { title: 'Name', cell: (b) => link('#/bundles/' + enc(b.id), b.name) },
        { title: 'Version', cell: (b) => b.version },
        { title: 'Variant', cell: (b) => b.variant || '—' },
        { title: 'Kind', cell: (b) => b.kind },
        { title: 'Stage', cell: (b) => badge(b.stage) },
        { title: 'Parent', cell: (b) => b.parent || '—' },
        { title: 'Size', num: true, cell: (b) => bytes(b.size) },
        { title: 'Uploaded', cell: (b) => [when(b.uploaded_at), h('div', { class: 'small muted' }, 'by ' + b.uploaded_by)] },
        { title: 'Id', cell: (b) => h('code', { title: b.id }, short(b.id)) },
      ], rows, 'No bundles yet: push one with controlplane bundles push FILE.'));
    },
  };
}

export function bundle(root, { params: [id] }) {
  const head = h('div');
  const facts = h('div');
  const graph = h('div', { id: 'lineage' });
  const devs = h('div');
  const stageBox = h('div');
  const msg = h('div');
  root.append(head, msg,
    h('div', { class: 'grid two' },
      h('section', { class: 'panel' }, h('h2', {}, 'Bundle'), facts, stageBox),
      h('section', { class: 'panel' }, h('h2', {}, 'Lineage'), graph)),
    h('section', { class: 'panel' }, h('h2', {}, 'Devices running it'), devs));
  return {
    async refresh() {
      const [b] = await Promise.all([get('/bundles/' + enc(id)), loadBundles()]);
      let m = {};
      try { m = typeof b.manifest === 'string' ? JSON.parse(b.manifest) : b.manifest || {}; } catch { m = {}; }
      fill(head, [b.name, b.version, b.stage], () => pageHead(`${b.name}@${b.version}${b.variant ? ':' + b.variant : ''}`, [badge(b.stage), ' ', b.kind], link('#/bundles', '← registry')));
      fill(facts, [b.id, b.stage, b.stage_at], () => h('dl', { class: 'kv' },
        dt('Id', h('code', {}, b.id)), dt('Size', bytes(b.size)), dt('Uploaded', when(b.uploaded_at) + ' by ' + b.uploaded_by),
        dt('Stage', [badge(b.stage), b.stage_by ? ' set by ' + b.stage_by + ' ' + when(b.stage_at) : '']),
        dt('Inputs', ((m.schema && m.schema.inputs) || []).map((i) => `${i.name} ${i.datatype || ''} [${(i.shape || []).join(',')}]`).join('; ') || '—'),
        dt('Provenance', provenance(m.provenance) || '—')));
      fill(stageBox, [b.stage], () => stageForm(b, msg));
      const lin = b.lineage || {};
      fill(graph, lin, () => lineage(b, lin));
      fill(devs, lin.devices || [], () => ((lin.devices || []).length
        ? h('div', { class: 'btnrow' }, lin.devices.map((d) => link('#/devices/' + enc(d), d)))
        : h('p', { class: 'empty' }, 'No device serves this bundle right now.')));
    },
  };
}

function dt(k, v) { return [h('dt', {}, k), h('dd', {}, v)]; }

// provenance lists a manifest's provenance facts (code revision, params digest, extra key=value).
function provenance(p) {
  if (!p) return '';
  const facts = [];
  if (p.code_revision) facts.push('code ' + p.code_revision);
  if (p.params_digest) facts.push('params ' + short(p.params_digest));
  for (const [k, v] of Object.entries(p.extra || {})) facts.push(k + '=' + v);
  return facts.join(', ');
}

// stageForm moves a bundle between staging, production and archived (production needs admin).
function stageForm(b, msg) {
  const sel = h('select', { id: 'stage' }, ['staging', 'production', 'archived'].map((st) => h('option', { value: st, class: st === 'staging' ? '' : 'needs-admin' }, st)));
  sel.value = b.stage;
  const btn = h('button', { type: 'submit', class: 'secondary' }, 'Set stage');
  const form = h('form', { class: 'toolbar stageform needs-operator' }, h('label', {}, 'Move to stage', sel), btn);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      await put('/bundles/' + enc(b.id) + '/stage', { stage: sel.value });
      msg.replaceChildren(h('div', { class: 'apiok' }, `${b.name}@${b.version} is now in ${sel.value}.`));
    } catch (e) {
      msg.replaceChildren(h('div', { class: 'apierror' }, `Stage change refused (${e.status}): ${e.message}`));
    }
    refreshNow();
  });
  return form;
}

// lineage draws datasets -> parent -> this bundle -> children as boxes and arrows.
function lineage(b, lin) {
  const cols = [];
  if ((lin.dataset_ids || []).length) cols.push(lin.dataset_ids.map((d) => ({ text: 'dataset ' + short(d) })));
  if (lin.parent) cols.push([{ text: `${lin.parent.name}@${lin.parent.version}`, href: '#/bundles/' + enc(lin.parent.id) }]);
  cols.push([{ text: `${b.name}@${b.version}`, self: true }]);
  if ((lin.children || []).length) cols.push(lin.children.map((c) => ({ text: refOf(c), href: '#/bundles/' + enc(c) })));
  const W = 600, BW = 130, BH = 30, rows = Math.max(...cols.map((c) => c.length));
  const H = Math.max(90, rows * (BH + 14) + 20);
  // Columns sit at most 220 apart and the whole graph is centred.
  const gap = cols.length > 1 ? Math.min(220, (W - BW - 20) / (cols.length - 1)) : 0;
  const left = (W - BW - gap * (cols.length - 1)) / 2;
  const pos = cols.map((col, i) => col.map((_, j) => ({ x: left + i * gap, y: (H - col.length * (BH + 14) + 14) / 2 + j * (BH + 14) })));
  const svg = s('svg', { class: 'lineage', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'lineage graph' },
    s('defs', {}, s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 6, markerHeight: 6, orient: 'auto' }, s('path', { d: 'M0 0L10 5L0 10z', fill: '#9fb3c8' }))));
  for (let i = 0; i + 1 < cols.length; i++) {
    for (const a of pos[i]) for (const c of pos[i + 1]) {
      svg.append(s('path', { d: `M${a.x + BW} ${a.y + BH / 2} C${a.x + BW + 30} ${a.y + BH / 2} ${c.x - 30} ${c.y + BH / 2} ${c.x} ${c.y + BH / 2}` }));
    }
  }
  cols.forEach((col, i) => col.forEach((n, j) => {
    const { x, y } = pos[i][j];
    const box = [s('rect', { x, y, width: BW, height: BH, rx: 6, class: n.self ? 'self' : '' }), s('text', { x: x + BW / 2, y: y + BH / 2 + 4, 'text-anchor': 'middle' }, n.text.length > 20 ? n.text.slice(0, 19) + '…' : n.text)];
    svg.append(n.href ? s('a', { href: n.href }, box) : s('g', {}, box));
  }));
  const note = !lin.parent && !(lin.children || []).length ? h('p', { class: 'small muted' }, 'No parent or children recorded: build with --parent NAME@VERSION to link versions.') : null;
  return [svg, note];
}
