// On touch devices: a row of the keys a phone's keyboard lacks (Esc, Ctrl, Tab, the arrows),
// above the status bar. Ctrl latches: it applies to the next key typed (Ctrl, then c: ^C).
// The buttons never take the focus, so the phone's keyboard stays up and keys still go to the
// terminal.

// The arrows follow the terminal's cursor-key mode (vim and less switch it to "application").
const ARROWS = [['←', 'D', 'Left'], ['↑', 'A', 'Up'], ['↓', 'B', 'Down'], ['→', 'C', 'Right']];

export function isTouchDevice() {
  return window.matchMedia('(pointer: coarse)').matches || navigator.maxTouchPoints > 0;
}

export class KeyBar {
  // `current()` is the terminal (TerminalTab) that has the keyboard, or null.
  constructor({ element, current }) {
    this.element = element;
    this.current = current;
    this.ctrl = false;
    const esc = this.button('Esc', 'Escape', () => this.send('\x1b'));
    this.ctrlButton = this.button('Ctrl', 'Control: applies to the next key', () => this.setCtrl(!this.ctrl));
    this.ctrlButton.setAttribute('aria-pressed', 'false');
    const tab = this.button('Tab', 'Tab', () => this.send('\t'));
    const arrows = ARROWS.map(([label, final, name]) => this.button(label, name, () => this.sendArrow(final)));
    element.replaceChildren(esc, this.ctrlButton, tab, ...arrows);
    element.hidden = !isTouchDevice();
  }

  button(label, name, run) {
    const button = document.createElement('button');
    button.type = 'button';
    button.textContent = label;
    button.setAttribute('aria-label', name);
    button.tabIndex = -1;
    // Not focused by a tap: the terminal keeps the focus (and the phone its keyboard).
    button.addEventListener('pointerdown', (event) => event.preventDefault());
    button.addEventListener('mousedown', (event) => event.preventDefault());
    button.addEventListener('click', run);
    return button;
  }

  setCtrl(on) {
    this.ctrl = on;
    this.ctrlButton.setAttribute('aria-pressed', String(on));
  }

  send(data) {
    const tab = this.current();
    if (tab) tab.handleInput(this.applyCtrl(data));
  }

  sendArrow(final) {
    const tab = this.current();
    if (!tab) return;
    this.setCtrl(false);
    tab.handleInput(`${tab.term.modes.applicationCursorKeysMode ? '\x1bO' : '\x1b['}${final}`);
  }

  // What was typed, with the latched Ctrl applied to it (then released).
  applyCtrl(data) {
    if (!this.ctrl) return data;
    this.setCtrl(false);
    if (data === ' ') return '\x00';
    if (data.length !== 1) return data;
    const code = data.toUpperCase().charCodeAt(0);
    return code >= 0x40 && code <= 0x5f ? String.fromCharCode(code & 0x1f) : data;
  }
}
