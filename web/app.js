// The page: tabs of terminal sessions, the sign-in prompt, the status line.
// Module graph: app -> tab_bar, terminal_tab (-> xterm.js, protocol, api), token_prompt,
// pane_splits (-> split_layout), split_actions, key_bar, touch_scroll, clipboard_paste,
// clipboard_writes, file_transfer,
// status_bar, setup_progress, search_bar, settings_panel (-> settings, theme, renderer),
// help_panel (-> shortcuts), context_menu.

import { api } from './api.js';
import { CloseConfirm } from './close_confirm.js';
import { ContextMenu } from './context_menu.js';
import { readClipboard } from './clipboard_paste.js';
import { watchClipboardWrites } from './clipboard_writes.js';
import { acceptFiles, watchDownloads } from './file_transfer.js';
import { HelpPanel } from './help_panel.js';
import { KeyBar } from './key_bar.js';
import { SearchBar } from './search_bar.js';
import { SessionPicker } from './session_picker.js';
import { PaneSplits } from './pane_splits.js';
import { SplitActions } from './split_actions.js';
import { RestoreProgress, SetupProgress } from './setup_progress.js';
import { StatusBar } from './status_bar.js';
import { TabBar } from './tab_bar.js';
import { STATE, TerminalTab } from './terminal_tab.js';
import { followTouchScroll } from './touch_scroll.js';
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

class App {
  constructor() {
    this.tabs = [];
    this.active = null;
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
    // Tabs split in two panes (pane_splits.js); the tab bar shows first panes only.
    this.splitActions = new SplitActions(this);
    this.splits = new PaneSplits({
      host: this.terminals, onResize: () => this.scheduleFit(), onDragEnd: () => this.current?.focus(),
    });
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
    // A click on a status item opens its panel and gives the keyboard back to the terminal.
    this.setup = new SetupProgress({ onClicked: () => this.current?.focus() });
    this.restore = new RestoreProgress({ onClicked: () => this.current?.focus() });
    this.search = new SearchBar();
    this.settingsPanel = new SettingsPanel({
      onChange: (settings) => this.applySettings(settings),
      onClose: () => this.current?.focus(),
    });
    this.helpPanel = new HelpPanel({ onClose: () => this.current?.focus() });
    this.keyBar = new KeyBar({ element: document.getElementById('key-bar'), current: () => this.current });
    this.menu = new ContextMenu({
      items: [
        { label: 'Copy', hint: 'Ctrl+Shift+C', run: () => this.current?.copySelection(), enabled: () => Boolean(this.current?.term.hasSelection()) },
        { label: 'Paste', hint: 'Ctrl+V', run: () => this.pasteFromClipboard() },
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
      ['h', () => this.splitActions.split('row')],
      ['v', () => this.splitActions.split('column')],
      ['x', () => this.splitActions.closePane()],
      ['r', () => this.active && this.tabBar.rename(this.active)],
      ['ArrowDown', () => this.splitActions.focusOtherPane()],
      ['ArrowUp', () => this.splitActions.focusOtherPane()],
      ['ArrowRight', () => this.selectRelative(1)],
      ['ArrowLeft', () => this.selectRelative(-1)],
    ]);

    this.tabCallbacks = {
      onStateChange: (tab) => this.tabChanged(tab),
      onSessionReplaced: (tab) => this.tabChanged(tab),
      onTokenEvent: (state) => this.tokenEvent(state),
      onReconnected: () => this.serverBack(),
      onTerminalKey: (event, tab) => this.terminalKey(event, tab),
      onTyped: (data) => this.keyBar.applyCtrl(data),
    };
  }

  async start() {
    applyPageTheme(this.settings.theme);
    this.renderThemeToggle();
    document.getElementById('new-tab').addEventListener('click', () => this.newTab());
    document.getElementById('settings-button').addEventListener('click', () => this.openSettings());
    document.getElementById('help-button').addEventListener('click', () => this.toggleHelp());
    document.getElementById('sessions-button').addEventListener('click', () => this.openPicker());
    document.getElementById('split-row').addEventListener('click', () => this.splitActions.split('row'));
    document.getElementById('split-column').addEventListener('click', () => this.splitActions.split('column'));
    document.getElementById('theme-toggle').addEventListener('click', () => this.toggleTheme());
    window.addEventListener('keydown', (event) => this.pageKey(event), { capture: true });
    this.terminals.addEventListener('contextmenu', (event) => {
      if (!this.active) return;
      event.preventDefault();
      this.menu.open(event.clientX, event.clientY);
    });
    new ResizeObserver(() => this.scheduleFit()).observe(this.terminals);
    setInterval(() => this.tick(), TICK_MS);

    // The account, the sessions and the file limits are asked for at once: no answer waits
    // for another.
    const sessionsLoaded = this.loadSessions();
    const fileConfigLoaded = api.fileTransfer().catch(() => null);
    await this.refreshAccount();
    setInterval(() => this.refreshAccount(), HEALTH_REFRESH_MS);

    const sessions = inUserOrder(await sessionsLoaded);
    // Asked again if the first try found the server still starting (loadSessions waited).
    this.fileConfig = (await fileConfigLoaded) || (await api.fileTransfer());
    // Files in (paste or drop on a terminal) and out (coda-download): file_transfer.js.
    this.files = acceptFiles(this.terminals, {
      tabFor: (element) => this.allPanes().find((t) => t.pane.contains(element)) || this.current,
      notify: (text, kind) => this.flashMessage(text, kind),
      config: this.fileConfig,
    });
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
    watchDownloads(pane, (text, kind) => this.flashMessage(text, kind), this.fileConfig);
    watchClipboardWrites(pane, {
      policy: () => this.settings.clipboardWrites,
      notify: (text, kind) => this.flashMessage(text, kind),
      ask: (question) => this.confirm.ask(question, { yes: 'Set the clipboard', no: 'Leave it' }),
    });
    pane.pane.addEventListener('focusin', () => this.paneFocused(pane));
    followTouchScroll(pane);
    return pane;
  }

  // A tab for every live session (none becomes unreachable), split as this browser left it.
  openTabs(sessions) {
    const live = new Map(sessions.map((s) => [s.id, s]));
    const pairs = this.splits.savedPairs(new Set(live.keys()));
    for (const session of sessions) if (!pairs.has(session.id)) this.addTab(session.id, session.label || 'Terminal');
    for (const [secondId, { first, ...layout }] of pairs) {
      const tab = this.tabs.find((t) => t.id === first);
      const label = live.get(secondId).label || 'Terminal';
      if (tab && !this.splits.has(tab)) this.layOut(tab, this.createPane(secondId, label), layout);
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
    this.splits.remove(tab);
    for (const pane of panes) pane.dispose();
    if (this.active === tab) this.active = null;
    this.render();
  }

  // --- split panes ----------------------------------------------------------------------

  panesOf(tab) {
    return this.splits.panesOf(tab);
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
    this.splits.setVisible(tab, visible);
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

  layOut(tab, second, layout) {
    this.splits.layOut(tab, second, layout);
    if (tab !== this.active) this.showPanes(tab, false);
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
    // Nor while the user's own sign-in works, nor where PATs are off (pasting cannot help).
    return Boolean(this.patStatus && this.patStatus.workspace_host && !this.patStatus.valid
      && !this.patStatus.checking_saved_token && !this.patStatus.sign_in?.fresh && !this.patStatus.pats_disabled);
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
      userAuthorizationDocs: this.patStatus.user_authorization_docs,
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
    // The status bar's panels are not dialogs (the terminal keeps the keys); Esc closes them.
    else if (event.key === 'Escape' && !event.ctrlKey && !event.altKey && !event.shiftKey
      && (this.setup.isOpen || this.restore.isOpen)) action = () => [this.setup, this.restore].forEach((p) => p.close());
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

  // Chosen by the person (menu): text goes to the shell as a paste would, an image is uploaded
  // as a pasted one is; when the browser will not say what is there, the message says why.
  async pasteFromClipboard() {
    const tab = this.current;
    const clipboard = await readClipboard();
    if (!tab) return;
    if (clipboard.text) tab.paste(clipboard.text);
    else if (clipboard.files) this.files.upload(tab, clipboard.files);
    else this.flashMessage(clipboard.problem);
    tab.focus();
  }

  // Keys xterm.js must leave to the browser: Ctrl+Shift+C copies; Ctrl+V and Ctrl+Shift+V paste.
  terminalKey(event, tab) {
    // The keypress of a key that went down elsewhere (Enter in the rename field, which then
    // hands the focus back to the terminal) belongs to that field, not to the shell.
    if (event.type === 'keypress' && this.keydownTarget !== tab.term.textarea) return false;
    if (event.type !== 'keydown' || !event.ctrlKey || event.altKey || event.metaKey) return true;
    const key = event.key.toLowerCase();
    if (event.shiftKey && key === 'c') {
      tab.copySelection();
      event.preventDefault();
      return false;
    }
    // Returning false lets the browser's own paste happen: xterm.js then receives the paste
    // event (text), or file_transfer.js does (an image or a file). Only the browser's own event
    // carries files: Chromium's Ctrl+Shift+V is "paste as plain text", so only Ctrl+V uploads.
    // The setting gives Ctrl+V to the shell (readline's literal next), except at a prompt the
    // page draws (the token prompt), which has no use for it.
    if (key !== 'v') return true;
    return !(event.shiftKey || tab.inputHandler || this.settings.ctrlV === 'paste');
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
    this.splits.save();
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
