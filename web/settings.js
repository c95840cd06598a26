// The person's terminal settings: what they are, their limits, and where they are kept
// (localStorage, one JSON object). Anything stored that is out of range or unknown falls back
// to the default, so a hand-edited or older entry never breaks the page.

import { RENDERERS } from './renderer.js';
import { THEMES } from './theme.js';

const STORAGE_KEY = 'coda.settings';
// Before the settings panel there was only a light/dark switch, remembered here.
const OLD_THEME_KEY = 'coda.theme';

// Tried in order after the chosen font; emoji get a font that has them.
const FALLBACK_FONTS = [
  'ui-monospace', '"JetBrains Mono"', '"Cascadia Code"', '"SF Mono"', 'Menlo', 'Consolas',
  '"DejaVu Sans Mono"', '"Liberation Mono"', '"Noto Color Emoji"', 'monospace',
];

// Monospace fonts offered when the system has them (fonts come from the system only: the
// CSP allows no third-party font CDN).
const FONT_CANDIDATES = [
  'DejaVu Sans Mono', 'Liberation Mono', 'JetBrains Mono', 'Fira Code', 'Source Code Pro', 'Cascadia Code',
  'Ubuntu Mono', 'Noto Sans Mono', 'Hack', 'SF Mono', 'Menlo', 'Consolas', 'Courier New',
];

export const CURSOR_STYLES = { block: 'Block', bar: 'Bar', underline: 'Underline' };
// What Ctrl+V does: paste (as in browser terminals), or reach the shell as readline's
// "insert the next character literally" for those who use it (Ctrl+Shift+V still pastes).
export const CTRL_V = { paste: 'Pastes', shell: 'Goes to the shell (literal next)' };
// What happens when a program in the terminal sets the clipboard (OSC 52): every write shows a
// notice; "ask" waits for a yes first, "refuse" never writes.
export const CLIPBOARD_WRITES = { notify: 'Allowed, with a notice', ask: 'Ask first', refuse: 'Refused' };
export const FONT_SIZE = { min: 8, max: 32 };
export const SCROLLBACK = { min: 0, max: 100_000 };

export const DEFAULT_SETTINGS = Object.freeze({
  theme: 'dark',
  fontFamily: '', // '' = the default stack
  fontSize: 14,
  cursorStyle: 'block',
  scrollback: 10_000,
  renderer: 'auto',
  ctrlV: 'paste',
  clipboardWrites: 'notify',
});

// Checks one stored or typed value; returns the value to use.
function valid(key, value) {
  switch (key) {
    case 'theme':
      return value in THEMES ? value : DEFAULT_SETTINGS.theme;
    case 'fontFamily':
      return typeof value === 'string' && (value === '' || FONT_CANDIDATES.includes(value)) ? value : '';
    case 'fontSize':
      return clampInteger(value, FONT_SIZE, DEFAULT_SETTINGS.fontSize);
    case 'cursorStyle':
      return value in CURSOR_STYLES ? value : DEFAULT_SETTINGS.cursorStyle;
    case 'scrollback':
      return clampInteger(value, SCROLLBACK, DEFAULT_SETTINGS.scrollback);
    case 'renderer':
      return value in RENDERERS ? value : DEFAULT_SETTINGS.renderer;
    case 'ctrlV':
      return value in CTRL_V ? value : DEFAULT_SETTINGS.ctrlV;
    case 'clipboardWrites':
      return value in CLIPBOARD_WRITES ? value : DEFAULT_SETTINGS.clipboardWrites;
    default:
      return undefined;
  }
}

function clampInteger(value, { min, max }, fallback) {
  const number = Number(value);
  if (value === '' || value === null || !Number.isFinite(number)) return fallback;
  return Math.min(max, Math.max(min, Math.round(number)));
}

export function validSettings(candidate) {
  const settings = {};
  for (const key of Object.keys(DEFAULT_SETTINGS)) {
    settings[key] = candidate && key in candidate ? valid(key, candidate[key]) : DEFAULT_SETTINGS[key];
  }
  return settings;
}

export function loadSettings() {
  try {
    const stored = localStorage.getItem(STORAGE_KEY);
    if (stored) return validSettings(JSON.parse(stored));
    return validSettings({ theme: localStorage.getItem(OLD_THEME_KEY) });
  } catch {
    // Storage disabled or unreadable: the defaults are fine.
    return validSettings({});
  }
}

export function storeSettings(settings) {
  try {
    localStorage.setItem(STORAGE_KEY, JSON.stringify(settings));
  } catch {
    // Not remembered across reloads, but still applied now.
  }
}

// The CSS font-family list xterm.js gets for a chosen font.
export function fontStack(fontFamily) {
  return [...(fontFamily ? [`"${fontFamily}"`] : []), ...FALLBACK_FONTS].join(', ');
}

// The candidates this browser can draw: a font is there when text set in it measures
// differently from the generic family it would otherwise fall back to.
export function installedFonts() {
  const context = document.createElement('canvas').getContext('2d');
  const sample = 'mmmmmmmmmmlli10OO@#';
  const width = (family) => {
    context.font = `32px ${family}`;
    return context.measureText(sample).width;
  };
  const generic = { monospace: width('monospace'), serif: width('serif') };
  return FONT_CANDIDATES.filter((name) =>
    Object.entries(generic).some(([fallback, w]) => width(`"${name}", ${fallback}`) !== w));
}
