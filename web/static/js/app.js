// The console's shell: a hash router (#/devices/sim-00001), the nav bar, the login page, and the
// poller that refreshes the current page every few seconds without a reload.
import { api, hasSession, onUnauthorized, APIError } from './api.js';
import { h, banner } from './ui.js';
import { overview } from './pages/overview.js';
import { devices, device } from './pages/devices.js';
import { groups, group } from './pages/groups.js';
import { registry, bundle } from './pages/bundles.js';
import { rollouts, rollout, newRollout } from './pages/rollouts.js';
import { auditLog } from './pages/audit.js';
import { datasets, dataset } from './pages/datasets.js';
import { keys } from './pages/keys.js';

const POLL_MS = 2500;

// Each route builds its page into the main element and returns {refresh} (or nothing for a
// static page such as a form). nav names the tab to highlight.
const routes = [
  [/^\/$/, overview, 'overview'],
  [/^\/devices$/, devices, 'devices'],
  [/^\/devices\/([^/]+)$/, device, 'devices'],
  [/^\/groups$/, groups, 'groups'],
  [/^\/groups\/([^/]+)$/, group, 'groups'],
  [/^\/bundles$/, registry, 'bundles'],
  [/^\/bundles\/([^/]+)$/, bundle, 'bundles'],
  [/^\/rollouts$/, rollouts, 'rollouts'],
  [/^\/rollouts\/new$/, newRollout, 'rollouts'],
  [/^\/rollouts\/([^/]+)$/, rollout, 'rollouts'],
  [/^\/audit$/, auditLog, 'audit'],
  [/^\/datasets$/, datasets, 'datasets'],
  [/^\/datasets\/([^/]+)$/, dataset, 'datasets'],
  [/^\/keys$/, keys, 'keys'],
  [/^\/login$/, login, ''],
];

const main = document.getElementById('main');
let current = null; // {refresh, generation}
let generation = 0;
let timer = null;

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const [path, qs] = raw.split('?');
  return { path, query: new URLSearchParams(qs || '') };
}

async function route() {
  const { path, query } = parseHash();
  if (path !== '/login' && !hasSession()) {
    location.hash = '#/login';
    return;
  }
  generation++;
  clearTimeout(timer);
  banner('');
  let match = null;
  for (const [re, page, nav] of routes) {
    const m = path.match(re);
    if (m) { match = { page, nav, params: m.slice(1).map(decodeURIComponent) }; break; }
  }
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', match && a.dataset.nav === match.nav);
  document.getElementById('nav').hidden = path === '/login';
  main.replaceChildren();
  if (!match) {
    main.append(h('div', { class: 'panel' }, h('h1', {}, 'Not found'), h('p', {}, 'No console page at ', h('code', {}, path), '. ', h('a', { href: '#/' }, 'Back to the overview'))));
    return;
  }
  document.title = 'edgefleet · ' + (match.nav || 'login');
  const view = match.page(main, { params: match.params, query }) || {};
  current = { refresh: view.refresh, generation };
  if (view.refresh) poll(generation);
}

// poll refreshes the current page, then schedules the next refresh; a page replaced meanwhile
// (generation changed) stops its chain. Hidden tabs skip refreshes but keep the chain alive.
async function poll(gen) {
  if (gen !== generation) return;
  const live = document.getElementById('live');
  if (!document.hidden) {
    try {
      await current.refresh();
      if (gen !== generation) return;
      live.className = 'live ok';
      live.title = 'Updated ' + new Date().toLocaleTimeString(undefined, { hour12: false });
      if (document.getElementById('banner').dataset.poll) banner('');
    } catch (e) {
      if (gen !== generation) return;
      live.className = 'live stale';
      if (!(e instanceof APIError && e.status === 401)) {
        banner('Could not refresh: ' + e.message);
        document.getElementById('banner').dataset.poll = '1';
      }
    }
  }
  timer = setTimeout(() => poll(gen), POLL_MS);
}

// refreshNow is for pages after an action: show its effect without waiting for the next tick.
export function refreshNow() {
  clearTimeout(timer);
  poll(generation);
}

onUnauthorized(() => {
  // The session expired or was ended: the CSRF cookie is stale too. Go to the login page.
  document.cookie = 'ef_csrf=; Max-Age=0; Path=/; SameSite=Strict';
  if (parseHash().path !== '/login') {
    sessionStorage.setItem('ef_after_login', location.hash);
    location.hash = '#/login';
  }
});

function login(root) {
  const token = h('textarea', { id: 'token', name: 'token', autocomplete: 'off', spellcheck: 'false', placeholder: 'efa_…', required: true });
  const err = h('div', { class: 'apierror', hidden: true });
  const form = h('form', { class: 'panel login', id: 'login-form' },
    h('h1', {}, 'Log in to edgefleet'),
    h('p', { class: 'muted' }, 'Paste an API token. The admin token is in DATA/admin.token on the control plane (or EDGEFLEET_ADMIN_TOKEN). The console keeps only a session cookie; the token is not stored in the browser.'),
    h('label', {}, 'API token', token),
    err,
    h('div', { class: 'actions' }, h('button', { type: 'submit', id: 'login-submit' }, 'Log in')));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    err.hidden = true;
    try {
      await api('POST', '/session', { token: token.value.trim() });
      token.value = '';
      const next = sessionStorage.getItem('ef_after_login') || '#/';
      sessionStorage.removeItem('ef_after_login');
      await whoami();
      location.hash = next === '#/login' ? '#/' : next;
    } catch (e) {
      err.textContent = e.status === 401 ? 'That token was not accepted: ' + e.message : e.message;
      err.hidden = false;
    }
  });
  root.append(form);
  token.focus();
}

async function whoami() {
  const who = document.getElementById('principal');
  const out = document.getElementById('logout');
  if (!hasSession()) { who.textContent = ''; out.hidden = true; delete document.body.dataset.role; return; }
  try {
    const me = await api('GET', '/session');
    who.textContent = me.principal + (me.role && me.role !== me.principal ? ' (' + me.role + ')' : '');
    // console.css hides what the role may not do (.needs-operator, .needs-admin); the server
    // enforces it either way.
    document.body.dataset.role = me.role || '';
    out.hidden = false;
  } catch { /* 401 handled by onUnauthorized */ }
}

document.getElementById('logout').addEventListener('click', async () => {
  try { await api('POST', '/session/logout'); } catch { /* the cookies are cleared either way */ }
  document.cookie = 'ef_csrf=; Max-Age=0; Path=/; SameSite=Strict';
  document.getElementById('principal').textContent = '';
  document.getElementById('logout').hidden = true;
  delete document.body.dataset.role;
  location.hash = '#/login';
});

window.addEventListener('hashchange', route);
whoami();
route();
