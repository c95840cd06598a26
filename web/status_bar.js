// The status line at the bottom: connection of the visible tab, who is signed in, when the
// token rotates next, (in App mode) the owner check, and project sync's warnings (an old
// backup kept aside, files a restore could not bring back). It only renders what the app
// tells it.

import { STATE } from './terminal_tab.js';

const byId = (id) => document.getElementById(id);

function formatDuration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const m = Math.floor(s / 60);
  return m >= 60 ? `${Math.floor(m / 60)} h ${m % 60} min` : `${m}:${String(s % 60).padStart(2, '0')}`;
}

function describeOwnerCheck(ownerCheck) {
  if (ownerCheck == null) return 'unknown';
  if (typeof ownerCheck === 'string') return ownerCheck;
  return ownerCheck.state || ownerCheck.status || JSON.stringify(ownerCheck);
}

export function formatBytes(bytes) {
  if (typeof bytes !== 'number') return '?';
  return bytes >= 1024 ** 3 ? `${(bytes / 1024 ** 3).toFixed(1)} GB` : `${Math.round(bytes / 1024 ** 2)} MB`;
}

export class StatusBar {
  constructor({ onSignIn }) {
    this.connection = byId('status-connection');
    this.account = byId('status-account');
    this.signIn = byId('status-sign-in');
    this.rotation = byId('status-rotation');
    this.mode = byId('status-mode');
    this.memory = byId('status-memory');
    this.signIn.addEventListener('click', () => onSignIn());
    this.nextRotationAt = null;
    // While coda_aio is unreachable the account it last reported may no longer be true.
    this.serverDown = false;
    this.lastAccount = null;
    this.syncWarning = null;
  }

  setServerDown(down) {
    if (down === this.serverDown) return;
    this.serverDown = down;
    if (!down) {
      if (this.lastAccount) this.showAccount(...this.lastAccount);
      return;
    }
    this.account.textContent = 'Not connected to coda_aio: sign-in and token unknown until it is back';
    this.account.title = '';
    this.account.dataset.kind = 'warn';
    this.signIn.hidden = true;
    this.nextRotationAt = null;
    this.renderRotation();
  }

  showConnection(tab, { offline = null } = {}) {
    const el = this.connection;
    let text;
    let kind;
    if (offline) {
      [text, kind] = [`${offline}; retrying…`, 'bad'];
    } else if (!tab) {
      [text, kind] = ['No terminal', 'muted'];
    } else {
      const secondsLeft = Math.max(1, Math.ceil((tab.reconnectAt - Date.now()) / 1000));
      switch (tab.state) {
        case STATE.CONNECTED: [text, kind] = ['Connected', 'good']; break;
        case STATE.CONNECTING: [text, kind] = ['Connecting…', 'muted']; break;
        case STATE.RECONNECTING: [text, kind] = [`Disconnected. Reconnecting in ${secondsLeft} s…`, 'warn']; break;
        case STATE.SERVER_RESTARTING: [text, kind] = [`Server restarting. Reconnecting in ${secondsLeft} s…`, 'warn']; break;
        case STATE.EXITED: [text, kind] = [`Process exited (code ${tab.exitCode})`, 'muted']; break;
        case STATE.FAILED: [text, kind] = [tab.stateDetail || 'Failed', 'bad']; break;
        default: [text, kind] = [tab.state, 'muted'];
      }
    }
    el.textContent = text;
    el.dataset.kind = kind;
  }

  showAccount(patStatus, health) {
    this.lastAccount = [patStatus, health];
    if (this.serverDown) return;
    const workspaceHost = patStatus && patStatus.workspace_host;
    const tokenState = health && health.token ? health.token.state : null;
    this.signIn.hidden = true;
    this.account.title = workspaceHost || '';
    if (!workspaceHost) {
      this.account.textContent = 'No workspace: set DATABRICKS_HOST';
      this.account.title = 'Restart coda_aio with DATABRICKS_HOST=https://<your workspace> to sign in and ' +
        'connect the agents (or with --demo-workspace to try it without one). The terminal works meanwhile.';
      this.account.dataset.kind = 'muted';
    } else if (patStatus.valid && tokenState !== 'invalid') {
      this.account.textContent = patStatus.user ? `Signed in as ${patStatus.user}` : 'Signed in';
      this.account.dataset.kind = 'good';
    } else if (patStatus.sign_in && patStatus.sign_in.fresh) {
      // Issue 21: no PAT, and none needed: the Apps proxy forwards the user's own sign-in.
      this.account.textContent = `Signed in as ${patStatus.sign_in.user} (your Databricks sign-in)`;
      this.account.title = 'coda uses your Databricks sign-in, kept fresh while this page is open. ' +
        'Jobs, clusters and bundles need a personal access token (Sign in).';
      this.account.dataset.kind = 'good';
    } else if (health && health.token && health.token.source === 'app') {
      this.account.textContent = "Model calls run as this app's identity";
      this.account.title = 'Your sign-in has expired here (this page was closed): reload the page to use it again.';
      this.account.dataset.kind = 'warn';
    } else if (patStatus.pats_disabled) {
      this.account.textContent = 'Personal access tokens are disabled in this workspace';
      this.account.title = `Use your Databricks sign-in instead: see ${patStatus.user_authorization_docs}.`;
      this.account.dataset.kind = 'warn';
    } else if (patStatus.checking_saved_token) {
      // After a restart the saved token waits for the workspace: no paste is needed (yet).
      this.account.textContent = 'Checking the saved token…';
      this.account.title = `${workspaceHost} has not answered yet; the saved token is used as soon as it does.`;
      this.account.dataset.kind = 'muted';
      this.signIn.hidden = false;
    } else {
      this.account.textContent = tokenState === 'invalid' ? 'Token stopped working' : 'Not signed in';
      this.account.dataset.kind = 'warn';
      this.signIn.hidden = false;
    }

    const next = health && health.token ? health.token.next_rotation_seconds : null;
    this.nextRotationAt = tokenState === 'valid' && typeof next === 'number' ? Date.now() + next * 1000 : null;
    this.renderRotation();

    this.showMemory(health && health.memory);

    const appMode = health && health.mode === 'app';
    this.mode.hidden = !appMode;
    if (appMode) this.mode.textContent = `App mode · owner check: ${describeOwnerCheck(health.owner_check)}`;
    this.showSyncWarnings(health && health.project_sync ? health.project_sync.warnings : null);
  }

  // Never silent: an old backup kept as its own project, files not restored, a forgotten project.
  // The whole message is the item's title; clicking it shows it too.
  showSyncWarnings(warnings) {
    const list = Array.isArray(warnings) ? warnings : [];
    if (!this.syncWarning) {
      if (list.length === 0) return;
      this.syncWarning = document.createElement('button');
      this.syncWarning.type = 'button';
      this.syncWarning.id = 'status-sync-warning';
      this.syncWarning.className = 'status-item status-button';
      this.syncWarning.addEventListener('click', () => window.alert(this.syncWarning.title));
      this.rotation.after(this.syncWarning);
    }
    this.syncWarning.hidden = list.length === 0;
    const kept = list.filter((w) => w.kind === 'kept').length;
    this.syncWarning.textContent = kept === list.length
      ? `Old backup kept${kept > 1 ? ` (${kept})` : ''}`
      : `Project sync: ${list.length} warning${list.length > 1 ? 's' : ''}`;
    this.syncWarning.title = list.map((w) => w.message).join('\n\n');
    this.syncWarning.dataset.kind = 'warn';
  }

  // The container's memory (issue 23): a warning once one more terminal would not fit.
  showMemory(memory) {
    this.memory.hidden = !memory;
    if (!memory) return;
    const short = memory.session_memory_bytes > 0 && memory.available_bytes < memory.session_memory_bytes;
    this.memory.textContent = `Memory ${formatBytes(memory.used_bytes)} of ${formatBytes(memory.limit_bytes)}`;
    this.memory.dataset.kind = short ? 'warn' : 'muted';
    this.memory.title = `${formatBytes(memory.available_bytes)} free (${memory.source}); a terminal with an agent ` +
      `needs about ${formatBytes(memory.session_memory_bytes)}` + (short ? ': new terminals are refused.' : '.');
  }

  renderRotation() {
    this.rotation.hidden = this.nextRotationAt === null;
    if (this.nextRotationAt === null) return;
    const seconds = (this.nextRotationAt - Date.now()) / 1000;
    this.rotation.textContent = seconds > 0 ? `Token rotates in ${formatDuration(seconds)}` : 'Token rotating…';
  }
}
