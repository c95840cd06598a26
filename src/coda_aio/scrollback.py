"""The scrollback of a terminal: its last bytes of output, replayed to a client that attaches."""

from __future__ import annotations


class Scrollback:
    """The last ``limit`` bytes of output, replayed to a client when it attaches."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._buffer = bytearray()

    def append(self, data: bytes) -> None:
        self._buffer += data
        # Trimming only when twice the limit keeps the memmove cost per byte constant.
        if len(self._buffer) > 2 * self._limit:
            del self._buffer[: len(self._buffer) - self._limit]

    def snapshot(self) -> bytes:
        start = max(0, len(self._buffer) - self._limit)
        # Skip UTF-8 continuation bytes so the replay never starts in the middle of a character.
        end = min(len(self._buffer), start + 3)
        while start < end and self._buffer[start] & 0xC0 == 0x80:
            start += 1
        with memoryview(self._buffer) as view:
            return bytes(view[start:])
