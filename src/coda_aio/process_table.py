"""The machine's live processes as /proc/<pid>/stat tells them: one reading, one parser, for
the terminals (which processes belong to a session) and capacity (what each one uses)."""

from __future__ import annotations

import os
from dataclasses import dataclass

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    ppid: int
    session: int
    command: str
    rss: int  # bytes


def process_table() -> dict[int, ProcessInfo] | None:
    """Every live process by pid (zombies hold nothing and belong to no one: left out); None
    where there is no /proc. Processes that end while it is read are simply missing."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return None
    table = {}
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses; the fields after its last ")" do not.
        close = stat.rfind(b")")
        fields = stat[close + 2 :].split()
        if len(fields) < 22 or fields[0] == b"Z":
            continue
        command = stat[stat.find(b"(") + 1 : close].decode(errors="replace")
        table[int(name)] = ProcessInfo(int(name), int(fields[1]), int(fields[3]), command, int(fields[21]) * PAGE_SIZE)
    return table
