"""PTY sessions: a shell on a pseudo-terminal, its scrollback, its attached clients, flow control.

This module knows processes and file descriptors, and nothing of sockets or aiohttp: a
client is anything with ``send_output`` and ``send_event`` coroutines (see ``Client``).

Data path, per session::

    PTY master --add_reader--> pending --dispatch--> scrollback + each client's feed --its sender--> client
    client input --write()--> PTY master (queued and drained with add_writer when the PTY is full)

Each client has its own bounded queue and sender (``client_feed``), so a slow, paused or stuck
client slows only itself. Output is handed on while at least one client keeps up (or none is
attached); while every client is paused or behind, output waits in ``pending`` and reading
stops once that is full, so the slowest consumer paces the program instead of memory growing.
Nobody may hold the program up for good: a client whose backlog passes its limit, or every
client once output has waited ``stall_seconds`` for them, is dropped and told why.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from coda_aio.capacity.oom import terminal_oom_score_adj
from coda_aio.terminal.client_feed import Client, ClientFeed
from coda_aio.terminal.pty_process import (
    MARKER_VARIABLE, edits_lines, foreground_command, session_members, set_window_size, signal_members, signal_session, spawn,
)
from coda_aio.terminal.scrollback import Scrollback

log = logging.getLogger(__name__)

DEFAULT_COMMAND = ("bash", "-i")

# A PTY hands out at most a few KiB per read; a large buffer lets one read take all there is.
READ_SIZE = 64 * 1024
# Output read but not yet handed to any client. At this size reading stops until one keeps up.
PENDING_LIMIT = 256 * 1024
# What one client may fall behind by (on top of its replay) before it is dropped: far more
# than a browser that pauses to render holds back, far less than memory worth worrying about.
CLIENT_BACKLOG_BYTES = 4 * 1024 * 1024
# How long output may wait for clients that all take none (paused or stuck) before they are
# dropped and the program runs on: a client that never reads must not freeze it for good. A
# client that took some output in that time is slow, not stuck (a slow link taking its
# replay): it stays, and the wait starts again.
STALL_SECONDS = 30.0
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
REPLAY_END = {"type": "replay_end"}
ANSWERING_YES = {"type": "answering", "answering": True}
ANSWERING_NO = {"type": "answering", "answering": False}
# Lost sessions (of the server before a restart) remembered with their one replacement. Pages
# ask for at most max_sessions each, so this bounds memory without forgetting a live page's ids.
REMEMBERED_REPLACEMENTS = 256
MAX_SESSION_ID_LENGTH = 64


class SessionError(Exception):
    """A session could not be created or used; the message says what to do."""


class SessionLimitError(SessionError):
    pass


class SessionStartError(SessionError):
    pass


class SessionClosedError(SessionError):
    pass


def clean_label(label: object) -> str:
    if not isinstance(label, str):
        raise ValueError("label must be a string")
    label = label.strip()
    if not label or len(label) > MAX_LABEL_LENGTH or not label.isprintable():
        raise ValueError(f"label must be 1 to {MAX_LABEL_LENGTH} printable characters")
    return label


def clamp_size(value: int) -> int:
    return max(MIN_SIZE, min(MAX_SIZE, int(value)))


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
        marker: str | None = None,
        backlog_limit: int = CLIENT_BACKLOG_BYTES,
        stall_seconds: float = STALL_SECONDS,
    ) -> None:
        self.id = session_id
        self.label = label
        self.created_at = time.time()
        # In the environment of everything the terminal starts (see pty_process.MARKER_VARIABLE).
        self.marker = marker
        self._loop = asyncio.get_running_loop()
        self._process = process
        self._fd = master_fd
        self._kill_grace = kill_grace
        self._on_end = on_end
        self._on_clients_changed = on_clients_changed
        self._scrollback = Scrollback(scrollback_bytes)
        # A client may be behind by its replay (at most the scrollback) plus this.
        self._backlog_limit = scrollback_bytes + backlog_limit
        self._stall_seconds = stall_seconds

        self._clients: dict[Client, ClientFeed] = {}
        # The one client whose answers to terminal queries reach the program (see write_reply),
        # as chosen by focus or typing, and the one each client was last told it is.
        self._answerer: Client | None = None
        self._announced_answerer: Client | None = None
        self._farewells: set[asyncio.Task[None]] = set()

        self._pending = bytearray()
        self._reading = False
        self._flush_timer: asyncio.TimerHandle | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self._sent_at_stall: dict[ClientFeed, int] = {}  # each feed's ``sent`` when the wait began
        self._eof = asyncio.Event()
        self._exited = False
        self._exit_code: int | None = None
        self._finishing = False
        self._hup_sent = False  # the whole session has been hung up on ...
        self._hup_members: list[int] | None = None  # ... by terminate(), and these were in it

        self._input: deque[bytes] = deque()
        self._input_offset = 0  # bytes of _input[0] already written
        self._input_size = 0
        self._writing = False
        self._input_drained = asyncio.Event()
        self._input_drained.set()

        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._update_reading()
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
        # "command": what runs in the foreground instead of the idle shell (None at the prompt),
        # so the page can ask before closing a tab that still runs something.
        return {"pid": self._process.pid, "running": not self._exited, "exit_code": self._exit_code,
                "command": None if self._exited else foreground_command(self._fd, self._process.pid)}

    def rename(self, label: str) -> None:
        self.label = clean_label(label)

    def attach(self, client: Client, replay_bytes: int | None = None) -> Callable[[], None]:
        """Start sending output to ``client``: the scrollback first (its last ``replay_bytes``
        at most, when the client asks for less), then live output.

        Returns the function that detaches it (safe to call more than once).
        """
        if self._finishing:
            raise SessionClosedError("this terminal has ended; open a new one")
        if client in self._clients:
            raise ValueError("client is already attached")
        # Whatever is still pending is not in the scrollback yet: hand it on first, so that it
        # reaches the new client as the replay's tail rather than twice or not at all.
        self._dispatch(force=True)
        feed = ClientFeed(
            client,
            self._scrollback.snapshot(replay_bytes),
            on_ready=self._on_feed_ready,
            on_failed=self._on_feed_failed,
            name=f"pty-send-{self.id}",
        )
        # Tells the client where the replay ends: its terminal must not answer the
        # queries in the replay (they were answered when they were live).
        feed.put_event(REPLAY_END)
        self._clients[client] = feed
        self._announce_answerer()
        self._on_clients_changed(self)
        return lambda: self._detach(feed)

    def focus(self, client: Client) -> None:
        """The person is at ``client`` now: its answers to terminal queries are the ones used."""
        if client in self._clients:
            self._answerer = client
            self._announce_answerer()

    def _current_answerer(self) -> Client | None:
        """The client last focused or typed in; before any was, the one attached last."""
        return self._answerer if self._answerer in self._clients else next(reversed(self._clients), None)

    def _announce_answerer(self) -> None:
        """Tells clients when they become or stop being the answering one, in order with the
        output: what only one of them may act on (the one-time ``coda-download`` link) is acted
        on by the tab the person uses, and by no other."""
        answerer = self._current_answerer()
        if answerer is self._announced_answerer:
            return
        self._dispatch(force=True)  # output before the change is judged by the old answerer
        previous = self._clients.get(self._announced_answerer) if self._announced_answerer is not None else None
        if previous is not None:
            previous.put_event(ANSWERING_NO)
        if answerer is not None:
            self._clients[answerer].put_event(ANSWERING_YES)
        self._announced_answerer = answerer

    def write_reply(self, client: Client, data: bytes | bytearray | memoryview) -> None:
        """Input that a client's terminal generated answering a query (ESC[c, ESC[6n, OSC 11;?).

        Every attached browser tab parses the same output and answers the same query; only one
        answer may reach the program: the answering client's, the one last focused or typed in
        (or, before any was, the one attached last).

        An answer is dropped while the terminal edits lines: a program waiting for one reads
        with line editing off (raw or cbreak), so the asker has gone already (``vim -c q``
        quits before a slow page answers its focus query) and the answer would only be echoed
        and typed into whatever reads next.
        """
        if client is self._current_answerer() and not edits_lines(self._fd):
            self.write(data)

    def pause(self, client: Client) -> None:
        """Stop sending output to ``client`` (only to it: the others go on)."""
        feed = self._clients.get(client)
        if feed is not None:
            feed.pause()

    def resume(self, client: Client) -> None:
        feed = self._clients.get(client)
        if feed is not None:
            feed.resume()

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
            self._dispatch(force=True)
            for feed in list(self._clients.values()):
                feed.put_event(event)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    async def terminate(self) -> None:
        """End the session: HUP to every process in it, KILL after the grace period."""
        if self._closed.done():
            return
        if not self._exited and not self._hup_sent:
            self._hup_sent = True
            self._hup_members = await signal_session(self._process.pid, signal.SIGHUP, self.marker)
            try:
                await asyncio.wait_for(self._process.wait(), self._kill_grace)
            except asyncio.TimeoutError:
                await signal_session(self._process.pid, signal.SIGKILL, self.marker)
        await asyncio.shield(self._closed)

    # --- output: PTY -> pending -> clients -----------------------------------------------

    def _update_reading(self) -> None:
        # Reading goes on while pending has room: it only fills while no client keeps up.
        want = not self._finishing and not self._eof.is_set() and len(self._pending) < PENDING_LIMIT
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
        last = len(data)
        # The kernel hands PTY output out at most ~4 KB per read and holds ~14 KB: while a
        # program streams, what else is there is read now rather than after another wake-up
        # (bench/terminal_speed.md: fewer wake-ups, less CPU per MB).
        while last >= BULK_READ and len(self._pending) < FRAME_BYTES:
            try:
                more = os.read(self._fd, READ_SIZE)
            except OSError:  # nothing more now (EAGAIN), or EIO: the next wake-up sees it
                break
            if not more:
                break
            self._pending += more
            last = len(more)
        if len(self._pending) >= PENDING_LIMIT:
            self._update_reading()
        if last < BULK_READ or len(self._pending) >= FRAME_BYTES:
            self._flush()
        elif self._flush_timer is None:
            self._flush_timer = self._loop.call_later(COALESCE_SECONDS, self._flush)

    def _flush(self) -> None:
        """Hand the pending output on, if a client will take it."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        self._dispatch(force=self._exited)

    def _can_dispatch(self) -> bool:
        return not self._clients or any(feed.keeping_up for feed in self._clients.values())

    def _dispatch(self, force: bool = False) -> None:
        """Move pending output to the scrollback and to every client's queue.

        Unless ``force``d it stays pending while every client is paused or behind: that is what
        paces the program to its clients. Clients that are not keeping up still get it when
        another one is (they may slow only themselves), up to their backlog limit.
        """
        if not self._pending:
            self._cancel_stall_timer()
            return
        if not force and not self._can_dispatch():
            if self._stall_timer is None:
                self._start_stall_timer()
            return
        self._cancel_stall_timer()
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        data = bytes(self._pending)
        self._pending.clear()
        self._scrollback.append(data)
        for feed in list(self._clients.values()):
            feed.put_output(data)
            if feed.backlog > self._backlog_limit:
                self._drop(feed, f"this client fell {feed.backlog / 1e6:.1f} MB behind the terminal's output")
        self._update_reading()

    def _on_feed_ready(self, feed: ClientFeed) -> None:
        if self._clients.get(feed.client) is feed:
            self._dispatch()

    def _on_feed_failed(self, feed: ClientFeed, error: BaseException) -> None:
        log.debug("terminal %s: dropping a client that failed: %r", self.id, error)
        self._detach(feed)

    def _start_stall_timer(self) -> None:
        self._sent_at_stall = {feed: feed.sent for feed in self._clients.values()}
        self._stall_timer = self._loop.call_later(self._stall_seconds, self._drop_stalled)

    def _drop_stalled(self) -> None:
        """Output has waited ``stall_seconds`` for the clients: drop those that took nothing
        in that time and read on; while one still makes progress, wait for it again."""
        self._stall_timer = None
        if self._can_dispatch():
            self._dispatch()
            return
        for feed in list(self._clients.values()):
            if feed.sent > self._sent_at_stall.get(feed, feed.sent):
                continue  # slow, not stuck
            state = "paused" if feed.paused else "not reading"
            self._drop(feed, f"this client was {state} for {self._stall_seconds:g} s while the terminal had output")
        self._dispatch()

    def _cancel_stall_timer(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        self._sent_at_stall = {}

    def _drop(self, feed: ClientFeed, reason: str) -> None:
        """Detach a client that holds things up, and tell it why (it may reattach for a replay)."""
        if self._clients.get(feed.client) is not feed:
            return
        log.info("terminal %s: dropping a client: %s", self.id, reason)
        self._detach(feed)
        task = self._loop.create_task(feed.farewell(reason), name=f"pty-drop-{self.id}")
        self._farewells.add(task)
        task.add_done_callback(self._farewells.discard)

    def _detach(self, feed: ClientFeed) -> None:
        if self._clients.get(feed.client) is not feed:
            return
        del self._clients[feed.client]
        feed.close()
        # The client that left may have been the only one not keeping up.
        self._dispatch()
        if not self._finishing:
            self._announce_answerer()
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
            feeds = list(self._clients.values())
            sent = asyncio.gather(*(feed.wait_sent() for feed in feeds), *self._farewells)
            try:
                await asyncio.wait_for(sent, FINAL_SEND_TIMEOUT)
            except asyncio.TimeoutError:
                pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("terminal %s: ending the session failed", self.id)
        finally:
            self._finishing = True
            for feed in list(self._clients.values()):
                feed.close()
            for task in list(self._farewells):
                task.cancel()
            self._close_fd()
            if not self._closed.done():
                self._closed.set_result(None)
            log.info("terminal %s ended (pid %s, exit code %s)", self.id, self._process.pid, self._exit_code)
            self._on_end(self)

    async def _end_leftovers(self) -> None:
        """HUP whatever the shell left running in its session; KILL what survives the grace.

        Each look at /proc runs in a thread (it takes 0.5 s with thousands of processes), and
        usually there is one: the hangup's, which also shows whether anything else was left.
        """
        deadline = self._loop.time() + self._kill_grace
        if self._hup_sent:
            members = self._hup_members  # terminate() hung up on the session a moment ago
        else:
            self._hup_sent = True
            members = await signal_session(self._process.pid, signal.SIGHUP, self.marker)
        if members is not None and not [pid for pid in members if pid != self._process.pid]:
            # Nothing but the shell was there: no survivor to look for.
            await self._wait_eof(FINAL_SEND_TIMEOUT)
            return
        # Usually every process is gone at once, the terminal reports EOF and we are done.
        await self._wait_eof(self._kill_grace)
        members = await asyncio.to_thread(session_members, self._process.pid, self.marker)
        if members or (members is None and not self._eof.is_set()):
            await asyncio.sleep(deadline - self._loop.time())
            await signal_session(self._process.pid, signal.SIGKILL, self.marker)
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
        self._dispatch(force=True)
        self._cancel_stall_timer()
        self._drop_input()
        for feed in list(self._clients.values()):
            feed.put_event({"type": "exit", "code": self._exit_code})
            feed.finish()

    def _close_fd(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        self._cancel_stall_timer()
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
        backlog_limit: int = CLIENT_BACKLOG_BYTES,
        stall_seconds: float = STALL_SECONDS,
        oom_score_adj: int | None = None,
    ) -> None:
        # Terminals are what the OOM killer should take first (capacity.oom), never the server.
        self._oom_score_adj = terminal_oom_score_adj() if oom_score_adj is None else oom_score_adj
        self._backlog_limit = backlog_limit
        self._stall_seconds = stall_seconds
        self._max_sessions = max_sessions
        self._idle_timeout = idle_timeout
        self._cwd = Path(cwd)
        self._env = dict(env)
        self._scrollback_bytes = scrollback_bytes
        self._command = tuple(command)
        self._kill_grace = kill_grace
        # Marks every process this manager's terminals start, apart from other apps' (tests run
        # several in one process) and from earlier runs'.
        self._tag = secrets.token_hex(6)
        self._sessions: dict[str, Session] = {}
        self._starting = 0
        self._created = 0
        self._closing = False
        self._idle_timers: dict[str, asyncio.TimerHandle] = {}
        self._listeners: list[Callable[[int], None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        # Lost session id -> its replacement (a future while the shell starts), so that every
        # page that reconnects after a restart, in whatever order, gets the same one.
        self._replacements: OrderedDict[str, asyncio.Future[Session]] = OrderedDict()

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
        await self._end_stragglers()

    async def _end_stragglers(self) -> None:
        """KILL whatever any terminal started that is still alive: started while its session
        was ending, or out of every session (a daemon). A few passes: one may start another."""
        for _ in range(5):
            left = await asyncio.to_thread(session_members, None, f"{self._tag}.")
            if not left:
                return
            log.info("ending %d process(es) the terminals left behind", len(left))
            signal_members(0, left, signal.SIGKILL)
            await asyncio.sleep(0.05)

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
        session_id = secrets.token_urlsafe(12)
        marker = f"{self._tag}.{session_id}"
        try:
            env = {**self._env, MARKER_VARIABLE: marker}
            process, master_fd = await _start(self._command, self._cwd, env, clamp_size(cols), clamp_size(rows),
                                              self._oom_score_adj)
        finally:
            self._starting -= 1
        session = Session(
            session_id,
            label,
            process,
            master_fd,
            scrollback_bytes=self._scrollback_bytes,
            kill_grace=self._kill_grace,
            on_end=self._forget,
            on_clients_changed=self._clients_changed,
            marker=marker,
            backlog_limit=self._backlog_limit,
            stall_seconds=self._stall_seconds,
        )
        self._sessions[session.id] = session
        log.info("terminal %s started (pid %s)", session.id, process.pid)
        self._clients_changed(session)
        self._notify()
        return session

    def has_stand_in(self, lost_id: object) -> bool:
        """Whether ``lost_id`` is live or already has a stand-in started or starting."""
        if not isinstance(lost_id, str):
            return False
        known = self._replacements.get(lost_id)
        running = known is not None and not (known.done() and (known.exception() or known.result().closed))
        return lost_id in self._sessions or running

    async def replacement(
        self, lost_id: str, label: str | None = None, cols: int = 80, rows: int = 24
    ) -> tuple[Session, bool]:
        """The session that stands in for ``lost_id`` (a session this server does not have,
        typically one of the server before a restart): started by the first caller, the same
        one for every later caller while it runs. Returns (session, whether it was started now).
        A live ``lost_id`` is its own stand-in."""
        if not isinstance(lost_id, str) or not 0 < len(lost_id) <= MAX_SESSION_ID_LENGTH:
            raise ValueError(f"replaces must be a session id (1 to {MAX_SESSION_ID_LENGTH} characters)")
        live = self._sessions.get(lost_id)
        if live is not None:
            return live, False
        known = self._replacements.get(lost_id)
        if known is not None:
            session = await asyncio.shield(known)
            if not session.closed:
                self._replacements.move_to_end(lost_id)
                return session, False
        # First to ask (or its stand-in has ended since): start one, and let the others wait for it.
        starting: asyncio.Future[Session] = asyncio.get_running_loop().create_future()
        self._replacements[lost_id] = starting
        while len(self._replacements) > REMEMBERED_REPLACEMENTS:
            self._replacements.popitem(last=False)
        try:
            session = await self.create(label=label, cols=cols, rows=rows)
        except BaseException as e:
            if self._replacements.get(lost_id) is starting:
                del self._replacements[lost_id]
            starting.set_exception(e)
            starting.exception()  # retrieved: waiters re-raise it, and no one else must
            raise
        starting.set_result(session)
        return session, True

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
    command: Sequence[str], cwd: Path, env: Mapping[str, str], cols: int, rows: int, oom_score_adj: int
) -> tuple[asyncio.subprocess.Process, int]:
    try:
        # 0700: the projects in it are the user's alone (a folder that exists is left as it is).
        cwd.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise SessionStartError(f"cannot create the terminal's working directory {cwd}: {e.strerror}") from e
    try:
        return await spawn(command, cwd, env, cols, rows, oom_score_adj)
    except OSError as e:
        raise SessionStartError(f"cannot start {command[0]!r}: {e.strerror or e}") from e
