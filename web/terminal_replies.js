// Tells xterm.js's own answers to terminal queries apart from what the person typed.
//
// A program asks the terminal things (ESC[c "what are you?", ESC[6n "where is the cursor?",
// OSC 11;? "what is the background colour?") and xterm.js answers through the same onData
// channel as keystrokes. Answering is right while the program is there to read the answer,
// and wrong when the question is old: replayed scrollback is full of such questions, and
// answers to them land in the shell as typed text. So every answer is tagged here, and the
// tab decides where it may go (never during a replay; to the server as a reply otherwise).
//
// Only public parser hooks are used: each handler below runs just before xterm.js's own
// handler for the same sequence, marks "an answer may follow", and returns false so the
// default handler still runs and answers synchronously within the same parse. The mark
// lasts until the current task ends (a microtask), and no keystroke can arrive inside a task.

// Every sequence xterm.js 6 answers (common/InputHandler.ts, browser/CoreBrowserTerminal.ts),
// and its image addon (XTSMGRAPHICS). The detector must be made after the addons are loaded:
// xterm.js calls the handler registered last first.
const CSI_QUERIES = [
  { final: 'c' }, // DA1, primary device attributes
  { prefix: '>', final: 'c' }, // DA2, secondary device attributes
  { final: 'n' }, // DSR: status (5n), cursor position (6n)
  { prefix: '?', final: 'n' }, // DECDSR
  { intermediates: '$', final: 'p' }, // DECRQM, ANSI modes
  { prefix: '?', intermediates: '$', final: 'p' }, // DECRQM, DEC private modes
  { final: 't' }, // window reports (14t, 16t, 18t) where enabled
  { prefix: '?', final: 'h' }, // ?1004h reports the current focus at once
  { prefix: '?', final: 'S' }, // XTSMGRAPHICS, answered by the image addon (sixel limits)
];
const OSC_QUERIES = [4, 10, 11, 12]; // colour queries ("?" as the value)
const DCS_QUERIES = [{ intermediates: '$', final: 'q' }]; // DECRQSS

export class ReplyDetector {
  constructor(term) {
    this.answering = false;
    const mark = () => {
      if (!this.answering) {
        this.answering = true;
        queueMicrotask(() => {
          this.answering = false;
        });
      }
      return false; // fall through to xterm.js's own handler, which answers
    };
    this.hooks = [
      ...CSI_QUERIES.map((id) => term.parser.registerCsiHandler(id, mark)),
      ...OSC_QUERIES.map((ident) => term.parser.registerOscHandler(ident, mark)),
      ...DCS_QUERIES.map((id) => term.parser.registerDcsHandler(id, mark)),
    ];
  }

  // True while xterm.js is answering a query it is parsing right now.
  get isReply() {
    return this.answering;
  }

  dispose() {
    for (const hook of this.hooks) hook.dispose();
    this.hooks = [];
  }
}
