// Fleet overview: counts online/offline, devices per group and per model version, health alerts,
// and the rollouts in progress.
import { get, bundles, refOf } from '../api.js';
import { stageText } from './rollouts.js';
import { h, fill, bars, table, badge, link, enc, pct, bytes, ago, pageHead } from '../ui.js';

// Thresholds for health alerts: above these a device needs a look before it gets a rollout.
export const LIMITS = { cpu: 90, mem: 90, diskFree: 1 << 30 };

// alertsOf lists what is wrong with a device, most urgent first.
export function alertsOf(d) {
  const out = [];
  if (!d.online) out.push({ level: 'bad', text: 'offline since ' + ago(d.last_seen) });
  const hl = d.health;
  if (hl) {
    if (hl.cpu_percent > LIMITS.cpu) out.push({ level: 'warn', text: 'high CPU ' + pct(hl.cpu_percent) });
    if (hl.mem_percent > LIMITS.mem) out.push({ level: 'warn', text: 'high memory ' + pct(hl.mem_percent) });
    if (hl.disk_free_bytes && hl.disk_free_bytes < LIMITS.diskFree) out.push({ level: 'warn', text: 'low disk: ' + bytes(hl.disk_free_bytes) + ' free' });
  }
  const rep = d.reported;
  if (rep) {
    if (rep.desired_error) out.push({ level: 'bad', text: 'refused desired state: ' + rep.desired_error });
    if (rep.runtime && rep.runtime.error) out.push({ level: 'bad', text: 'runtime: ' + rep.runtime.error });
    for (const [name, m] of Object.entries(rep.models || {})) {
      if (m.state === 'failed' || m.state === 'reverted') out.push({ level: m.state === 'failed' ? 'bad' : 'warn', text: `${name}: ${m.state}${m.reason ? ' (' + m.reason + ')' : ''}` });
    }
  }
  return out;
}

export function overview(root) {
  const stats = h('div', { class: 'grid cards', id: 'stats' });
  const byGroup = h('div', { id: 'by-group' });
  const byVersion = h('div', { id: 'by-version' });
  const alerts = h('div', { id: 'alerts' });
  const active = h('div', { id: 'active-rollouts' });
  root.append(
    pageHead('Fleet overview', 'Live: refreshes every few seconds'),
    stats,
    h('div', { class: 'grid two' },
      h('section', { class: 'panel' }, h('h2', {}, 'Devices by group'), byGroup),
      h('section', { class: 'panel' }, h('h2', {}, 'Devices by model version'), byVersion)),
    h('div', { class: 'grid two' },
      h('section', { class: 'panel' }, h('h2', {}, 'Health alerts'), alerts),
      h('section', { class: 'panel' }, h('h2', {}, 'Rollouts in progress'), active)));

  return {
    async refresh() {
      const [dv, gr, ro] = await Promise.all([get('/devices'), get('/groups'), get('/rollouts').catch(() => ({ rollouts: [] })), bundles()]);
      const devs = dv.devices;
      const on = devs.filter((d) => d.online).length;
      const flagged = devs.filter((d) => alertsOf(d).length);
      const running = ro.rollouts.filter((r) => ['running', 'waiting_approval', 'paused', 'rolling_back'].includes(r.state));
      fill(stats, [devs.length, on, flagged.length, running.length, gr.groups.length], () => [
        stat('Devices', devs.length, '', '#/devices'),
        stat('Online', on, 'ok', '#/devices?online=true'),
        stat('Offline', devs.length - on, devs.length - on ? 'bad' : '', '#/devices?online=false'),
        stat('With alerts', flagged.length, flagged.length ? 'warn' : ''),
        stat('Groups', gr.groups.length, '', '#/groups'),
        stat('Active rollouts', running.length, '', '#/rollouts'),
      ]);
      fill(byGroup, gr.groups, () => bars(gr.groups.map((g) => ({ name: `${g.name} (${g.online}/${g.devices} online)`, value: g.devices, href: '#/devices?group=' + enc(g.name) })), 'No groups yet: devices join one at first registration.'));
      const versions = new Map();
      for (const d of devs) {
        const models = Object.values((d.reported && d.reported.models) || {}).filter((m) => m.active);
        if (!models.length) versions.set('(no model)', (versions.get('(no model)') || 0) + 1);
        for (const m of models) versions.set(refOf(m.active), (versions.get(refOf(m.active)) || 0) + 1);
      }
      const vitems = [...versions.entries()].sort((a, b) => b[1] - a[1]).map(([name, value]) => ({ name, value, off: name === '(no model)' }));
      fill(byVersion, vitems, () => bars(vitems, 'No devices yet.'));
      const rows = flagged.flatMap((d) => alertsOf(d).map((a) => ({ d, a })));
      fill(alerts, rows.map((r) => [r.d.id, r.a.text]), () => rows.length
        ? table([
          { title: 'Device', cell: (r) => link('#/devices/' + enc(r.d.id), r.d.id) },
          { title: 'Group', cell: (r) => r.d.group },
          { title: 'Alert', cell: (r) => [badge(r.a.level === 'bad' ? 'failed' : 'paused', r.a.level === 'bad' ? 'critical' : 'warning'), ' ', r.a.text] },
        ], rows.slice(0, 50))
        : h('p', { class: 'empty' }, `All clear: every device is online, under ${LIMITS.cpu}% CPU and memory, with at least ${bytes(LIMITS.diskFree)} free.`));
      fill(active, running.map((r) => [r.id, r.state, r.stage, r.counts]), () => table([
        { title: 'Rollout', cell: (r) => link('#/rollouts/' + enc(r.id), r.id) },
        { title: 'Bundle', cell: (r) => r.ref || refOf(r.bundle) },
        { title: 'State', cell: (r) => badge(r.state) },
        { title: 'Stage', cell: (r) => stageText(r) },
        { title: 'Installed', num: true, cell: (r) => `${r.counts.installed}/${r.counts.targeted}` },
      ], running, 'No rollout in progress.'));
    },
  };
}

function stat(label, n, cls, href) {
  const body = [h('div', { class: 'num' }, String(n)), h('div', { class: 'label' }, label)];
  return h('div', { class: 'panel stat ' + cls }, href ? h('a', { href, class: 'plainlink' }, body) : body);
}
