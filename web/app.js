// The page: tabs of terminal sessions, the sign-in prompt, the status line.
// Module graph: app -> tab_bar, terminal_tab (-> xterm.js, protocol, api), token_prompt,
// status_bar, setup_progress, search_bar, settings_panel (-> settings, theme, renderer),
// help_panel (-> shortcuts), context_menu.

import { api } from './api.js';
import { CloseConfirm } from './close_confirm.js';
import { ContextMenu } from './context_menu.js';
import { acceptFiles, watchDownloads } from './file_transfer.js';
import { HelpPanel } from './help_panel.js';
import { SearchBar } from './search_bar.js';
import { SessionPicker } from './session_picker.js';
import { SplitLayout, clampRatio } from './split_layout.js';
import { RestoreProgress, SetupProgress } from './setup_progress.js';
import { StatusBar } from './status_bar.js';
import { TabBar } from './tab_bar.js';
import { STATE, TerminalTab } from './terminal_tab.js';
import { hardwareWebgl } from './renderer.js';
import { loadSettings, storeSettings } from './settings.js';
import { SettingsPanel } from './settings_panel.js';
import { THEMES, applyPageTheme } from './theme.js';
import { promptForToken } from './token_prompt.js';

const HEALTH_REFRESH_MS = 15_000;
// How soon to ask again while the saved token waits for the workspace (after a restart).
const CHECK_REFRESH_MS = 2000;
const TICK_MS = 1000;
const ACTIVE_TAB_KEY = 'coda.activeSession';
// The session of the pane that had the keyboard, so a reload puts it back in the same pane.
const FOCUSED_PANE_KEY = 'coda.focusedSession';
// The user's tab order, as session ids: the server lists sessions in creation order, and
// after a server restart every tab gets a new session in whatever order they reconnect.
const TAB_ORDER_KEY = 'coda.tabOrder';
const FIT_DEBOUNCE_MS = 30;
// Split tabs, by the first pane's session id: {second: session id, orientation, ratio}.
const SPLITS_KEY = 'coda.splits';

class App {
  constructor() {
    this.tabs = [];
    this.active = null;
    // A split tab's layout, by the tab (its first pane); the tab bar shows first panes only.
    this.splits = new Map();
    // The pane of the active tab that has the keyboard (null: the tab itself).
    this.focusedPane = null;
    this.settings = loadSettings();
    this.gpu = hardwareWebgl();
    this.patStatus = null;
    this.health = null;
    this.offline = null;
    this.prompting = false;
    // Ends the sign-in prompt on screen, while there is one (see signIn).
    this.cancelSignIn = null;
    this.fitTimer = 0;
    this.checkTimer = 0;
    // Where the key being pressed went down: a key pressed in a text field or dialog must not
    // reach a terminal that takes the focus before the key's keypress event.
    this.keydownTarget = null;

    this.terminals = document.getElementById('terminals');
    this.tabBar = new TabBar({
      onSelect: (tab) => this.activate(tab),
      onClose: (tab) => this.requestClose(tab),
      onRename: (tab, label) => this.renameTab(tab, label),
      onMove: (tab, target) => this.moveTab(tab, this.tabs.indexOf(target)),
    });
    this.confirm = new CloseConfirm();
    this.picker = new SessionPicker({
      onChoose: (session) => this.showSession(session),
      onClose: () => this.current?.focus(),
    });
    this.status = new StatusBar({ onSignIn: () => this.signIn() });
    this.setup = new SetupProgress();
    this.restore = new RestoreProgress();
    this.search = new SearchBar();
    this.settingsPanel = new SettingsPanel({
      onChange: (settings) => this.applySettings(settings),
      onClose: () => this.current?.focus(),
    });
    this.helpPanel = new HelpPanel({ onClose: () => this.current?.focus() });
    this.menu = new ContextMenu({
      items: [
        { label: 'Copy', hint: 'Ctrl+Shift+C', run: () => this.current?.copySelection(), enabled: () => Boolean(this.current?.term.hasSelection()) },
        { label: 'Paste', hint: 'Ctrl+Shift+V', run: () => this.pasteFromClipboard() },
        { label: 'Select all', run: () => this.current?.term.selectAll() },
        { label: 'Find…', hint: 'Ctrl+Shift+F', run: () => this.current && this.search.open(this.current) },
      ],
      onClose: (refocus) => refocus && this.current?.focus(),
    });

    // The page's Alt+Shift shortcuts (web/shortcuts.js lists them for the help panel), by key.
    this.altShiftKeys = new Map([
      ['t', () => this.newTab()],
      ['w', () => this.active && this.requestClose(this.active)],
      ['s', () => this.openPicker()],
      ['PageUp', () => this.moveActive(-1)],
      ['PageDown', () => this.moveActive(1)],
      ['h', () => this.split('row')],
      ['v', () => this.split('column')],
      ['x', () => this.closePane()],
      ['ArrowDown', () => this.focusOtherPane()],
      ['ArrowUp', () => this.focusOtherPane()],
      ['ArrowRight', () => this.selectRelative(1)],
      ['ArrowLeft', () => this.selectRelative(-1)],
    ]);

    this.tabCallbacks = {
      onStateChange: (tab) => this.tabChanged(tab),
      onSessionReplaced: (tab) => this.tabChanged(tab),
      onTokenEvent: (state) => this.tokenEvent(state),
      onReconnected: () => this.serverBack(),
      onTerminalKey: (event, tab) => this.terminalKey(event, tab),
    };
  }

  async start() {
    applyPageTheme(this.settings.theme);
    this.renderThemeToggle();
    document.getElementById('new-tab').addEventListener('click', () => this.newTab());
    document.getElementById('settings-button').addEventListener('click', () => this.openSettings());
    document.getElementById('help-button').addEventListener('click', () => this.toggleHelp());
    document.getElementById('sessions-button').addEventListener('click', () => this.openPicker());
    document.getElementById('split-row').addEventListener('click', () => this.split('row'));
    document.getElementById('split-column').addEventListener('click', () => this.split('column'));
    document.getElementById('theme-toggle').addEventListener('click', () => this.toggleTheme());
    window.addEventListener('keydown', (event) => this.pageKey(event), { capture: true });
    this.terminals.addEventListener('contextmenu', (event) => {
      if (!this.active) return;
      event.preventDefault();
      this.menu.open(event.clientX, event.clientY);
    });
    new ResizeObserver(() => this.scheduleFit()).observe(this.terminals);
    // Files in (paste or drop on a terminal) and out (coda-download): file_transfer.js.
    acceptFiles(this.terminals, {
      tabFor: (element) => this.allPanes().find((t) => t.pane.contains(element)) || this.current,
      notify: (text, kind) => this.flashMessage(text, kind),
    });
    setInterval(() => this.tick(), TICK_MS);

    // The account and the sessions are asked for at once: neither answer waits for the other.
    const sessionsLoaded = this.loadSessions();
    await this.refreshAccount();
    setInterval(() => this.refreshAccount(), HEALTH_REFRESH_MS);

    const sessions = inUserOrder(await sessionsLoaded);
    const remembered = sessionStorage.getItem(ACTIVE_TAB_KEY);
    this.openTabs(sessions);
    if (this.tabs.length === 0) {
      await this.newTab();
    } else {
      this.activate(this.tabs.find((t) => t.id === remembered) || this.tabs[0]);
    }
    if (!this.active) return; // No session could be started; the page message says why.
    const needsToken = this.needsToken();
    if (needsToken) this.active.hold();
    for (const tab of this.allPanes()) if (tab.state === STATE.CONNECTING && !tab.socket) tab.connect();
    // Install (and, after a redeploy, restore) progress shows while the sign-in prompt waits.
    this.setup.refresh();
    this.restore.refresh();
    if (needsToken) {
      const stale = this.health && this.health.token && this.health.token.state === 'invalid';
      await this.signIn(stale ? 'The token stopped working' : '');
    }
  }

  // Waits for the server: the page may load while coda_aio is still starting or restarting.
  async loadSessions() {
    for (let delay = 500; ; delay = Math.min(delay * 2, 10_000)) {
      try {
        const sessions = await api.listSessions();
        await api.learnServer();
        this.setOffline(null);
        return Array.isArray(sessions) ? sessions : [];
      } catch (err) {
        // A refusal (e.g. the owner check in App mode) says why; anything else is "not reachable".
        this.setOffline(err.status >= 400 ? err.message : 'coda_aio is not reachable');
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }

  // `problem` is why the server can't be used right now, or null when it can.
  setOffline(problem) {
    this.offline = problem;
    this.renderStatus();
  }

  // --- tabs -----------------------------------------------------------------------------

  addTab(id, label) {
    const tab = this.createPane(id, label);
    this.tabs.push(tab);
    return tab;
  }

  // One terminal: a tab of its own, or the second pane of a split tab.
  createPane(id, label) {
    const pane = new TerminalTab({ id, label, settings: this.settings, gpu: this.gpu, host: this.terminals, callbacks: this.tabCallbacks });
    watchDownloads(pane, (text, kind) => this.flashMessage(text, kind));
    pane.pane.addEventListener('focusin', () => this.paneFocused(pane));
    return pane;
  }

  // A tab for every live session (none becomes unreachable), split as this browser left it.
  openTabs(sessions) {
    const layout = loadSplits();
    const live = new Map(sessions.map((s) => [s.id, s]));
    const secondOf = new Map();
    for (const [first, entry] of Object.entries(layout)) {
      if (live.has(first) && live.has(entry.second) && first !== entry.second && !layout[entry.second]) secondOf.set(entry.second, first);
    }
    for (const session of sessions) if (!secondOf.has(session.id)) this.addTab(session.id, session.label || 'Terminal');
    for (const [secondId, firstId] of secondOf) {
      const tab = this.tabs.find((t) => t.id === firstId);
      const label = live.get(secondId).label || 'Terminal';
      if (tab && !this.splits.has(tab)) this.layOut(tab, this.createPane(secondId, label), layout[firstId]);
      else this.addTab(secondId, label);
    }
  }

  nextLabel() {
    const used = new Set(this.allPanes().map((t) => t.label));
    for (let n = 1; ; n += 1) if (!used.has(`Terminal ${n}`)) return `Terminal ${n}`;
  }

  async newTab() {
    const label = this.nextLabel();
    const previous = this.active;
    // The tab is laid out before the session exists, so the shell starts at the right size.
    const tab = this.addTab(null, label);
    this.activate(tab);
    tab.fit();
    try {
      const created = await api.createSession({ label, ...tab.size });
      tab.id = created.id;
    } catch (err) {
      this.removeTab(tab);
      // The tab that was there stays visible, active and focused.
      if (previous && this.tabs.includes(previous)) this.activate(previous);
      this.flashMessage(err.message);
      return null;
    }
    this.tabChanged(tab);
    tab.connect();
    return tab;
  }

  activate(tab) {
    if (!tab) return;
    if (this.active && this.active !== tab) this.showPanes(this.active, false);
    this.active = tab;
    if (!this.panesOf(tab).includes(this.focusedPane)) {
      const remembered = sessionStorage.getItem(FOCUSED_PANE_KEY);
      this.focusedPane = this.panesOf(tab).find((pane) => pane.id && pane.id === remembered) || tab;
    }
    this.showPanes(tab, true);
    if (tab.id) sessionStorage.setItem(ACTIVE_TAB_KEY, tab.id);
    this.fitAll();
    this.search.follow(this.current);
    this.current.focus();
    this.render();
  }

  async closeTab(tab) {
    const index = this.tabs.indexOf(tab);
    const ids = this.panesOf(tab).map((pane) => pane.id).filter(Boolean);
    this.removeTab(tab);
    for (const id of ids) await this.deleteSession(id);
    if (this.tabs.length === 0) await this.newTab();
    else if (this.active === tab || !this.active) this.activate(this.tabs[Math.min(index, this.tabs.length - 1)]);
  }

  async deleteSession(id) {
    try {
      await api.deleteSession(id);
    } catch (err) {
      if (err.status !== 404) this.flashMessage(err.message);
    }
  }

  // Closing ends the shell: ask first when it runs something (an agent, a build, an editor).
  async requestClose(tab) {
    if (!tab || !(await this.mayEnd(this.panesOf(tab), 'the tab')) || !this.tabs.includes(tab)) return;
    await this.closeTab(tab);
  }

  // True when none of `panes` runs anything, or the person agreed to end it.
  async mayEnd(panes, what) {
    if (this.confirm.isOpen) return false;
    const running = await this.runningCommand(panes);
    if (!running) return true;
    const question = `“${running.command}” is still running in ${running.pane.label}. Close ${what} and end it?`;
    const yes = await this.confirm.ask(question);
    if (!yes) this.current?.focus();
    return yes;
  }

  // The first of `panes` whose foreground job is not the shell waiting at its prompt.
  async runningCommand(panes) {
    const live = panes.filter((pane) => pane.id && pane.state !== STATE.EXITED);
    if (live.length === 0) return null;
    let sessions;
    try {
      sessions = await api.listSessions();
    } catch {
      return null; // The server is away: the close itself will say so.
    }
    for (const pane of live) {
      const command = sessions.find((s) => s.id === pane.id)?.process?.command;
      if (command) return { pane, command };
    }
    return null;
  }

  moveTab(tab, index) {
    if (index < 0 || !this.tabs.includes(tab)) return;
    this.tabs = this.tabs.filter((t) => t !== tab);
    this.tabs.splice(index, 0, tab);
    this.render();
  }

  // From the keyboard: one place left or right, no wrapping (a move you can see).
  moveActive(step) {
    if (!this.active) return;
    const index = this.tabs.indexOf(this.active) + step;
    if (index >= 0 && index < this.tabs.length) this.moveTab(this.active, index);
    this.current.focus();
  }

  async openPicker() {
    if (this.prompting || this.picker.isOpen) return;
    let sessions;
    try {
      sessions = await api.listSessions();
    } catch (err) {
      this.flashMessage(err.message);
      return;
    }
    const whereShown = (id) => {
      const tab = this.tabs.find((t) => this.panesOf(t).some((pane) => pane.id === id));
      return tab ? tab.label : null;
    };
    this.picker.open(sessions, { whereShown, currentId: this.current?.id });
  }

  // The chosen session in the current tab; the session it showed keeps running, detached,
  // and stays in the picker. A session some tab already shows is reached by going to that tab.
  showSession(session) {
    const pane = this.current;
    const shown = this.allPanes().find((p) => p.id === session.id);
    if (shown) {
      this.activate(this.tabs.find((t) => this.panesOf(t).includes(shown)));
      shown.focus();
      return;
    }
    if (!pane) return;
    pane.switchTo(session.id, session.label || 'Terminal');
    this.tabChanged(pane);
    pane.focus();
  }

  removeTab(tab) {
    this.tabs = this.tabs.filter((t) => t !== tab);
    const panes = this.panesOf(tab);
    if (panes.includes(this.search.tab)) this.search.close();
    const split = this.splits.get(tab);
    this.splits.delete(tab);
    for (const pane of panes) pane.dispose();
    split?.element.remove();
    if (this.active === tab) this.active = null;
    this.render();
  }

  // --- split panes ----------------------------------------------------------------------

  panesOf(tab) {
    const split = this.splits.get(tab);
    return split ? [split.first, split.second] : [tab];
  }

  allPanes() {
    return this.tabs.flatMap((tab) => this.panesOf(tab));
  }

  // The terminal the person works in: the focused pane of the visible tab.
  get current() {
    return this.active && this.panesOf(this.active).includes(this.focusedPane) ? this.focusedPane : this.active;
  }

  showPanes(tab, visible) {
    for (const pane of this.panesOf(tab)) {
      if (visible) pane.show();
      else pane.hide();
    }
    const split = this.splits.get(tab);
    if (split) split.element.hidden = !visible;
    if (visible) this.markFocusedPane();
  }

  // `.active` marks the pane that has the keyboard (the status line and search follow it).
  markFocusedPane() {
    const current = this.current;
    for (const pane of this.panesOf(this.active)) pane.pane.classList.toggle('active', pane === current);
  }

  paneFocused(pane) {
    if (!this.active || pane === this.current || !this.panesOf(this.active).includes(pane)) return;
    this.focusedPane = pane;
    this.rememberFocus();
    this.markFocusedPane();
    this.search.follow(pane);
    this.renderStatus();
  }

  layOut(tab, second, { orientation = 'row', ratio = 0.5 } = {}) {
    const split = new SplitLayout({
      host: this.terminals, first: tab, second, orientation, ratio: clampRatio(ratio),
      onResize: () => {
        this.scheduleFit();
        this.saveSplits();
      },
    });
    this.splits.set(tab, split);
    if (tab !== this.active) this.showPanes(tab, false);
    return split;
  }

  // A second pane with a new session beside (row) or below (column) the active tab's.
  async split(orientation) {
    const tab = this.active;
    if (!tab || this.prompting) return;
    if (this.splits.has(tab)) {
      this.flashMessage('This tab has two panes already: close one (Alt+Shift+X) first.');
      return;
    }
    const label = this.nextLabel();
    const second = this.createPane(null, label);
    this.layOut(tab, second, { orientation });
    this.focusedPane = second;
    this.showPanes(tab, true);
    // Laid out before the session exists, so the shell starts at the pane's size.
    this.fitAll();
    try {
      const created = await api.createSession({ label, ...second.size });
      second.id = created.id;
    } catch (err) {
      if (this.splits.get(tab)?.second === second) this.unsplit(tab, tab);
      this.flashMessage(err.message);
      return;
    }
    if (this.splits.get(tab)?.second !== second) {
      await this.deleteSession(second.id); // The tab closed meanwhile.
      return;
    }
    second.connect();
    if (this.active === tab) {
      this.search.follow(this.current);
      this.current.focus();
    }
    this.render();
  }

  // Back to one pane: `keep` stays (and becomes the tab), the other is disposed of.
  unsplit(tab, keep) {
    const split = this.splits.get(tab);
    const gone = keep === split.first ? split.second : split.first;
    this.splits.delete(tab);
    split.dissolve(keep);
    if (this.search.tab === gone) this.search.close();
    gone.dispose();
    if (keep !== tab) this.tabs[this.tabs.indexOf(tab)] = keep;
    if (this.active === tab) this.active = keep;
    this.focusedPane = keep;
    if (this.active === keep) this.activate(keep);
    else this.render();
    return gone;
  }

  // Ends the focused pane's session; a tab with one pane closes as a whole.
  async closePane() {
    const tab = this.active;
    const pane = this.current;
    if (!tab || !this.splits.has(tab)) {
      await this.requestClose(tab);
      return;
    }
    if (!(await this.mayEnd([pane], 'the pane'))) return;
    const split = this.splits.get(tab);
    if (!split || (split.first !== pane && split.second !== pane)) return;
    const gone = this.unsplit(tab, pane === split.first ? split.second : split.first);
    if (gone.id) await this.deleteSession(gone.id);
  }

  focusOtherPane() {
    const split = this.splits.get(this.active);
    if (split) (this.current === split.first ? split.second : split.first).focus();
  }

  saveSplits() {
    const layout = {};
    for (const [tab, split] of this.splits) {
      if (tab.id && split.second.id) layout[tab.id] = { second: split.second.id, orientation: split.orientation, ratio: split.ratio };
    }
    localStorage.setItem(SPLITS_KEY, JSON.stringify(layout));
  }

  async renameTab(tab, label) {
    if (label === null) {
      this.render();
      this.current?.focus();
      return;
    }
    const previous = tab.label;
    tab.label = label;
    this.render();
    this.current?.focus();
    try {
      await api.renameSession(tab.id, label);
    } catch (err) {
      tab.label = previous;
      this.render();
      this.flashMessage(`Could not rename: ${err.message}`);
    }
  }

  selectRelative(step) {
    if (this.tabs.length < 2 || !this.active) return;
    const index = this.tabs.indexOf(this.active);
    this.activate(this.tabs[(index + step + this.tabs.length) % this.tabs.length]);
  }

  // --- size -----------------------------------------------------------------------------

  scheduleFit() {
    clearTimeout(this.fitTimer);
    this.fitTimer = setTimeout(() => this.fitAll(), FIT_DEBOUNCE_MS);
  }

  // Only the visible tab can be measured; each of its panes fits its own size. Hidden tabs of
  // one pane share the size of a visible one; hidden split tabs fit when shown.
  fitAll() {
    if (!this.active) return;
    const visible = this.panesOf(this.active);
    for (const pane of visible) pane.fit();
    if (visible.length > 1) return;
    const { cols, rows } = this.active.size;
    for (const tab of this.tabs) {
      if (tab !== this.active && !this.splits.has(tab) && (tab.term.cols !== cols || tab.term.rows !== rows)) tab.term.resize(cols, rows);
    }
  }

  // --- credentials ----------------------------------------------------------------------

  // While the saved token waits for the workspace nothing needs pasting yet.
  needsToken() {
    return Boolean(this.patStatus && this.patStatus.workspace_host && !this.patStatus.valid
      && !this.patStatus.checking_saved_token);
  }

  async refreshAccount() {
    const wasChecking = Boolean(this.patStatus?.checking_saved_token);
    const [patStatus, health] = await Promise.allSettled([api.patStatus(), api.health()]);
    this.patStatus = patStatus.status === 'fulfilled' ? patStatus.value : this.patStatus;
    this.health = health.status === 'fulfilled' ? health.value : this.health;
    this.status.showAccount(this.patStatus, this.health);
    // Signed in elsewhere (another tab, a restart that kept the token): a prompt here is stale.
    if (this.prompting && this.patStatus?.valid) this.cancelSignIn?.();
    if (this.patStatus) this.setup.setWorkspaceConfigured(Boolean(this.patStatus.workspace_host));
    clearTimeout(this.checkTimer);
    if (this.patStatus?.checking_saved_token) this.checkTimer = setTimeout(() => this.refreshAccount(), CHECK_REFRESH_MS);
    else if (wasChecking && this.needsToken()) this.signIn('The saved token stopped working');
  }

  // After a restart the server may have lost the token (or gained one): catch up at once.
  async serverBack() {
    await this.refreshAccount();
    if (this.needsToken()) this.signIn();
  }

  tokenEvent(state) {
    this.refreshAccount();
    if (state === 'invalid') this.signIn('The token stopped working');
  }

  async signIn(reason = '') {
    const tab = this.active;
    if (this.prompting || !tab || !this.patStatus || !this.patStatus.workspace_host) return;
    this.prompting = true;
    tab.hold();
    this.render();
    tab.focus();
    const result = await promptForToken(tab, {
      workspaceHost: this.patStatus.workspace_host,
      tokenPageUrl: this.patStatus.token_page_url,
      reason,
      onCancellable: (cancel) => { this.cancelSignIn = cancel; },
    });
    this.cancelSignIn = null;
    this.prompting = false;
    if (this.tabs.includes(tab)) {
      tab.release();
      if (!tab.socket && tab.id && tab.state === STATE.CONNECTING) tab.connect();
    }
    this.render();
    if (result) {
      await this.refreshAccount();
      this.setup.refresh();
      this.restore.refresh();
    }
  }

  // --- keys -----------------------------------------------------------------------------

  // Shortcuts the page owns, wherever the focus is; they never reach the shell.
  pageKey(event) {
    this.keydownTarget = event.target;
    // A dialog that asks something keeps every key until it is answered.
    if (this.confirm.isOpen || this.picker.isOpen) return;
    const key = event.key.toLowerCase();
    let action = null;
    const ctrlOnly = event.ctrlKey && !event.shiftKey && !event.altKey;
    if (ctrlOnly && key === ',' && !this.helpPanel.isOpen) action = () => (this.settingsPanel.isOpen ? this.settingsPanel.close() : this.openSettings());
    else if (ctrlOnly && key === '/' && !this.settingsPanel.isOpen) action = () => this.toggleHelp();
    // An open panel or menu, or a tab name being edited, keeps the keys typed in it; only a
    // panel's own shortcut closes it.
    else if (this.settingsPanel.isOpen || this.helpPanel.isOpen || this.menu.isOpen || this.tabBar.editing) return;
    else if (this.current && this.terminals.contains(event.target) && (event.key === 'ContextMenu'
      || (event.key === 'F10' && event.shiftKey && !event.ctrlKey && !event.altKey))) action = () => this.openMenuAtCursor();
    else if (event.ctrlKey && event.shiftKey && !event.altKey && key === 'f') action = () => this.current && this.search.open(this.current);
    else if (event.altKey && event.shiftKey && !event.ctrlKey) action = this.altShiftKeys.get(event.key.length === 1 ? key : event.key);
    if (!action) return;
    event.preventDefault();
    event.stopPropagation();
    action();
  }

  // The menu from the keyboard: at the terminal's cursor.
  openMenuAtCursor() {
    const cursor = this.current.pane.querySelector('.xterm-helper-textarea');
    const box = (cursor || this.current.pane).getBoundingClientRect();
    this.menu.open(box.left, box.bottom);
  }

  // Chosen by the person (menu), so the clipboard's text goes to the shell as a paste would.
  async pasteFromClipboard() {
    const tab = this.current;
    try {
      const text = await navigator.clipboard.readText();
      if (text && tab) tab.paste(text);
    } catch (err) {
      this.flashMessage(`Paste needs clipboard access (or use Ctrl+Shift+V): ${err.message}`);
    }
  }

  // Keys xterm.js must leave to the browser: copy and paste with Ctrl+Shift.
  terminalKey(event, tab) {
    // The keypress of a key that went down elsewhere (Enter in the rename field, which then
    // hands the focus back to the terminal) belongs to that field, not to the shell.
    if (event.type === 'keypress' && this.keydownTarget !== tab.term.textarea) return false;
    if (event.type !== 'keydown' || !event.ctrlKey || !event.shiftKey || event.altKey) return true;
    const key = event.key.toLowerCase();
    if (key === 'c') {
      tab.copySelection();
      event.preventDefault();
      return false;
    }
    // Returning false lets the browser's own paste happen; xterm.js then receives the paste event.
    return key !== 'v';
  }

  // --- rendering ------------------------------------------------------------------------

  openSettings() {
    this.settingsPanel.open(this.settings);
  }

  toggleHelp() {
    if (this.helpPanel.isOpen) this.helpPanel.close();
    else this.helpPanel.open();
  }

  // One click between a dark and a light background: the panel has the other six themes.
  toggleTheme() {
    const light = THEMES[this.settings.theme].kind === 'light';
    this.applySettings({ ...this.settings, theme: light ? 'dark' : 'light' });
    this.current?.focus();
  }

  renderThemeToggle() {
    const button = document.getElementById('theme-toggle');
    const toLight = THEMES[this.settings.theme].kind === 'dark';
    button.textContent = toLight ? '☀' : '☾';
    button.title = `Switch to the ${toLight ? 'light' : 'dark'} theme`;
    button.setAttribute('aria-label', button.title);
  }

  applySettings(settings) {
    this.settings = settings;
    storeSettings(settings);
    applyPageTheme(settings.theme);
    this.renderThemeToggle();
    for (const tab of this.allPanes()) tab.applySettings(settings, this.gpu);
    // A new font or size changes the cell size, and with it how many rows and columns fit.
    this.fitAll();
  }

  tabChanged(tab) {
    if (tab === this.active && tab.id) sessionStorage.setItem(ACTIVE_TAB_KEY, tab.id);
    this.render();
  }

  render() {
    this.tabBar.render(this.tabs, this.active);
    this.renderStatus();
    const order = this.tabs.map((t) => t.id).filter(Boolean);
    if (order.length) localStorage.setItem(TAB_ORDER_KEY, JSON.stringify(order));
    this.saveSplits();
    this.rememberFocus();
  }

  rememberFocus() {
    const pane = this.current;
    if (pane && pane.id) sessionStorage.setItem(FOCUSED_PANE_KEY, pane.id);
  }

  renderStatus() {
    const body = document.body;
    const tab = this.current;
    let state = 'connecting';
    if (this.prompting) state = 'prompt';
    else if (tab && tab.state === STATE.CONNECTED) state = 'shell';
    else if (tab && tab.state === STATE.EXITED) state = 'exited';
    else if (tab && tab.state === STATE.FAILED) state = 'failed';
    body.dataset.terminalState = state;
    body.dataset.tabCount = String(this.tabs.length);
    this.status.showConnection(tab, { offline: this.offline });
    this.status.setServerDown(Boolean(this.offline)
      || Boolean(tab && (tab.state === STATE.RECONNECTING || tab.state === STATE.SERVER_RESTARTING)));
    body.dataset.splitCount = String(this.splits.size);
    if (tab) document.title = `${tab.label} · coda_aio`;
  }

  tick() {
    this.status.renderRotation();
    const tab = this.current;
    if (tab && (tab.state === STATE.RECONNECTING || tab.state === STATE.SERVER_RESTARTING)) this.renderStatus();
  }

  // `kind` colours the frame: 'bad' (the default: most messages say what went wrong), 'good', 'info'.
  flashMessage(text, kind = 'bad') {
    const el = document.getElementById('page-message');
    el.textContent = text;
    el.dataset.kind = kind;
    el.hidden = false;
    clearTimeout(this.messageTimer);
    this.messageTimer = setTimeout(() => {
      el.hidden = true;
    }, 6000);
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

// Sessions in the order the user last saw their tabs; sessions not seen yet go last.
function inUserOrder(sessions) {
  let order = [];
  try {
    order = JSON.parse(localStorage.getItem(TAB_ORDER_KEY) || '[]');
  } catch {
    order = [];
  }
  const rank = new Map(order.map((id, index) => [id, index]));
  const position = (s) => (rank.has(s.id) ? rank.get(s.id) : order.length);
  return [...sessions].sort((a, b) => position(a) - position(b));
}

new App().start().catch((err) => {
  const el = document.getElementById('page-message');
  el.textContent = `The terminal could not start: ${err.message}`;
  el.hidden = false;
  throw err;
});
