// Secure import (docs/import-tokens.md): the material is encrypted in this page with WebCrypto
// (RSA-OAEP SHA-256 to the import token's public key; the token's nonce under AES-GCM keyed
// by the material, a random 12-byte IV) and only the ciphertexts are sent. The material never
// leaves the page in the clear, is never stored, and its buffer is zeroed after use.

import { api, envelope, KEY_TYPE } from './api.js';
import { h, field, kv, say, showError, fmtTime } from './dom.js';

const b64 = (bytes) => {
  let s = '';
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
  return btoa(s);
};
const unb64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));

function hexToBytes(hex) {
  const clean = hex.replace(/\s+/g, '');
  if (!/^([0-9a-fA-F]{2})+$/.test(clean)) throw new Error('The key material must be hexadecimal (two digits per byte)');
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i += 1) out[i] = parseInt(clean.slice(i * 2, i * 2 + 2), 16);
  if (![16, 24, 32].includes(out.length)) {
    out.fill(0);
    throw new Error(`The key material must be 16, 24 or 32 bytes (this is ${clean.length / 2})`);
  }
  return out;
}

/** The SubjectPublicKeyInfo DER of the token's `payload` (base64 of a PEM document). */
function spkiOf(payload) {
  const pem = new TextDecoder().decode(unb64(payload));
  const body = pem.replace(/-----(BEGIN|END) PUBLIC KEY-----/g, '').replace(/\s+/g, '');
  return unb64(body);
}

export async function importView(root, ctx) {
  const steps = h('ol', { class: 'steps', id: 'imp-steps', 'aria-live': 'polite' });
  const step = (text, cls = 'done') => steps.append(h('li', { class: cls }, text));
  let token = null; // the retrieved token (public key, nonce, metadata)
  const tokenInfo = h('div', { id: 'imp-token-info' }, h('p', { class: 'muted' }, 'No token retrieved yet.'));

  const expiration = h('input', { type: 'number', min: '300', max: '86400', value: '600' });
  const retrievals = h('input', { type: 'number', min: '1', max: '500', value: '1' });
  const showToken = (t) => {
    tokenInfo.textContent = '';
    tokenInfo.append(kv([
      ['Created', fmtTime(t.creationDate)], ['Expires', h('span', { id: 'imp-expires' }, fmtTime(t.expirationDate))],
      ['Retrievals left', h('span', { id: 'imp-remaining' }, String(t.remainingRetrievals ?? '—'))],
      ['Public key', t.payload ? `RSA, ${spkiOf(t.payload).length} bytes of SubjectPublicKeyInfo` : 'not retrieved'],
    ]));
  };
  const fetchToken = async () => {
    const t = (await api('GET', '/api/v2/import_token')).body;
    token = t;
    showToken(t);
    step(`Retrieved the import token: public key and nonce (${t.remainingRetrievals} retrievals left, expires ${fmtTime(t.expirationDate)})`);
  };
  const createBtn = h('button', { type: 'button', id: 'imp-create-token', class: 'primary', onclick: async () => {
    try {
      await api('POST', '/api/v2/import_token', { body: { expiration: Number(expiration.value), maxAllowedRetrievals: Number(retrievals.value) } });
      step('Created a new import token (it replaces the instance\'s previous one)');
      await fetchToken();
      say('Import token ready');
    } catch (e) { step(`Token: ${e.message}`, 'failed'); showError(e); }
  } }, 'Create a token and retrieve it');
  const fetchBtn = h('button', { type: 'button', id: 'imp-fetch-token', onclick: async () => {
    try { await fetchToken(); say('Import token retrieved'); } catch (e) { step(`Token: ${e.message}`, 'failed'); showError(e); }
  } }, 'Retrieve the current token');

  const material = h('input', { type: 'password', autocomplete: 'off', spellcheck: 'false', placeholder: '64 hex digits for a 256-bit key' });
  const gen = h('button', { type: 'button', id: 'imp-generate', onclick: () => {
    const bytes = crypto.getRandomValues(new Uint8Array(32));
    material.value = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
    bytes.fill(0);
    step('Generated 32 random bytes in the browser (crypto.getRandomValues)');
  } }, 'Generate 32 random bytes');
  const name = h('input', { required: true, maxlength: '90', placeholder: 'e.g. imported-root' });
  const result = h('div', { id: 'imp-result' });

  const run = h('button', { type: 'button', id: 'imp-run', class: 'primary', onclick: async () => {
    result.textContent = '';
    let bytes = null;
    try {
      if (!token || !token.payload) throw new Error('Retrieve an import token first (step 1)');
      if (!name.value.trim()) throw new Error('Give the key a name');
      bytes = hexToBytes(material.value);
      const pub = await crypto.subtle.importKey('spki', spkiOf(token.payload), { name: 'RSA-OAEP', hash: 'SHA-256' }, false, ['encrypt']);
      const payload = await crypto.subtle.encrypt({ name: 'RSA-OAEP' }, pub, bytes);
      step(`Encrypted the ${bytes.length}-byte material with RSA-OAEP (SHA-256) to the token's public key`);
      const aes = await crypto.subtle.importKey('raw', bytes, { name: 'AES-GCM' }, false, ['encrypt']);
      const iv = crypto.getRandomValues(new Uint8Array(12));
      const encNonce = await crypto.subtle.encrypt({ name: 'AES-GCM', iv }, aes, unb64(token.nonce));
      step('Encrypted the token\'s nonce with AES-GCM under the material (random 12-byte IV)');
      bytes.fill(0);
      bytes = null;
      material.value = '';
      const res = {
        type: KEY_TYPE, name: name.value.trim(), extractable: false,
        payload: b64(payload), encryptedNonce: b64(encNonce), iv: b64(iv), encryptionAlgorithm: 'RSAES_OAEP_SHA_256',
      };
      const r = await api('POST', '/api/v2/keys', { body: envelope(KEY_TYPE, [res]), headers: { prefer: 'return=representation' } });
      const k = r.body.resources[0];
      step(`Uploaded only the ciphertexts: Keyward created root key ${k.id}`);
      result.append(h('p', { dataset: { keyId: k.id } }, 'Imported key: ', h('a', { href: `#/keys/${k.id}`, id: 'imp-key-link' }, `${k.name} (${k.id})`)));
      say(`Imported root key ${k.name}`);
    } catch (e) {
      step(`Import: ${e.message}`, 'failed');
      showError(e);
    } finally {
      if (bytes) bytes.fill(0);
    }
  } }, 'Encrypt in the browser and import');

  root.append(h('div', { class: 'card' },
    h('h2', { tabindex: '-1', class: 'view-title' }, 'Secure import of a root key'),
    h('p', { class: 'muted' }, 'The material is encrypted here, in the browser, with the import token\'s public key; Keyward receives only ciphertext.'),
    h('div', { class: 'grid2' },
      h('div', {}, h('h3', {}, '1. Import token'),
        h('div', { class: 'filters' }, field('imp-expiration', 'Expires after (seconds)', expiration), field('imp-retrievals', 'Retrievals allowed', retrievals)),
        h('div', { class: 'row' }, createBtn, fetchBtn), tokenInfo),
      h('div', {}, h('h3', {}, '2. Key material'),
        field('imp-material', 'Material (hex, 16, 24 or 32 bytes)', material), h('div', { class: 'row' }, gen),
        h('h3', {}, '3. Encrypt and import'), field('imp-name', 'Key name', name), h('div', { class: 'row' }, run))),
    h('h3', {}, 'Steps'), steps, result));
}
