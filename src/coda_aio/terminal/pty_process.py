"""Processes on pseudo-terminals: starting one, sizing its window, signalling all it started.

Under job control every background job of a shell gets its own process group, so ending a
terminal means finding every process of the shell's session (from /proc), not one group.
And a process may leave the session too (``setsid -f``, a daemon's double fork, an agent's
own server): each terminal's environment carries a marker (``MARKER_VARIABLE``) that every
process it starts inherits, and a process of this user that carries it is the terminal's
wherever it went. (What clears its own environment and leaves the session escapes: see
docs/security.md. Orphans are re-parented to coda_aio, the subreaper, meanwhile.)
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shlex
import signal
import struct
import termios
from pathlib import Path
from typing import Mapping, Sequence

from coda_aio.process_table import process_table


async def spawn(
    command: Sequence[str], cwd: Path, env: Mapping[str, str], cols: int, rows: int,
    oom_score_adj: int | None = None,
) -> tuple[asyncio.subprocess.Process, int]:
    """Start ``command`` on a new PTY, as the leader of its own session with the PTY as its
    controlling terminal; returns the process and the (non-blocking) master fd.

    ``oom_score_adj``: set in the child before it runs ``command`` (its children inherit it), so
    that the OOM killer takes a terminal's process before the server (capacity.oom)."""
    master_fd, slave_fd = os.openpty()
    try:
        set_window_size(master_fd, cols, rows)
        os.set_blocking(master_fd, False)
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=slave_fd,
            stdout=slave_fd,
            stderr=slave_fd,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
            preexec_fn=lambda: _prepare_child(oom_score_adj),
        )
    except BaseException:
        os.close(master_fd)
        raise
    finally:
        # The child has its own copies; ours would keep the terminal open after the shell exits.
        os.close(slave_fd)
    return process, master_fd


def _prepare_child(oom_score_adj: int | None) -> None:
    # Runs in the child between fork and exec, after setsid(): without a controlling
    # terminal bash has no job control and Ctrl-C would not reach the foreground program.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    # Ignored signals and the blocked mask survive exec. A server started in the background of a
    # script (`python -m coda_aio &`, nohup) ignores SIGINT and SIGQUIT, and every program of its
    # terminals would then shrug off Ctrl-C: the terminal starts as a login would, with defaults.
    for sig in signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}:
        if signal.getsignal(sig) == signal.SIG_IGN:
            signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    if oom_score_adj is not None:
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(str(oom_score_adj))
        except OSError:
            pass  # no /proc: the terminal keeps the server's score


def edits_lines(fd: int) -> bool:
    """Whether the terminal on ``fd`` is in canonical mode: input is gathered into lines with
    echo and editing, as when no program has asked for keys one by one."""
    try:
        return bool(termios.tcgetattr(fd)[3] & termios.ICANON)
    except termios.error:
        return False  # the terminal has hung up: nothing reads there any more


def set_window_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


# In every terminal's environment: "<manager tag>.<session id>" (see SessionManager).
MARKER_VARIABLE = "CODA_TERMINAL"


def session_members(sid: int | None, marker: str | None = None) -> list[int] | None:
    """Pids of every live process whose session id is ``sid`` or whose environment carries
    ``MARKER_VARIABLE=marker`` (a marker ending in "." matches every marker it begins); None
    where /proc is absent. Only this user's processes' environments are read."""
    table = process_table()
    if table is None:
        return None
    wanted = None if marker is None else f"{MARKER_VARIABLE}={marker}".encode()
    me, uid = os.getpid(), os.getuid()
    return [pid for pid, process in table.items()
            if pid != me and (process.session == sid or (wanted is not None and _carries(pid, wanted, uid)))]


def _carries(pid: int, wanted: bytes, uid: int) -> bool:
    try:
        if os.stat(f"/proc/{pid}").st_uid != uid:
            return False
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except OSError:
        return False  # gone, or not readable (a non-dumpable process: not a terminal's)
    prefix = wanted.endswith(b".")
    return any(entry.startswith(wanted) if prefix else entry == wanted for entry in environ.split(b"\0"))


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` in the process tree (children, theirs, ...), from /proc.
    As the child subreaper, coda_aio is the parent of every orphan its terminals left."""
    children: dict[int, list[int]] = {}
    for process in (process_table() or {}).values():
        children.setdefault(process.ppid, []).append(process.pid)
    found, frontier = [], [pid]
    while frontier:
        below = children.get(frontier.pop(), [])
        found += below
        frontier += below
    return found


async def signal_session(leader: int, sig: signal.Signals, marker: str | None = None) -> list[int] | None:
    """Signal every process of the session ``leader`` leads (its own group and each job's
    group) and every process carrying ``marker`` (see ``session_members``).

    Returns the processes signalled (None without /proc). The scan of /proc runs in a thread:
    with thousands of processes it takes half a second, which the event loop must not wait.
    """
    members = await asyncio.to_thread(session_members, leader, marker)
    signal_members(leader, members, sig)
    return members


def signal_members(leader: int, members: list[int] | None, sig: signal.Signals) -> None:
    """Send ``sig`` to ``members`` of the session of ``leader`` (None: to the leader's group)."""
    if members is None:  # no /proc: the shell's group is the best we can reach
        members = []
        try:
            os.killpg(leader, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for pid in members:
        try:
            os.kill(pid, sig)
            if sig == signal.SIGHUP:
                os.kill(pid, signal.SIGCONT)  # a stopped job must wake up to see its HUP
        except (ProcessLookupError, PermissionError):
            pass


def foreground_command(fd: int, shell_pid: int) -> str | None:
    """The command line of the PTY's foreground job, or None while the shell itself waits at its
    prompt (or the PTY is gone). One small /proc read: cheap enough for the event loop."""
    if fd < 0:
        return None
    try:
        group = os.tcgetpgrp(fd)
    except OSError:
        return None
    if group <= 0 or group == shell_pid:
        return None
    try:
        raw = Path(f"/proc/{group}/cmdline").read_bytes()
    except OSError:
        return None
    # Group leader gone (a pipeline whose first command ended): still something runs.
    if not raw.rstrip(b"\0"):
        return "a program"
    # Quoted for the shell, so `vim -c "set nu"` reads as one argument, not as `vim -c set nu`.
    return shlex.join(arg.decode(errors="replace") for arg in raw.rstrip(b"\0").split(b"\0"))
