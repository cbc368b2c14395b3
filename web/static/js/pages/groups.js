// Groups: devices and online counts, the models their devices run, and group rollback behind a
// confirmation dialog.
import { get, post, bundles, refOf } from '../api.js';
import { h, fill, table, badge, online, link, enc, ago, pageHead, confirm, bars } from '../ui.js';
import { refreshNow } from '../app.js';

// modelsOf maps model name -> Map(bundle id -> device count) over a group's members.
function modelsOf(members) {
  const out = new Map();
  for (const d of members) {
    for (const [name, m] of Object.entries((d.reported && d.reported.models) || {})) {
      if (!out.has(name)) out.set(name, new Map());
      const c = out.get(name);
      c.set(m.active || '', (c.get(m.active || '') || 0) + 1);
    }
  }
  return out;
}

// rollback asks for confirmation, then POSTs /groups/{g}/rollback and says what happened.
async function rollback(group, models, result) {
  const model = h('select', { id: 'rollback-model' }, h('option', { value: '' }, 'All models'), [...models].map((m) => h('option', { value: m }, m)));
  const ok = await confirm(`Roll back group ${group}?`, [
    h('p', {}, 'Every device of ', h('strong', {}, group), ' goes back to the bundle it ran before. A rollout still running on this group is paused and its remaining devices are withdrawn.'),
    h('label', {}, 'Model', model),
  ], 'Roll back');
  if (!ok) return;
  try {
    const r = await post('/groups/' + enc(group) + '/rollback', model.value ? { model: model.value } : {});
    const n = r.models.reduce((a, m) => a + m.devices.length, 0);
    result.replaceChildren(h('div', { class: 'apiok', id: 'rollback-result' },
      `Rolled back ${group}: ${n} device${n === 1 ? '' : 's'} sent to their previous bundle`,
      r.models.map((m) => ` · ${m.model}${m.baseline ? ' (baseline now ' + refOf(m.baseline) + ')' : ''}${m.rollout ? ' from rollout ' + m.rollout : ''}`)));
  } catch (e) {
    result.replaceChildren(h('div', { class: 'apierror', id: 'rollback-result' }, `Rollback of ${group} refused (${e.status}): ${e.message}`));
  }
  refreshNow();
}

export function groups(root) {
  const list = h('div', { id: 'group-list' });
  const result = h('div');
  root.append(pageHead('Groups', 'A device belongs to one group; rollouts and baselines are per group.'), result, h('section', { class: 'panel' }, list));
  return {
    async refresh() {
      const [gr, dv] = await Promise.all([get('/groups'), get('/devices'), bundles()]);
      const members = (g) => dv.devices.filter((d) => d.group === g);
      fill(list, [gr.groups, dv.devices.map((d) => [d.id, d.group, d.reported && d.reported.models])], () => table([
        { title: 'Group', cell: (g) => link('#/groups/' + enc(g.name), g.name) },
        { title: 'Devices', num: true, cell: (g) => String(g.devices) },
        { title: 'Online', num: true, cell: (g) => String(g.online) },
        { title: 'Models running', cell: (g) => [...modelsOf(members(g.name))].map(([name, ids]) => h('div', {}, name + ': ', [...ids].map(([id, n]) => (id ? refOf(id) : 'none') + ' ×' + n).join(', '))) },
        { title: '', cell: (g) => h('div', { class: 'btnrow' },
          link('#/devices?group=' + enc(g.name), 'Devices'),
          h('button', { class: 'small danger needs-operator', type: 'button', 'data-rollback': g.name, onclick: () => rollback(g.name, modelsOf(members(g.name)).keys(), result) }, 'Roll back…')) },
      ], gr.groups, 'No groups yet.'));
    },
  };
}

export function group(root, { params: [name] }) {
  const result = h('div');
  const summary = h('div');
  const list = h('div', { id: 'group-members' });
  const rb = h('button', { class: 'danger needs-operator', type: 'button', id: 'group-rollback' }, 'Roll back group…');
  let models = [];
  rb.addEventListener('click', () => rollback(name, models, result));
  root.append(pageHead('Group ' + name, summary, link('#/groups', '← all groups'), rb), result,
    h('section', { class: 'panel' }, h('h2', {}, 'Members'), list));
  return {
    async refresh() {
      const [g] = await Promise.all([get('/groups/' + enc(name)), bundles()]);
      const m = modelsOf(g.members);
      models = [...m.keys()];
      summary.textContent = `${g.online} of ${g.devices} devices online`;
      fill(list, g.members.map((d) => [d.id, d.online, d.reported && d.reported.models]), () => [
        h('div', { class: 'grid two' }, [...m].map(([model, ids]) => h('div', {}, h('h3', {}, model), bars([...ids].map(([id, n]) => ({ name: id ? refOf(id) : 'none', value: n })))))),
        table([
          { title: 'Device', cell: (d) => link('#/devices/' + enc(d.id), d.id) },
          { title: 'Status', cell: (d) => online(d.online) },
          { title: 'Models', cell: (d) => Object.entries((d.reported && d.reported.models) || {}).map(([n, mm]) => h('div', {}, n + ': ' + (mm.active ? refOf(mm.active) : '—') + ' ', badge(mm.state))) },
          { title: 'Last seen', cell: (d) => ago(d.last_seen) },
        ], g.members, 'No devices in this group.'),
      ]);
    },
  };
}
