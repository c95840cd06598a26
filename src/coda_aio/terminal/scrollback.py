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
# What ends a string sequence (OSC, DCS, SOS, PM, APC) as xterm.js parses it: BEL, CAN, SUB,
# or any ESC (that of ST, or one that aborts the string and starts the next sequence).
_STRING_INTRODUCERS = b"]PX^_"
_STRING_END = re.compile(rb"[\x07\x18\x1a\x1b]")
_STRING_END_NOT_ESC = re.compile(rb"[\x07\x18\x1a]")


class Scrollback:
    """The last ``limit`` bytes of output, replayed to a client when it attaches.

    A string sequence longer than LOOKBACK (an inline image's OSC 1337 is tens of KB of
    base64) holds no ESC, so a cut inside one is found by looking back to the last ESC however
    far it is; and whether the buffer's first byte is inside one is noted at each trim, for a
    string that began in what was trimmed. Nothing is parsed as output is appended.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._buffer = bytearray()
        self._starts_in_string = False  # _buffer[0] lies inside a string sequence

    def append(self, data: bytes) -> None:
        self._buffer += data
        # Trimming only when twice the limit keeps the memmove cost per byte constant.
        if len(self._buffer) > 2 * self._limit + LOOKBACK:
            cut = len(self._buffer) - self._limit - LOOKBACK
            self._starts_in_string = self._in_string(cut)
            del self._buffer[:cut]

    def snapshot(self, limit: int | None = None) -> bytes:
        """The replay: the last ``limit`` bytes at most (the scrollback's own limit when None
        or larger: a client on a slow link asks for less)."""
        limit = self._limit if limit is None else max(0, min(limit, self._limit))
        # A trim keeps LOOKBACK bytes past the limit, so a trimmed buffer always has start > 0.
        start = max(0, len(self._buffer) - limit)
        if start > 0 and self._in_string(start):
            # Past its end; a string still being written is left to the live output.
            end = _STRING_END.search(self._buffer, start)
            start = end.start() if end else len(self._buffer)
        if 0 < start < len(self._buffer):
            start = safe_start(self._buffer, start)
        with memoryview(self._buffer) as view:
            return bytes(view[start:])

    def _in_string(self, position: int) -> bool:
        """Whether ``position`` lies inside a string sequence, however long."""
        escape = self._buffer.rfind(b"\x1b", 0, position)
        if escape >= 0:
            after = escape + 2
            if after > position or self._buffer[escape + 1] not in _STRING_INTRODUCERS:
                return False
        else:
            after = 0
            if not self._starts_in_string:
                return False
        return _STRING_END_NOT_ESC.search(self._buffer, after, position) is None


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
