// The API client: the access token lives in memory and in sessionStorage (this tab only, gone
// when the tab closes), never in localStorage. Sign-out clears both.

const SESSION = 'keyward.session';
const RECENT = 'keyward.instances';
let session = null;

export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

export function current() {
  if (session) return session;
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION) || 'null');
    if (s && s.token && s.instance && s.expiresAt * 1000 > Date.now()) session = s;
  } catch { /* a corrupt entry counts as signed out */ }
  return session;
}

export function recentInstances() {
  try { return JSON.parse(sessionStorage.getItem(RECENT) || '[]'); } catch { return []; }
}

export function signOut() {
  session = null;
  sessionStorage.removeItem(SESSION);
}

async function parse(resp) {
  const text = await resp.text();
  if (!text) return null;
  try { return JSON.parse(text); } catch { return text; }
}

function errorOf(status, body) {
  // Key Protect's envelope, or IAM's error shape (/identity/token)
  const r = body && body.resources && body.resources[0];
  if (r) {
    const reason = (r.reasons && r.reasons[0]) || {};
    const msg = reason.message || r.errorMsg || 'request refused';
    const target = reason.target && reason.target.name ? ` (${reason.target.name})` : '';
    return new ApiError(status, reason.code || '', `${msg}${target}`, body);
  }
  if (body && body.errorMessage) return new ApiError(status, body.errorCode || '', body.errorMessage, body);
  return new ApiError(status, '', typeof body === 'string' && body ? body : `HTTP ${status}`, body);
}

/** Exchanges the API key for a token and checks it can list keys in the instance. */
export async function signIn(apikey, instance) {
  const form = new URLSearchParams({ grant_type: 'urn:ibm:params:oauth:grant-type:apikey', apikey });
  const resp = await fetch('/identity/token', {
    method: 'POST', body: form, credentials: 'omit', cache: 'no-store',
    headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
  });
  const body = await parse(resp);
  if (!resp.ok) throw errorOf(resp.status, body);
  const candidate = { token: body.access_token, instance, expiresAt: body.expiration };
  session = candidate;
  try {
    await api('GET', '/api/v2/keys', { query: { limit: 1 } });
  } catch (e) {
    session = null;
    throw e;
  }
  sessionStorage.setItem(SESSION, JSON.stringify(candidate));
  const recent = [instance, ...recentInstances().filter((i) => i !== instance)].slice(0, 10);
  sessionStorage.setItem(RECENT, JSON.stringify(recent));
  return candidate;
}

/** One API call; throws ApiError with the server's reason when it refuses. */
export async function api(method, path, { query, body, headers } = {}) {
  const s = current();
  if (!s) throw new ApiError(401, 'SIGNED_OUT', 'Not signed in (or the session expired): sign in again');
  let url = path;
  if (query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
    const qs = q.toString();
    if (qs) url += `?${qs}`;
  }
  const h = { authorization: `Bearer ${s.token}`, 'bluemix-instance': s.instance, accept: 'application/json', ...headers };
  const init = { method, headers: h, credentials: 'omit', cache: 'no-store' };
  if (body !== undefined) {
    h['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(url, init);
  const data = await parse(resp);
  if (!resp.ok) throw errorOf(resp.status, data);
  return { status: resp.status, body: data, headers: resp.headers };
}

/** Unauthenticated GETs (/healthz, /readyz, /metrics). */
export async function plain(path) {
  const resp = await fetch(path, { credentials: 'omit', cache: 'no-store' });
  return { status: resp.status, text: await resp.text() };
}

export const KEY_TYPE = 'application/vnd.ibm.kms.key+json';
export const POLICY_TYPE = 'application/vnd.ibm.kms.policy+json';

export function envelope(type, resources) {
  return { metadata: { collectionType: type, collectionTotal: resources.length }, resources };
}
