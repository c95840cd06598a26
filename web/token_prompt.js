// The sign-in prompt, drawn by the page inside a terminal tab. The token is typed into the
// page, never into the PTY, so it can't end up in bash, its history, or the scrollback.

import { api } from './api.js';
import { freshLine, lineBeforeCursor, wrapText } from './terminal_text.js';

const BOLD = '\x1b[1m';
const DIM = '\x1b[2m';
const RED = '\x1b[31m';
const GREEN = '\x1b[32m';
const YELLOW = '\x1b[33m';
const CYAN = '\x1b[36m';
const RESET = '\x1b[0m';

const PROMPT = `${BOLD}Token:${RESET} `;

// The agent CLI installs, as they stand at sign-in: printed here, before the shell owns the
// screen; their live progress is in the status bar, where it cannot garble a typed line.
async function setupSummary(width) {
  let status;
  try {
    status = await api.setupStatus();
  } catch {
    return '';
  }
  const steps = Array.isArray(status && status.steps) ? status.steps : [];
  const line = (step) => {
    if (step.status === 'failed') return `${RED}${wrapText(`✗ ${step.label}: ${step.error || 'failed'}`, width)}${RESET}`;
    if (step.status === 'done' || step.status === 'skipped') return `${GREEN}✓${RESET} ${step.label}`;
    return `${YELLOW}…${RESET} ${step.label} ${DIM}(in progress: see the status bar)${RESET}`;
  };
  return steps.map((step) => `${line(step)}\r\n`).join('');
}

// Bracketed-paste markers (the shell may have turned that mode on) and any other escape
// sequence (arrow keys, function keys) are not part of a token.
const BRACKETED_PASTE = /\x1b\[20[01]~/g;
const ESCAPE_SEQUENCE = /\x1b(?:\[[0-9;?]*[ -/]*[@-~]|O.|.)?/g;

function introduction(term, { workspaceHost, tokenPageUrl, userAuthorizationDocs, reason }) {
  const lines = [];
  if (reason) lines.push(`${YELLOW}${BOLD}${reason}.${RESET} Paste a new token to continue.`);
  lines.push(`${BOLD}Sign in to ${workspaceHost}${RESET}`);
  if (!reason) {
    lines.push(
      'coda_aio needs a Databricks personal access token once. It exchanges it for ' +
      'short-lived tokens of its own and rotates them every 10 minutes; your agents ' +
      'never see a token (they reach the workspace through a local proxy).',
    );
  }
  if (tokenPageUrl) lines.push(`Create one here: ${CYAN}${tokenPageUrl}${RESET}`);
  if (!reason && userAuthorizationDocs) {
    // Issue 21: the other way, for workspaces where personal access tokens are off.
    lines.push(`Or, with no token: give this app user authorization (the scopes in ${userAuthorizationDocs}) ` +
      'and reload this page; coda then uses your own Databricks sign-in.');
  }
  lines.push(`${DIM}Paste it (Ctrl+V or Ctrl+Shift+V) and press Enter. Ctrl+C skips this for now.${RESET}`, '');
  return freshLine(term) + lines.map((line) => wrapText(line, term.cols)).join('\r\n');
}

// Shows the prompt in `tab` and resolves with the sign-in result, or null when skipped.
// `onCancellable` receives a function that ends the prompt from outside (signed in elsewhere).
export function promptForToken(tab, { workspaceHost, tokenPageUrl, userAuthorizationDocs, reason, onCancellable = () => {} }) {
  const term = tab.term;
  const say = (text) => wrapText(text, term.cols);
  // The shell's prompt line as it was, put back below the sign-in text when it is done, so
  // the shell is visibly ready (nothing is sent to the shell to make it redraw).
  const shellLine = term.buffer.active.type === 'normal' ? lineBeforeCursor(term) : '';
  return new Promise((resolve) => {
    let typed = '';
    let busy = false;

    const finish = (result) => {
      tab.inputHandler = null;
      term.write(freshLine(term) + shellLine);
      resolve(result);
    };

    const submit = async () => {
      const token = typed.trim();
      if (!token) {
        term.write(`\r\n${DIM}Paste a token, or press Ctrl+C to skip.${RESET}\r\n${PROMPT}`);
        typed = '';
        return;
      }
      busy = true;
      term.write('\r\nValidating token...\r\n');
      try {
        const result = await api.configurePat(token);
        term.write(`${GREEN}${say(`Signed in as ${result.user}`)}${RESET}\r\n`);
        if (result.message) term.write(`${DIM}${say(result.message)}${RESET}\r\n`);
        term.write(await setupSummary(term.cols));
        term.write('\r\n');
        finish(result);
      } catch (err) {
        term.write(`${RED}${say(err.message)}${RESET}\r\n${PROMPT}`);
        typed = '';
        busy = false;
      }
    };

    const handle = (data) => {
      if (busy) return;
      const text = data.replace(BRACKETED_PASTE, '').replace(ESCAPE_SEQUENCE, '');
      for (const ch of text) {
        if (busy) return;
        if (ch === '\r' || ch === '\n') {
          submit();
        } else if (ch === '\x03') {
          term.write(`^C\r\n${DIM}${say('Skipped. Agents can\'t reach the workspace until you sign in; ' +
            'use "Sign in" in the status bar when you are ready.')}${RESET}\r\n\r\n`);
          finish(null);
          return;
        } else if (ch === '\x7f' || ch === '\b') {
          if (typed) {
            typed = [...typed].slice(0, -1).join('');
            term.write('\b \b');
          }
        } else if (ch === '\x15') {
          term.write('\b \b'.repeat([...typed].length));
          typed = '';
        } else if (ch >= ' ') {
          typed += ch;
          term.write('*');
        }
      }
    };

    term.write(introduction(term, { workspaceHost, tokenPageUrl, userAuthorizationDocs, reason }) + PROMPT);
    tab.inputHandler = handle;
    onCancellable(() => {
      if (busy || tab.inputHandler !== handle) return;
      term.write(`\r\n${GREEN}${say('Signed in (from another tab or window): nothing to paste here.')}${RESET}\r\n`);
      finish(null);
    });
  });
}
