// Datasets: samples captured from devices, with their lineage (device, group, model version and
// bundle, what triggered the capture and who asked), downloads and deletion. Capture itself is
// started from a device's page (captureForm below) and allowed only by the group's policy.
import { get, post, api, bundles, refOf } from '../api.js';
import { h, fill, table, badge, link, enc, when, ago, bytes, short, pageHead, confirm } from '../ui.js';
import { refreshNow } from '../app.js';

const STATES = ['requested', 'uploading', 'complete', 'refused', 'failed'];
const STATE_BADGE = { requested: 'pending', uploading: 'downloading', complete: 'completed', refused: 'failed', failed: 'failed' };
const stateBadge = (st) => badge(STATE_BADGE[st] || st, st);

const samplesURL = (id, format) => '/api/v1/datasets/' + enc(id) + '/samples?format=' + format;

export function datasets(root, { query }) {
  const filters = {
    device: h('input', { id: 'ds-f-device', type: 'search', name: 'device', placeholder: 'device id', value: query.get('device') || '' }),
    group: h('input', { id: 'ds-f-group', type: 'search', name: 'group', placeholder: 'group', value: query.get('group') || '' }),
    model: h('input', { id: 'ds-f-model', type: 'search', name: 'model', placeholder: 'model name', value: query.get('model') || '' }),
    state: h('select', { id: 'ds-f-state', name: 'state' }, h('option', { value: '' }, 'Any state'), STATES.map((st) => h('option', { value: st }, st))),
  };
  filters.state.value = query.get('state') || '';
  const count = h('span', { class: 'muted', id: 'dataset-count' });
  const list = h('div', { id: 'dataset-list' });
  root.append(
    pageHead('Datasets', count),
    h('section', { class: 'panel' },
      h('div', { class: 'toolbar' },
        h('label', {}, 'Device', filters.device), h('label', {}, 'Group', filters.group),
        h('label', {}, 'Model', filters.model), h('label', {}, 'State', filters.state)),
      list));

  const params = () => {
    const q = new URLSearchParams();
    for (const [k, el] of Object.entries(filters)) if (el.value.trim()) q.set(k, el.value.trim());
    return q;
  };
  // As on the device list, filters live in the URL without making the router rebuild the page.
  const changed = () => {
    const q = params();
    history.replaceState(null, '', '#/datasets' + (q.size ? '?' + q : ''));
    view.refresh();
  };
  let debounce;
  for (const el of Object.values(filters)) {
    el.addEventListener(el.tagName === 'SELECT' ? 'change' : 'input', () => { clearTimeout(debounce); debounce = setTimeout(changed, 250); });
  }

  const view = {
    async refresh() {
      const q = params();
      const [r] = await Promise.all([get('/datasets' + (q.size ? '?' + q : '')), bundles()]);
      count.textContent = r.count + (r.count === 1 ? ' dataset' : ' datasets');
      const rows = r.datasets || [];
      fill(list, rows.map((d) => [d.id, d.state, d.samples, d.expires]), () => table([
        { title: 'Dataset', cell: (d) => link('#/datasets/' + enc(d.id), h('code', {}, short(d.id))) },
        { title: 'Device', cell: (d) => link('#/devices/' + enc(d.device), d.device) },
        { title: 'Group', cell: (d) => (d.group ? link('#/groups/' + enc(d.group), d.group) : '—') },
        { title: 'Model', cell: (d) => d.model + (d.version ? '@' + d.version : '') },
        { title: 'Trigger', cell: (d) => [d.trigger, d.reason ? h('div', { class: 'small muted' }, d.reason) : null] },
        { title: 'Requested by', cell: (d) => d.requester },
        { title: 'Samples', num: true, cell: (d) => String(d.samples || 0) },
        { title: 'State', cell: (d) => stateBadge(d.state) },
        { title: 'Requested', nowrap: true, cell: (d) => when(d.requested) },
        { title: 'Expires', nowrap: true, cell: (d) => when(d.expires) },
      ], rows, q.size ? 'No dataset matches these filters.' : 'No datasets yet: an operator captures samples from a device\'s page, in a group whose capture policy allows it.'));
    },
  };
  return view;
}

export function dataset(root, { params: [id] }) {
  const head = h('div');
  const result = h('div', { id: 'ds-result' });
  const facts = h('div', { id: 'ds-lineage' });
  const files = h('div', { id: 'ds-files' });
  const del = h('button', { type: 'button', class: 'danger needs-operator', id: 'ds-delete' }, 'Delete dataset…');
  let gone = false;
  del.addEventListener('click', async () => {
    const reason = h('input', { id: 'ds-delete-reason', placeholder: 'e.g. requested by the data owner' });
    const ok = await confirm(`Delete dataset ${short(id)}?`, [
      h('p', {}, 'The captured samples are deleted from the control plane for good; the audit log keeps who deleted them and why.'),
      h('label', {}, 'Reason (for the audit log)', reason),
    ], 'Delete');
    if (!ok) return;
    try {
      await api('DELETE', '/datasets/' + enc(id) + (reason.value.trim() ? '?reason=' + enc(reason.value.trim()) : ''));
      gone = true;
      result.replaceChildren(h('div', { class: 'apiok' }, `Dataset ${id} deleted. `, link('#/datasets', 'Back to the datasets')));
      del.disabled = true;
    } catch (e) {
      result.replaceChildren(h('div', { class: 'apierror' }, `Delete refused (${e.status}${e.code ? ' ' + e.code : ''}): ${e.message}`));
    }
  });
  root.append(head, result,
    h('div', { class: 'grid two' },
      h('section', { class: 'panel' }, h('h2', {}, 'Lineage'), facts),
      h('section', { class: 'panel' }, h('h2', {}, 'Samples'), files, h('div', { class: 'actions' }, del))));
  return {
    async refresh() {
      if (gone) return;
      const [d] = await Promise.all([get('/datasets/' + enc(id)), bundles()]);
      fill(head, [d.state], () => pageHead(['Dataset ', h('code', {}, short(d.id)), ' ', h('span', { id: 'ds-state' }, stateBadge(d.state))],
        [d.model, d.version ? '@' + d.version : '', ' from ', d.device, ' · requested ', ago(d.requested)], link('#/datasets', '← all datasets')));
      fill(facts, d, () => h('dl', { class: 'kv' },
        kv('Id', h('code', {}, d.id)),
        kv('Device', link('#/devices/' + enc(d.device), d.device)),
        kv('Group', d.group ? link('#/groups/' + enc(d.group), d.group) : '—'),
        kv('Model', d.model + (d.version ? '@' + d.version : '')),
        kv('Bundle', d.bundle ? link('#/bundles/' + enc(d.bundle), refOf(d.bundle)) : '—'),
        kv('Trigger', d.trigger), kv('Reason', d.reason),
        kv('Requested by', d.requester), kv('Requested', when(d.requested)),
        kv('First sample', when(d.started)), kv('Sealed', when(d.sealed)), kv('Completed', when(d.completed)),
        kv('Retention', d.retention), kv('Expires', when(d.expires)),
        d.error ? kv('Error', h('span', { class: 'badge bad' }, d.error)) : null));
      fill(files, [d.state, d.samples, d.size], () => [
        h('dl', { class: 'kv' }, kv('Samples', String(d.samples || 0) + (d.max_samples ? ' of at most ' + d.max_samples : '')), kv('Stored size', d.size ? bytes(d.size) + ' (encrypted)' : '—')),
        d.state === 'complete'
          ? h('div', { class: 'btnrow needs-operator', id: 'ds-downloads' },
            h('a', { class: 'btnlink', href: samplesURL(d.id, 'jsonl'), download: d.id + '.jsonl', id: 'ds-dl-jsonl' }, 'Download JSONL'),
            h('a', { class: 'btnlink', href: samplesURL(d.id, 'npy'), download: d.id + '.npy', id: 'ds-dl-npy' }, 'Download .npy'))
          : h('p', { class: 'empty' }, 'Downloads open once the dataset is complete (now ' + d.state + ').'),
        h('p', { class: 'muted small' }, 'Downloading samples needs the operator role: captured inputs can hold personal data.'),
      ]);
    },
  };
}

function kv(k, v) {
  return [h('dt', {}, k), h('dd', {}, v === undefined || v === null || v === '' ? '—' : v)];
}

// captureForm is the device page's "capture samples" action (operators; the server checks the
// role and the group's capture policy, and its refusal is shown as it comes).
export function captureForm(deviceId) {
  const model = h('select', { id: 'cap-model', name: 'model' }, h('option', { value: '' }, 'Choose a model'));
  const max = h('input', { id: 'cap-max', name: 'max_samples', inputmode: 'numeric', placeholder: 'group policy limit' });
  const reason = h('input', { id: 'cap-reason', name: 'reason', placeholder: 'why these samples are needed' });
  const errors = h('ul', { class: 'errors', id: 'cap-errors', hidden: true });
  const msg = h('div', { id: 'cap-result' });
  const submit = h('button', { type: 'submit', id: 'cap-submit' }, 'Capture samples');
  const el = h('form', { class: 'needs-operator', id: 'capture-form', novalidate: true },
    h('p', { class: 'muted small' }, 'The device records its next inference inputs and uploads them encrypted to the control plane. Allowed only when the device\'s group has a capture policy.'),
    h('div', { class: 'formgrid' }, h('label', {}, 'Model', model), h('label', {}, 'Max samples (optional)', max), h('label', {}, 'Reason', reason)),
    errors, msg, h('div', { class: 'actions' }, submit));
  el.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    msg.replaceChildren();
    const problems = [];
    if (!model.value) problems.push('Choose the model whose inputs to capture.');
    const body = { model: model.value, reason: reason.value.trim() };
    if (max.value.trim()) {
      const n = Number(max.value.trim());
      if (!Number.isInteger(n) || n < 1 || n > 100000) problems.push(`Max samples "${max.value.trim()}" must be a whole number from 1 to 100000.`);
      else body.max_samples = n;
    }
    if (!body.reason) problems.push('Give a reason: it goes into the dataset\'s lineage and the audit log.');
    errors.replaceChildren(...problems.map((p) => h('li', {}, p)));
    errors.hidden = !problems.length;
    if (problems.length) return;
    submit.disabled = true;
    try {
      const r = await post('/devices/' + enc(deviceId) + '/capture', body);
      msg.replaceChildren(h('div', { class: 'apiok' }, 'Capture requested: dataset ', link('#/datasets/' + enc(r.id), r.id), ` (${r.state}).`));
      refreshNow();
    } catch (e) {
      const parts = [`Capture refused (${e.status}${e.code ? ' ' + e.code : ''}): ${e.message}`];
      if (e.code === 'capture_not_allowed') {
        parts.push(h('div', {}, 'An admin can allow capture in the settings on ', group ? link('#/groups/' + enc(group), 'the page of group ' + group) : 'the group\'s page', '.'));
      }
      msg.replaceChildren(h('div', { class: 'apierror', id: 'cap-error' }, parts));
    } finally {
      submit.disabled = false;
    }
  });
  // setDevice keeps the choice while the device's reported models are refreshed.
  let group = '';
  const setDevice = (names, g) => {
    group = g || '';
    const was = model.value;
    fill(model, names, () => [h('option', { value: '' }, names.length ? 'Choose a model' : 'No model installed'), names.map((n) => h('option', { value: n }, n))]);
    model.value = names.includes(was) ? was : names.length === 1 ? names[0] : '';
  };
  return { el, setDevice };
}
