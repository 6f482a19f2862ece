// The console's shell: sign-in, theme, hash routing, focus management.

import { current, signIn, signOut, recentInstances, api } from './api.js';
import { $, h, say, showError, clearError, describe } from './dom.js';
import { keysView, keyView } from './keys.js';
import { importView } from './importer.js';
import { ringsView, policiesView, auditView, healthView } from './panels.js';

const THEME = 'keyward.theme';
const ctx = { role: { manager: false }, go, refresh: () => route() };

function applyTheme(t) {
  if (t) document.documentElement.dataset.theme = t;
  else delete document.documentElement.dataset.theme;
  const dark = t ? t === 'dark' : matchMedia('(prefers-color-scheme: dark)').matches;
  $('#theme').setAttribute('aria-pressed', String(dark));
  $('#theme').textContent = dark ? 'Light theme' : 'Dark theme';
}

function go(hash) {
  if (location.hash === hash) route(); else location.hash = hash;
}

function fillInstances() {
  const dl = $('#instances');
  dl.textContent = '';
  for (const i of recentInstances()) dl.append(h('option', { value: i }));
  const [last] = recentInstances();
  if (last && !$('#instance').value) $('#instance').value = last;
}

function showSignIn() {
  $('#signin').hidden = false;
  $('#view').hidden = true;
  $('#nav').hidden = true;
  $('#signout').hidden = true;
  $('#whoami').textContent = '';
  fillInstances();
}

/** Whether the key has the Manager role here: a Manager-only read that changes nothing. */
async function probeRole() {
  try {
    await api('GET', '/api/v2/instance/policies');
    ctx.role.manager = true;
  } catch {
    ctx.role.manager = false;
  }
}

const VIEWS = [
  [/^#\/keys\/([^/]+)$/, (root, m) => keyView(root, ctx, decodeURIComponent(m[1])), 'nav-keys'],
  [/^#\/import$/, (root) => importView(root, ctx), 'nav-import'],
  [/^#\/rings$/, (root) => ringsView(root, ctx), 'nav-rings'],
  [/^#\/policies$/, (root) => policiesView(root, ctx), 'nav-policies'],
  [/^#\/audit$/, (root) => auditView(root, ctx), 'nav-audit'],
  [/^#\/health$/, (root) => healthView(root, ctx), 'nav-health'],
  [/^/, (root) => keysView(root, ctx), 'nav-keys'],
];

let routing = 0;
async function route() {
  const s = current();
  if (!s) { showSignIn(); return; }
  $('#signin').hidden = true;
  $('#nav').hidden = false;
  $('#signout').hidden = false;
  $('#whoami').textContent = `instance ${s.instance}${ctx.role.manager ? ' · Manager' : ''}`;
  const view = $('#view');
  const mine = ++routing;
  delete view.dataset.ready;
  const [, render, nav] = VIEWS.find(([re]) => re.test(location.hash));
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.id === nav) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  const root = h('div');
  view.textContent = '';
  view.append(root);
  view.hidden = false;
  await render(root, location.hash.match(VIEWS.find(([re]) => re.test(location.hash))[0]));
  if (mine !== routing) return;
  const t = view.querySelector('.view-title');
  if (t && document.activeElement === document.body) t.focus();
  view.dataset.ready = location.hash || '#/keys';
}

async function onSignIn(ev) {
  ev.preventDefault();
  const err = $('#signin-error');
  err.hidden = true;
  const apikey = $('#apikey');
  const btn = $('#signin-btn');
  btn.disabled = true;
  try {
    await signIn(apikey.value.trim(), $('#instance').value.trim().toLowerCase());
    apikey.value = '';
    await probeRole();
    say('Signed in');
    if (!location.hash || location.hash === '#') location.hash = '#/keys'; else await route();
  } catch (e) {
    err.textContent = `Sign-in failed: ${describe(e)}`;
    err.hidden = false;
    apikey.focus();
  } finally {
    btn.disabled = false;
  }
}

function onSignOut() {
  signOut();
  ctx.role.manager = false;
  $('#view').textContent = '';
  clearError();
  say('Signed out: the access token was cleared');
  history.replaceState(null, '', '#');
  showSignIn();
  $('#apikey').focus();
}

async function start() {
  applyTheme(sessionStorage.getItem(THEME));
  matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => applyTheme(sessionStorage.getItem(THEME)));
  $('#theme').addEventListener('click', () => {
    const dark = $('#theme').getAttribute('aria-pressed') === 'true';
    const t = dark ? 'light' : 'dark';
    sessionStorage.setItem(THEME, t);
    applyTheme(t);
  });
  $('#signin-form').addEventListener('submit', onSignIn);
  $('#signout').addEventListener('click', onSignOut);
  window.addEventListener('hashchange', () => { clearError(); route().catch(showError); });
  if (current()) await probeRole();
  await route();
  document.body.dataset.ready = 'true';
}

start().catch(showError);
