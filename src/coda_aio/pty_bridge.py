"""PTY sessions: a shell on a pseudo-terminal, its scrollback, its attached clients, flow control.

This module knows processes and file descriptors, and nothing of sockets or aiohttp: a
client is anything with ``send_output`` and ``send_event`` coroutines (see ``Client``).

Data path, per session::

    PTY master --add_reader--> pending --sender task--> scrollback + every attached client
    client input --write()--> PTY master (queued and drained with add_writer when the PTY is full)

Reading stops while output waits to be sent (``pending`` at its limit) or while any client
asked to pause, so a slow client slows the program instead of growing memory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

from .config import without_secrets
from .pty_process import session_members, set_window_size, signal_session, spawn
from .scrollback import Scrollback

log = logging.getLogger(__name__)

DEFAULT_COMMAND = ("bash", "-i")

# A PTY hands out at most a few KiB per read; a large buffer lets one read take all there is.
READ_SIZE = 64 * 1024
# Output read but not yet sent. At this size reading stops until the sender catches up.
PENDING_LIMIT = 256 * 1024
# A PTY read this large means a program is streaming: its output is held back a moment so
# that it leaves in frames of about FRAME_BYTES instead of one per 4 KiB read. Smaller reads
# (echo, prompts, the tail of a stream) are sent at once, so typing never waits.
BULK_READ = 2048
FRAME_BYTES = 64 * 1024
COALESCE_SECONDS = 0.002
# Input queued for the PTY (a big paste). Above this, drain() makes the socket reader wait.
INPUT_LIMIT = 1024 * 1024
WRITE_SIZE = 64 * 1024
# How long a session's last output may take to reach its clients once the process has exited.
FINAL_SEND_TIMEOUT = 10.0
MAX_LABEL_LENGTH = 80
MIN_SIZE, MAX_SIZE = 1, 1000


class SessionError(Exception):
    """A session could not be created or used; the message says what to do."""


class SessionLimitError(SessionError):
    pass


class SessionStartError(SessionError):
    pass


class SessionClosedError(SessionError):
    pass


class Client(Protocol):
    """Something attached to a session: a WebSocket, a test, a benchmark."""

    async def send_output(self, data: bytes) -> None: ...

    async def send_event(self, event: dict[str, Any]) -> None: ...


def build_env(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of every terminal: ``base`` plus ``extra``, without any credential."""
    env = without_secrets({**base, **extra})
    env["TERM"] = "xterm-256color"
    env["COLORTERM"] = "truecolor"
    return env


def clean_label(label: object) -> str:
    if not isinstance(label, str):
        raise ValueError("label must be a string")
    label = label.strip()
    if not label or len(label) > MAX_LABEL_LENGTH or not label.isprintable():
        raise ValueError(f"label must be 1 to {MAX_LABEL_LENGTH} printable characters")
    return label


def clamp_size(value: int) -> int:
    return max(MIN_SIZE, min(MAX_SIZE, int(value)))


class _Attachment:
    __slots__ = ("client", "replay", "live", "paused", "detached")

    def __init__(self, client: Client, replay: bytes) -> None:
        self.client = client
        self.replay = replay  # scrollback as of attach time, sent before any live output
        self.live = False
        self.paused = False
        self.detached = False


class Session:
    """One shell on one PTY. Created by ``SessionManager.create``."""

    def __init__(
        self,
        session_id: str,
        label: str,
        process: asyncio.subprocess.Process,
        master_fd: int,
        *,
        scrollback_bytes: int,
        kill_grace: float,
        on_end: Callable[[Session], None],
        on_clients_changed: Callable[[Session], None],
    ) -> None:
        self.id = session_id
        self.label = label
        self.created_at = time.time()
        self._loop = asyncio.get_running_loop()
        self._process = process
        self._fd = master_fd
        self._kill_grace = kill_grace
        self._on_end = on_end
        self._on_clients_changed = on_clients_changed
        self._scrollback = Scrollback(scrollback_bytes)

        self._clients: dict[Client, _Attachment] = {}
        self._joining: deque[_Attachment] = deque()
        self._paused_clients = 0

        self._pending = bytearray()
        self._reading = False
        self._flush_timer: asyncio.TimerHandle | None = None
        self._eof = asyncio.Event()
        self._exited = False
        self._exit_code: int | None = None
        self._finishing = False
        self._events: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()

        self._input: deque[bytes] = deque()
        self._input_offset = 0  # bytes of _input[0] already written
        self._input_size = 0
        self._writing = False
        self._input_drained = asyncio.Event()
        self._input_drained.set()

        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._update_reading()
        self._sender = self._loop.create_task(self._send_loop(), name=f"pty-send-{session_id}")
        self._watcher = self._loop.create_task(self._watch(), name=f"pty-watch-{session_id}")

    # --- what the web layer sees -------------------------------------------------------

    @property
    def clients(self) -> int:
        return len(self._clients)

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def closed(self) -> bool:
        return self._closed.done()

    @property
    def process(self) -> dict[str, Any]:
        return {"pid": self._process.pid, "running": not self._exited, "exit_code": self._exit_code}

    def rename(self, label: str) -> None:
        self.label = clean_label(label)

    def attach(self, client: Client) -> Callable[[], None]:
        """Start sending output to ``client``: the scrollback first, then live output.

        Returns the function that detaches it (safe to call more than once).
        """
        if self._finishing:
            raise SessionClosedError("this terminal has ended; open a new one")
        if client in self._clients:
            raise ValueError("client is already attached")
        attachment = _Attachment(client, self._scrollback.snapshot())
        self._clients[client] = attachment
        self._joining.append(attachment)
        self._wake.set()
        self._on_clients_changed(self)
        return lambda: self._detach(attachment)

    def pause(self, client: Client) -> None:
        attachment = self._clients.get(client)
        if attachment is not None and not attachment.paused:
            attachment.paused = True
            self._paused_clients += 1
            self._update_reading()

    def resume(self, client: Client) -> None:
        attachment = self._clients.get(client)
        if attachment is not None and attachment.paused:
            attachment.paused = False
            self._paused_clients -= 1
            self._update_reading()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue input for the program; never blocks. Await ``drain()`` to bound the queue."""
        if self._finishing or not data:
            return
        if not self._input:
            try:
                written = os.write(self._fd, data)
            except BlockingIOError:
                written = 0
            except OSError:
                return  # the terminal hung up: the session is ending and input has nowhere to go
            if written == len(data):
                return
            data = memoryview(data)[written:]
        self._input.append(bytes(data))
        self._input_size += len(data)
        if self._input_size > INPUT_LIMIT:
            self._input_drained.clear()
        if not self._writing:
            self._loop.add_writer(self._fd, self._on_writable)
            self._writing = True

    async def drain(self) -> None:
        """Wait until queued input is below its limit (or the session has ended)."""
        await self._input_drained.wait()

    def resize(self, cols: int, rows: int) -> None:
        if self._fd < 0:
            return
        set_window_size(self._fd, clamp_size(cols), clamp_size(rows))

    def post_event(self, event: dict[str, Any]) -> None:
        """Send a JSON event to every attached client, in order with the output."""
        if not self._finishing:
            self._events.append(event)
            self._wake.set()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    async def terminate(self) -> None:
        """End the session: HUP to every process in it, KILL after the grace period."""
        if self._closed.done():
            return
        if not self._exited:
            signal_session(self._process.pid, signal.SIGHUP)
            try:
                await asyncio.wait_for(self._process.wait(), self._kill_grace)
            except asyncio.TimeoutError:
                signal_session(self._process.pid, signal.SIGKILL)
        await asyncio.shield(self._closed)

    # --- output: PTY -> pending -> clients -----------------------------------------------

    def _update_reading(self) -> None:
        want = (
            not self._finishing
            and not self._eof.is_set()
            and len(self._pending) < PENDING_LIMIT
            # Once the program has exited its last output is read even if a client paused.
            and (self._paused_clients == 0 or self._exited)
        )
        if want and not self._reading:
            self._loop.add_reader(self._fd, self._on_readable)
            self._reading = True
        elif not want and self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:  # EIO: no process holds the terminal any more
            data = b""
        if not data:
            self._eof.set()
            self._update_reading()
            self._flush()
            return
        self._pending += data
        if len(self._pending) >= PENDING_LIMIT:
            self._update_reading()
        if len(data) < BULK_READ or len(self._pending) >= FRAME_BYTES:
            self._flush()
        elif self._flush_timer is None:
            self._flush_timer = self._loop.call_later(COALESCE_SECONDS, self._flush)

    def _flush(self) -> None:
        """Hand the pending output to the sender."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        self._wake.set()

    async def _send_loop(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                await self._replay_to_joining()
                if self._pending:
                    if self._flush_timer is not None:
                        self._flush_timer.cancel()
                        self._flush_timer = None
                    data, self._pending = self._pending, bytearray()
                    self._scrollback.append(data)
                    # Read the next chunk while this one is being sent.
                    self._update_reading()
                    await self._fan_out(lambda client: client.send_output(data))
                while self._events:
                    event = self._events.popleft()
                    await self._fan_out(lambda client: client.send_event(event))
                if self._finishing and not self._pending and not self._events and not self._joining:
                    return
        except Exception:
            log.exception("terminal %s: output sender failed", self.id)

    async def _replay_to_joining(self) -> None:
        while self._joining:
            attachment = self._joining.popleft()
            if attachment.detached:
                continue
            try:
                if attachment.replay:
                    await attachment.client.send_output(attachment.replay)
            except Exception as e:
                log.debug("terminal %s: dropping a client that failed during replay: %r", self.id, e)
                self._detach(attachment)
                continue
            attachment.replay = b""
            attachment.live = True

    async def _fan_out(self, send: Callable[[Client], Any]) -> None:
        live = [a for a in self._clients.values() if a.live]
        if not live:
            return
        if len(live) == 1:
            try:
                await send(live[0].client)
            except Exception as e:
                log.debug("terminal %s: dropping a client that failed: %r", self.id, e)
                self._detach(live[0])
            return
        # Every client's write is awaited: the slowest one sets the pace for the program.
        results = await asyncio.gather(*(send(a.client) for a in live), return_exceptions=True)
        for attachment, result in zip(live, results):
            if isinstance(result, Exception):
                log.debug("terminal %s: dropping a client that failed: %r", self.id, result)
                self._detach(attachment)

    def _detach(self, attachment: _Attachment) -> None:
        if attachment.detached:
            return
        attachment.detached = True
        del self._clients[attachment.client]
        if attachment.paused:
            attachment.paused = False
            self._paused_clients -= 1
            self._update_reading()
        self._on_clients_changed(self)

    # --- input: queue -> PTY ----------------------------------------------------------------

    def _on_writable(self) -> None:
        while self._input:
            chunk = self._input[0]
            try:
                written = os.write(self._fd, memoryview(chunk)[self._input_offset : self._input_offset + WRITE_SIZE])
            except BlockingIOError:
                break
            except OSError:
                self._drop_input()
                return
            self._input_offset += written
            self._input_size -= written
            if self._input_offset == len(chunk):
                self._input.popleft()
                self._input_offset = 0
        if self._input_size <= INPUT_LIMIT // 2:
            self._input_drained.set()
        if not self._input:
            self._loop.remove_writer(self._fd)
            self._writing = False

    def _drop_input(self) -> None:
        self._input.clear()
        self._input_offset = self._input_size = 0
        self._input_drained.set()
        if self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False

    # --- end of life -------------------------------------------------------------------------

    async def _watch(self) -> None:
        """Wait for the shell to exit, end whatever it left behind, flush, close, report."""
        try:
            returncode = await self._process.wait()
            self._exited = True
            self._exit_code = returncode if returncode >= 0 else 128 - returncode
            self._update_reading()
            await self._end_leftovers()
            self._finish()
            try:
                await asyncio.wait_for(asyncio.shield(self._sender), FINAL_SEND_TIMEOUT)
            except asyncio.TimeoutError:
                self._sender.cancel()
        except asyncio.CancelledError:
            self._sender.cancel()
            raise
        except Exception:
            log.exception("terminal %s: ending the session failed", self.id)
            self._sender.cancel()
        finally:
            self._finishing = True
            self._close_fd()
            if not self._closed.done():
                self._closed.set_result(None)
            log.info("terminal %s ended (pid %s, exit code %s)", self.id, self._process.pid, self._exit_code)
            self._on_end(self)

    async def _end_leftovers(self) -> None:
        """HUP whatever the shell left running in its session; KILL what survives the grace."""
        deadline = self._loop.time() + self._kill_grace
        signal_session(self._process.pid, signal.SIGHUP)
        # Usually every process is gone at once, the terminal reports EOF and we are done.
        await self._wait_eof(self._kill_grace)
        members = session_members(self._process.pid)
        if members or (members is None and not self._eof.is_set()):
            await asyncio.sleep(deadline - self._loop.time())
            signal_session(self._process.pid, signal.SIGKILL)
        # Whatever the program wrote before it ended is still on its way out of the PTY.
        await self._wait_eof(FINAL_SEND_TIMEOUT)

    async def _wait_eof(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._eof.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def _finish(self) -> None:
        self._finishing = True
        self._update_reading()
        self._flush()
        self._drop_input()
        self._events.append({"type": "exit", "code": self._exit_code})
        self._wake.set()

    def _close_fd(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._fd < 0:
            return
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False
        if self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False
        os.close(self._fd)
        self._fd = -1
        self._input_drained.set()


class SessionManager:
    """Every terminal session of one app: creation, lookup, limits, idle reaping, shutdown."""

    def __init__(
        self,
        max_sessions: int,
        idle_timeout: float,
        cwd: Path,
        env: dict[str, str],
        scrollback_bytes: int = 1 << 20,
        *,
        command: Sequence[str] = DEFAULT_COMMAND,
        kill_grace: float = 1.0,
    ) -> None:
        self._max_sessions = max_sessions
        self._idle_timeout = idle_timeout
        self._cwd = Path(cwd)
        self._env = dict(env)
        self._scrollback_bytes = scrollback_bytes
        self._command = tuple(command)
        self._kill_grace = kill_grace
        self._sessions: dict[str, Session] = {}
        self._starting = 0
        self._created = 0
        self._closing = False
        self._idle_timers: dict[str, asyncio.TimerHandle] = {}
        self._listeners: list[Callable[[int], None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        # Idle sessions are reaped by one timer each (armed when the last client detaches),
        # so there is no reaper task to start; this only reopens a closed manager.
        self._closing = False

    async def close(self) -> None:
        self._closing = True
        for timer in self._idle_timers.values():
            timer.cancel()
        self._idle_timers.clear()
        await asyncio.gather(*(session.terminate() for session in list(self._sessions.values())))
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def create(self, label: str | None = None, cols: int = 80, rows: int = 24) -> Session:
        if self._closing:
            raise SessionStartError("the server is shutting down; try again once it is back")
        if len(self._sessions) + self._starting >= self._max_sessions:
            raise SessionLimitError(
                f"All {self._max_sessions} terminal sessions are in use. Close a terminal you no longer "
                "need, or raise CODA_MAX_SESSIONS."
            )
        self._created += 1
        label = clean_label(label) if label is not None else f"Terminal {self._created}"
        self._starting += 1  # holds a slot while the shell starts, so the limit can't be overshot
        try:
            process, master_fd = await _start(self._command, self._cwd, self._env, clamp_size(cols), clamp_size(rows))
        finally:
            self._starting -= 1
        session = Session(
            secrets.token_urlsafe(12),
            label,
            process,
            master_fd,
            scrollback_bytes=self._scrollback_bytes,
            kill_grace=self._kill_grace,
            on_end=self._forget,
            on_clients_changed=self._clients_changed,
        )
        self._sessions[session.id] = session
        log.info("terminal %s started (pid %s)", session.id, process.pid)
        self._clients_changed(session)
        self._notify()
        return session

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    def list(self) -> list[Session]:
        return list(self._sessions.values())

    async def delete(self, session_id: str) -> bool:
        session = self._sessions.get(session_id)
        if session is None:
            return False
        await session.terminate()
        return True

    def broadcast(self, event: dict[str, Any]) -> None:
        for session in self._sessions.values():
            session.post_event(event)

    def subscribe(self, listener: Callable[[int], None]) -> Callable[[], None]:
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def _notify(self) -> None:
        count = len(self._sessions)
        for listener in list(self._listeners):
            try:
                listener(count)
            except Exception:
                log.exception("session count listener failed")

    def _forget(self, session: Session) -> None:
        timer = self._idle_timers.pop(session.id, None)
        if timer is not None:
            timer.cancel()
        if self._sessions.pop(session.id, None) is not None:
            self._notify()

    def _clients_changed(self, session: Session) -> None:
        timer = self._idle_timers.pop(session.id, None)
        if timer is not None:
            timer.cancel()
        if session.clients == 0 and not session.closed and self._idle_timeout > 0 and not self._closing:
            loop = asyncio.get_running_loop()
            self._idle_timers[session.id] = loop.call_later(self._idle_timeout, self._reap_idle, session)

    def _reap_idle(self, session: Session) -> None:
        self._idle_timers.pop(session.id, None)
        if session.clients == 0 and self._sessions.get(session.id) is session:
            log.info("terminal %s idle for %ss without a client: ending it", session.id, self._idle_timeout)
            task = asyncio.get_running_loop().create_task(session.terminate())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


async def _start(
    command: Sequence[str], cwd: Path, env: Mapping[str, str], cols: int, rows: int
) -> tuple[asyncio.subprocess.Process, int]:
    try:
        cwd.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SessionStartError(f"cannot create the terminal's working directory {cwd}: {e.strerror}") from e
    try:
        return await spawn(command, cwd, env, cols, rows)
    except OSError as e:
        raise SessionStartError(f"cannot start {command[0]!r}: {e.strerror or e}") from e
