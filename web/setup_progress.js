// Progress of the agent CLI installs, from GET /api/setup-status: one compact item in the
// status bar, and a small panel listing each step (with its error) when that item is clicked.

import { api } from './api.js';

const POLL_MS = 2000;
// Statuses from setup_steps.SetupRunner: the run is idle|running|done|failed, a step is
// pending|running|done|skipped|failed ("skipped" means the CLI was already installed).
const ACTIVE = new Set(['pending', 'running']);
const SYMBOL = { done: '✓', skipped: '✓', failed: '✗', running: '…', pending: '·' };

const byId = (id) => document.getElementById(id);

export class SetupProgress {
  constructor() {
    this.item = byId('status-setup');
    this.panel = byId('setup-panel');
    this.list = byId('setup-steps');
    this.timer = 0;
    this.workspaceConfigured = true;
    this.last = null;
    this.item.addEventListener('click', () => {
      this.panel.hidden = !this.panel.hidden;
    });
  }

  // Polls while the setup runs; calling it again restarts polling (e.g. after sign-in).
  async refresh() {
    clearTimeout(this.timer);
    let status;
    try {
      status = await api.setupStatus();
    } catch {
      return; // Not offered by this server, or it is down: nothing to show.
    }
    this.render(status);
    if (ACTIVE.has(status.status)) this.timer = setTimeout(() => this.refresh(), POLL_MS);
  }

  // Without a workspace the CLIs get installed but nothing connects them to a model.
  setWorkspaceConfigured(configured) {
    if (this.workspaceConfigured === configured) return;
    this.workspaceConfigured = configured;
    if (this.last) this.render(this.last);
  }

  render(status) {
    this.last = status;
    const steps = Array.isArray(status && status.steps) ? status.steps : [];
    this.item.hidden = steps.length === 0;
    if (steps.length === 0) {
      this.panel.hidden = true;
      return;
    }
    const finished = steps.filter((s) => !ACTIVE.has(s.status)).length;
    const failed = steps.filter((s) => s.status === 'failed');
    const current = steps.find((s) => s.status === 'running');
    let text;
    if (failed.length) text = `Agent setup: ${failed.length} failed (${failed.map((s) => s.label).join(', ')})`;
    else if (ACTIVE.has(status.status)) text = `Setting up agents ${finished}/${steps.length}${current ? `: ${current.label}` : ''}…`;
    else if (!this.workspaceConfigured) text = 'Agents installed, not connected (no workspace)';
    else text = 'Agents ready';
    this.item.textContent = text;
    this.item.dataset.kind = failed.length ? 'bad' : ACTIVE.has(status.status) ? 'muted' : 'good';
    this.item.title = 'Show agent setup steps';

    this.list.replaceChildren(...steps.map((step) => {
      const li = document.createElement('li');
      li.dataset.status = step.status;
      const symbol = SYMBOL[step.status] || '·';
      li.textContent = `${symbol} ${step.label}`;
      if (step.error) {
        const error = document.createElement('div');
        error.className = 'setup-error';
        error.textContent = step.error;
        li.append(error);
      }
      return li;
    }));
  }
}
