"""The capacity monitor: samples the container's memory and each terminal's processes, admits
new sessions by memory, and tells a terminal when the OOM killer took one of its processes.

One background loop samples every ``interval`` seconds, in a thread (a look at every process
in /proc must not hold up the event loop). /health, the session list and the page read the
latest sample; admission takes a fresh one.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from coda_aio.background import cancel_and_wait, sleep_until_woken, task_failure
from coda_aio.capacity.container import ContainerMemory, read_container_memory
from coda_aio.capacity.oom import oom_kill_count
from coda_aio.capacity.process_tree import TreeMemory, trees

log = logging.getLogger(__name__)

SAMPLE_SECONDS = 2.0
# Closer to the limit, a closer watch: a process the OOM killer takes can be named only if a
# sample saw it, and under pressure agents grow by hundreds of MB in seconds.
PRESSED_SAMPLE_SECONDS = 0.25
MB = 1024 * 1024


@dataclass(frozen=True)
class Terminal:
    """What the monitor needs to know of a session."""

    id: str
    label: str
    pid: int  # its shell


@dataclass
class Sample:
    container: ContainerMemory
    sessions: dict[str, TreeMemory] = field(default_factory=dict)
    oom_kills: int | None = None


class MemoryShortError(Exception):
    """No room for one more session; ``details`` are the figures for the 429."""

    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.details = details


class CapacityMonitor:
    def __init__(
        self,
        session_bytes: int,
        terminals: Callable[[], list[Terminal]],
        on_oom_kill: Callable[[str, dict[str, Any]], None],
        *,
        interval: float = SAMPLE_SECONDS,
        read_container: Callable[[], ContainerMemory] = read_container_memory,
    ) -> None:
        self.session_bytes = session_bytes
        self._terminals = terminals
        self._on_oom_kill = on_oom_kill
        self._interval = interval
        self._read_container = read_container
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.latest: Sample | None = None
        self._previous: Sample | None = None  # the sample before the latest

    async def start(self) -> None:
        self.latest = await self.sample()
        self._task = asyncio.create_task(self._run(), name="coda-capacity")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    def wake(self) -> None:
        """Sample now (a terminal opened or ended) instead of at the next interval."""
        self._wake.set()

    @property
    def task_failure(self) -> str | None:
        return task_failure(self._task)

    # --- what others ask ---------------------------------------------------------------

    async def sample(self, *, pss: bool = True) -> Sample:
        """``pss``: each process's PSS (shared pages split among their users) instead of RSS;
        it walks every mapping of every process, slow exactly when memory is short."""
        terminals = self._terminals()
        return await asyncio.to_thread(self._read, terminals, pss)

    def _read(self, terminals: list[Terminal], pss: bool) -> Sample:
        container = self._read_container()
        # The kill count before the processes: a kill it counts is one whose victim this
        # sample's processes can no longer include.
        kills = oom_kill_count(container)
        found = trees([t.pid for t in terminals], pss=pss)
        return Sample(container, {t.id: found[t.pid] for t in terminals}, kills)

    async def admit(self) -> None:
        """Raise MemoryShortError when what is left would not hold one more session.

        With no terminal open one is always admitted: there is nothing to close to make room,
        and without a terminal nobody can look at what holds the memory."""
        if self.session_bytes <= 0 or not self._terminals():
            return
        sample = await self.sample()
        if sample.container.available >= self.session_bytes:
            return
        labels = {t.id: t.label for t in self._terminals()}
        heaviest = sorted(sample.sessions.items(), key=lambda item: item[1].total, reverse=True)[:3]
        details = {
            "memory": sample.container.describe(),
            "session_memory_bytes": self.session_bytes,
            "heaviest_sessions": [
                {"id": sid, "label": labels.get(sid, sid), "memory_bytes": tree.total} for sid, tree in heaviest
            ],
        }
        named = ", ".join(f"{labels.get(sid, sid)} ({tree.total / MB:.0f} MB)" for sid, tree in heaviest)
        raise MemoryShortError(
            f"Not enough memory for another terminal: {sample.container.available / MB:.0f} MB of "
            f"{sample.container.limit / MB:.0f} MB free, and a session with an agent needs about "
            f"{self.session_bytes / MB:.0f} MB (CODA_SESSION_MEMORY_MB). "
            + (f"Close a terminal you no longer need; the largest: {named}." if named else
               "Other programs in this container use the memory."),
            details,
        )

    def session_memory(self, session_id: str) -> int | None:
        tree = self.latest.sessions.get(session_id) if self.latest else None
        return None if tree is None else tree.total

    def short_of_memory(self) -> str | None:
        """Why memory is short, for /health; None while one more session would fit."""
        if self.latest is None or self.session_bytes <= 0:
            return None
        container = self.latest.container
        if container.available >= self.session_bytes:
            return None
        return (f"memory is short: {container.available / MB:.0f} MB of {container.limit / MB:.0f} MB free, "
                f"less than one session needs ({self.session_bytes / MB:.0f} MB)")

    def health(self) -> dict[str, Any] | None:
        if self.latest is None:
            return None
        return {**self.latest.container.describe(), "session_memory_bytes": self.session_bytes,
                "oom_kills": self.latest.oom_kills}

    # --- the loop ----------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            pressed = self._pressed()
            await sleep_until_woken(self._wake, min(self._interval, PRESSED_SAMPLE_SECONDS) if pressed else self._interval)
            try:
                # Under pressure a quick look (RSS) often beats an exact one (PSS): the OOM killer's
                # victim can be named only if a sample saw it as what it runs.
                sample = await self.sample(pss=not pressed)
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must outlive one bad look at /proc
                log.exception("memory sample failed")
                continue
            earlier, previous, self.latest = self._previous, self.latest, sample
            self._previous = previous
            if previous is not None:
                self._report_oom_kills(earlier, previous, sample)

    def _pressed(self) -> bool:
        container = self.latest.container if self.latest else None
        return container is not None and container.available < 2 * max(self.session_bytes, 256 * MB)

    def _report_oom_kills(self, earlier: Sample | None, previous: Sample, now: Sample) -> None:
        """When the OOM killer struck since the last sample, tell the terminal that lost the
        largest process (the killer takes the process with the highest badness).

        The victim may have died while the last sample was being taken, after its kill count
        was read: so the processes of the two samples before are looked at, the newer view of
        each winning (a process seen just after fork is still called by its parent's name)."""
        if previous.oom_kills is None or now.oom_kills is None or now.oom_kills <= previous.oom_kills:
            return
        victims = []
        for sid, before in previous.sessions.items():
            known = {**(earlier.sessions[sid].processes if earlier and sid in earlier.sessions else {}),
                     **before.processes}
            after = now.sessions.get(sid)
            gone = known if after is None else {pid: p for pid, p in known.items() if pid not in after.processes}
            victims += [(size, sid, pid, command) for pid, (command, size) in gone.items()]
        if not victims:
            log.warning("the OOM killer ended %d process(es) outside the terminals",
                        now.oom_kills - previous.oom_kills)
            return
        size, sid, pid, command = max(victims)
        log.warning("the OOM killer ended %s (pid %s, %.0f MB) in terminal %s", command, pid, size / MB, sid)
        self._on_oom_kill(sid, {"type": "oom_killed", "pid": pid, "command": command, "memory_bytes": size})
