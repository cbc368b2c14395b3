// Rollouts: the list, the create form (validated here first, then by the control plane, whose 422
// messages are shown as they are), and a rollout's page with live progress, operator buttons and
// the decision log.
import { get, post, bundles, refOf } from '../api.js';
import { h, fill, table, badge, online, link, enc, when, ago, pageHead, confirm } from '../ui.js';
import { refreshNow } from '../app.js';

export function rollouts(root) {
  const list = h('div', { id: 'rollout-list' });
  root.append(pageHead('Rollouts', 'Staged deployments with gates; newest first.', h('a', { href: '#/rollouts/new', class: 'btnlink needs-operator', id: 'new-rollout' }, 'New rollout')),
    h('section', { class: 'panel' }, list));
  return {
    async refresh() {
      const [r] = await Promise.all([get('/rollouts'), bundles()]);
      const rows = [...r.rollouts].sort((a, b) => new Date(b.created_at) - new Date(a.created_at));
      fill(list, rows.map((x) => [x.id, x.state, x.stage, x.counts]), () => table([
        { title: 'Rollout', cell: (x) => link('#/rollouts/' + enc(x.id), x.id) },
        { title: 'Bundle', cell: (x) => x.ref || refOf(x.bundle) },
        { title: 'Target', cell: (x) => targetText(x.spec) },
        { title: 'State', cell: (x) => badge(x.state) },
        { title: 'Stage', cell: (x) => stageText(x) },
        { title: 'Installed', num: true, cell: (x) => `${x.counts.installed}/${x.counts.targeted}` },
        { title: 'Failed', num: true, cell: (x) => String(x.counts.failed + (x.counts.stalled || 0)) },
        { title: 'Created', cell: (x) => when(x.created_at) },
      ], rows, 'No rollouts yet.'));
    },
  };
}

// Stages are numbered from 0, as in the API, the CLI and the controller's decision reasons.
export const stageText = (r) => `${r.stage} of 0–${r.stages - 1}`;

function targetText(spec) {
  const t = (spec && spec.target) || {};
  return [(t.groups || []).join(', '), t.selector ? 'where ' + t.selector : ''].filter(Boolean).join(' ') || '—';
}

// --- create form -------------------------------------------------------------------------

// Go's time.ParseDuration syntax (deploy.Duration), e.g. 30s, 5m, 1h30m.
const DURATION = /^(?:0|(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+)$/;

// The gates the form offers, with the ranges deploy.Gates.validate enforces.
const GATES = [
  { key: 'install_success_min', label: 'Install success min', hint: '0–1, e.g. 0.95', min: 0, max: 1 },
  { key: 'error_rate_max_diff', label: 'Error rate max diff', hint: '0–1, canary − baseline', min: 0, max: 1 },
  { key: 'p95_latency_max_ratio', label: 'p95 latency max ratio', hint: '≥ 1, e.g. 1.5', min: 1 },
  { key: 'p95_latency_floor_ms', label: 'p95 latency floor (ms)', hint: '≥ 0; increases up to this never fail, default 1', min: 0 },
  { key: 'output_shift_max', label: 'Output shift max', hint: '0–1', min: 0, max: 1 },
  { key: 'min_samples', label: 'Min samples', hint: 'integer ≥ 1', min: 1, int: true },
  { key: 'evaluations', label: 'Evaluations per stage', hint: 'integer ≥ 1', min: 1, int: true },
];

export function newRollout(root) {
  const bundleSel = h('select', { id: 'rf-bundle', name: 'bundle' }, h('option', { value: '' }, 'Choose a bundle…'));
  const groupsBox = h('div', { class: 'btnrow', id: 'rf-groups' }, h('span', { class: 'muted' }, 'Loading groups…'));
  const selector = h('input', { id: 'rf-selector', name: 'selector', placeholder: 'e.g. arch=arm64' });
  const stagesBox = h('div', { id: 'rf-stages' });
  const onFailure = h('select', { id: 'rf-on-failure' }, h('option', { value: 'rollback' }, 'roll back'), h('option', { value: 'pause' }, 'pause'));
  const gateInputs = Object.fromEntries(GATES.map((g) => [g.key, h('input', { id: 'rf-gate-' + g.key, inputmode: 'decimal', placeholder: 'default' })]));
  const errors = h('ul', { class: 'errors', id: 'rf-errors', hidden: true });
  const apiError = h('div', { class: 'apierror', id: 'rf-apierror', hidden: true });
  const preview = h('pre', { class: 'json', id: 'rf-preview' });
  const submit = h('button', { type: 'submit', id: 'rf-submit' }, 'Create rollout');

  const stages = [];
  const addStage = (st = {}) => {
    const kind = h('select', { class: 'st-kind' }, h('option', { value: 'devices' }, 'devices'), h('option', { value: 'percent' }, 'percent'));
    kind.value = st.percent ? 'percent' : 'devices';
    const amount = h('input', { class: 'st-amount', inputmode: 'decimal', value: String(st.percent || st.devices || '') });
    const bake = h('input', { class: 'st-bake', placeholder: 'e.g. 5m', value: st.bake || '' });
    const approval = h('input', { type: 'checkbox', class: 'st-approval' });
    approval.checked = !!st.approval;
    const err = h('span', { class: 'fielderr' });
    const row = h('div', { class: 'stage-row' });
    const rec = { row, kind, amount, bake, approval, err };
    const remove = h('button', { type: 'button', class: 'small secondary', onclick: () => { stages.splice(stages.indexOf(rec), 1); row.remove(); renumber(); update(); } }, 'Remove');
    row.append(h('strong', { class: 'st-num' }, ''), h('label', {}, 'Size in', kind), h('label', {}, 'Amount', amount), h('label', {}, 'Bake', bake),
      h('label', { class: 'inline' }, approval, 'needs approval'), h('div', {}, remove, ' ', err));
    stages.push(rec);
    stagesBox.append(row);
    renumber();
  };
  const renumber = () => stages.forEach((s, i) => { s.row.querySelector('.st-num').textContent = String(i); });
  addStage({ devices: 1, bake: '30s' });
  addStage({ percent: 50, bake: '5m', approval: true });
  addStage({ percent: 100 });

  const form = h('form', { class: 'panel', id: 'rollout-form', novalidate: true },
    h('div', { class: 'formgrid' }, h('label', {}, 'Bundle', bundleSel), h('label', {}, 'Selector (optional)', selector), h('label', {}, 'On failure', onFailure)),
    h('fieldset', {}, h('legend', {}, 'Target groups'), groupsBox),
    h('fieldset', {}, h('legend', {}, 'Stages, from 0 (sizes are cumulative; the last one must be 100 percent)'), stagesBox,
      h('button', { type: 'button', class: 'small secondary', id: 'rf-add-stage', onclick: () => { addStage({}); update(); } }, 'Add stage')),
    h('fieldset', {}, h('legend', {}, 'Gates (blank keeps the default)'),
      h('div', { class: 'formgrid' }, GATES.map((g) => h('label', {}, g.label + ' ', h('span', { class: 'muted small' }, '(' + g.hint + ')'), gateInputs[g.key])))),
    errors, apiError,
    h('details', {}, h('summary', {}, 'Request body'), preview),
    h('div', { class: 'actions' }, link('#/rollouts', 'Cancel'), submit));

  // build turns the form into a rollout spec and lists what is wrong with it, field by field.
  function build() {
    const problems = [];
    const bad = (el, msg) => { problems.push(msg); if (el) el.classList.add('invalid'); };
    form.querySelectorAll('.invalid').forEach((el) => el.classList.remove('invalid'));
    stages.forEach((s) => { s.err.textContent = ''; });
    const spec = { bundle: bundleSel.value, target: {}, stages: [], on_failure: onFailure.value };
    if (!spec.bundle) bad(bundleSel, 'Choose the bundle to roll out.');
    const groups = [...groupsBox.querySelectorAll('input:checked')].map((c) => c.value);
    if (groups.length) spec.target.groups = groups;
    if (selector.value.trim()) spec.target.selector = selector.value.trim();
    if (!groups.length && !spec.target.selector) bad(null, 'Pick at least one target group or give a selector.');
    if (!stages.length) bad(null, 'Add at least one stage.');
    let lastPct = 0, lastDev = 0;
    stages.forEach((s, i) => {
      const st = {};
      const n = Number(s.amount.value);
      const stageBad = (el, msg) => { bad(el, `Stage ${i}: ${msg}`); s.err.textContent = msg; };
      if (s.amount.value.trim() === '' || !isFinite(n) || n <= 0) stageBad(s.amount, 'the amount must be a number above 0.');
      else if (s.kind.value === 'devices') {
        if (!Number.isInteger(n)) stageBad(s.amount, 'a device count must be a whole number.');
        else if (n <= lastDev) stageBad(s.amount, `${n} devices does not exceed the previous stage's ${lastDev} (counts are cumulative).`);
        st.devices = n; lastDev = n;
      } else {
        if (n > 100) stageBad(s.amount, `${n}% is above 100.`);
        else if (n <= lastPct) stageBad(s.amount, `${n}% does not exceed the previous stage's ${lastPct}% (percentages are cumulative).`);
        st.percent = n; lastPct = n;
      }
      const bake = s.bake.value.trim();
      if (bake) {
        if (!DURATION.test(bake)) stageBad(s.bake, `bake "${bake}" is not a duration like 30s, 5m or 1h30m.`);
        st.bake = bake;
      }
      if (s.approval.checked) st.approval = true;
      spec.stages.push(st);
    });
    const last = stages[stages.length - 1];
    if (last && !(last.kind.value === 'percent' && Number(last.amount.value) === 100)) {
      bad(last.amount, `Stage ${stages.length - 1}: the last stage must be 100 percent, so the whole target ends on the new bundle.`);
      last.err.textContent = 'must be 100 percent';
    }
    const gates = {};
    for (const g of GATES) {
      const el = gateInputs[g.key];
      const v = el.value.trim();
      if (!v) continue;
      const n = Number(v);
      if (!isFinite(n) || (g.int && !Number.isInteger(n))) bad(el, `${g.label}: "${v}" is not ${g.int ? 'a whole number' : 'a number'}.`);
      else if ((g.min !== undefined && n < g.min) || (g.max !== undefined && n > g.max)) bad(el, `${g.label}: ${n} is outside ${g.hint}.`);
      gates[g.key] = n;
    }
    if (Object.keys(gates).length) spec.gates = gates;
    return { spec, problems };
  }

  let touched = false;
  function update() {
    const { spec, problems } = build();
    preview.textContent = JSON.stringify(spec, null, 2);
    // Errors show once the operator tried to submit, then follow every edit.
    errors.replaceChildren(...problems.map((p) => h('li', {}, p)));
    errors.hidden = !touched || !problems.length;
    if (!touched) form.querySelectorAll('.invalid').forEach((el) => el.classList.remove('invalid'));
    return { spec, problems };
  }
  form.addEventListener('input', update);
  form.addEventListener('change', update);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    touched = true;
    apiError.hidden = true;
    const { spec, problems } = update();
    if (problems.length) return;
    submit.disabled = true;
    try {
      const r = await post('/rollouts', spec);
      location.hash = '#/rollouts/' + enc(r.id);
    } catch (e) {
      apiError.textContent = `The control plane refused this rollout (${e.status}${e.code ? ' ' + e.code : ''}): ${e.message}`;
      apiError.hidden = false;
    } finally {
      submit.disabled = false;
    }
  });

  root.append(pageHead('New rollout', 'Stages grow the share of the target step by step; gates decide whether each stage may proceed.', link('#/rollouts', '← rollouts')), form);

  // The choices load once: re-rendering a form while the operator types would lose input.
  Promise.all([bundles(0), get('/groups')]).then(([b, g]) => {
    const usable = b.list.filter((x) => x.kind !== 'runtime' && x.stage !== 'archived')
      .sort((x, y) => x.name.localeCompare(y.name) || new Date(y.uploaded_at) - new Date(x.uploaded_at));
    bundleSel.append(...usable.map((x) => h('option', { value: x.name + '@' + x.version + (x.variant ? ':' + x.variant : '') }, `${x.name}@${x.version}${x.variant ? ':' + x.variant : ''} (${x.stage})`)));
    groupsBox.replaceChildren(...(g.groups.length ? g.groups.map((gr) => h('label', { class: 'inline' }, h('input', { type: 'checkbox', name: 'group', value: gr.name }), `${gr.name} (${gr.devices})`)) : [h('span', { class: 'muted' }, 'No groups yet.')]));
    update();
  }).catch((e) => { apiError.textContent = 'Could not load bundles and groups: ' + e.message; apiError.hidden = false; });
}

// --- one rollout ---------------------------------------------------------------------------

const SEGMENTS = ['installed', 'downloading', 'pending', 'failed', 'rolled_back', 'planned', 'excluded'];

export function rollout(root, { params: [id] }) {
  const head = h('div');
  const result = h('div', { id: 'ro-result' });
  const buttons = h('div', { class: 'btnrow', id: 'ro-buttons' });
  const summary = h('div', { id: 'ro-summary' });
  const stagesEl = h('div', { id: 'ro-stages' });
  const log = h('div', { id: 'ro-decisions' });
  const devs = h('div', { id: 'ro-devices' });
  root.append(head, result,
    h('div', { class: 'grid two' },
      h('section', { class: 'panel' }, h('h2', {}, 'Progress'), summary, buttons),
      h('section', { class: 'panel' }, h('h2', {}, 'Stages'), stagesEl)),
    h('section', { class: 'panel' }, h('h2', {}, 'Decision log'), log),
    h('section', { class: 'panel' }, h('h2', {}, 'Devices'), devs));

  let state = '';
  const verb = async (v, label) => {
    if (v === 'abort' || v === 'rollback') {
      const ok = await confirm(`${label} rollout ${id}?`, h('p', {}, v === 'abort'
        ? 'The rollout stops where it is; devices already on the new bundle stay there until you roll back.'
        : 'Every device the rollout touched goes back to the bundle it ran before.'), label);
      if (!ok) return;
    }
    try {
      await post('/rollouts/' + enc(id) + '/' + v, { reason: 'from the console' });
      result.replaceChildren(h('div', { class: 'apiok' }, `${label}: done.`));
    } catch (e) {
      result.replaceChildren(h('div', { class: 'apierror' }, `${label} refused (${e.status}): ${e.message}`));
    }
    refreshNow();
  };
  const btn = (v, label, allowed, cls = 'secondary') => h('button', { type: 'button', id: 'ro-' + v, class: cls + ' needs-operator', disabled: !allowed.includes(state), onclick: () => verb(v, label) }, label);

  return {
    async refresh() {
      const [r, d] = await Promise.all([get('/rollouts/' + enc(id)), get('/rollouts/' + enc(id) + '/devices'), bundles()]);
      state = r.state;
      fill(head, [r.state, r.ref], () => pageHead(['Rollout ', h('code', {}, r.id), ' ', h('span', { id: 'ro-state' }, badge(r.state))],
        [r.ref || refOf(r.bundle), ' to ', targetText(r.spec), ' · created ', when(r.created_at)], link('#/rollouts', '← rollouts')));
      fill(buttons, [r.state], () => [
        btn('pause', 'Pause', ['running', 'waiting_approval']),
        btn('resume', 'Resume', ['paused']),
        btn('approve', 'Approve next stage', ['waiting_approval'], ''),
        btn('abort', 'Abort', ['running', 'waiting_approval', 'paused'], 'danger'),
        btn('rollback', 'Roll back', ['running', 'waiting_approval', 'paused', 'completed', 'aborted'], 'danger'),
      ]);
      const c = r.counts;
      fill(summary, [r.state, r.stage, c], () => {
        const bar = h('div', { class: 'progress', title: 'devices by status' });
        for (const k of SEGMENTS) {
          const n = k === 'failed' ? c.failed + (c.stalled || 0) : k === 'rolled_back' ? c.rolled_back + (c.rolling_back || 0) : c[k] || 0;
          if (!n) continue;
          const seg = h('span', { class: 'seg-' + k, title: `${k.replace('_', ' ')}: ${n}` });
          seg.style.width = (100 * n / Math.max(1, c.targeted)) + '%';
          bar.append(seg);
        }
        return [
          h('p', {}, h('strong', { id: 'ro-stage' }, 'Stage ' + stageText(r)), ' · ', badge(r.state), ' · updated ', ago(r.updated_at)),
          bar,
          h('div', { class: 'legend' }, SEGMENTS.map((k) => h('span', {}, h('i', { class: 'seg-' + k }), k.replace('_', ' ')))),
          h('div', { class: 'chips', id: 'ro-counts' }, Object.entries(c).filter(([, v]) => v).map(([k, v]) => h('span', {}, k.replace('_', ' ') + ' ', h('strong', {}, String(v))))),
        ];
      });
      fill(stagesEl, [r.stage, r.state, r.sizes, r.spec.stages], () => table([
        { title: 'Stage', cell: (x) => String(x.i) },
        { title: 'Size', cell: (x) => (x.st.devices ? x.st.devices + ' device' + (x.st.devices > 1 ? 's' : '') : x.st.percent + '%') },
        { title: 'Devices', num: true, cell: (x) => String((r.sizes || [])[x.i] ?? '—') },
        { title: 'Bake', cell: (x) => x.st.bake || '—' },
        { title: 'Approval', cell: (x) => (x.st.approval ? 'required' : '—') },
        { title: 'Status', cell: (x) => (x.i < r.stage || r.state === 'completed' ? badge('completed', 'done') : x.i === r.stage ? badge(r.state) : badge('planned', 'waiting')) },
      ], r.spec.stages.map((st, i) => ({ st, i }))));
      const ds = [...(r.decisions || [])].reverse();
      fill(log, ds.map((x) => [x.at, x.action, x.reason]), () => table([
        { title: 'When', nowrap: true, cell: (x) => when(x.at) },
        { title: 'Stage', cell: (x) => String(x.stage) },
        { title: 'Action', cell: (x) => badge(actionClass(x.action), x.action) },
        { title: 'Reason', cell: (x) => x.reason },
        { title: 'By', cell: (x) => x.by },
        { title: 'Inputs', cell: (x) => (x.inputs && Object.keys(x.inputs).length ? h('details', {}, h('summary', {}, 'show'), h('pre', { class: 'json' }, JSON.stringify(x.inputs, null, 2))) : '—') },
      ], ds, 'No decisions yet.'));
      fill(devs, d.devices.map((x) => [x.device, x.status, x.online, x.active, x.step, x.reason]), () => table([
        { title: 'Device', cell: (x) => link('#/devices/' + enc(x.device), x.device) },
        { title: 'Group', cell: (x) => x.group },
        { title: 'Stage', cell: (x) => String(x.stage) },
        { title: 'Status', cell: (x) => badge(x.status) },
        { title: 'Reason', cell: (x) => x.reason || '—' },
        { title: 'Agent step', cell: (x) => (x.step ? badge(x.step) : '—') },
        { title: 'Running', cell: (x) => (x.active ? refOf(x.active) : '—') },
        { title: 'Previous', cell: (x) => (x.previous ? refOf(x.previous) : '—') },
        { title: 'Online', cell: (x) => online(x.online) },
      ], d.devices, 'No devices targeted.'));
    },
  };
}

function actionClass(a) {
  if (['complete', 'advance', 'approve', 'resume'].includes(a)) return 'completed';
  if (['rollback', 'rolled_back', 'abort'].includes(a)) return 'failed';
  if (['pause', 'wait'].includes(a)) return 'paused';
  return 'running';
}

