"""The terminal WebSocket wire protocol: binary frames whose first byte names the type.

Server to client: ``0`` raw PTY output, ``1`` a UTF-8 JSON event (``{"type": "dropped",
"reason": ...}`` precedes the close of a client that fell too far behind: it may reattach;
``{"type": "answering", "answering": bool}`` tells a client, in order with the output, that it
became or stopped being the session's answering client).
Client to server: ``0`` input for the PTY, ``1`` a JSON resize ``{"cols","rows"}``,
``2`` pause output, ``3`` resume output, ``4`` the terminal's answer to a query in the output
(passed on only from the session's answering client), ``5`` focus (the person is at this
client now). Anything else is ignored by the receiver. The attach URL may carry
``?replay=BYTES``: at most that much scrollback is replayed (a client on a slow link).
"""

from __future__ import annotations

import json
from typing import Any

# Server -> client.
OUTPUT = ord("0")
EVENT = ord("1")

# Client -> server.
INPUT = ord("0")
RESIZE = ord("1")
PAUSE = ord("2")
RESUME = ord("3")
REPLY = ord("4")
FOCUS = ord("5")

_OUTPUT_PREFIX = b"0"
_EVENT_PREFIX = b"1"


def encode_output(data: bytes) -> bytes:
    return _OUTPUT_PREFIX + data


def encode_event(event: dict[str, Any]) -> bytes:
    return _EVENT_PREFIX + json.dumps(event, separators=(",", ":")).encode()


def decode(frame: bytes) -> tuple[int | None, memoryview]:
    """Split a client frame into (type, payload); an empty frame has type None.

    The payload is a view, so a 10 MB paste is not copied on its way to the PTY.
    """
    if not frame:
        return None, memoryview(b"")
    return frame[0], memoryview(frame)[1:]


def parse_resize(payload: bytes | memoryview) -> tuple[int, int] | None:
    """``(cols, rows)`` from a resize payload, or None when malformed (the session clamps them)."""
    try:
        body = json.loads(bytes(payload))
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: "[" x 5000
        return None
    if not isinstance(body, dict):
        return None
    cols, rows = body.get("cols"), body.get("rows")
    if not _is_number(cols) or not _is_number(rows):
        return None
    try:
        return int(cols), int(rows)
    except (OverflowError, ValueError):  # inf and nan
        return None


def _is_number(value: object) -> bool:
    # bool is an int subclass; {"cols": true} is malformed, not a 1-column terminal.
    return isinstance(value, (int, float)) and not isinstance(value, bool)
