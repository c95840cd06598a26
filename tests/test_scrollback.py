"""The scrollback ring buffer: a replay never begins inside an escape sequence or a character."""

from __future__ import annotations

import re

from coda_aio.terminal.scrollback import SAFE_SCAN, Scrollback

# Every kind of sequence a colourful program writes, with multi-byte text between them.
LINE = (
    "\x1b[38;5;196mred\x1b[0m \x1b[1;38;2;10;200;30mgr\u00fcn\x1b[22;39m "
    "\x1b]8;;https://example.com/a?b=c\x1b\\link\x1b]8;;\x1b\\ \x1b]0;title \u2713\x07"
    "\x1b(B\x1b7caf\u00e9 \U0001f642\x1b8\x1b[?2004h\x1bP1$r0m\x1b\\ plain text\r\n"
)
STREAM = "".join(LINE.replace("red", f"red{i}") for i in range(12)).encode()
# Where each sequence begins and ends, found independently of the code under test.
SEQUENCES = [m.span() for m in re.finditer(
    rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1bP[^\x1b]*\x1b\\|\x1b[ -/]*[0-~]", STREAM)]


def safe(position: int) -> bool:
    inside = any(start < position < end for start, end in SEQUENCES)
    continuation = position < len(STREAM) and STREAM[position] & 0xC0 == 0x80
    return not inside and not continuation


def test_the_reference_parse_sees_every_sequence():
    text = bytearray(STREAM)
    for start, end in reversed(SEQUENCES):
        del text[start:end]
    assert b"\x1b" not in text  # every ESC belongs to a sequence the reference found


def test_a_replay_never_starts_inside_a_sequence_or_a_character():
    for limit in range(1, len(STREAM)):
        for chunk in (len(STREAM), 97):  # appended at once, and in pieces that split sequences
            scrollback = Scrollback(limit)
            for i in range(0, len(STREAM), chunk):
                scrollback.append(STREAM[i : i + chunk])
            replay = scrollback.snapshot()
            start = len(STREAM) - len(replay)
            assert STREAM.endswith(replay)
            assert len(replay) <= limit
            assert safe(start), (limit, chunk, replay[:40])
            assert start - (len(STREAM) - limit) <= SAFE_SCAN
            replay.decode()  # whole characters only


def test_a_replay_prefers_a_line_start():
    scrollback = Scrollback(len(LINE.encode()) + 10)
    scrollback.append(STREAM)
    assert scrollback.snapshot() == LINE.replace("red", "red11").encode()


def test_untrimmed_output_is_replayed_whole():
    scrollback = Scrollback(1 << 20)
    scrollback.append(STREAM)
    assert scrollback.snapshot() == STREAM


def test_a_replay_never_starts_inside_a_string_sequence_longer_than_the_look_back():
    """An inline image (OSC 1337, 40 KB of base64) cut by the replay's start: the replay starts
    after it, never with its base64 as text; one still being written is left to live output."""
    image = b"\x1b]1337;File=inline=1:" + b"QUJD" * 10_000 + b"\x07"
    stream = b"before\r\n" * 50 + image + b"after\r\n" * 50 + b"\x1bPq" + b"#0;2;0;0;0" * 1000 + b"\x1b\\done\r\n"
    spans = [m.span() for m in re.finditer(rb"\x1b\][^\x07]*\x07|\x1bP[^\x1b]*\x1b\\", stream)]
    assert [end - start for start, end in spans] == [len(image), 10_005]
    for limit in range(100, len(stream), 997):
        for chunk in (len(stream), 4096, 1000):
            scrollback = Scrollback(limit)
            for i in range(0, len(stream), chunk):
                scrollback.append(stream[i : i + chunk])
            replay = scrollback.snapshot()
            start = len(stream) - len(replay)
            assert stream.endswith(replay) and len(replay) <= limit
            assert not any(begin < start < end for begin, end in spans), (limit, chunk, replay[:40])

    # Cut inside an image that has not ended yet: nothing of it is replayed.
    scrollback = Scrollback(1000)
    scrollback.append(b"prompt$ " + image[:-1])
    assert scrollback.snapshot() == b""
