// Key rings, instance policies, the audit log (GET /api/v2/x-keyward/audit) and health.

import { api, plain } from './api.js';
import { h, field, select, table, kv, say, showError, confirmDialog, fmtTime } from './dom.js';

function title(text) {
  return h('h2', { tabindex: '-1', class: 'view-title' }, text);
}

export async function ringsView(root, ctx) {
  const body = h('div', { id: 'rings-table' });
  const id = h('input', { required: true, pattern: '[A-Za-z0-9_-]{2,100}', placeholder: 'e.g. payments' });
  const load = async () => {
    body.textContent = 'Loading…';
    try {
      const r = await api('GET', '/api/v2/key_rings', { query: { limit: 5000 } });
      body.textContent = '';
      body.append(table('Key rings', ['Id', 'Created', 'Created by', ''], (r.body.resources || []).map((k) => [
        h('code', {}, k.id), fmtTime(k.creationDate), k.createdBy,
        k.id === 'default' || !ctx.role.manager ? '' : h('button', { type: 'button', class: 'danger', dataset: { ring: k.id }, 'aria-label': `Delete key ring ${k.id}`, onclick: async () => {
          if (!(await confirmDialog(`Delete the key ring ${k.id}? It must hold no keys.`))) return;
          try { await api('DELETE', `/api/v2/key_rings/${encodeURIComponent(k.id)}`); say(`Deleted key ring ${k.id}`); load(); } catch (e) { showError(e); }
        } }, 'Delete'),
      ])));
    } catch (e) { body.textContent = ''; showError(e); }
  };
  const form = h('form', {}, field('ring-id', 'New key ring id', id),
    h('div', { class: 'row' }, h('button', { type: 'submit', class: 'primary', id: 'ring-create' }, 'Create key ring')));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try { await api('POST', `/api/v2/key_rings/${encodeURIComponent(id.value.trim())}`); say(`Created key ring ${id.value.trim()}`); id.value = ''; load(); } catch (e) { showError(e); }
  });
  root.append(h('div', { class: 'card' }, title('Key rings'), body), h('div', { class: 'card' }, form));
  await load();
}

export async function policiesView(root) {
  const body = h('div', { id: 'policies-table' });
  root.append(h('div', { class: 'card' }, title('Instance policies'),
    h('p', { class: 'muted' }, 'Policies that apply to every key of the instance (Manager role).'), body));
  try {
    const r = await api('GET', '/api/v2/instance/policies');
    const rows = (r.body.resources || []).map((p) => [p.policy_type, p.policy_data && p.policy_data.enabled ? 'enabled' : 'disabled',
      h('code', {}, JSON.stringify((p.policy_data && p.policy_data.attributes) || {})), fmtTime(p.updatedAt || p.creationDate)]);
    body.append(rows.length ? table('Instance policies', ['Policy', 'State', 'Attributes', 'Updated'], rows)
      : h('p', {}, 'No instance policy is set.'));
  } catch (e) { showError(e); }
}

const audit = { action: '', keyId: '', outcome: '', since: '', until: '', offset: 0, limit: 50 };

export async function auditView(root) {
  const action = h('input', { value: audit.action, placeholder: 'kms.secrets.create', list: 'audit-actions' });
  const actions = h('datalist', { id: 'audit-actions' }, ['create', 'importtoken.create', 'importtoken.get', 'wrap', 'unwrap', 'rewrap', 'rotate', 'setkeyfordeletion', 'unsetkeyfordeletion', 'delete', 'restore', 'disable', 'enable', 'purge']
    .map((a) => h('option', { value: `kms.secrets.${a}` })));
  const keyId = h('input', { value: audit.keyId, placeholder: 'a key id (UUID)' });
  const outcome = select([['', 'Any'], ['attempt', 'attempt'], ['success', 'success'], ['failure', 'failure']], audit.outcome);
  const since = h('input', { type: 'datetime-local', value: audit.since, step: '1' });
  const until = h('input', { type: 'datetime-local', value: audit.until, step: '1' });
  const body = h('div', { id: 'audit-body' });
  const pageText = h('span', { class: 'muted', id: 'audit-page', 'aria-live': 'polite' });
  const prev = h('button', { type: 'button', id: 'audit-prev' }, 'Newer');
  const next = h('button', { type: 'button', id: 'audit-next' }, 'Older');
  const iso = (v) => (v ? new Date(v).toISOString().replace(/\.\d+Z$/, 'Z') : undefined);
  const load = async () => {
    body.textContent = 'Loading…';
    try {
      const r = await api('GET', '/api/v2/x-keyward/audit', { query: {
        action: audit.action, keyId: audit.keyId, outcome: audit.outcome, since: iso(audit.since), until: iso(audit.until),
        limit: audit.limit, offset: audit.offset,
      } });
      const recs = r.body.resources || [];
      body.textContent = '';
      body.append(table('Audit records, newest first', ['Time', 'Action', 'Outcome', 'Key', 'Principal', 'Reason', 'Source'], recs.map((x) => [
        fmtTime(x.time), x.action, x.outcome, x.keyId ? h('a', { href: `#/keys/${x.keyId}` }, x.keyId) : '—', x.principal, x.reason || '', x.source || '',
      ]), 'audit-table'));
      pageText.textContent = recs.length ? `records ${audit.offset + 1}–${audit.offset + recs.length}` : 'no records match';
      prev.disabled = audit.offset === 0;
      next.disabled = recs.length < audit.limit;
    } catch (e) { body.textContent = ''; showError(e); }
  };
  const form = h('form', { class: 'filters', id: 'audit-filters', role: 'search' },
    field('audit-action', 'Action', action), actions, field('audit-key', 'Key id', keyId), field('audit-outcome', 'Outcome', outcome),
    field('audit-since', 'Since (local time)', since), field('audit-until', 'Until (local time)', until),
    h('div', {}, h('button', { type: 'submit', class: 'primary', id: 'audit-apply' }, 'Apply')));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    Object.assign(audit, { action: action.value.trim(), keyId: keyId.value.trim(), outcome: outcome.value, since: since.value, until: until.value, offset: 0 });
    load();
  });
  prev.addEventListener('click', () => { audit.offset = Math.max(0, audit.offset - audit.limit); load(); });
  next.addEventListener('click', () => { audit.offset += audit.limit; load(); });
  root.append(h('div', { class: 'card' }, title('Audit log'),
    h('p', { class: 'muted' }, 'The database audit sink of this instance (Manager role; the server runs with --audit-sink database).'),
    form, h('div', { class: 'row' }), body, h('div', { class: 'pager' }, prev, next, pageText)));
  await load();
}

/** Prometheus text: sample name with labels → value. */
function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m) out.push({ name: m[1], labels: m[2] || '', value: Number(m[3]) });
  }
  return out;
}

function sum(samples, name) {
  return samples.filter((s) => s.name === name).reduce((a, s) => a + s.value, 0);
}

let previous = null; // the last /metrics sample, for rates

export async function healthView(root, ctx) {
  const body = h('div', { id: 'health-body' });
  const refresh = h('button', { type: 'button', id: 'health-refresh' }, 'Refresh');
  root.append(h('div', { class: 'card' }, title('Health'), body, h('div', { class: 'row' }, refresh)));
  const load = async () => {
    try {
      const [hz, rz, mz] = await Promise.all([plain('/healthz'), plain('/readyz'), plain('/metrics')]);
      const now = Date.now();
      const samples = mz.status === 200 ? parseMetrics(mz.text) : [];
      const requests = sum(samples, 'keyward_http_requests_total');
      const errors = samples.filter((s) => s.name === 'keyward_http_requests_total' && /status="5/.test(s.labels)).reduce((a, s) => a + s.value, 0);
      const crypto = sum(samples, 'keyward_crypto_operations_total');
      let rate = 'sampling… (refresh in a few seconds)';
      if (previous && now > previous.at) {
        const secs = (now - previous.at) / 1000;
        rate = `${((requests - previous.requests) / secs).toFixed(2)} requests/s, ${((crypto - previous.crypto) / secs).toFixed(2)} crypto operations/s over ${secs.toFixed(0)} s`;
      }
      previous = { at: now, requests, crypto };
      const sealed = samples.find((s) => s.name === 'keyward_sealed');
      body.textContent = '';
      body.append(h('div', { class: 'grid2' },
        h('div', {}, h('h3', {}, 'Status'), kv([
          ['Alive (/healthz)', h('span', { id: 'health-live' }, hz.status === 200 ? 'ok' : `${hz.status} ${hz.text}`)],
          ['Ready (/readyz)', rz.status === 200 ? 'ready' : `${rz.status} ${rz.text}`],
          ['Sealed', h('span', { id: 'health-sealed' }, sealed ? (sealed.value ? 'SEALED' : 'unsealed') : (hz.status === 503 ? 'SEALED' : 'unknown'))],
          ['Import-token pool', h('span', { id: 'health-pool' }, `${sum(samples, 'keyward_import_token_pool_depth')} keypairs ready`)],
        ])),
        h('div', {}, h('h3', {}, 'Traffic (/metrics)'), kv([
          ['Requests served', String(requests)], ['5xx responses', String(errors)], ['Crypto operations', String(crypto)],
          ['Rates', h('span', { id: 'health-rate' }, rate)],
          ['Resident memory', `${(sum(samples, 'process_resident_memory_bytes') / 1048576).toFixed(1)} MiB`],
        ]))));
      if (mz.status !== 200) body.append(h('p', { class: 'muted' }, '/metrics is served on a separate listener (--metrics-listen): traffic figures are not available here.'));
    } catch (e) { showError(e); }
  };
  refresh.addEventListener('click', load);
  await load();
  void ctx;
}
