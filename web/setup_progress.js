// Background work shown in the status bar: the agent CLI installs (GET /api/setup-status) and,
// after a redeploy, the restore of the user's projects (GET /api/project-sync). Each is one
// compact item; clicking it shows its steps in a small panel: a failed step with what went
// wrong, what to do about it, and (for the installs) a button that runs it again.

import { api } from './api.js';

const POLL_MS = 2000;
// Statuses from setup_steps.SetupRunner and project_sync: a run is idle|running|done|failed, a
// step is pending|running|done|skipped|failed ("skipped" means it had been done before).
const ACTIVE = new Set(['pending', 'running']);
const SYMBOL = { done: '✓', skipped: '✓', failed: '✗', running: '…', pending: '·' };

const byId = (id) => document.getElementById(id);

class StepsProgress {
  // `retry(id)`, when given, runs a failed step again (the installs; the restore retries itself).
  // `onClicked()` runs after a click on the item or a button in its panel (the app gives the
  // keyboard back to the terminal: the panel is not a dialog).
  constructor({ fetch, item, panel, list, title, onClicked, retry = null }) {
    this.fetch = fetch;
    this.retry = retry;
    this.onClicked = onClicked;
    this.item = byId(item);
    this.item.title = title;
    this.panel = byId(panel);
    this.list = byId(list);
    this.timer = 0;
    this.last = null;
    this.item.addEventListener('click', () => {
      this.panel.hidden = !this.panel.hidden;
      onClicked();
    });
  }

  get isOpen() {
    return !this.panel.hidden;
  }

  close() {
    this.panel.hidden = true;
  }

  // Polls while the work runs; calling it again restarts polling (e.g. after sign-in).
  async refresh() {
    clearTimeout(this.timer);
    let status;
    try {
      status = await this.fetch();
    } catch {
      return; // Not offered by this server, or it is down: nothing to show.
    }
    this.render(status);
    if (this.busy(status)) this.timer = setTimeout(() => this.refresh(), POLL_MS);
  }

  busy(status) {
    return ACTIVE.has(status.status);
  }

  render(status) {
    this.last = status;
    const steps = Array.isArray(status && status.steps) ? status.steps : [];
    this.item.hidden = steps.length === 0;
    if (steps.length === 0) {
      this.panel.hidden = true;
      return;
    }
    const failed = steps.filter((s) => s.status === 'failed');
    const running = ACTIVE.has(status.status);
    this.item.textContent = this.summary({
      steps,
      failed,
      running,
      finished: steps.filter((s) => !ACTIVE.has(s.status)).length,
      current: steps.find((s) => s.status === 'running'),
    });
    this.item.dataset.kind = failed.length ? 'bad' : running ? 'muted' : 'good';

    this.list.replaceChildren(...steps.map((step) => {
      const li = document.createElement('li');
      li.dataset.status = step.status;
      li.textContent = `${SYMBOL[step.status] || '·'} ${step.label}`;
      if (step.error) li.append(note('setup-error', step.error));
      if (step.advice) li.append(note('setup-advice', step.advice));
      if (step.status === 'failed' && this.retry) li.append(this.retryButton(step));
      return li;
    }));
  }

  retryButton(step) {
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'setup-retry';
    button.textContent = 'Retry';
    button.setAttribute('aria-label', `Retry: ${step.label}`);
    button.addEventListener('click', async () => {
      button.disabled = true;
      this.onClicked();
      try {
        await this.retry(step.id);
      } catch (err) {
        button.replaceWith(note('setup-error', `The retry was refused: ${err.message}`));
        return;
      }
      this.refresh();
    });
    return button;
  }
}

function note(className, text) {
  const element = document.createElement('div');
  element.className = className;
  element.textContent = text;
  return element;
}

const labels = (steps) => steps.map((s) => s.label).join(', ');

export class SetupProgress extends StepsProgress {
  constructor({ onClicked }) {
    super({
      fetch: () => api.setupStatus(), item: 'status-setup', panel: 'setup-panel', list: 'setup-steps',
      title: 'Show agent setup steps', onClicked, retry: (id) => api.retrySetupStep(id),
    });
    this.workspaceConfigured = true;
  }

  // Without a workspace the CLIs get installed but nothing connects them to a model.
  setWorkspaceConfigured(configured) {
    if (this.workspaceConfigured === configured) return;
    this.workspaceConfigured = configured;
    if (this.last) this.render(this.last);
  }

  // Progress and failures side by side: a failed step does not hide the others still running.
  summary({ steps, failed, running, finished, current }) {
    const failures = failed.length ? `${failed.length} failed (${labels(failed)})` : '';
    if (running) return `Setting up agents ${finished}/${steps.length}${current ? `: ${current.label}` : ''}…${failures ? ` · ${failures}` : ''}`;
    if (failures) return `Agent setup: ${failures}`;
    if (!this.workspaceConfigured) return 'Agents installed, not connected (no workspace)';
    return 'Agents ready';
  }
}

// Projects come back once the token works, which may be a while after the page opened: keep
// asking while the sync waits for a token or restores.
export class RestoreProgress extends StepsProgress {
  constructor({ onClicked }) {
    super({ fetch: () => api.projectSync(), item: 'status-restore', panel: 'restore-panel', list: 'restore-steps', title: 'Show project restore steps', onClicked });
  }

  busy(status) {
    return super.busy(status) || status.state === 'waiting' || status.state === 'restoring';
  }

  summary({ steps, failed, running, finished, current }) {
    if (failed.length) return `Project restore: ${failed.length} failed (${labels(failed)}), retrying`;
    if (running) return `Restoring projects ${finished}/${steps.length}${current ? `: ${current.label}` : ''}…`;
    return `Projects restored (${steps.length})`;
  }
}
