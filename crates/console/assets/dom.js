// Small DOM helpers: elements are built with createElement and text nodes only (never
// innerHTML), so nothing the server returns can become markup or script.

/** h('tag', {attrs}, ...children): an element; `on*` attributes take listeners. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export const $ = (sel, root = document) => root.querySelector(sel);

/** A labelled form control. */
export function field(id, label, control) {
  control.id = id;
  return h('div', {}, h('label', { for: id }, label), control);
}

export function select(options, value) {
  const s = h('select');
  for (const [v, text] of options) s.append(h('option', { value: v, selected: v === value }, text));
  return s;
}

/** A table with a caption for screen readers. rows: arrays of cells (nodes or text). */
export function table(caption, headers, rows, id) {
  return h('div', { class: 'table-wrap' },
    h('table', { id },
      h('caption', { class: 'skip' }, caption),
      h('thead', {}, h('tr', {}, headers.map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, rows.map((r) => h('tr', {}, r.map((c) => h('td', {}, c)))))));
}

export function kv(pairs) {
  return h('dl', { class: 'kv' }, pairs.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v ?? '—')]));
}

export function say(msg) {
  const s = $('#status');
  s.textContent = '';
  // a fresh text node so screen readers announce a repeated message too
  s.append(document.createTextNode(msg));
  clearError();
}

export function showError(err) {
  const e = $('#error');
  e.textContent = describe(err);
  e.hidden = false;
  $('#status').textContent = '';
}

export function clearError() {
  const e = $('#error');
  e.hidden = true;
  e.textContent = '';
}

/** A readable sentence for an ApiError or any other error. */
export function describe(err) {
  if (err && err.status) {
    const code = err.code ? ` ${err.code}` : '';
    return `The server refused (${err.status}${code}): ${err.message}`;
  }
  return String((err && err.message) || err);
}

/** Asks for confirmation in a modal dialog; resolves true or false. */
export function confirmDialog(text) {
  const d = $('#confirm-dialog');
  $('#confirm-text').textContent = text;
  return new Promise((resolve) => {
    d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
    d.returnValue = '';
    d.showModal();
    $('#confirm-cancel').focus();
  });
}

export const STATES = { 0: 'Pre-activation', 1: 'Active', 2: 'Suspended', 3: 'Deactivated', 5: 'Destroyed' };

export function stateBadge(state) {
  return h('span', { class: `badge s${state}` }, STATES[state] ?? String(state));
}

export function fmtTime(s) {
  if (!s) return '—';
  const d = new Date(s);
  return Number.isNaN(d.getTime()) ? s : d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}
