"""The kernel's OOM killer: make it pick a terminal's process before the server, and count
its kills.

When memory runs out the kernel kills the process with the highest badness: its memory plus
``oom_score_adj`` thousandths of all memory. The server holds every session; an agent holds
one. So terminals start with a higher ``oom_score_adj`` than the server (raising it needs no
privilege; lowering the server's would) and a runaway agent is the one that dies.
"""

from __future__ import annotations

from pathlib import Path

from coda_aio.capacity.container import ContainerMemory

# How much more the OOM killer should want a terminal's process than the server: half of
# all memory's worth, so a 100 MB agent goes before a 1 GB server.
TERMINAL_OOM_SCORE_RAISE = 500
MAX_OOM_SCORE_ADJ = 1000


def own_oom_score_adj() -> int:
    try:
        return int(Path("/proc/self/oom_score_adj").read_text())
    except (OSError, ValueError):
        return 0


def terminal_oom_score_adj() -> int:
    """The ``oom_score_adj`` for a terminal's shell (its children inherit it)."""
    return min(MAX_OOM_SCORE_ADJ, own_oom_score_adj() + TERMINAL_OOM_SCORE_RAISE)


def oom_kill_count(container: ContainerMemory | None) -> int | None:
    """How many processes the OOM killer has killed: in the container's memory cgroup where
    there is one, else on the whole machine (/proc/vmstat); None where neither says."""
    if container is not None and container.cgroup is not None:
        name = "memory.events" if container.source == "cgroup v2" else "memory.oom_control"
        count = _field(container.cgroup / name, "oom_kill")
        if count is not None:
            return count
    return _field(Path("/proc/vmstat"), "oom_kill")


def _field(path: Path, name: str) -> int | None:
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == name:
                return int(value)
    except (OSError, ValueError):
        pass
    return None
