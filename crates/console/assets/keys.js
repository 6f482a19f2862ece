// Keys: the list (server-side paging, filters, sorting and search through the query
// parameters of GET /api/v2/keys, so it stays fast with 100,000 keys), creation, and the
// detail view with its lifecycle actions.

import { api, envelope, KEY_TYPE, POLICY_TYPE } from './api.js';
import { h, field, select, table, kv, say, showError, confirmDialog, stateBadge, fmtTime } from './dom.js';

const PAGE_SIZES = [['25', '25'], ['50', '50'], ['100', '100'], ['200', '200']];
const list = { offset: 0, limit: 25, search: '', state: '', type: '', sort: '-creationDate' };

export async function keysView(root, ctx) {
  const search = h('input', { type: 'search', value: list.search, placeholder: 'name, alias or id' });
  const state = select([['', 'Any usable state (0,1,2,3)'], ['1', 'Active'], ['2', 'Suspended'], ['3', 'Deactivated'], ['5', 'Destroyed'], ['0,1,2,3,5', 'All, destroyed too']], list.state);
  const type = select([['', 'Root and standard'], ['false', 'Root keys'], ['true', 'Standard keys']], list.type);
  const sort = select([['-creationDate', 'Newest first'], ['creationDate', 'Oldest first'], ['id', 'Id'], ['state', 'State'], ['-lastUpdateDate', 'Recently updated'], ['extractable', 'Root first']], list.sort);
  const size = select(PAGE_SIZES, String(list.limit));
  const body = h('div', { id: 'keys-table' });
  const pagerText = h('span', { id: 'keys-page', class: 'muted', 'aria-live': 'polite' });
  const prev = h('button', { type: 'button', id: 'keys-prev' }, 'Previous page');
  const next = h('button', { type: 'button', id: 'keys-next' }, 'Next page');

  const filters = h('form', { class: 'filters', id: 'keys-filters', role: 'search' },
    field('keys-search', 'Search', search), field('keys-state', 'State', state), field('keys-type', 'Type', type),
    field('keys-sort', 'Sort', sort), field('keys-size', 'Page size', size),
    h('div', {}, h('button', { type: 'submit', class: 'primary', id: 'keys-apply' }, 'Apply')));

  async function load() {
    body.textContent = 'Loading…';
    try {
      const r = await api('GET', '/api/v2/keys', { query: {
        limit: list.limit, offset: list.offset, totalCount: 'true', search: list.search || undefined,
        state: list.state || undefined, extractable: list.type || undefined, sort: list.sort,
      } });
      const keys = r.body.resources || [];
      const total = r.body.metadata.totalCount ?? keys.length;
      body.textContent = '';
      body.append(table('Keys', ['Name', 'State', 'Type', 'Id', 'Created', 'Key ring'], keys.map((k) => [
        h('a', { href: `#/keys/${k.id}`, dataset: { keyId: k.id } }, k.name || k.id),
        stateBadge(k.state), k.extractable ? 'standard' : (k.imported ? 'root (imported)' : 'root'),
        h('code', {}, k.id), fmtTime(k.creationDate), k.keyRingID,
      ]), 'keys-list'));
      const from = total === 0 ? 0 : list.offset + 1;
      pagerText.textContent = `${from}–${list.offset + keys.length} of ${total}`;
      prev.disabled = list.offset === 0;
      next.disabled = list.offset + keys.length >= total;
    } catch (e) {
      body.textContent = '';
      showError(e);
    }
  }
  filters.addEventListener('submit', (ev) => {
    ev.preventDefault();
    Object.assign(list, { search: search.value.trim(), state: state.value, type: type.value, sort: sort.value, limit: Number(size.value), offset: 0 });
    load();
  });
  prev.addEventListener('click', () => { list.offset = Math.max(0, list.offset - list.limit); load(); });
  next.addEventListener('click', () => { list.offset += list.limit; load(); });

  root.append(
    h('div', { class: 'card' }, h('h2', { tabindex: '-1', class: 'view-title' }, 'Keys'), filters,
      h('div', { class: 'row' }), body, h('div', { class: 'pager' }, prev, next, pagerText)),
    createCard(ctx));
  await load();
}

function createCard(ctx) {
  const name = h('input', { required: true, maxlength: '90', placeholder: 'e.g. orders-root' });
  const type = select([['root', 'Root key (material never leaves Keyward)'], ['standard', 'Standard key']], 'root');
  const desc = h('input', { maxlength: '240' });
  const ring = h('input', { placeholder: 'default', pattern: '[A-Za-z0-9_-]{2,100}' });
  const form = h('form', { id: 'create-form' },
    h('div', { class: 'filters' }, field('create-name', 'Name', name), field('create-type', 'Type', type),
      field('create-desc', 'Description (optional)', desc), field('create-ring', 'Key ring (optional)', ring)),
    h('div', { class: 'row' }, h('button', { type: 'submit', class: 'primary', id: 'create-btn' }, 'Create key')));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const res = { type: KEY_TYPE, name: name.value.trim(), extractable: type.value === 'standard' };
    if (desc.value.trim()) res.description = desc.value.trim();
    try {
      const headers = ring.value.trim() ? { 'x-kms-key-ring': ring.value.trim() } : {};
      const r = await api('POST', '/api/v2/keys', { body: envelope(KEY_TYPE, [res]), headers: { ...headers, prefer: 'return=representation' } });
      const k = r.body.resources[0];
      say(`Created ${type.value} key ${k.name} (${k.id})`);
      ctx.go(`#/keys/${k.id}`);
    } catch (e) { showError(e); }
  });
  return h('div', { class: 'card' }, h('h2', {}, 'Create a key'), form);
}

/** Keyward's key usage (`?usage=true`): the last wrap, unwrap and rewrap, and by whom. */
function usageText(u) {
  if (!u || !u.lastUsedDate) return 'never (or not yet recorded)';
  const ops = ['wrap', 'unwrap', 'rewrap'].filter((op) => u[op])
    .map((op) => `${op} ${fmtTime(u[op].lastUsedDate)} by ${u[op].lastUsedBy}`);
  return `${fmtTime(u.lastUsedDate)} (${ops.join('; ')})`;
}

async function optional(p) {
  try { return { ok: (await p).body }; } catch (e) { return { err: e }; }
}

export async function keyView(root, ctx, id) {
  let meta;
  try {
    meta = (await api('GET', `/api/v2/keys/${encodeURIComponent(id)}/metadata`, { query: { usage: 'true' } })).body.resources[0];
  } catch (e) {
    showError(e);
    root.append(h('p', {}, h('a', { href: '#/keys' }, 'Back to keys')));
    return;
  }
  const [versions, policies, regs] = await Promise.all([
    optional(api('GET', `/api/v2/keys/${meta.id}/versions`, { query: { totalCount: 'true', allKeyStates: 'true' } })),
    optional(api('GET', `/api/v2/keys/${meta.id}/policies`)),
    optional(api('GET', `/api/v2/keys/${meta.id}/registrations`)),
  ]);
  const dual = meta.dualAuthDelete || {};
  const dualText = !dual.enabled ? 'not required'
    : dual.keySetForDeletion ? `required: authorised for deletion until ${fmtTime(dual.authExpiration)} (a second user may now delete it)`
      : 'required: not yet authorised (schedule deletion first, then a second user deletes)';
  const refused = (r) => h('span', { class: 'muted' }, `not shown: ${r.err.message}`);

  const details = h('div', { class: 'card', id: 'key-detail', dataset: { keyId: meta.id, state: String(meta.state) } },
    h('h2', { tabindex: '-1', class: 'view-title', id: 'key-title' }, meta.name || meta.id),
    kv([
      ['Id', h('code', {}, meta.id)], ['State', h('span', { id: 'key-state' }, stateBadge(meta.state))],
      ['Type', meta.extractable ? 'standard' : 'root'], ['Imported', meta.imported ? 'yes' : 'no'],
      ['Key ring', meta.keyRingID], ['Aliases', (meta.aliases || []).join(', ') || '—'],
      ['Description', meta.description], ['Created', `${fmtTime(meta.creationDate)} by ${meta.createdBy}`],
      ['Last rotated', fmtTime(meta.lastRotateDate)], ['Current version', h('code', {}, meta.keyVersion && meta.keyVersion.id)],
      ['Dual authorisation', h('span', { id: 'dual-auth' }, dualText)],
      ['Last used', h('span', { id: 'key-usage' }, usageText(meta.usage))],
      ['Deleted', meta.deleted ? `${fmtTime(meta.deletionDate)} by ${meta.deletedBy}` : 'no'],
      ['CRN', h('code', {}, meta.crn)],
    ]),
    actions(meta, ctx));

  const vlist = versions.ok
    ? table('Versions', ['Version', 'Created'], (versions.ok.resources || []).map((v) => [h('code', {}, v.id), fmtTime(v.creationDate)]), 'key-versions')
    : refused(versions);
  const plist = policies.ok
    ? table('Policies', ['Policy', 'Setting'], (policies.ok.resources || []).flatMap((p) => Object.entries(p)
      .filter(([k]) => !['type', 'createdBy', 'creationDate', 'updatedBy', 'lastUpdateDate', 'crn'].includes(k))
      .map(([k, v]) => [k, JSON.stringify(v)])), 'key-policies')
    : refused(policies);
  const rlist = regs.ok
    ? ((regs.ok.resources || []).length
      ? table('Registrations', ['Resource CRN', 'Prevent deletion', 'Created'], regs.ok.resources.map((r) => [h('code', {}, r.resourceCrn), r.preventKeyDeletion ? 'yes' : 'no', fmtTime(r.creationDate)]))
      : h('p', { class: 'muted' }, 'No registrations.'))
    : refused(regs);
  root.append(h('p', {}, h('a', { href: '#/keys' }, '← Keys')), details,
    h('div', { class: 'grid2' },
      h('div', { class: 'card' }, h('h3', {}, `Versions (${versions.ok ? versions.ok.metadata.totalCount ?? '' : '?'})`), vlist),
      h('div', { class: 'card' }, h('h3', {}, 'Policies'), plist),
      h('div', { class: 'card' }, h('h3', {}, 'Registrations'), rlist)));
}

/** The buttons the key's state and the caller's role allow. */
function actions(k, ctx) {
  const id = k.id;
  const manager = ctx.role.manager;
  const act = (name) => () => api('POST', `/api/v2/keys/${id}/actions/${name}`, { body: {} });
  const defs = [];
  if (!k.deleted) {
    if (!k.extractable && !k.imported) defs.push(['rotate', 'Rotate', act('rotate'), null]);
    if (manager && k.state === 1) defs.push(['disable', 'Disable', act('disable'), 'Disable this key? Wrap and unwrap stop working until it is enabled.']);
    if (manager && k.state === 2) defs.push(['enable', 'Enable', act('enable'), null]);
    if (k.dualAuthDelete && k.dualAuthDelete.enabled) {
      if (!k.dualAuthDelete.keySetForDeletion) defs.push(['schedule', 'Schedule deletion (first authorisation)', act('setKeyForDeletion'), 'Authorise the deletion of this key? A second user must then delete it.']);
      else defs.push(['cancel', 'Cancel scheduled deletion', act('unsetKeyForDeletion'), null]);
    } else if (manager) {
      defs.push(['dual-auth', 'Require dual authorisation for deletion', () => api('PUT', `/api/v2/keys/${id}/policies`, {
        query: { policy: 'dualAuthDelete' }, body: envelope(POLICY_TYPE, [{ type: POLICY_TYPE, dualAuthDelete: { enabled: true } }]),
      }), 'Require two users to delete this key? This cannot be turned off.']);
    }
    if (manager) defs.push(['delete', 'Delete', () => api('DELETE', `/api/v2/keys/${id}`), 'Delete this key? Data wrapped with it cannot be unwrapped.']);
  } else {
    if (manager) defs.push(['restore', 'Restore', () => api('POST', `/api/v2/keys/${id}/restore`, { body: {} }), null]);
    defs.push(['purge', 'Purge (KeyPurge role)', () => api('DELETE', `/api/v2/keys/${id}/purge`), 'Purge this key for good? This cannot be undone.']);
  }
  const row = h('div', { class: 'row', id: 'key-actions', role: 'group', 'aria-label': 'Key actions' });
  for (const [name, label, run, question] of defs) {
    row.append(h('button', {
      type: 'button', dataset: { action: name }, class: question ? 'danger' : '',
      onclick: async () => {
        if (question && !(await confirmDialog(question))) return;
        try {
          await run();
          say(`${label}: done`);
          ctx.refresh();
        } catch (e) { showError(e); }
      },
    }, label));
  }
  if (!manager) row.append(h('span', { class: 'muted' }, 'Manager-only actions are hidden for this API key.'));
  return row;
}
