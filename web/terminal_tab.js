// One terminal tab: an xterm.js instance bound to one server session over one WebSocket.
// It owns the socket's whole life: attach, flow control, resize, reconnect with backoff,
// and what happens when the shell exits. The app decides what to do with token and
// connection-state changes through the callbacks it passes in.

import { Terminal } from '/vendor/xterm.mjs';
import { FitAddon } from '/vendor/addon-fit.mjs';
import { ImageAddon } from '/vendor/addon-image.mjs';
import { SearchAddon } from '/vendor/addon-search.mjs';
import { Unicode11Addon } from '/vendor/addon-unicode11.mjs';
import { WebLinksAddon } from '/vendor/addon-web-links.mjs';

import { api } from './api.js';
import {
  binaryInputFrame, focusFrame, inputFrame, parseFrame, pauseFrame, replayBudget, replyFrame, resizeFrame,
  resumeFrame, sessionSocketUrl,
} from './protocol.js';
import { Renderer, wantsWebgl } from './renderer.js';
import { freshLine } from './terminal_text.js';
import { ReplyDetector } from './terminal_replies.js';
import { fontStack } from './settings.js';
import { THEMES } from './theme.js';

// Unrendered bytes queued in xterm.js: above HIGH the server is asked to pause, below LOW to
// resume. xterm.js parses a few MB/s, so HIGH is well under a second of work.
const FLOW_HIGH_WATERMARK = 256 * 1024;
const FLOW_LOW_WATERMARK = 32 * 1024;

const RECONNECT_FIRST_DELAY_MS = 500;
const RECONNECT_MAX_DELAY_MS = 10_000;
const RESIZE_DEBOUNCE_MS = 80;

// Connection states, shown in the status bar and on the page root for tests.
export const STATE = Object.freeze({
  CONNECTING: 'connecting',
  CONNECTED: 'connected',
  RECONNECTING: 'reconnecting',
  SERVER_RESTARTING: 'server-restarting',
  EXITED: 'exited',
  FAILED: 'failed',
  CLOSED: 'closed',
});

export class TerminalTab {
  constructor({ id, label, settings, gpu, host, callbacks }) {
    this.id = id;
    this.label = label;
    this.callbacks = callbacks;
    this.state = STATE.CONNECTING;
    this.stateDetail = '';
    this.exitCode = null;
    this.reconnectAt = 0;

    this.socket = null;
    this.reconnectAttempts = 0;
    this.reconnectTimer = 0;
    this.resizeTimer = 0;

    this.pendingBytes = 0;
    this.flowPaused = false;
    this.held = false;
    // Output (and end-of-replay marks) that arrived while held, in order.
    this.heldChunks = [];
    this.serverPaused = false;
    // From attach until xterm.js has parsed the scrollback the server replays: answers to the
    // queries in it are dropped (the programs that asked are long gone or asked already).
    this.replaying = false;
    // Whether this is the session's answering client (the one the person used last, as the
    // server says): only it acts on what must happen once, such as a coda-download link.
    this.answering = false;

    // While set, keystrokes go here instead of to the shell (the token prompt, the exit prompt).
    this.inputHandler = null;
    // Keys typed while no socket was open: they reached no shell, and the page says so.
    this.keysLost = false;

    this.pane = document.createElement('div');
    this.pane.className = 'terminal-pane';
    this.id = id;  // again, now that the pane exists: see the setter
    this.pane.hidden = true;
    host.append(this.pane);

    this.term = new Terminal({
      allowProposedApi: true,
      cursorBlink: true,
      lineHeight: 1.1,
      ...terminalOptions(settings),
    });
    this.fitAddon = new FitAddon();
    this.search = new SearchAddon();
    this.term.loadAddon(this.fitAddon);
    this.term.loadAddon(this.search);
    this.term.loadAddon(new WebLinksAddon());
    this.term.loadAddon(new Unicode11Addon());
    this.term.unicode.activeVersion = '11';
    this.loadImageAddon();
    this.term.open(this.pane);
    this.renderer = new Renderer(this.term, this.pane);
    this.renderer.use(wantsWebgl(settings.renderer, gpu));
    this.themeName = settings.theme;

    this.replies = new ReplyDetector(this.term);
    // Typed keys pass through `onTyped` (the touch key bar's latched Ctrl) on their way in.
    this.term.onData((data) => (this.replies.isReply ? this.sendReply(data) : this.handleInput(this.callbacks.onTyped(data))));
    // Capture phase: runs before xterm.js's own focus handler, whose focus report (ESC[I)
    // must reach a server that already knows this is where the person is.
    this.pane.addEventListener('focus', () => this.sendFrame(focusFrame()), true);
    this.term.onBinary((data) => this.sendBinary(data));
    this.term.onResize(() => this.scheduleResizeFrame());
    this.term.onSelectionChange(() => this.copySelection());
    this.term.attachCustomKeyEventHandler((event) => this.callbacks.onTerminalKey(event, this));
  }

  // The session this pane shows; also on the pane's element, where tests read it.
  get id() {
    return this.sessionId;
  }

  set id(value) {
    this.sessionId = value;
    if (this.pane && value) this.pane.dataset.sessionId = value;
  }

  // --- size -------------------------------------------------------------------------

  fit() {
    if (this.pane.hidden) return;
    try {
      this.fitAddon.fit();
    } catch {
      // Not measurable yet (no layout); the next resize observation fits it.
    }
  }

  get size() {
    return { cols: this.term.cols, rows: this.term.rows };
  }

  scheduleResizeFrame() {
    clearTimeout(this.resizeTimer);
    this.resizeTimer = setTimeout(() => this.sendFrame(resizeFrame(this.term.cols, this.term.rows)), RESIZE_DEBOUNCE_MS);
  }

  // --- socket -----------------------------------------------------------------------

  connect() {
    clearTimeout(this.reconnectTimer);
    this.closeSocket();
    // After a loss, a socket (which carries the cookie) waits until the server proved itself.
    if (!api.isTrusted()) {
      this.scheduleReconnect();
      return;
    }
    this.setState(STATE.CONNECTING);
    const socket = new WebSocket(sessionSocketUrl(this.id, replayBudget()));
    socket.binaryType = 'arraybuffer';
    this.socket = socket;
    socket.onopen = () => {
      if (this.reconnectAttempts > 0) this.callbacks.onReconnected(this);
      this.reconnectAttempts = 0;
      this.serverPaused = false;
      // The server replays the session's scrollback first: start from a clean screen so a
      // reconnect shows it once, not appended to what was already on screen.
      this.replaying = true;
      this.answering = false;
      this.pane.dataset.replaying = 'true';
      this.pane.dataset.attachments = String(Number(this.pane.dataset.attachments || 0) + 1);
      // Queued, so a sign-in prompt on screen stays until the page hands the terminal back.
      if (this.connectedBefore) this.queueOutput(() => this.term.reset());
      this.connectedBefore = true;
      // Written on the clean screen before the replay, so the shell's prompt follows it.
      const notices = [this.pendingNotice, this.keysLost ? '[keys typed while disconnected were not sent]' : '']
        .filter(Boolean);
      this.pendingNotice = '';
      this.keysLost = false;
      for (const text of notices) this.queueOutput(() => this.notice(text));
      this.setState(STATE.CONNECTED);
      socket.send(resizeFrame(this.term.cols, this.term.rows));
      if (this.pane.contains(document.activeElement)) socket.send(focusFrame());
      this.updateFlow();
    };
    // A replaced socket (another session now shows here) may still deliver what it had queued.
    socket.onmessage = (message) => this.socket === socket && this.handleFrame(message.data);
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (event.code !== 1000) api.connectionLost();
      if (this.state === STATE.EXITED || this.state === STATE.CLOSED || this.state === STATE.FAILED) return;
      this.scheduleReconnect();
    };
  }

  closeSocket() {
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close();
  }

  sendFrame(bytes) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(bytes);
  }

  scheduleReconnect() {
    const delay = Math.min(RECONNECT_MAX_DELAY_MS, RECONNECT_FIRST_DELAY_MS * 2 ** this.reconnectAttempts);
    this.reconnectAttempts += 1;
    this.reconnectAt = Date.now() + delay;
    if (this.state !== STATE.SERVER_RESTARTING) this.setState(STATE.RECONNECTING);
    else this.callbacks.onStateChange(this);
    this.reconnectTimer = setTimeout(() => this.reconnect(), delay);
  }

  async reconnect() {
    let sessions;
    try {
      sessions = await api.listSessions();
    } catch (err) {
      // Said once per outage, in the terminal: the status bar only says "reconnecting".
      if (err.untrusted && !this.warnedUntrusted) this.notice(err.message, '31');
      this.warnedUntrusted = Boolean(err.untrusted);
      this.scheduleReconnect();
      return;
    }
    this.warnedUntrusted = false;
    if (this.state === STATE.CLOSED) return;
    if (!sessions.some((s) => s.id === this.id)) {
      // The server restarted (sessions live in its memory) or reaped this one: start afresh.
      try {
        await this.replaceSession('[the session ended while disconnected; started a new shell]');
      } catch (err) {
        this.fail(err);
        return;
      }
    }
    this.connect();
  }

  async replaceSession(notice) {
    // `replaces`: the server starts one shell per lost session, whichever page asks first;
    // every other page showing that session gets the same one.
    const created = await api.createSession({ label: this.label, replaces: this.id, ...this.size });
    this.id = created.id;
    if (created.label) this.label = created.label;
    // Shown once the screen is reset for the new session, on a line of its own.
    this.pendingNotice = notice;
    this.callbacks.onSessionReplaced(this);
  }

  // Shows another live session here (the session picker). The one shown before keeps running
  // on the server; the new one's scrollback replays onto a clean screen, unanswered.
  switchTo(id, label) {
    this.id = id;
    this.label = label;
    this.exitCode = null;
    this.inputHandler = null;
    this.reconnectAttempts = 0;
    this.connect();
  }

  // A message from coda_aio itself, never mixed into a line the shell or a prompt started.
  notice(text, color = '2') {
    this.term.write(`${freshLine(this.term)}\x1b[${color}m${text}\x1b[0m\r\n`);
  }

  fail(err) {
    this.setState(STATE.FAILED, err.message);
    this.notice(err.message, '31');
  }

  // --- frames from the server -----------------------------------------------------------

  handleFrame(data) {
    const frame = parseFrame(data);
    if (!frame) return;
    if (frame.output) this.queueOutput(frame.output);
    else this.handleEvent(frame.event);
  }

  handleEvent(event) {
    switch (event && event.type) {
      case 'exit':
        this.handleExit(event.code);
        break;
      case 'token':
        this.callbacks.onTokenEvent(event.state, this);
        break;
      case 'shutting_down':
        api.connectionLost();
        this.setState(STATE.SERVER_RESTARTING);
        break;
      case 'oom_killed': // memory ran out: the kernel ended this terminal's largest program
        this.queueOutput(() => this.notice(
          `coda: memory ran out; the kernel ended ${event.command} (pid ${event.pid}, ` +
          `${Math.round(event.memory_bytes / 1048576)} MB). The server and other terminals run on.`, '33'));
        break;
      case 'replay_end':
        this.queueOutput(() => this.endReplay());
        break;
      case 'answering':
        // Judged where it stands in the output: once xterm.js has parsed what came before.
        this.queueOutput(() => this.term.write('', () => {
          this.answering = Boolean(event.answering);
        }));
        break;
      default:
        break;
    }
  }

  // Bytes, or a function to run once everything before it is on screen; held back in order
  // while the page owns the terminal.
  queueOutput(item) {
    if (this.held) this.heldChunks.push(item);
    else if (typeof item === 'function') item();
    else this.writeOutput(item);
  }

  endReplay() {
    // The callback runs once xterm.js has parsed every byte written before it.
    this.term.write('', () => {
      this.replaying = false;
      this.pane.dataset.replaying = 'false';
    });
  }

  writeOutput(bytes) {
    // Raw bytes straight to xterm.js: it decodes UTF-8 itself, across chunk boundaries.
    const length = bytes.length;
    this.pendingBytes += length;
    this.term.write(bytes, () => {
      this.pendingBytes -= length;
      this.updateFlow();
    });
    this.updateFlow();
  }

  updateFlow() {
    if (!this.flowPaused && this.pendingBytes > FLOW_HIGH_WATERMARK) this.flowPaused = true;
    else if (this.flowPaused && this.pendingBytes < FLOW_LOW_WATERMARK) this.flowPaused = false;
    const wantPaused = this.flowPaused || this.held;
    if (wantPaused === this.serverPaused || !this.socket || this.socket.readyState !== WebSocket.OPEN) return;
    this.serverPaused = wantPaused;
    this.sendFrame(wantPaused ? pauseFrame() : resumeFrame());
  }

  // Keeps the shell's output off the screen (and the shell paused) while the app owns the
  // terminal, e.g. for the token prompt, so the two never interleave.
  hold() {
    this.held = true;
    this.updateFlow();
  }

  release() {
    this.held = false;
    const chunks = this.heldChunks;
    this.heldChunks = [];
    for (const chunk of chunks) this.queueOutput(chunk);
    this.updateFlow();
  }

  handleExit(code) {
    this.exitCode = code;
    this.setState(STATE.EXITED, `exit code ${code}`);
    this.notice(`[process exited with code ${code}]`);
    this.term.write('Press Enter to start a new shell here, or close this tab.\r\n');
    this.inputHandler = (data) => {
      if (data.includes('\r')) this.restart();
    };
  }

  async restart() {
    this.inputHandler = null;
    const oldId = this.id;
    this.closeSocket();
    try {
      // The server usually forgets a session once its process ends; ask before deleting so
      // an expected 404 doesn't show up as an error in the console.
      const sessions = await api.listSessions();
      if (sessions.some((s) => s.id === oldId)) await api.deleteSession(oldId);
    } catch {
      // Gone already, or the server is away: a new session is what matters.
    }
    try {
      await this.replaceSession('[new shell]');
    } catch (err) {
      this.fail(err);
      return;
    }
    this.exitCode = null;
    this.connect();
  }

  // --- input ----------------------------------------------------------------------------

  handleInput(data) {
    if (this.inputHandler) this.inputHandler(data);
    else if (this.connected) this.sendFrame(inputFrame(data));
    else this.loseKeys();
  }

  get connected() {
    return Boolean(this.socket && this.socket.readyState === WebSocket.OPEN);
  }

  // Nothing queues keys for a shell that may be gone: say so at once, and again once back.
  loseKeys() {
    if (this.keysLost) return;
    this.keysLost = true;
    this.notice('[not connected: keys typed now are not sent]', '33');
  }

  // xterm.js's answer to a query it just parsed: only for live output, and the server passes
  // it on only if this is the session's answering client (the one the person used last).
  sendReply(data) {
    if (this.replaying || this.inputHandler) return;
    this.sendFrame(replyFrame(data));
  }

  sendBinary(data) {
    if (this.inputHandler) return;
    if (!this.connected) {
      this.loseKeys();
      return;
    }
    const bytes = Uint8Array.from(data, (ch) => ch.charCodeAt(0) & 0xff);
    this.sendFrame(binaryInputFrame(bytes));
  }

  paste(text) {
    this.term.paste(text);
  }

  copySelection() {
    const text = this.term.getSelection();
    if (!text || !navigator.clipboard) return;
    // Without clipboard permission (or focus) this fails; selecting still works for Ctrl+Shift+C.
    navigator.clipboard.writeText(text).catch(() => {});
  }

  // --- look -----------------------------------------------------------------------------

  // Sixel and iTerm2 inline images. The addon answers DA1 itself (ESC[?62;4;9;22c: the 4
  // says "sixel"), so programs that ask before drawing (chafa, notcurses, lsix) draw images.
  loadImageAddon() {
    this.term.loadAddon(new ImageAddon({ sixelSupport: true, iipSupport: true }));
  }

  applySettings(settings, gpu) {
    this.renderer.use(wantsWebgl(settings.renderer, gpu));
    this.themeName = settings.theme;
    const options = terminalOptions(settings);
    // Only what changed: each option set makes xterm.js redo some work (fonts: a re-measure).
    for (const [key, value] of Object.entries(options)) {
      if (this.term.options[key] !== value) this.term.options[key] = value;
    }
  }

  show() {
    this.pane.hidden = false;
    this.pane.classList.add('active');
  }

  hide() {
    this.pane.hidden = true;
    this.pane.classList.remove('active');
  }

  focus() {
    this.term.focus();
  }

  setState(state, detail = '') {
    this.state = state;
    this.stateDetail = detail;
    this.callbacks.onStateChange(this);
  }

  dispose() {
    this.state = STATE.CLOSED;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.resizeTimer);
    this.closeSocket();
    this.replies.dispose();
    this.renderer.dispose();
    this.term.dispose();
    this.pane.remove();
  }
}

// The xterm.js options that follow the person's settings.
function terminalOptions(settings) {
  return {
    theme: THEMES[settings.theme].terminal,
    fontFamily: fontStack(settings.fontFamily),
    fontSize: settings.fontSize,
    cursorStyle: settings.cursorStyle,
    scrollback: settings.scrollback,
  };
}
