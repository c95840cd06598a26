// The eight themes: the page's colours live in style.css under [data-theme]; the terminal's
// palette lives here because xterm.js takes it as an option. `kind` picks the search colours
// and the browser's own widgets (color-scheme) for a dark or a light background.

const SEARCH = {
  dark: {
    matchBackground: '#6b5a1e',
    matchBorder: '#00000000',
    matchOverviewRuler: '#d7a94b',
    activeMatchBackground: '#d18616',
    activeMatchBorder: '#ffd580',
    activeMatchColorOverviewRuler: '#ffd580',
  },
  light: {
    matchBackground: '#fde68a',
    matchBorder: '#00000000',
    matchOverviewRuler: '#d97706',
    activeMatchBackground: '#f59e0b',
    activeMatchBorder: '#b45309',
    activeMatchColorOverviewRuler: '#b45309',
  },
};

const SCROLLBAR = {
  dark: { scrollbarSliderBackground: '#ffffff22', scrollbarSliderHoverBackground: '#ffffff44', scrollbarSliderActiveBackground: '#ffffff55' },
  light: { scrollbarSliderBackground: '#00000022', scrollbarSliderHoverBackground: '#00000044', scrollbarSliderActiveBackground: '#00000055' },
};

// [black, red, green, yellow, blue, magenta, cyan, white] then the eight bright ones.
const ANSI_NAMES = ['black', 'red', 'green', 'yellow', 'blue', 'magenta', 'cyan', 'white'];

function theme(label, kind, { background, foreground, cursor, selection, ansi }) {
  const terminal = {
    background, foreground, cursor, cursorAccent: background, selectionBackground: selection, ...SCROLLBAR[kind],
  };
  ANSI_NAMES.forEach((name, i) => {
    terminal[name] = ansi[i];
    terminal[`bright${name[0].toUpperCase()}${name.slice(1)}`] = ansi[i + 8];
  });
  return { label, kind, terminal, search: SEARCH[kind] };
}

export const THEMES = {
  dark: theme('Dark', 'dark', {
    background: '#14161b', foreground: '#d8dee9', cursor: '#f0c674', selection: '#3b4252',
    ansi: ['#1d2026', '#e06c75', '#98c379', '#e5c07b', '#61afef', '#c678dd', '#56b6c2', '#d8dee9',
      '#5c6370', '#ef8891', '#b5e08f', '#f0d197', '#8cc8ff', '#dca0ef', '#7fd3dd', '#ffffff'],
  }),
  light: theme('Light', 'light', {
    background: '#fbfbfa', foreground: '#24292f', cursor: '#1f6feb', selection: '#b6d4fe',
    ansi: ['#24292f', '#cf222e', '#116329', '#7d4e00', '#0969da', '#8250df', '#1b7c83', '#6e7781',
      '#57606a', '#a40e26', '#1a7f37', '#633c01', '#218bff', '#a475f9', '#3192aa', '#8c959f'],
  }),
  dracula: theme('Dracula', 'dark', {
    background: '#282a36', foreground: '#f8f8f2', cursor: '#f8f8f2', selection: '#44475a',
    ansi: ['#21222c', '#ff5555', '#50fa7b', '#f1fa8c', '#bd93f9', '#ff79c6', '#8be9fd', '#f8f8f2',
      '#6272a4', '#ff6e6e', '#69ff94', '#ffffa5', '#d6acff', '#ff92df', '#a4ffff', '#ffffff'],
  }),
  'solarized-dark': theme('Solarized dark', 'dark', {
    background: '#002b36', foreground: '#839496', cursor: '#93a1a1', selection: '#073642',
    ansi: ['#073642', '#dc322f', '#859900', '#b58900', '#268bd2', '#d33682', '#2aa198', '#eee8d5',
      '#586e75', '#cb4b16', '#586e75', '#657b83', '#839496', '#6c71c4', '#93a1a1', '#fdf6e3'],
  }),
  'solarized-light': theme('Solarized light', 'light', {
    background: '#fdf6e3', foreground: '#657b83', cursor: '#586e75', selection: '#eee8d5',
    ansi: ['#073642', '#dc322f', '#859900', '#b58900', '#268bd2', '#d33682', '#2aa198', '#93a1a1',
      '#002b36', '#cb4b16', '#586e75', '#657b83', '#839496', '#6c71c4', '#93a1a1', '#073642'],
  }),
  nord: theme('Nord', 'dark', {
    background: '#2e3440', foreground: '#d8dee9', cursor: '#d8dee9', selection: '#434c5e',
    ansi: ['#3b4252', '#bf616a', '#a3be8c', '#ebcb8b', '#81a1c1', '#b48ead', '#88c0d0', '#e5e9f0',
      '#4c566a', '#bf616a', '#a3be8c', '#ebcb8b', '#81a1c1', '#b48ead', '#8fbcbb', '#eceff4'],
  }),
  monokai: theme('Monokai', 'dark', {
    background: '#272822', foreground: '#f8f8f2', cursor: '#f8f8f0', selection: '#49483e',
    ansi: ['#272822', '#f92672', '#a6e22e', '#f4bf75', '#66d9ef', '#ae81ff', '#a1efe4', '#f8f8f2',
      '#75715e', '#f92672', '#a6e22e', '#f4bf75', '#66d9ef', '#ae81ff', '#a1efe4', '#f9f8f5'],
  }),
  'github-dark': theme('GitHub dark', 'dark', {
    background: '#0d1117', foreground: '#c9d1d9', cursor: '#58a6ff', selection: '#264f78',
    ansi: ['#484f58', '#ff7b72', '#3fb950', '#d29922', '#58a6ff', '#bc8cff', '#39c5cf', '#b1bac4',
      '#6e7681', '#ffa198', '#56d364', '#e3b341', '#79c0ff', '#d2a8ff', '#56d4dd', '#f0f6fc'],
  }),
};

export function applyPageTheme(name) {
  document.documentElement.dataset.theme = name;
}
