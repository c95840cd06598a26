"""Limits on the connections of a listening port, so that one client cannot take the server down.

aiohttp gives a connection that has not finished its request headers all the time it likes,
and holds any number of them: a local user without the key held 1,100 half-sent requests, the
server ran out of descriptors, and /health, new terminals and the proxy failed. So each port
(the web port and the proxy) is served through a ``GuardedSite``, whose ``ConnectionGuard``:

- gives each connection ``header_timeout`` seconds to send its first request's headers (the
  idle time between later requests is aiohttp's ``keepalive_timeout``, which also closes a
  connection that stalls in a later request's headers);
- keeps at most ``max_pending`` connections still sending those headers: beyond that the
  oldest is closed. A real client sends its headers at once, so only a stalling one is ever
  the oldest: the attacker evicts itself, and whoever comes next is served;
- refuses connections past ``max_connections`` in all with a 503 that says why;
- says each of these in the log at most once per ``log_interval``, with a count.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from typing import Any, Callable

from aiohttp import web

log = logging.getLogger(__name__)

HEADER_END = b"\r\n\r\n"


class RateLimitedLog:
    """One warning per ``interval`` for each kind of event, with how many happened since."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def warn(self, kind: str, message: str) -> None:
        self._count[kind] = self._count.get(kind, 0) + 1
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            return
        count = self._count.pop(kind)
        self._last[kind] = now
        log.warning("%s (%d time(s) since the last such line)", message, count)


def _refusal(status: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


class ConnectionGuard:
    """The limits of one listening port (see the module's docstring)."""

    def __init__(
        self,
        name: str,
        *,
        header_timeout: float = 10.0,
        max_pending: int = 64,
        max_connections: int = 1024,
        log_interval: float = 60.0,
    ) -> None:
        self.name = name
        self.header_timeout = header_timeout
        self.max_pending = max_pending
        self.max_connections = max_connections
        self.connections = 0
        # Connections still sending their first headers, oldest first.
        self._pending: OrderedDict[_GuardedProtocol, None] = OrderedDict()
        self._log = RateLimitedLog(log_interval)

    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _GuardedProtocol(self, factory)

    # --- called by the connections ---------------------------------------------------------

    def _opened(self, connection: _GuardedProtocol) -> bool:
        if self.connections >= self.max_connections:
            self._log.warn("full", f"{self.name}: {self.max_connections} connections open; refusing new ones")
            return False
        self.connections += 1
        self._pending[connection] = None
        while len(self._pending) > self.max_pending:
            oldest, _ = self._pending.popitem(last=False)
            self._log.warn("pending", f"{self.name}: more than {self.max_pending} connections still sending "
                           "their headers; closing the oldest")
            oldest.close_stalled("too many connections are still sending their request")
        return True

    def _headers_done(self, connection: _GuardedProtocol) -> None:
        self._pending.pop(connection, None)

    def _closed(self, connection: _GuardedProtocol) -> None:
        self._pending.pop(connection, None)
        self.connections -= 1

    def _timed_out(self, connection: _GuardedProtocol) -> None:
        self._log.warn("slow", f"{self.name}: closed connection(s) that sent no complete request headers "
                       f"within {self.header_timeout:g} s")
        connection.close_stalled(f"no complete request headers within {self.header_timeout:g} s")


class _GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the guard's door."""

    def __init__(self, guard: ConnectionGuard, factory: Callable[[], asyncio.Protocol]) -> None:
        self._guard = guard
        self._factory = factory
        self._inner: Any = None
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""  # the last bytes seen while waiting for the end of the headers

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        if not self._guard._opened(self):
            transport.write(_refusal("503 Service Unavailable", f"{self._guard.name} has too many connections "
                                     "open; try again in a moment"))  # type: ignore[attr-defined]
            transport.close()
            return
        self._timer = asyncio.get_running_loop().call_later(self._guard.header_timeout, self._guard._timed_out, self)
        self._inner = self._factory()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if self._timer is not None:
            seen = self._tail + data
            if HEADER_END in seen:
                self._headers_arrived()
            else:
                self._tail = seen[-(len(HEADER_END) - 1):]
        self._inner.data_received(data)

    def _headers_arrived(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._tail = b""
        self._guard._headers_done(self)

    def close_stalled(self, reason: str) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(_refusal("408 Request Timeout", f"closed: {reason}"))
            self._transport.close()

    def eof_received(self) -> bool | None:
        return None if self._inner is None else self._inner.eof_received()

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._inner is None:
            return
        self._guard._closed(self)
        self._inner.connection_lost(exc)


class GuardedSite(web.TCPSite):
    """``web.TCPSite`` whose connections pass through a ``ConnectionGuard``. (aiohttp has no
    hook for the protocol factory, so ``start`` is TCPSite's own with the factory wrapped.)"""

    __slots__ = ("_guard",)

    def __init__(self, runner: web.BaseRunner, host: str | None, port: int, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(runner, host, port, **kwargs)
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.wrap(server), self._host, self._port, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port
