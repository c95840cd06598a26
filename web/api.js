// Calls to the coda_aio HTTP API. Every failure becomes an ApiError whose message a person can
// act on: the server's {"error"} text when there is one.

export class ApiError extends Error {
  constructor(message, status, { untrusted = false } = {}) {
    super(message);
    this.status = status;
    // The server now on the port could not prove it is this coda_aio: nothing was sent to it.
    this.untrusted = untrusted;
  }
}

// Whether whatever answers on this port now is the coda_aio this page was loaded from. Once the
// connection was lost another local program may have taken the port (a squatter), and every
// request would hand it the web key's cookie: so after a loss nothing is sent with cookies until
// the server has answered a fresh challenge with the key (HMAC with the verifier the page got at
// load, kept only as a non-extractable key in this tab's memory). See docs/security.md.
const trust = { key: null, lost: false, checking: null };

const hex = (bytes) => [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, '0')).join('');

async function learnServer() {
  if (trust.key || !globalThis.crypto?.subtle) return; // no WebCrypto (plain http, not loopback): no check
  const data = await request('GET', '/api/server-verifier');
  if (!data || !data.verifier) return; // App mode: the Apps front end stands before the port
  trust.key = await crypto.subtle.importKey('raw', new TextEncoder().encode(data.verifier),
    { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
}

async function challenge() {
  const nonce = hex(crypto.getRandomValues(new Uint8Array(16)));
  let answer = null;
  try {
    // credentials: 'omit': the challenge itself carries no cookie.
    const response = await fetch(`/api/server-proof?nonce=${nonce}`, { credentials: 'omit', cache: 'no-store' });
    answer = response.ok ? await response.json() : null;
  } catch (err) {
    throw new ApiError(`coda_aio is not reachable (${err.message})`, 0);
  }
  const expected = hex(await crypto.subtle.sign('HMAC', trust.key, new TextEncoder().encode(`coda proof\0${nonce}`)));
  if (!answer || answer.proof !== expected) {
    throw new ApiError('Another program answers on coda_aio\'s port: it could not prove it holds the web key, so '
      + 'nothing (no cookie, no key) was sent to it. This page reconnects once coda_aio is back; do not reload it or '
      + 'type a token into a page from this address until then.', 0, { untrusted: true });
  }
  trust.lost = false;
}

async function ensureTrusted() {
  if (!trust.lost || !trust.key) return;
  if (!trust.checking) trust.checking = challenge().finally(() => { trust.checking = null; });
  await trust.checking;
}

async function request(method, path, body) {
  await ensureTrusted();
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    trust.lost = true;
    throw new ApiError(`coda_aio is not reachable (${err.message})`, 0);
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const message = (data && data.error) || `${method} ${path} failed with HTTP ${response.status}`;
    throw new ApiError(message, response.status);
  }
  return data;
}

export const api = {
  // At load, from the server that served the page: what its challenges are checked with.
  learnServer,
  // The connection broke (a socket closed, the server said it is going away).
  connectionLost: () => { trust.lost = true; },
  // Sockets and downloads carry the cookie too: they wait for this, like every request.
  ensureTrusted,
  isTrusted: () => !trust.lost || !trust.key,
  health: () => request('GET', '/health'),
  patStatus: () => request('GET', '/api/pat-status'),
  configurePat: (token) => request('POST', '/api/configure-pat', { token }),
  setupStatus: () => request('GET', '/api/setup-status'),
  retrySetupStep: (id) => request('POST', `/api/setup-steps/${encodeURIComponent(id)}/retry`),
  projectSync: () => request('GET', '/api/project-sync'),
  fileTransfer: () => request('GET', '/api/file-transfer'),
  listSessions: () => request('GET', '/api/sessions'),
  createSession: (fields) => request('POST', '/api/sessions', fields),
  renameSession: (id, label) => request('PATCH', `/api/sessions/${encodeURIComponent(id)}`, { label }),
  deleteSession: (id) => request('DELETE', `/api/sessions/${encodeURIComponent(id)}`),
};
