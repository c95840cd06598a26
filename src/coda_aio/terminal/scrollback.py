"""The scrollback of a terminal: its last bytes of output, replayed to a client that attaches."""

from __future__ import annotations

import re

# A replay starts at most this far past the cut, at the first line start (or, failing that,
# escape sequence) that lies outside every escape sequence.
SAFE_SCAN = 4096
# How far back to look for the escape sequence a position might lie in. Bytes this far back
# are kept past the limit, so a position at the limit can be judged too.
LOOKBACK = 4096

# One complete escape sequence, as xterm.js parses it: CSI; the string sequences (OSC, DCS,
# SOS, PM, APC) up to BEL or ST; and the short ones (ESC 7, ESC ( B, ESC \\, ...).
_SEQUENCE = re.compile(
    rb"\x1b\[[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]"
    rb"|\x1b[\]PX^_].*?(?:\x07|\x1b\\)"
    rb"|\x1b[\x20-\x2f]*(?![\[\]PX^_])[\x30-\x7e]",
    re.S,
)


class Scrollback:
    """The last ``limit`` bytes of output, replayed to a client when it attaches."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._buffer = bytearray()

    def append(self, data: bytes) -> None:
        self._buffer += data
        # Trimming only when twice the limit keeps the memmove cost per byte constant.
        if len(self._buffer) > 2 * self._limit + LOOKBACK:
            del self._buffer[: len(self._buffer) - self._limit - LOOKBACK]

    def snapshot(self) -> bytes:
        # A trim keeps LOOKBACK bytes past the limit, so a trimmed buffer always has start > 0.
        start = max(0, len(self._buffer) - self._limit)
        if start > 0:
            start = safe_start(self._buffer, start)
        with memoryview(self._buffer) as view:
            return bytes(view[start:])


def safe_start(buffer: bytes | bytearray, start: int) -> int:
    """A position at or shortly after ``start`` where a replay may begin: outside every escape
    sequence and UTF-8 character, so the terminal shows no ``[38;5;196m`` and no mojibake.

    Prefers a line start, then the start of an escape sequence, within SAFE_SCAN bytes.
    """
    end = min(len(buffer), start + SAFE_SCAN)
    for after in (b"\n", b"\x1b"):
        position = start
        while (found := buffer.find(after, position, end)) >= 0:
            candidate = found + 1 if after == b"\n" else found
            if _outside_sequences(buffer, candidate):
                return candidate
            position = found + 1
    # Neither in reach (a long line of plain text): skip UTF-8 continuation bytes at least.
    while start < end and buffer[start] & 0xC0 == 0x80:
        start += 1
    return start


def _outside_sequences(buffer: bytes | bytearray, position: int) -> bool:
    """Whether ``position`` lies outside the escape sequence begun by the last ESC before it."""
    escape = buffer.rfind(b"\x1b", max(0, position - LOOKBACK), position)
    if escape < 0:
        return True
    # Matched only up to ``position``: a string sequence left open (an OSC with no BEL yet)
    # would otherwise be searched to the end of the buffer for every candidate.
    match = _SEQUENCE.match(buffer, escape, position)
    return match is not None
