// The row of tabs at the top: one element per terminal tab, with inline rename (double-click)
// and a close button. Elements are kept per tab and updated in place, so a click that
// re-renders never replaces the element under the pointer (which would swallow a double-click).
// Tabs are dragged to a new place (HTML5 drag and drop); the app moves them from the keyboard.

export class TabBar {
  constructor({ onSelect, onClose, onRename, onMove }) {
    this.nav = document.getElementById('tabs');
    this.onSelect = onSelect;
    this.onClose = onClose;
    this.onRename = onRename;
    this.onMove = onMove;
    this.elements = new Map();
    this.editing = null;
    this.dragging = null;
  }

  render(tabs, activeTab) {
    for (const [tab, el] of this.elements) {
      if (!tabs.includes(tab)) {
        el.remove();
        this.elements.delete(tab);
      }
    }
    tabs.forEach((tab, index) => {
      let el = this.elements.get(tab);
      if (!el) {
        el = this.createTab(tab);
        this.elements.set(tab, el);
      }
      if (this.nav.children[index] !== el) this.nav.insertBefore(el, this.nav.children[index] || null);
      this.updateTab(el, tab, tab === activeTab);
    });
    this.elements.get(activeTab)?.scrollIntoView({ block: 'nearest', inline: 'nearest' });
  }

  updateTab(el, tab, active) {
    el.classList.toggle('active', active);
    el.setAttribute('aria-selected', String(active));
    if (tab.id) el.dataset.sessionId = tab.id;
    el.dataset.state = tab.state;
    el.title = `${tab.label} (double-click or Alt+Shift+R to rename)`;
    const label = el.querySelector('.tab-label');
    if (label && label.textContent !== tab.label) label.textContent = tab.label;
    el.querySelector('.tab-close').setAttribute('aria-label', `Close ${tab.label}`);
  }

  createTab(tab) {
    const el = document.createElement('div');
    el.className = 'tab';
    el.setAttribute('role', 'tab');
    el.draggable = true;

    const dot = document.createElement('span');
    dot.className = 'tab-dot';
    const label = document.createElement('span');
    label.className = 'tab-label';
    label.textContent = tab.label;
    const close = document.createElement('button');
    close.type = 'button';
    close.className = 'tab-close';
    close.title = 'Close this terminal (ends its shell)';
    close.textContent = '×';
    el.append(dot, label, close);

    el.addEventListener('mousedown', (event) => {
      // Middle click closes, like browser tabs.
      if (event.button === 1) {
        event.preventDefault();
        this.onClose(tab);
      }
    });
    el.addEventListener('click', (event) => {
      if (close.contains(event.target)) this.onClose(tab);
      else if (this.editing !== tab) this.onSelect(tab);
    });
    el.addEventListener('dblclick', (event) => {
      if (!close.contains(event.target)) this.startRename(tab, el);
    });
    this.listenForDrag(tab, el);
    return el;
  }

  // Dropped on a tab, the dragged tab takes that tab's place.
  listenForDrag(tab, el) {
    el.addEventListener('dragstart', (event) => {
      if (this.editing) {
        event.preventDefault();
        return;
      }
      this.dragging = tab;
      event.dataTransfer.effectAllowed = 'move';
      event.dataTransfer.setData('text/plain', tab.label);
      el.classList.add('dragging');
    });
    el.addEventListener('dragend', () => {
      this.dragging = null;
      el.classList.remove('dragging');
    });
    el.addEventListener('dragover', (event) => {
      if (!this.dragging) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = 'move';
    });
    el.addEventListener('drop', (event) => {
      if (!this.dragging) return;
      event.preventDefault();
      const dragged = this.dragging;
      this.dragging = null;
      if (dragged !== tab) this.onMove(dragged, tab);
    });
  }

  // From the keyboard (Alt+Shift+R): the same inline field as a double-click.
  rename(tab) {
    const el = this.elements.get(tab);
    if (el) this.startRename(tab, el);
  }

  startRename(tab, el) {
    if (this.editing) return;
    const label = el.querySelector('.tab-label');
    const input = document.createElement('input');
    input.className = 'tab-rename';
    input.value = tab.label;
    input.maxLength = 64;
    input.size = Math.max(6, tab.label.length);
    input.setAttribute('aria-label', 'Terminal name');
    this.editing = tab;
    el.draggable = false; // Selecting text in the name must not drag the tab.
    label.hidden = true;
    label.after(input);
    input.focus();
    input.select();

    let finished = false;
    const finish = (commit) => {
      if (finished) return;
      finished = true;
      this.editing = null;
      el.draggable = true;
      input.remove();
      label.hidden = false;
      const value = input.value.trim();
      this.onRename(tab, commit && value && value !== tab.label ? value : null);
    };
    input.addEventListener('keydown', (event) => {
      // The page's shortcuts and the terminal must not see keys typed into the name.
      event.stopPropagation();
      // preventDefault: no keypress follows, so the Enter can't land in the terminal that
      // takes the focus back.
      if (event.key === 'Enter') {
        event.preventDefault();
        finish(true);
      } else if (event.key === 'Escape') {
        event.preventDefault();
        finish(false);
      }
    });
    input.addEventListener('input', () => {
      input.size = Math.max(6, input.value.length);
    });
    input.addEventListener('blur', () => finish(true));
    input.addEventListener('click', (event) => event.stopPropagation());
    input.addEventListener('dblclick', (event) => event.stopPropagation());
  }
}
