// Keys & trust: the public keys this control plane signs with and checks against, and the trust
// document it publishes to devices (GET /api/v1/trust; public facts only). Operators compare these
// fingerprints with what a device or an enrollment token pins.
import { get } from '../api.js';
import { h, fill, table, badge, when, pageHead } from '../ui.js';

// fp shows a fingerprint in groups of eight hex digits, whole and selectable.
const fp = (id) => h('code', { class: 'fingerprint', title: id }, String(id || '').replace(/(.{8})(?=.)/g, '$1 '));

const pem = (k) => (k.public_key_pem ? h('details', {}, h('summary', {}, 'public key'), h('pre', { class: 'json' }, k.public_key_pem)) : '—');

export function keys(root) {
  const control = h('div', { id: 'trust-control' });
  const doc = h('div', { id: 'trust-document' });
  const release = h('div', { id: 'trust-release' });
  const ctrlKeys = h('div', { id: 'trust-control-keys' });
  const recipients = h('div', { id: 'trust-recipients' });
  root.append(pageHead('Keys & trust', 'Public keys and fingerprints (hex SHA-256 of the key). Private keys never leave the control plane.'),
    h('div', { class: 'grid two' },
      h('section', { class: 'panel' }, h('h2', {}, 'Control key'), h('p', { class: 'muted small' }, 'Signs every desired state sent to devices.'), control),
      h('section', { class: 'panel' }, h('h2', {}, 'Trust document'), doc)),
    h('section', { class: 'panel' }, h('h2', {}, 'Release keys'), h('p', { class: 'muted small' }, 'Bundles must be signed by one of these to be accepted by the registry and by devices.'), release),
    h('div', { class: 'grid two' },
      h('section', { class: 'panel' }, h('h2', {}, 'Control keys devices accept'), ctrlKeys),
      h('section', { class: 'panel' }, h('h2', {}, 'Encryption recipients'), h('p', { class: 'muted small' }, 'age public keys: what bundles and captured samples are encrypted to.'), recipients)));
  return {
    async refresh() {
      const t = await get('/trust');
      const revoked = new Set((t.document && t.document.revoked) || []);
      fill(control, t.control_key, () => h('dl', { class: 'kv' },
        h('dt', {}, 'Fingerprint'), h('dd', { id: 'trust-control-fp' }, fp(t.control_key.id)),
        h('dt', {}, 'Public key'), h('dd', {}, pem(t.control_key))));
      fill(doc, [t.source, t.document], () => (t.document
        ? h('dl', { class: 'kv' },
          h('dt', {}, 'Source'), h('dd', {}, badge('completed', 'trust document'), ' (--trust-doc)'),
          h('dt', {}, 'Version'), h('dd', { id: 'trust-version' }, String(t.document.version)),
          h('dt', {}, 'Issued'), h('dd', {}, when(t.document.issued_at)),
          h('dt', {}, 'Root keys'), h('dd', {}, (t.document.root || []).map((id) => h('div', {}, fp(id)))),
          h('dt', {}, 'Revoked keys'), h('dd', {}, (t.document.revoked || []).length ? t.document.revoked.map((id) => h('div', {}, fp(id))) : 'none'),
          h('dt', {}, 'Envelope SHA-256'), h('dd', {}, fp(t.document.sha256)))
        : h('dl', { class: 'kv' },
          h('dt', {}, 'Source'), h('dd', { id: 'trust-version' }, badge('', 'pinned'), ' keys given by --trust; no trust document is published'),
          h('dt', {}, 'Version'), h('dd', {}, '—'))));
      const keyTable = (rows, empty) => table([
        { title: 'Fingerprint', cell: (k) => fp(k.id) },
        { title: 'Status', cell: (k) => (revoked.has(k.id) || k.revoked ? badge('failed', 'revoked') : badge('completed', 'trusted')) },
        { title: 'Public key', cell: (k) => pem(k) },
      ], rows, empty);
      fill(release, t.release_keys, () => keyTable(t.release_keys || [], 'No release key: the registry refuses every bundle. Start the control plane with --trust or --trust-doc.'));
      fill(recipients, [t.bundle_recipient, t.dataset_recipient], () => h('dl', { class: 'kv' },
        h('dt', {}, 'Bundles'), h('dd', { id: 'trust-bundle-recipient' }, t.bundle_recipient ? [h('code', { class: 'fingerprint' }, t.bundle_recipient), h('div', { class: 'muted small' }, 'bundle build --encrypt-to takes this')] : '—'),
        h('dt', {}, 'Captured samples'), h('dd', {}, t.dataset_recipient ? h('code', { class: 'fingerprint' }, t.dataset_recipient) : '—')));
      fill(ctrlKeys, t.control_keys, () => keyTable(t.control_keys || [], 'None listed.'));
    },
  };
}
