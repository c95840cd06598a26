// Splitting a tab in two and closing one of its panes: the sessions they start and end, and
// the tab list, focus and search they change (on the app, which owns them). The layout itself
// is split_layout.js; which tabs are split, and what this browser remembers, pane_splits.js.

import { api } from './api.js';

export class SplitActions {
  constructor(app) {
    this.app = app;
  }

  // A second pane with a new session beside (row) or below (column) the active tab's.
  async split(orientation) {
    const tab = this.app.active;
    if (!tab || this.app.prompting) return;
    if (this.app.splits.has(tab)) {
      this.app.flashMessage('This tab has two panes already: close one (Alt+Shift+X) first.');
      return;
    }
    // Named for its tab, so the picker and the close question say where it is.
    const label = `${tab.label.slice(0, 64)} · ${orientation === 'row' ? 'right' : 'below'}`;
    const second = this.app.createPane(null, label);
    this.app.layOut(tab, second, { orientation });
    this.app.focusedPane = second;
    this.app.showPanes(tab, true);
    // Laid out before the session exists, so the shell starts at the pane's size.
    this.app.fitAll();
    try {
      const created = await api.createSession({ label, ...second.size });
      second.id = created.id;
    } catch (err) {
      if (this.app.splits.get(tab)?.second === second) this.unsplit(tab, tab);
      this.app.flashMessage(err.message);
      return;
    }
    if (this.app.splits.get(tab)?.second !== second) {
      await this.app.deleteSession(second.id); // The tab closed meanwhile.
      return;
    }
    second.connect();
    if (this.app.active === tab) {
      this.app.search.follow(this.app.current);
      this.app.current.focus();
    }
    this.app.render();
  }

  // Back to one pane: `keep` stays (and becomes the tab), the other is disposed of.
  unsplit(tab, keep) {
    const gone = this.app.splits.dissolve(tab, keep);
    if (this.app.search.tab === gone) this.app.search.close();
    gone.dispose();
    if (keep !== tab) this.app.tabs[this.app.tabs.indexOf(tab)] = keep;
    if (this.app.active === tab) this.app.active = keep;
    this.app.focusedPane = keep;
    if (this.app.active === keep) this.app.activate(keep);
    else this.app.render();
    return gone;
  }

  // Ends the focused pane's session; a tab with one pane closes as a whole.
  async closePane() {
    const tab = this.app.active;
    const pane = this.app.current;
    if (!tab || !this.app.splits.has(tab)) {
      await this.app.requestClose(tab);
      return;
    }
    if (!(await this.app.mayEnd([pane], 'the pane'))) return;
    const other = this.app.splits.otherPane(tab, pane);
    if (!other) return;
    const gone = this.unsplit(tab, other);
    if (gone.id) await this.app.deleteSession(gone.id);
  }

  focusOtherPane() {
    this.app.splits.otherPane(this.app.active, this.app.current)?.focus();
  }
}
