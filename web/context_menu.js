// The terminal's menu (right-click, Shift+F10 or the context-menu key): copy, paste, select
// all, find. Arrow keys move, Enter or Space choose, Esc closes. Keys pressed while it is
// open are the menu's: none reach the page's shortcuts or a terminal.

export class ContextMenu {
  constructor({ items, onClose }) {
    this.onClose = onClose;
    this.menu = document.getElementById('terminal-menu');
    this.buttons = items.map(({ label, hint, run, enabled }) => {
      const button = document.createElement('button');
      button.type = 'button';
      button.setAttribute('role', 'menuitem');
      button.tabIndex = -1;
      button.textContent = label;
      if (hint) {
        const kbd = document.createElement('kbd');
        kbd.textContent = hint;
        button.append(kbd);
      }
      button.addEventListener('click', () => this.choose(run));
      return { button, enabled };
    });
    this.menu.replaceChildren(...this.buttons.map((b) => b.button));
    this.menu.addEventListener('keydown', (event) => this.key(event));
    // A press anywhere else closes the menu (and does what it would have done).
    window.addEventListener('pointerdown', (event) => {
      if (this.isOpen && !this.menu.contains(event.target)) this.close(false);
    }, true);
    this.menu.addEventListener('focusout', (event) => {
      if (this.isOpen && !this.menu.contains(event.relatedTarget)) this.close(false);
    });
  }

  get isOpen() {
    return !this.menu.hidden;
  }

  // x, y: where the menu's top-left corner goes, in viewport pixels; kept inside the window.
  open(x, y) {
    for (const { button, enabled } of this.buttons) button.disabled = enabled ? !enabled() : false;
    this.menu.hidden = false;
    const { width, height } = this.menu.getBoundingClientRect();
    this.menu.style.left = `${Math.max(0, Math.min(x, window.innerWidth - width))}px`;
    this.menu.style.top = `${Math.max(0, Math.min(y, window.innerHeight - height))}px`;
    this.focusItem(0, 1);
  }

  // Focus the first enabled item from `start` on, stepping by `step` (wrapping around).
  focusItem(start, step) {
    const all = this.buttons.map((b) => b.button);
    for (let i = 0; i < all.length; i += 1) {
      const button = all[(start + i * step + all.length * all.length) % all.length];
      if (!button.disabled) {
        button.focus();
        return;
      }
    }
  }

  key(event) {
    event.stopPropagation();
    const all = this.buttons.map((b) => b.button);
    const current = all.indexOf(document.activeElement);
    const moves = { ArrowDown: [current + 1, 1], ArrowUp: [current - 1, -1], Home: [0, 1], End: [all.length - 1, -1] };
    if (event.key in moves) this.focusItem(...moves[event.key]);
    else if (event.key === 'Escape' || event.key === 'Tab') this.close();
    else if (event.key === 'Enter' || event.key === ' ') document.activeElement.click?.();
    // Every key is the menu's: no keypress may follow into the terminal that gets the focus back.
    event.preventDefault();
  }

  choose(run) {
    this.close();
    run();
  }

  // refocus: give the focus back (keyboard close); a click elsewhere puts it where it clicked.
  close(refocus = true) {
    if (!this.isOpen) return;
    this.menu.hidden = true;
    this.onClose(refocus);
  }
}
