// The settings panel (the gear in the tab bar, or Ctrl+,): theme, font, size, cursor,
// scrollback, renderer, what Ctrl+V does and whether programs may set the clipboard. Every change applies at once to every tab through `onChange`. Keys typed here
// stay here: the panel is a modal dialog, and each key's keydown is stopped in it so neither
// the page's shortcuts nor a terminal see it.

import {
  CLIPBOARD_WRITES, CTRL_V, CURSOR_STYLES, FONT_SIZE, SCROLLBACK, installedFonts, validSettings,
} from './settings.js';
import { RENDERERS } from './renderer.js';
import { THEMES } from './theme.js';

const byId = (id) => document.getElementById(id);

export class SettingsPanel {
  constructor({ onChange, onClose }) {
    this.dialog = byId('settings-panel');
    this.form = byId('settings-form');
    this.onChange = onChange;
    this.onClose = onClose;
    this.fields = {
      theme: byId('setting-theme'),
      fontFamily: byId('setting-font-family'),
      fontSize: byId('setting-font-size'),
      cursorStyle: byId('setting-cursor-style'),
      scrollback: byId('setting-scrollback'),
      renderer: byId('setting-renderer'),
      ctrlV: byId('setting-ctrl-v'),
      clipboardWrites: byId('setting-clipboard-writes'),
    };
    fillSelect(this.fields.theme, Object.entries(THEMES).map(([name, t]) => [name, t.label]));
    fillSelect(this.fields.cursorStyle, Object.entries(CURSOR_STYLES));
    fillSelect(this.fields.renderer, Object.entries(RENDERERS));
    fillSelect(this.fields.ctrlV, Object.entries(CTRL_V));
    fillSelect(this.fields.clipboardWrites, Object.entries(CLIPBOARD_WRITES));
    Object.assign(this.fields.fontSize, { min: FONT_SIZE.min, max: FONT_SIZE.max, step: 1 });
    Object.assign(this.fields.scrollback, { min: SCROLLBACK.min, max: SCROLLBACK.max, step: 1000 });
    this.fontsListed = false;

    for (const field of Object.values(this.fields)) field.addEventListener('change', () => this.changed());
    // Keys typed in the panel are the panel's alone.
    this.dialog.addEventListener('keydown', (event) => {
      event.stopPropagation();
      if (event.key === 'Enter' && event.target.tagName !== 'BUTTON') {
        // Enter applies what was typed and closes, and no keypress follows it anywhere.
        event.preventDefault();
        this.changed();
        this.close();
      }
    });
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.close();
    });
    // Esc (the dialog's cancel) and the close button both end up here.
    this.dialog.addEventListener('close', () => this.onClose());
  }

  get isOpen() {
    return this.dialog.open;
  }

  open(settings) {
    if (!this.fontsListed) {
      // Measured on first open, not at page load: it costs a few canvas measurements.
      fillSelect(this.fields.fontFamily, [['', 'Default'], ...installedFonts().map((name) => [name, name])]);
      this.fontsListed = true;
    }
    this.show(settings);
    this.dialog.showModal();
    this.fields.theme.focus();
  }

  show(settings) {
    for (const [key, field] of Object.entries(this.fields)) field.value = String(settings[key]);
  }

  changed() {
    const settings = validSettings(Object.fromEntries(Object.entries(this.fields).map(([k, f]) => [k, f.value])));
    // Out-of-range numbers are shown as what was applied.
    this.show(settings);
    this.onChange(settings);
  }

  close() {
    if (this.dialog.open) this.dialog.close();
  }
}

function fillSelect(select, options) {
  select.replaceChildren(...options.map(([value, label]) => new Option(label, value)));
}
