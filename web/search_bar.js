// The find bar (Ctrl+Shift+F): drives the search addon of the visible tab.
// Enter finds the next match, Shift+Enter the previous one, Esc closes.

import { THEMES } from './theme.js';

const byId = (id) => document.getElementById(id);

export class SearchBar {
  constructor() {
    this.bar = byId('search-bar');
    this.input = byId('search-input');
    this.count = byId('search-count');
    this.tab = null;
    this.resultsListener = null;

    this.input.addEventListener('input', () => this.find('next', { incremental: true }));
    this.input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') {
        event.preventDefault();
        this.find(event.shiftKey ? 'previous' : 'next');
      } else if (event.key === 'Escape') {
        event.preventDefault();
        this.close();
      }
    });
    byId('search-next').addEventListener('click', () => this.find('next'));
    byId('search-previous').addEventListener('click', () => this.find('previous'));
    byId('search-close').addEventListener('click', () => this.close());
  }

  get isOpen() {
    return !this.bar.hidden;
  }

  open(tab) {
    this.attach(tab);
    this.bar.hidden = false;
    const selection = tab.term.getSelection();
    if (selection && !selection.includes('\n')) this.input.value = selection;
    this.input.focus();
    this.input.select();
    if (this.input.value) this.find('next', { incremental: true });
  }

  attach(tab) {
    if (this.tab === tab) return;
    this.detach();
    this.tab = tab;
    this.resultsListener = tab.search.onDidChangeResults(({ resultIndex, resultCount }) => {
      if (!this.input.value) this.count.textContent = '';
      else if (resultCount === 0) this.count.textContent = 'No results';
      else this.count.textContent = `${resultIndex >= 0 ? resultIndex + 1 : '?'} of ${resultCount}`;
    });
  }

  detach() {
    if (this.resultsListener) this.resultsListener.dispose();
    if (this.tab && this.tab.search) this.tab.search.clearDecorations();
    this.resultsListener = null;
    this.tab = null;
    this.count.textContent = '';
  }

  // Called when the visible tab changes or closes while the bar is open.
  follow(tab) {
    if (this.isOpen && tab) this.attach(tab);
    else if (!tab) this.close();
  }

  find(direction, { incremental = false } = {}) {
    if (!this.tab) return;
    const text = this.input.value;
    if (!text) {
      this.tab.search.clearDecorations();
      this.count.textContent = '';
      return;
    }
    const options = { incremental, decorations: THEMES[this.tab.themeName].search };
    if (direction === 'next') this.tab.search.findNext(text, options);
    else this.tab.search.findPrevious(text, options);
  }

  close() {
    const tab = this.tab;
    this.bar.hidden = true;
    this.detach();
    if (tab) tab.focus();
  }
}
