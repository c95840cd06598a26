"""Reaping orphans: coda_aio as the child subreaper of everything its terminals start.

A background job whose shell ended is re-parented to the nearest subreaper, or to PID 1. In a
container coda_aio often *is* PID 1, and nobody would collect those orphans' exit statuses:
they would stay zombies for good. So at startup coda_aio becomes a subreaper (Linux
``PR_SET_CHILD_SUBREAPER``) and collects every child it did not start itself.

Which children it started is not written down anywhere: asyncio's child watcher waits for
each of those by pid, the moment it exits. So a zombie child is only collected once it has
been seen as a zombie twice, ``grace`` seconds apart (looked at with ``WNOWAIT``, which leaves
it in place): by then, whoever was waiting for it would have collected it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import AsyncIterator

from aiohttp import web

from coda_aio.prctl import prctl

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36
GRACE_SECONDS = 1.0


def become_subreaper() -> bool:
    """Make this process the subreaper of its descendants; False where that is not possible."""
    return prctl(PR_SET_CHILD_SUBREAPER, 1) == 0


class OrphanReaper:
    """Collects the exit status of children nobody waits for, on SIGCHLD."""

    def __init__(self, grace: float = GRACE_SECONDS) -> None:
        self._grace = grace
        self._seen: dict[int, float] = {}  # zombie pid -> when it was first seen
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_signal = False
        self.reaped = 0
        self.looks = 0  # how often it looked for zombies (tests: a burst takes two looks, not one each)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            self._loop.add_signal_handler(signal.SIGCHLD, self._schedule)
            self._on_signal = True
        except (RuntimeError, ValueError, NotImplementedError):
            pass  # not the main thread: look every grace period instead
        self._schedule()  # whatever was inherited before we started

    def stop(self) -> None:
        if self._on_signal and self._loop is not None:
            self._loop.remove_signal_handler(signal.SIGCHLD)
            self._on_signal = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule(self) -> None:
        if self._timer is None and self._loop is not None:
            self._timer = self._loop.call_later(self._grace, self._check)

    def _check(self) -> None:
        self._timer = None
        self.looks += 1
        ready = ready_children()
        waiting = self._reap_one_at_a_time() if ready is None else self._reap(ready)
        if waiting or not self._on_signal:
            self._schedule()

    def _reap(self, ready: list[int]) -> bool:
        """Collect every zombie seen on an earlier look; note the new ones. True if any wait."""
        now = time.monotonic()
        seen: dict[int, float] = {}
        for pid in ready:
            first_seen = self._seen.get(pid, now)
            if now - first_seen < self._grace:
                seen[pid] = first_seen  # perhaps someone's own child: its waiter has until the next look
                continue
            self._collect(pid)
        self._seen = seen  # whatever is not a zombie any more is forgotten
        return bool(seen)

    def _reap_one_at_a_time(self) -> bool:
        """Without /proc's children lists only the first zombie can be seen (``waitid`` with
        ``P_ALL`` reports the same one until it is gone): one per look."""
        now = time.monotonic()
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:  # no children at all
                info = None
            if info is None or info.si_pid == 0:
                self._seen.clear()  # no zombie left: whatever was noted is gone
                return False
            pid = info.si_pid
            first_seen = self._seen.setdefault(pid, now)
            if now - first_seen < self._grace:
                return True
            self._collect(pid)
            self._seen.pop(pid, None)

    def _collect(self, pid: int) -> None:
        try:
            os.waitpid(pid, os.WNOHANG)
            self.reaped += 1
            log.debug("reaped orphan %s", pid)
        except ChildProcessError:
            pass  # its waiter got it after all


def ready_children() -> list[int] | None:
    """This process's children that have exited and wait to be collected, all of them (a
    thousand orphans of one burst are collected in one look, not one per look); None where
    /proc has no children lists."""
    me = os.getpid()
    children: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{me}/task"):
            with open(f"/proc/{me}/task/{tid}/children", "rb") as f:
                children += [int(pid) for pid in f.read().split()]
    except FileNotFoundError:
        return None  # a kernel without CONFIG_PROC_CHILDREN (or a thread that just ended)
    except OSError:
        return None
    ready = []
    for pid in children:
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            continue  # collected meanwhile
        if info is not None and info.si_pid:
            ready.append(pid)
    return ready


async def orphan_reaper_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: become the subreaper and collect orphans while the app runs."""
    if not become_subreaper() and os.getpid() != 1:
        yield
        return
    reaper = OrphanReaper()
    reaper.start()
    yield
    reaper.stop()
