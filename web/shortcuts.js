// Every keyboard and mouse shortcut, in one list: the help panel shows it and the README's
// "Keyboard shortcuts" section repeats it (tests/test_browser_workspace.py checks they agree).
// The keys themselves are handled where they act (app.js pageKey/terminalKey, the find bar,
// the tab bar, the panels).

export const SHORTCUTS = [
  ['Ctrl+/', 'Show or hide this list of shortcuts (Ctrl+_ still sends undo to the shell)'],
  ['Ctrl+,', 'Open or close the settings'],
  ['Alt+Shift+T', 'New terminal tab'],
  ['Alt+Shift+→ / Alt+Shift+←', 'Next / previous tab'],
  ['Alt+Shift+PageDown / Alt+Shift+PageUp', 'Move the tab right / left (or drag it)'],
  ['Alt+Shift+W', 'Close the tab (asks first while something runs in it)'],
  ['Alt+Shift+S', 'Sessions: show any live session in this tab (↑/↓, Enter)'],
  ['Alt+Shift+H / Alt+Shift+V', 'Split the tab: a new pane beside / below'],
  ['Alt+Shift+↓ / Alt+Shift+↑', 'Focus the other pane'],
  ['Alt+Shift+X', 'Close the focused pane'],
  ['←/→ or ↑/↓ on a divider', 'Move the divider between panes (or drag it)'],
  ['Ctrl+Shift+F', 'Find in the terminal'],
  ['Enter / Shift+Enter', 'In the find bar: next / previous match'],
  ['Esc', 'Close the find bar, a panel or a menu'],
  ['Ctrl+Shift+C', 'Copy the selection (selecting text also copies it)'],
  ['Ctrl+V', 'Paste text, or upload a copied image or file to ~/uploads and type its path (a setting sends Ctrl+V to the shell instead)'],
  ['Ctrl+Shift+V', 'Paste text'],
  ['Shift+F10 / right-click', 'Terminal menu: copy, paste, select all, find'],
  ['Alt+Shift+R / double-click a tab', 'Rename the tab (Enter keeps the name, Esc cancels)'],
  ['Middle-click a tab', 'Close it'],
];
