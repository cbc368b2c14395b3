// Audit log: who did what, when, from where and with what outcome; newest first, filterable.
import { get } from '../api.js';
import { h, fill, table, badge, link, enc, when, pageHead } from '../ui.js';

export function auditLog(root) {
  const filter = h('input', { type: 'search', id: 'audit-filter', placeholder: 'Filter by who, action, target…' });
  const limit = h('select', { id: 'audit-limit' }, [100, 500, 2000].map((n) => h('option', { value: n }, 'last ' + n)));
  const list = h('div', { id: 'audit-list' });
  const count = h('span', { class: 'muted' });
  root.append(pageHead('Audit log', count),
    h('section', { class: 'panel' }, h('div', { class: 'toolbar' }, h('label', {}, 'Filter', filter), h('label', {}, 'Show', limit)), list));
  let entries = [];
  const render = () => {
    const q = filter.value.trim().toLowerCase();
    const rows = entries.filter((e) => !q || [e.who, e.action, e.target, e.reason, e.rollout, e.from, e.outcome].some((v) => v && String(v).toLowerCase().includes(q)));
    count.textContent = `${rows.length} of ${entries.length} entries shown, newest first`;
    fill(list, [q, rows.map((e) => e.seq)], () => table([
      { title: 'When', nowrap: true, cell: (e) => when(e.at) },
      { title: 'Who', cell: (e) => e.who },
      { title: 'Action', cell: (e) => h('code', {}, e.action) },
      { title: 'Target', cell: (e) => e.target || '—' },
      { title: 'Rollout', nowrap: true, cell: (e) => (e.rollout ? link('#/rollouts/' + enc(e.rollout), e.rollout) : '—') },
      { title: 'Reason', cell: (e) => e.reason || '—' },
      { title: 'From', cell: (e) => e.from || '—' },
      { title: 'Outcome', cell: (e) => outcome(e.outcome) },
    ], rows, 'No audit entries match.'));
  };
  filter.addEventListener('input', render);
  limit.addEventListener('change', () => view.refresh());
  const view = {
    async refresh() {
      const r = await get('/audit?limit=' + limit.value);
      entries = [...r.entries].reverse();
      render();
    },
  };
  return view;
}

function outcome(o) {
  if (!o) return '—';
  const n = Number(o);
  if (n >= 200 && n < 300) return badge('completed', o);
  if (n >= 400) return badge('failed', o);
  return badge('', o);
}
