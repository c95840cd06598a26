// OSC 52: a program in the terminal (vim, tmux, an agent's TUI) puts text on the system
// clipboard. So can `cat` of a hostile file, which could swap what the person copied for
// `curl … | sh` before they paste it. So every write shows a notice saying what was put there,
// and the person's setting may make the page ask first or refuse. Reading the clipboard
// (`OSC 52 ; c ; ?`) is never answered: it would send the clipboard to whatever runs in the shell.

const OSC_CLIPBOARD = 52;
// How much of the new clipboard the notice quotes.
const PREVIEW_CHARS = 60;

// `policy()` is the setting now ('notify', 'ask' or 'refuse'); `notify(text, kind)` shows the
// notice; `ask(question)` resolves true for a yes.
export function watchClipboardWrites(tab, { policy, notify, ask }) {
  tab.term.parser.registerOscHandler(OSC_CLIPBOARD, (data) => {
    const payload = data.slice(data.indexOf(';') + 1);
    // A replay holds the writes of long ago: only live output may set the clipboard.
    if (payload === '?' || tab.replaying) return true;
    const text = decode(payload);
    if (text !== null) setClipboard(tab, text, { policy: policy(), notify, ask });
    return true; // handled here, whatever the answer: no other handler sees it
  });
}

async function setClipboard(tab, text, { policy, notify, ask }) {
  const quoted = `“${preview(text)}”`;
  if (policy === 'refuse') {
    notify(`A program in ${tab.label} tried to set the clipboard to ${quoted}: refused (Settings: Programs setting the clipboard).`, 'info');
    return;
  }
  if (policy === 'ask' && !(await ask(`A program in ${tab.label} wants to set the clipboard to ${quoted}. Allow it?`))) {
    notify(`The clipboard was left as it was (${tab.label} wanted ${quoted}).`, 'info');
    tab.focus();
    return;
  }
  try {
    await navigator.clipboard.writeText(text);
  } catch (err) {
    notify(`A program in ${tab.label} tried to set the clipboard, but the browser refused (${err.message}).`);
    return;
  }
  notify(`A program in ${tab.label} set the clipboard to ${quoted}.`, 'info');
  if (policy === 'ask') tab.focus();
}

// OSC 52's payload is base64 of UTF-8; anything else is not a clipboard write (null).
function decode(payload) {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(Uint8Array.from(atob(payload), (c) => c.charCodeAt(0)));
  } catch {
    return null;
  }
}

// One line, short, with control characters shown, so a hidden newline that would run a
// command on paste is visible in the notice.
function preview(text) {
  const shown = text.replace(/\n/g, '⏎').replace(/[\x00-\x1f\x7f]/g, (ch) => `^${String.fromCharCode(ch.charCodeAt(0) ^ 0x40)}`);
  return shown.length > PREVIEW_CHARS ? `${shown.slice(0, PREVIEW_CHARS)}…` : shown;
}
