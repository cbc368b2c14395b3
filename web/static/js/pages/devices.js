// Devices: the list with filters and search, and one device's page (reported state, installed
// bundles and slots, health and inference telemetry).
import { get, bundles, refOf } from '../api.js';
import { h, fill, table, badge, online, link, enc, ago, when, pct, bytes, ms, short, lineChart, pageHead, quantileMS } from '../ui.js';
import { alertsOf } from './overview.js';
import { captureForm } from './datasets.js';

export function devices(root, { query }) {
  const group = h('select', { id: 'f-group', name: 'group' }, h('option', { value: '' }, 'All groups'));
  const state = h('select', { id: 'f-online', name: 'online' },
    h('option', { value: '' }, 'Online and offline'), h('option', { value: 'true' }, 'Online'), h('option', { value: 'false' }, 'Offline'));
  const search = h('input', { id: 'f-q', type: 'search', name: 'q', placeholder: 'Search id, label…', value: query.get('q') || '' });
  state.value = query.get('online') || '';
  const count = h('span', { class: 'muted', id: 'device-count' });
  const list = h('div', { id: 'device-list' });
  root.append(
    pageHead('Devices', count),
    h('section', { class: 'panel' },
      h('div', { class: 'toolbar' }, h('label', {}, 'Group', group), h('label', {}, 'Status', state), h('label', {}, 'Search', search)),
      list));

  let wanted = query.get('group') || '';
  // Filters live in the URL so a filtered list can be bookmarked; replaceState keeps the router
  // from rebuilding the page (and the search box from losing focus) on every keystroke.
  const changed = () => {
    wanted = group.value;
    const q = new URLSearchParams();
    if (group.value) q.set('group', group.value);
    if (state.value) q.set('online', state.value);
    if (search.value.trim()) q.set('q', search.value.trim());
    history.replaceState(null, '', '#/devices' + (q.size ? '?' + q : ''));
    view.refresh();
  };
  group.addEventListener('change', changed);
  state.addEventListener('change', changed);
  let debounce;
  search.addEventListener('input', () => { clearTimeout(debounce); debounce = setTimeout(changed, 250); });

  const view = {
    async refresh() {
      const q = new URLSearchParams();
      if (wanted) q.set('group', wanted);
      if (state.value) q.set('online', state.value);
      if (search.value.trim()) q.set('q', search.value.trim());
      const [gr, dv] = await Promise.all([get('/groups'), get('/devices' + (q.size ? '?' + q : '')), bundles()]);
      fill(group, gr.groups.map((g) => g.name), () => [h('option', { value: '' }, 'All groups'), gr.groups.map((g) => h('option', { value: g.name }, g.name))]);
      group.value = wanted;
      count.textContent = dv.count + (dv.count === 1 ? ' device' : ' devices');
      const rows = dv.devices;
      fill(list, rows.map((d) => [d.id, d.group, d.online, d.reported && d.reported.models, d.health && Math.round(d.health.cpu_percent), d.health && Math.round(d.health.mem_percent), alertsOf(d).length, Math.floor((Date.now() - new Date(d.last_seen)) / 10000)]), () => table([
        { title: 'Device', cell: (d) => link('#/devices/' + enc(d.id), d.id) },
        { title: 'Group', cell: (d) => link('#/groups/' + enc(d.group), d.group) },
        { title: 'Status', cell: (d) => online(d.online) },
        { title: 'Models', cell: (d) => modelsCell(d) },
        { title: 'CPU', num: true, cell: (d) => (d.health ? pct(d.health.cpu_percent) : '—') },
        { title: 'Memory', num: true, cell: (d) => (d.health ? pct(d.health.mem_percent) : '—') },
        { title: 'Alerts', cell: (d) => alertsOf(d).map((a) => badge(a.level === 'bad' ? 'failed' : 'paused', a.text)) },
        { title: 'Last seen', cell: (d) => ago(d.last_seen) },
      ], rows, 'No device matches these filters.'));
    },
  };
  return view;
}

function modelsCell(d) {
  const models = Object.entries((d.reported && d.reported.models) || {});
  if (!models.length) return h('span', { class: 'muted' }, 'none');
  return models.map(([name, m]) => h('div', {}, m.active ? refOf(m.active) : name, ' ', m.state && m.state !== 'committed' ? badge(m.state) : null));
}

export function device(root, { params: [id] }) {
  const head = h('div');
  const facts = h('div', { id: 'device-facts' });
  const models = h('div', { id: 'device-models' });
  const health = h('div', { id: 'device-health' });
  const healthChart = h('div');
  const windows = h('div', { id: 'device-windows' });
  const latChart = h('div');
  const errChart = h('div');
  const capture = captureForm(id);
  const captures = h('div', { id: 'device-datasets' });
  root.append(head,
    h('div', { class: 'grid two' },
      h('section', { class: 'panel' }, h('h2', {}, 'Reported state'), facts),
      h('section', { class: 'panel' }, h('h2', {}, 'Health'), health, h('h3', {}, 'CPU and memory, last hour'), healthChart)),
    h('section', { class: 'panel' }, h('h2', {}, 'Installed bundles'), models),
    h('div', { class: 'grid two' },
      h('section', { class: 'panel' }, h('h2', {}, 'p95 latency per window'), latChart),
      h('section', { class: 'panel' }, h('h2', {}, 'Requests and errors per window'), errChart)),
    h('section', { class: 'panel' }, h('h2', {}, 'Latest inference windows'), windows),
    h('section', { class: 'panel' }, h('h2', {}, 'Captured samples'), captures, capture.el));

  return {
    async refresh() {
      const base = '/devices/' + enc(id);
      const [d, ht, inf] = await Promise.all([get(base), get(base + '/telemetry?kind=health&since=1h&limit=120'), get(base + '/telemetry?kind=inference&since=1h&limit=120'), bundles()]);
      fill(head, [d.online, d.group, Math.floor((Date.now() - new Date(d.last_seen)) / 10000)], () => pageHead(id,
        [online(d.online), ' · group ', link('#/groups/' + enc(d.group), d.group), ' · last seen ', ago(d.last_seen)],
        link('#/devices', '← all devices')));
      const rep = d.reported || {};
      const host = rep.host || {};
      const rt = rep.runtime || {};
      fill(facts, [rep, d.labels], () => h('dl', { class: 'kv' },
        kv('Agent', rep.agent_version), kv('Session', d.session), kv('OS / arch', (host.os || '—') + ' / ' + (host.arch || '—')),
        kv('CPUs', host.cpus), kv('Memory', bytes(host.memory_bytes)), kv('Accelerators', (host.accelerators || []).join(', ') || 'none'),
        kv('ONNX Runtime', rt.ort_version ? rt.ort_version + ' (opset ≤ ' + rt.max_opset + ', ' + (rt.execution_providers || []).join(', ') + ')' : rt.error || '—'),
        kv('Labels', Object.entries(d.labels || {}).map(([k, v]) => k + '=' + v).join(', ') || '—'),
        kv('Generation', rep.generation), kv('Reported', when(rep.at)),
        rep.desired_error ? kv('Desired state refused', h('span', { class: 'badge bad' }, rep.desired_error)) : null));
      const hl = d.health;
      const alerts = alertsOf(d);
      fill(health, [hl, d.health_at && Math.floor(new Date(d.health_at) / 10000), alerts], () => [
        hl ? h('dl', { class: 'kv' },
          kv('CPU', pct(hl.cpu_percent, 1)), kv('Memory', pct(hl.mem_percent, 1) + ' of ' + bytes(hl.mem_total_bytes)),
          kv('Disk free', bytes(hl.disk_free_bytes)), kv('Temperature', hl.temp_celsius ? hl.temp_celsius.toFixed(1) + ' °C' : '—'),
          kv('Agent RSS', bytes(hl.process_rss_bytes)), kv('Sampled', ago(d.health_at))) : h('p', { class: 'empty' }, 'No health sample yet.'),
        alerts.length ? h('ul', { class: 'alerts' }, alerts.map((a) => h('li', {}, badge(a.level === 'bad' ? 'failed' : 'paused', a.level === 'bad' ? 'critical' : 'warning'), ' ', a.text))) : null,
      ]);
      const hpoints = ht.messages.map((m) => [new Date(m.at).getTime(), m.body]);
      fill(healthChart, ht.messages.map((m) => m.seq), () => lineChart([
        { points: hpoints.map(([t, b]) => [t, b.cpu_percent || 0]), name: 'CPU' },
        { points: hpoints.map(([t, b]) => [t, b.mem_percent || 0]), cls: 'b', name: 'memory' },
      ], { yfmt: (v) => v.toFixed(0) + '%', ymax: 100, emptyText: 'Waiting for health samples…' }));
      const mrows = Object.entries(rep.models || {});
      capture.setDevice(mrows.map(([n]) => n).sort(), d.group);
      // A control plane without dataset support answers 501: the device page works on without it.
      const ds = await get('/datasets?device=' + enc(id)).catch(() => ({ datasets: [] }));
      fill(captures, (ds.datasets || []).map((x) => [x.id, x.state, x.samples]), () => table([
        { title: 'Dataset', cell: (x) => link('#/datasets/' + enc(x.id), h('code', {}, short(x.id))) },
        { title: 'Model', cell: (x) => x.model + (x.version ? '@' + x.version : '') },
        { title: 'Samples', num: true, cell: (x) => String(x.samples || 0) },
        { title: 'State', cell: (x) => badge(x.state === 'complete' ? 'completed' : x.state === 'requested' ? 'pending' : x.state, x.state) },
        { title: 'Requested', cell: (x) => [when(x.requested), ' by ', x.requester] },
      ], ds.datasets || [], 'No samples captured from this device.'));
      fill(models, mrows, () => table([
        { title: 'Model', cell: ([n]) => n },
        { title: 'Active', cell: ([, m]) => (m.active ? link('#/bundles/' + enc(m.active), refOf(m.active)) : '—') },
        { title: 'Slot', cell: ([, m]) => m.slot || '—' },
        { title: 'Previous', cell: ([, m]) => (m.previous ? link('#/bundles/' + enc(m.previous), refOf(m.previous)) : '—') },
        { title: 'Install state', cell: ([, m]) => [badge(m.state), m.progress ? ' ' + m.progress : ''] },
        { title: 'Target', cell: ([, m]) => (m.target && m.target !== m.active ? refOf(m.target) : '—') },
        { title: 'Reason', cell: ([, m]) => [m.reason ? h('code', {}, m.reason) : '—', m.message ? h('div', { class: 'small muted' }, m.message) : null] },
        { title: 'Rollout', cell: ([, m]) => (m.rollout ? link('#/rollouts/' + enc(m.rollout), m.rollout) : '—') },
        { title: 'Provider', cell: ([, m]) => m.execution_provider || '—' },
      ], mrows, 'No bundle installed on this device.'));

      const ws = inf.messages.map((m) => ({ at: m.at, seq: m.seq, w: m.body || {} }));
      fill(latChart, ws.map((x) => x.seq), () => lineChart([{ points: ws.map((x) => [new Date(x.w.end || x.at).getTime(), quantileMS(x.w.latency, 0.95) || 0]) }], { yfmt: (v) => v.toFixed(1) + ' ms', emptyText: 'Waiting for inference windows…' }));
      fill(errChart, ws.map((x) => x.seq), () => lineChart([
        { points: ws.map((x) => [new Date(x.w.end || x.at).getTime(), x.w.requests || 0]), name: 'requests' },
        { points: ws.map((x) => [new Date(x.w.end || x.at).getTime(), x.w.errors || 0]), cls: 'b', name: 'errors' },
      ], { yfmt: (v) => v.toFixed(0), emptyText: 'Waiting for inference windows…' }));
      const latest = ws.slice(-10).reverse();
      fill(windows, latest.map((x) => x.seq), () => table([
        { title: 'Window end', cell: (x) => when(x.w.end || x.at) },
        { title: 'Model', cell: (x) => (x.w.model || '') + '@' + (x.w.version || '') },
        { title: 'Bundle', cell: (x) => h('code', {}, short(x.w.bundle)) },
        { title: 'Requests', num: true, cell: (x) => String(x.w.requests || 0) },
        { title: 'Errors', num: true, cell: (x) => String(x.w.errors || 0) },
        { title: 'Error rate', num: true, cell: (x) => (x.w.requests ? pct(100 * (x.w.errors || 0) / x.w.requests, 2) : '—') },
        { title: 'p50', num: true, cell: (x) => ms(quantileMS(x.w.latency, 0.5)) },
        { title: 'p95', num: true, cell: (x) => ms(quantileMS(x.w.latency, 0.95)) },
      ], latest, 'No inference window in the last hour.'));
    },
  };
}

function kv(k, v) {
  return [h('dt', {}, k), h('dd', {}, v === undefined || v === null || v === '' ? '—' : v)];
}
