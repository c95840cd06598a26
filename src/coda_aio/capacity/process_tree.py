"""Each terminal's processes and the memory they use, read from /proc.

A terminal's processes are its shell's descendants plus anything left in the shell's
session (a job that double-forked is re-parented to coda_aio, the subreaper, but stays in the
session). Memory is PSS where /proc/<pid>/smaps_rollup is readable (shared pages split among
their users, so node's shared libraries are not counted once per agent), else RSS. Reading
every process takes milliseconds to tenths of a second: callers run it in a thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from coda_aio.process_table import ProcessInfo, process_table

@dataclass
class TreeMemory:
    """One terminal's processes: pid -> (command, bytes), and their total."""

    processes: dict[int, tuple[str, int]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(size for _, size in self.processes.values())


def trees(roots: Iterable[int], table: Mapping[int, ProcessInfo] | None = None, *, pss: bool = True) -> dict[int, TreeMemory]:
    """For each root (a terminal's shell), its processes and their memory."""
    roots = list(roots)
    if not roots:
        return {}
    table = (process_table() or {}) if table is None else table
    children: dict[int, list[int]] = {}
    by_session: dict[int, list[int]] = {}
    for info in table.values():
        children.setdefault(info.ppid, []).append(info.pid)
        by_session.setdefault(info.session, []).append(info.pid)
    result = {}
    for root in roots:
        members = set(by_session.get(root, ()))
        if root in table:
            members.add(root)
            stack = [root]
            while stack:
                for child in children.get(stack.pop(), ()):
                    if child not in members:
                        members.add(child)
                        stack.append(child)
        tree = TreeMemory()
        for pid in members:
            info = table.get(pid)
            if info is not None:
                tree.processes[pid] = (info.command, (_pss(pid) if pss else None) or info.rss)
        result[root] = tree
    return result


def _pss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
