"""One attached client's share of a terminal's output: its own bounded queue and its own sender.

A session hands every client the same output and events; each client's ``ClientFeed`` sends
them at that client's pace. A client that pauses or stops reading holds up only its own feed:
its backlog grows, and the session drops the client once the backlog passes its limit (see
``pty_bridge.Session``). The first thing queued is the scrollback replay, so a client sees the
replay, then live output, with events in order between the output around them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Callable, Protocol

log = logging.getLogger(__name__)

# Output waiting for one client above which it no longer counts as keeping up: the session
# stops reading the terminal for it (see Session._can_dispatch).
HIGH_WATER = 256 * 1024
# A client that is behind gets its queued output joined into frames of up to this size.
MAX_FRAME = 256 * 1024
# The replay is queued in pieces of this size, so a slow link shows progress (``sent``) while
# it takes the scrollback, frame by frame, rather than in one send that shows none until done.
REPLAY_PIECE = 64 * 1024
# How long a dropped client gets for the notice that says why, and then for its close.
FAREWELL_TIMEOUT = 2.0


class Client(Protocol):
    """Something attached to a session: a WebSocket, a test, a benchmark.

    It may also have an ``async close()``, called after the session dropped it.
    """

    async def send_output(self, data: bytes) -> None: ...

    async def send_event(self, event: dict[str, Any]) -> None: ...


class ClientFeed:
    """The queue and sender task of one client. ``backlog`` counts the bytes not yet sent."""

    def __init__(
        self,
        client: Client,
        replay: bytes,
        *,
        on_ready: Callable[[ClientFeed], None],
        on_failed: Callable[[ClientFeed, BaseException], None],
        name: str,
    ) -> None:
        self.client = client
        self.backlog = 0
        self.sent = 0  # output bytes sent so far: what the session's stall check measures
        self.paused = False
        self._queue: deque[bytes | dict[str, Any]] = deque()
        self._on_ready = on_ready
        self._on_failed = on_failed
        self._ignore_pause = False
        self._wake = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        for start in range(0, len(replay), REPLAY_PIECE):
            self.put_output(replay[start : start + REPLAY_PIECE])
        self._task: asyncio.Task[None] | None = asyncio.get_running_loop().create_task(self._run(), name=name)

    @property
    def keeping_up(self) -> bool:
        """Not paused, and not far behind: output read for it now will leave soon."""
        return not self.paused and self.backlog < HIGH_WATER

    def put_output(self, data: bytes) -> None:
        self._queue.append(data)
        self.backlog += len(data)
        self._changed()

    def put_event(self, event: dict[str, Any]) -> None:
        self._queue.append(event)
        self._changed()

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            self._wake.set()
            if self.keeping_up:
                self._on_ready(self)

    def finish(self) -> None:
        """The session is ending: send what is left even to a paused client (it is bounded)."""
        self._ignore_pause = True
        self._wake.set()

    async def wait_sent(self) -> None:
        """Until everything queued has been sent (or the feed was closed)."""
        await self._empty.wait()

    def close(self) -> None:
        """Stop sending; whatever is queued is dropped."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._queue.clear()
        self.backlog = 0
        self._empty.set()

    async def farewell(self, reason: str) -> None:
        """Tell a dropped client why, if it still takes frames, then close it."""
        try:
            await asyncio.wait_for(self.client.send_event({"type": "dropped", "reason": reason}), FAREWELL_TIMEOUT)
        except Exception as e:  # a client that is stuck or gone is simply closed
            log.debug("could not tell a dropped client why: %r", e)
        close = getattr(self.client, "close", None)
        if close is not None:
            try:
                await close()
            except Exception as e:
                log.debug("closing a dropped client failed: %r", e)

    def _changed(self) -> None:
        self._empty.clear()
        self._wake.set()

    def _take(self) -> bytes | dict[str, Any]:
        item = self._queue.popleft()
        if isinstance(item, dict) or not self._queue or not isinstance(self._queue[0], bytes):
            return item
        # Behind: join the output waiting for this client into one larger frame.
        parts = [item]
        size = len(item)
        while self._queue and isinstance(self._queue[0], bytes) and size + len(self._queue[0]) <= MAX_FRAME:
            part = self._queue.popleft()
            parts.append(part)
            size += len(part)
        return b"".join(parts)

    async def _run(self) -> None:
        try:
            while True:
                while not self._queue or (self.paused and not self._ignore_pause):
                    if not self._queue:
                        self._empty.set()
                    self._wake.clear()
                    await self._wake.wait()
                item = self._take()
                if isinstance(item, dict):
                    await self.client.send_event(item)
                    continue
                await self.client.send_output(item)
                was_keeping_up = self.keeping_up
                self.backlog -= len(item)
                self.sent += len(item)
                if not was_keeping_up and self.keeping_up:
                    self._on_ready(self)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._on_failed(self, e)
