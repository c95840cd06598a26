// The session picker (Alt+Shift+S or the ☰ button): every live session on the server, shown
// in a tab of this page or not, with its label, age and what runs in it. Choosing one shows it
// in the current tab; the session that tab showed keeps running and stays listed here.
// A modal dialog: keys pressed in it stay in it.

import { formatBytes } from './status_bar.js';

const byId = (id) => document.getElementById(id);

export function formatAge(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86_400)} d ${Math.floor((s % 86_400) / 3600)} h`;
}

export class SessionPicker {
  // `onChoose(session)` gets the chosen entry of GET /api/sessions; `onClose()` runs whenever
  // the picker closes, chosen or not.
  constructor({ onChoose, onClose }) {
    this.dialog = byId('session-picker');
    this.list = byId('session-list');
    this.onChoose = onChoose;
    this.sessions = [];
    this.index = 0;
    this.chosen = null;
    this.dialog.addEventListener('keydown', (event) => this.key(event));
    this.dialog.addEventListener('close', () => {
      const chosen = this.chosen;
      this.chosen = null;
      onClose();
      if (chosen) this.onChoose(chosen);
    });
  }

  get isOpen() {
    return this.dialog.open;
  }

  // `sessions`: GET /api/sessions; `whereShown(id)` names the tab showing a session, if any;
  // `currentId` is the current tab's session (selected first).
  open(sessions, { whereShown, currentId }) {
    this.sessions = sessions;
    const now = Date.now() / 1000;
    const items = sessions.map((session, i) => {
      const item = document.createElement('li');
      item.className = 'session-item';
      item.setAttribute('role', 'option');
      item.id = `session-option-${i}`;
      item.dataset.sessionId = session.id;
      const label = document.createElement('span');
      label.className = 'session-label';
      label.textContent = session.label || 'Terminal';
      const command = document.createElement('span');
      command.className = 'session-command';
      command.textContent = session.process?.command || 'shell (idle)';
      const meta = document.createElement('span');
      meta.className = 'session-meta';
      const shown = whereShown(session.id);
      const memory = typeof session.memory_bytes === 'number' ? ` · ${formatBytes(session.memory_bytes)}` : '';
      meta.textContent = `${formatAge(now - session.created_at)} old${memory} · ${shown ? `in ${shown}` : 'not in a tab'}`;
      item.append(label, command, meta);
      item.addEventListener('click', () => this.choose(i));
      return item;
    });
    if (items.length === 0) {
      const empty = document.createElement('li');
      empty.className = 'session-empty';
      empty.textContent = 'No live sessions.';
      items.push(empty);
    }
    this.list.replaceChildren(...items);
    this.chosen = null;
    this.dialog.showModal();
    this.select(Math.max(0, sessions.findIndex((s) => s.id === currentId)));
    this.list.focus();
  }

  select(index) {
    if (this.sessions.length === 0) return;
    this.index = (index + this.sessions.length) % this.sessions.length;
    for (const [i, item] of [...this.list.children].entries()) item.setAttribute('aria-selected', String(i === this.index));
    this.list.setAttribute('aria-activedescendant', `session-option-${this.index}`);
    this.list.children[this.index].scrollIntoView({ block: 'nearest' });
  }

  choose(index) {
    this.chosen = this.sessions[index] || null;
    this.dialog.close();
  }

  key(event) {
    // The page's shortcuts and the terminal must not see keys pressed here.
    event.stopPropagation();
    const moves = { ArrowDown: 1, ArrowUp: -1 };
    if (event.key in moves) this.select(this.index + moves[event.key]);
    else if (event.key === 'Home') this.select(0);
    else if (event.key === 'End') this.select(this.sessions.length - 1);
    else if (event.key === 'Enter') this.choose(this.index);
    else return; // Esc closes the dialog by itself; Tab moves as usual.
    event.preventDefault();
  }

  close() {
    if (this.dialog.open) this.dialog.close();
  }
}
