// Text that the page itself writes into a terminal (notices, the sign-in prompt): it starts on
// a line of its own and wraps at word boundaries, since the terminal would break words.

// What to write first so the next text starts at the beginning of a line.
export function freshLine(term) {
  return term.buffer.active.cursorX > 0 ? '\r\n' : '';
}

const ESCAPES = /\x1b\[[0-9;]*m/g;
const visibleLength = (text) => [...text.replace(ESCAPES, '')].length;

// Wraps `text` (which may hold SGR colour codes) to `width` columns, breaking at spaces; a
// word longer than a line (a URL) is left whole for the terminal to break. Lines end in CRLF.
export function wrapText(text, width) {
  const out = [];
  for (const paragraph of String(text).split(/\r?\n/)) {
    let line = '';
    for (const word of paragraph.split(' ')) {
      if (line && visibleLength(line) + 1 + visibleLength(word) > width) {
        out.push(line);
        line = word;
      } else {
        line = line ? `${line} ${word}` : word;
      }
    }
    out.push(line);
  }
  return out.join('\r\n');
}

// The text of the line the cursor is on, up to the cursor: the shell's prompt and whatever was
// typed after it, so the page can put it back after writing its own lines below.
export function lineBeforeCursor(term) {
  const buffer = term.buffer.active;
  const line = buffer.getLine(buffer.baseY + buffer.cursorY);
  return line ? line.translateToString(false, 0, buffer.cursorX) : '';
}
