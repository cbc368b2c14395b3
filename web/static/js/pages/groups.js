// Groups: devices and online counts, the models their devices run, group rollback behind a
// confirmation dialog, and a group's settings: baselines, production flag and capture policy.
import { get, post, put, bundles, refOf } from '../api.js';
import { h, fill, table, badge, online, link, enc, ago, when, pageHead, confirm, bars } from '../ui.js';
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
  const baselines = h('div', { id: 'group-baselines' });
  const settings = h('div', { id: 'group-settings' });
  const form = settingsForm(name);
  root.append(pageHead('Group ' + name, summary, link('#/groups', '← all groups'), rb), result,
    h('div', { class: 'grid two' },
      h('section', { class: 'panel' }, h('h2', {}, 'Baselines'), h('p', { class: 'muted small' }, 'The committed bundle per model: what a rollback returns to and what new members receive.'), baselines),
      h('section', { class: 'panel' }, h('h2', {}, 'Settings'), settings, form.el)),
    h('section', { class: 'panel' }, h('h2', {}, 'Members'), list));
  return {
    async refresh() {
      const [g] = await Promise.all([get('/groups/' + enc(name)), bundles()]);
      const m = modelsOf(g.members || []);
      models = [...m.keys()];
      summary.textContent = `${g.online} of ${g.devices} devices online`;
      const st = g.settings || {};
      const base = Object.entries(st.baseline || {}).sort(([a], [b]) => a.localeCompare(b));
      fill(baselines, [base, st.by, st.at], () => [
        table([
          { title: 'Model', cell: ([model]) => model },
          { title: 'Baseline bundle', cell: ([, id]) => link('#/bundles/' + enc(id), refOf(id)) },
        ], base, 'No baseline yet: the first completed rollout or group assignment sets one.'),
        st.by ? h('p', { class: 'muted small' }, 'Last set by ' + st.by + ' ' + when(st.at)) : null,
      ]);
      const cap = st.capture || {};
      fill(settings, [st.production, cap, st.settings_by, st.settings_at], () => h('dl', { class: 'kv' },
        h('dt', {}, 'Production'), h('dd', { id: 'gs-production' }, st.production
          ? [badge('production', 'production'), ' only bundles in the production stage may be rolled out or assigned here']
          : [badge('', 'not production'), ' bundles of any stage may be rolled out']),
        h('dt', {}, 'Sample capture'), h('dd', { id: 'gs-capture' }, cap.enabled
          ? [badge('completed', 'enabled'), ` · keep ${cap.retention || '720h'} · at most ${cap.max_samples || 1000} samples per capture`]
          : [badge('', 'off'), ' capture requests for this group\'s devices are refused (captured inputs can hold personal data)']),
        h('dt', {}, 'Changed'), h('dd', {}, st.settings_by ? st.settings_by + ' ' + when(st.settings_at) : 'never')));
      form.load(st);
      fill(list, (g.members || []).map((d) => [d.id, d.online, d.reported && d.reported.models]), () => [
        h('div', { class: 'grid two' }, [...m].map(([model, ids]) => h('div', {}, h('h3', {}, model), bars([...ids].map(([id, n]) => ({ name: id ? refOf(id) : 'none', value: n })))))),
        table([
          { title: 'Device', cell: (d) => link('#/devices/' + enc(d.id), d.id) },
          { title: 'Status', cell: (d) => online(d.online) },
          { title: 'Models', cell: (d) => Object.entries((d.reported && d.reported.models) || {}).map(([n, mm]) => h('div', {}, n + ': ' + (mm.active ? refOf(mm.active) : '—') + ' ', badge(mm.state))) },
          { title: 'Last seen', cell: (d) => ago(d.last_seen) },
        ], g.members || [], 'No devices in this group.'),
      ]);
    },
  };
}

// DURATION is what Go's time.ParseDuration accepts for a retention (no sign: it must be above 0).
const DURATION = /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/;
const UNIT_NS = { ns: 1, us: 1e3, 'µs': 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };
const MAX_RETENTION_H = 366 * 24, MAX_SAMPLES = 100000;
function durationHours(v) {
  let ns = 0;
  for (const [, n, , u] of v.matchAll(/(\d+(\.\d+)?)(ns|us|µs|ms|s|m|h)/g)) ns += Number(n) * UNIT_NS[u];
  return ns / 3600e9;
}

// settingsForm edits the production flag and capture policy (admins only; the server enforces
// it). It is filled from the first refresh and again after a save, never while being edited.
function settingsForm(name) {
  const production = h('input', { type: 'checkbox', id: 'gs-f-production', name: 'production' });
  const enabled = h('input', { type: 'checkbox', id: 'gs-f-capture', name: 'capture' });
  const retention = h('input', { id: 'gs-f-retention', name: 'retention', placeholder: '720h (30 days)', autocomplete: 'off' });
  const maxSamples = h('input', { id: 'gs-f-max', name: 'max_samples', inputmode: 'numeric', placeholder: '1000', autocomplete: 'off' });
  const errors = h('ul', { class: 'errors', id: 'gs-errors', hidden: true });
  const msg = h('div', { id: 'gs-result' });
  const submit = h('button', { type: 'submit', id: 'gs-submit' }, 'Save settings');
  const el = h('form', { class: 'stageform needs-admin', id: 'group-settings-form', novalidate: true },
    h('fieldset', {}, h('legend', {}, 'Change settings'),
      h('label', { class: 'inline' }, production, 'Production group (only production-stage bundles)'),
      h('label', { class: 'inline' }, enabled, 'Allow sample capture from this group\'s devices'),
      h('div', { class: 'formgrid' },
        h('label', {}, 'Retention ', h('span', { class: 'muted small' }, '(Go duration, at most 8784h)'), retention),
        h('label', {}, 'Max samples per capture ', h('span', { class: 'muted small' }, '(1 to 100000)'), maxSamples)),
      errors, msg, h('div', { class: 'actions' }, submit)));
  let loaded = false, was = null;
  const load = (st, force) => {
    if (loaded && !force) return;
    loaded = true;
    was = st;
    const cap = st.capture || {};
    production.checked = !!st.production;
    enabled.checked = !!cap.enabled;
    retention.value = cap.retention || '';
    maxSamples.value = cap.max_samples ? String(cap.max_samples) : '';
  };
  function build() {
    const problems = [];
    const bad = (input, text) => { problems.push(text); input.classList.add('invalid'); };
    el.querySelectorAll('.invalid').forEach((x) => x.classList.remove('invalid'));
    const capture = { enabled: enabled.checked };
    const r = retention.value.trim();
    if (r) {
      if (!DURATION.test(r)) bad(retention, `Retention "${r}" is not a duration like 720h, 90m or 168h30m.`);
      else if (durationHours(r) <= 0 || durationHours(r) > MAX_RETENTION_H) bad(retention, `Retention ${r} must be above 0 and at most ${MAX_RETENTION_H}h (366 days).`);
      capture.retention = r;
    }
    const m = maxSamples.value.trim();
    if (m) {
      const n = Number(m);
      if (!Number.isInteger(n) || n < 1 || n > MAX_SAMPLES) bad(maxSamples, `Max samples "${m}" must be a whole number from 1 to ${MAX_SAMPLES}.`);
      capture.max_samples = n;
    }
    return { body: { production: production.checked, capture }, problems };
  }
  let touched = false;
  const check = () => {
    const { body, problems } = build();
    errors.replaceChildren(...problems.map((p) => h('li', {}, p)));
    errors.hidden = !touched || !problems.length;
    if (!touched) el.querySelectorAll('.invalid').forEach((x) => x.classList.remove('invalid'));
    return { body, problems };
  };
  el.addEventListener('input', check);
  el.addEventListener('change', check);
  el.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    touched = true;
    msg.replaceChildren();
    const { body, problems } = check();
    if (problems.length) return;
    if (was && body.production !== !!was.production) {
      const ok = await confirm(body.production ? `Make ${name} a production group?` : `Make ${name} a non-production group?`,
        h('p', {}, body.production
          ? 'Rollouts and assignments to this group will then accept only bundles in the production stage.'
          : 'Rollouts and assignments to this group will then accept bundles of any stage, staging included.'),
        body.production ? 'Make production' : 'Remove production flag');
      if (!ok) return;
    }
    submit.disabled = true;
    try {
      const st = await put('/groups/' + enc(name), body);
      load(st, true);
      touched = false;
      msg.replaceChildren(h('div', { class: 'apiok' }, `Settings of ${name} saved.`));
    } catch (e) {
      msg.replaceChildren(h('div', { class: 'apierror' }, `The control plane refused these settings (${e.status}${e.code ? ' ' + e.code : ''}): ${e.message}`));
    } finally {
      submit.disabled = false;
    }
    refreshNow();
  });
  return { el, load };
}
