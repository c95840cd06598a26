// The page's split tabs: which tab has a second pane, each split's layout (split_layout.js),
// and what this browser remembers of them, so a reload splits the same tabs the same way.
// A tab is its first pane (a TerminalTab); the tab bar shows first panes only.

import { SplitLayout, clampRatio } from './split_layout.js';

// Split tabs, by the first pane's session id: {second: session id, orientation, ratio}.
const SPLITS_KEY = 'coda.splits';

export class PaneSplits {
  // `onResize()` runs when a divider moves (the app refits the panes); `onDragEnd()` when a
  // divider drag ends.
  constructor({ host, onResize, onDragEnd }) {
    this.host = host;
    this.onResize = onResize;
    this.onDragEnd = onDragEnd;
    this.layouts = new Map();
  }

  get size() {
    return this.layouts.size;
  }

  has(tab) {
    return this.layouts.has(tab);
  }

  get(tab) {
    return this.layouts.get(tab);
  }

  panesOf(tab) {
    const split = this.layouts.get(tab);
    return split ? [split.first, split.second] : [tab];
  }

  // The pane of `tab` that is not `pane` (null when the tab has one pane).
  otherPane(tab, pane) {
    const split = this.layouts.get(tab);
    if (!split) return null;
    return pane === split.first ? split.second : split.first;
  }

  // The saved splits whose two sessions are both live: {second id: {first, orientation, ratio}}.
  // A session is the second pane of one split at most, and never a first pane too.
  savedPairs(liveIds) {
    const layout = loadSplits();
    const pairs = new Map();
    for (const [first, entry] of Object.entries(layout)) {
      if (liveIds.has(first) && liveIds.has(entry.second) && first !== entry.second && !layout[entry.second]) {
        pairs.set(entry.second, { first, orientation: entry.orientation, ratio: entry.ratio });
      }
    }
    return pairs;
  }

  layOut(tab, second, { orientation = 'row', ratio = 0.5 } = {}) {
    const split = new SplitLayout({
      host: this.host, first: tab, second, orientation, ratio: clampRatio(ratio),
      onDragEnd: this.onDragEnd,
      onResize: () => {
        this.onResize();
        this.save();
      },
    });
    this.layouts.set(tab, split);
    return split;
  }

  setVisible(tab, visible) {
    const split = this.layouts.get(tab);
    if (split) split.element.hidden = !visible;
  }

  // The tab is gone: its split's element goes too (its panes are the caller's to dispose of).
  remove(tab) {
    const split = this.layouts.get(tab);
    this.layouts.delete(tab);
    split?.element.remove();
  }

  // Back to one pane: `keep` stays in the page; returns the other, for the caller to dispose of.
  dissolve(tab, keep) {
    const split = this.layouts.get(tab);
    const gone = keep === split.first ? split.second : split.first;
    this.layouts.delete(tab);
    split.dissolve(keep);
    return gone;
  }

  save() {
    const layout = {};
    for (const [tab, split] of this.layouts) {
      if (tab.id && split.second.id) layout[tab.id] = { second: split.second.id, orientation: split.orientation, ratio: split.ratio };
    }
    localStorage.setItem(SPLITS_KEY, JSON.stringify(layout));
  }
}

// The split layout this browser saved: {first session id: {second, orientation, ratio}}.
function loadSplits() {
  try {
    const layout = JSON.parse(localStorage.getItem(SPLITS_KEY) || '{}');
    if (!layout || typeof layout !== 'object' || Array.isArray(layout)) return {};
    return Object.fromEntries(Object.entries(layout).filter(([, entry]) => entry && typeof entry.second === 'string'));
  } catch {
    return {};
  }
}
