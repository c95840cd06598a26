// Calls to the coda_aio HTTP API. Every failure becomes an ApiError whose message a person can
// act on: the server's {"error"} text when there is one.

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

async function request(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
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
