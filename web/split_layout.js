// A tab split in two: two terminal panes side by side ('row') or stacked ('column') with a
// divider between them, dragged with the pointer or moved with the arrow keys once focused.
// It only lays the panes out; the app decides which sessions they show and when to fit them.

const MIN_RATIO = 0.15;
const MAX_RATIO = 0.85;
const KEY_STEP = 0.05;

export const ORIENTATIONS = Object.freeze(['row', 'column']);

export function clampRatio(ratio) {
  const value = Number(ratio);
  return Number.isFinite(value) ? Math.min(MAX_RATIO, Math.max(MIN_RATIO, value)) : 0.5;
}

export class SplitLayout {
  // `first` and `second` are TerminalTabs (their `.pane` elements are moved in here);
  // `onResize(ratio)` runs whenever the divider moves; `onDragEnd()` when the pointer lets go
  // of it (the app gives the keyboard back to the focused pane: a drag is not a move to the
  // divider, and keys typed next belong to the terminal).
  constructor({ host, first, second, orientation, ratio, onResize, onDragEnd = () => {} }) {
    this.first = first;
    this.second = second;
    this.orientation = ORIENTATIONS.includes(orientation) ? orientation : 'row';
    this.onResize = onResize;
    this.onDragEnd = onDragEnd;
    this.host = host;

    this.element = document.createElement('div');
    this.element.className = 'split';
    this.element.dataset.orientation = this.orientation;
    this.divider = document.createElement('div');
    this.divider.className = 'split-divider';
    this.divider.tabIndex = 0;
    this.divider.setAttribute('role', 'separator');
    this.divider.setAttribute('aria-orientation', this.orientation === 'row' ? 'vertical' : 'horizontal');
    this.divider.setAttribute('aria-label', 'Pane divider (arrow keys move it)');
    this.divider.setAttribute('aria-valuemin', String(MIN_RATIO * 100));
    this.divider.setAttribute('aria-valuemax', String(MAX_RATIO * 100));
    host.append(this.element);
    this.element.append(first.pane, this.divider, second.pane);
    this.setRatio(ratio, { notify: false });
    this.listen();
  }

  setRatio(ratio, { notify = true } = {}) {
    this.ratio = clampRatio(ratio);
    const tracks = `minmax(0, ${this.ratio}fr) auto minmax(0, ${1 - this.ratio}fr)`;
    this.element.style.gridTemplateColumns = this.orientation === 'row' ? tracks : '';
    this.element.style.gridTemplateRows = this.orientation === 'column' ? tracks : '';
    this.divider.setAttribute('aria-valuenow', String(Math.round(this.ratio * 100)));
    if (notify) this.onResize(this.ratio);
  }

  listen() {
    this.divider.addEventListener('pointerdown', (event) => {
      event.preventDefault();
      this.divider.setPointerCapture(event.pointerId);
      this.divider.focus();
      this.element.classList.add('resizing');
    });
    this.divider.addEventListener('pointermove', (event) => {
      if (!this.divider.hasPointerCapture(event.pointerId)) return;
      const box = this.element.getBoundingClientRect();
      const ratio = this.orientation === 'row'
        ? (event.clientX - box.left) / box.width
        : (event.clientY - box.top) / box.height;
      this.setRatio(ratio);
    });
    const stop = (event) => {
      if (!this.divider.hasPointerCapture(event.pointerId)) return;
      this.divider.releasePointerCapture(event.pointerId);
      this.element.classList.remove('resizing');
      this.onDragEnd();
    };
    this.divider.addEventListener('pointerup', stop);
    this.divider.addEventListener('pointercancel', stop);
    this.divider.addEventListener('keydown', (event) => {
      if (event.altKey || event.ctrlKey || event.metaKey) return; // the page's shortcuts
      const back = this.orientation === 'row' ? 'ArrowLeft' : 'ArrowUp';
      const forward = this.orientation === 'row' ? 'ArrowRight' : 'ArrowDown';
      if (event.key === back) this.setRatio(this.ratio - KEY_STEP);
      else if (event.key === forward) this.setRatio(this.ratio + KEY_STEP);
      else if (event.key === 'Home') this.setRatio(MIN_RATIO);
      else if (event.key === 'End') this.setRatio(MAX_RATIO);
      else return;
      event.preventDefault();
    });
  }

  // Hands `keep`'s pane back to the host (the other pane is the caller's to dispose of).
  dissolve(keep) {
    this.host.append(keep.pane);
    this.element.remove();
  }
}
