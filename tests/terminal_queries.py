"""A program that asks its terminal questions, like vim, tmux and Claude Code do at start.

Run in a coda terminal: ``python3 terminal_queries.py ANSWERS_FILE [ROUNDS]``. It switches
the terminal to raw mode, writes every query xterm.js answers, reads the answers up to the
last one (DSR 5n -> ESC[0n, asked last, answered last), saves them to ANSWERS_FILE (repr'd,
one round a line) and prints ``answered <file name>``. With the answers in the output, the
scrollback now holds every query, which is what a replay must not answer again.
"""

from __future__ import annotations

import os
import sys
import termios
import tty

QUERIES = (
    b"\x1b[c"  # DA1
    b"\x1b[>c"  # DA2
    b"\x1b]10;?\x07"  # OSC 10: foreground colour
    b"\x1b]11;?\x07"  # OSC 11: background colour
    b"\x1b[?2026$p"  # DECRQM: synchronized output
    b"\x1b[6n"  # DSR: cursor position
    b"\x1b[?6n"  # DECXCPR
    b"\x1bP$qm\x1b\\"  # DECRQSS: current SGR
    b"\x1b[?1004h\x1b[?1004l"  # focus reporting on (reports the focus at once) and off
    b"\x1b[5n"  # DSR: status, answered last
)
LAST_ANSWER = b"\x1b[0n"


def ask(fd: int) -> bytes:
    os.write(sys.stdout.fileno(), QUERIES)
    answers = b""
    while not answers.endswith(LAST_ANSWER):
        chunk = os.read(fd, 1024)
        if not chunk:
            break
        answers += chunk
    return answers


def main() -> None:
    path = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        got = [ask(fd) for _ in range(rounds)]
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
    with open(path + ".tmp", "w") as f:
        f.write("".join(repr(answers) + "\n" for answers in got))
    os.replace(path + ".tmp", path)
    print("answered", os.path.basename(path))


if __name__ == "__main__":
    main()
