// The control plane's REST API as the console uses it: same-origin fetches that carry the
// HttpOnly session cookie, plus the CSRF token (read from its non-HttpOnly cookie) on every
// mutating call, as the server requires.

export class APIError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;
    this.code = code || '';
    this.body = body;
  }
}

export function cookie(name) {
  for (const part of document.cookie.split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === name) return decodeURIComponent(v.join('='));
  }
  return '';
}

// The session cookie itself is HttpOnly; the CSRF cookie is set beside it, so its presence tells
// whether a session probably exists without a request that would 401.
export const hasSession = () => cookie('ef_csrf') !== '';

let unauthorized = () => {};
export function onUnauthorized(fn) { unauthorized = fn; }

export async function api(method, path, body) {
  const headers = {};
  const opts = { method, headers, credentials: 'same-origin', cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  if (method !== 'GET') headers['X-CSRF-Token'] = cookie('ef_csrf');
  const res = await fetch(path.startsWith('/') ? '/api/v1' + path : path, opts);
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!res.ok) {
    const msg = (data && data.error) || text || res.statusText;
    if (res.status === 401) unauthorized(msg);
    throw new APIError(res.status, data && data.code, msg, data);
  }
  return data;
}

export const get = (path) => api('GET', path);
export const post = (path, body) => api('POST', path, body);
export const put = (path, body) => api('PUT', path, body);

// Bundles are referred to by id everywhere; this cache maps ids to name@version for display.
let bundleCache = { at: 0, byId: new Map(), list: [] };
export async function bundles(maxAgeMs = 5000) {
  if (Date.now() - bundleCache.at > maxAgeMs) {
    const r = await get('/bundles');
    const byId = new Map();
    for (const b of r.bundles) byId.set(b.id, b);
    bundleCache = { at: Date.now(), byId, list: r.bundles };
  }
  return bundleCache;
}
export function refOf(id) {
  if (!id) return '';
  const b = bundleCache.byId.get(id);
  if (!b) return id.slice(0, 12);
  return b.name + '@' + b.version + (b.variant ? ':' + b.variant : '');
}
