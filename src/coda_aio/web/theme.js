// The light and dark themes: the page's colours live in style.css under [data-theme]; the
// terminal's palette lives here because xterm.js takes it as an option.

const STORAGE_KEY = 'coda.theme';

const SEARCH_DARK = {
  matchBackground: '#6b5a1e',
  matchBorder: '#00000000',
  matchOverviewRuler: '#d7a94b',
  activeMatchBackground: '#d18616',
  activeMatchBorder: '#ffd580',
  activeMatchColorOverviewRuler: '#ffd580',
};

const SEARCH_LIGHT = {
  matchBackground: '#fde68a',
  matchBorder: '#00000000',
  matchOverviewRuler: '#d97706',
  activeMatchBackground: '#f59e0b',
  activeMatchBorder: '#b45309',
  activeMatchColorOverviewRuler: '#b45309',
};

export const THEMES = {
  dark: {
    terminal: {
      background: '#14161b',
      foreground: '#d8dee9',
      cursor: '#f0c674',
      cursorAccent: '#14161b',
      selectionBackground: '#3b4252',
      scrollbarSliderBackground: '#ffffff22',
      scrollbarSliderHoverBackground: '#ffffff44',
      scrollbarSliderActiveBackground: '#ffffff55',
      black: '#1d2026', red: '#e06c75', green: '#98c379', yellow: '#e5c07b',
      blue: '#61afef', magenta: '#c678dd', cyan: '#56b6c2', white: '#d8dee9',
      brightBlack: '#5c6370', brightRed: '#ef8891', brightGreen: '#b5e08f', brightYellow: '#f0d197',
      brightBlue: '#8cc8ff', brightMagenta: '#dca0ef', brightCyan: '#7fd3dd', brightWhite: '#ffffff',
    },
    search: SEARCH_DARK,
  },
  light: {
    terminal: {
      background: '#fbfbfa',
      foreground: '#24292f',
      cursor: '#1f6feb',
      cursorAccent: '#fbfbfa',
      selectionBackground: '#b6d4fe',
      scrollbarSliderBackground: '#00000022',
      scrollbarSliderHoverBackground: '#00000044',
      scrollbarSliderActiveBackground: '#00000055',
      black: '#24292f', red: '#cf222e', green: '#116329', yellow: '#7d4e00',
      blue: '#0969da', magenta: '#8250df', cyan: '#1b7c83', white: '#6e7781',
      brightBlack: '#57606a', brightRed: '#a40e26', brightGreen: '#1a7f37', brightYellow: '#633c01',
      brightBlue: '#218bff', brightMagenta: '#a475f9', brightCyan: '#3192aa', brightWhite: '#8c959f',
    },
    search: SEARCH_LIGHT,
  },
};

export function storedThemeName() {
  try {
    const name = localStorage.getItem(STORAGE_KEY);
    if (name in THEMES) return name;
  } catch {
    // Storage can be disabled; the default theme is fine then.
  }
  return 'dark';
}

export function storeThemeName(name) {
  try {
    localStorage.setItem(STORAGE_KEY, name);
  } catch {
    // Not remembered across reloads, but still applied now.
  }
}

export function applyPageTheme(name) {
  document.documentElement.dataset.theme = name;
}
