// The shortcut list (Ctrl+/ or the "?" in the tab bar). A modal dialog: keys pressed while
// it is open stay in it, and Esc or Ctrl+/ close it.

import { SHORTCUTS } from './shortcuts.js';

export class HelpPanel {
  constructor({ onClose }) {
    this.dialog = document.getElementById('help-panel');
    const rows = SHORTCUTS.map(([keys, action]) => {
      const row = document.createElement('tr');
      const key = document.createElement('th');
      key.scope = 'row';
      for (const [i, part] of keys.split(' / ').entries()) {
        if (i) key.append(' / ');
        const kbd = document.createElement('kbd');
        kbd.textContent = part;
        key.append(kbd);
      }
      const what = document.createElement('td');
      what.textContent = action;
      row.append(key, what);
      return row;
    });
    document.getElementById('help-shortcuts').replaceChildren(...rows);
    this.dialog.addEventListener('keydown', (event) => event.stopPropagation());
    this.dialog.addEventListener('close', () => onClose());
  }

  get isOpen() {
    return this.dialog.open;
  }

  open() {
    this.dialog.showModal();
    // The list, not the Close button, takes the focus: a stray Space or Enter keeps it open.
    // Without scrolling to it: the panel opens at its title.
    document.getElementById('help-table').focus({ preventScroll: true });
    this.dialog.scrollTop = 0;
  }

  close() {
    if (this.dialog.open) this.dialog.close();
  }
}
